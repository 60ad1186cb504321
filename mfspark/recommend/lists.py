"""Recommendation lists over a model's factors: top-N per user, audiences, similar movies,
cold-start fallback and genre rows, all computed by the blockwise engine in `topn`.

Inputs are factor DataFrames `(id, features)` and, for biased models, the baseline's mu and
bias tables `(user_id, bias, ...)`, `(movie_id, bias, ...)`. A biased model predicts
mu + b_u + b_i + x.y; within one user's list only b_i + x.y matters, so items are scored
with the augmented factors [y, b_i] against [x, 1] and mu + b_u is added to the reported
score afterwards (the lists are the full model's, and so are the scores).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from mfspark.recommend.topn import GROUP_MASK, LIST_GROUPS, BlockSizes, reads_exclusions_directly, top_n

LIST_COLUMNS = ("user_id", "rank", "movie_id", "score")
# Users with fewer input ratings than this get the cold-start list. Chosen from benchmarks/results/ranking.md:
# on ml-latest-small the popularity list beat explicit ALS's for users cut to 3, 5, 10 and 20 training ratings.
DEFAULT_MIN_RATINGS = 20


@dataclass(frozen=True)
class Baseline:
    """The bias part of a model: mu, (user_id, bias) and (movie_id, bias) tables, the user bias damping."""

    mu: float
    user_biases: DataFrame
    movie_biases: DataFrame
    lambda_u: float = 0.0

    @classmethod
    def of(cls, bias_model) -> Baseline | None:
        """From a `BiasModel` (or None)."""
        if bias_model is None:
            return None
        return cls(bias_model.mu, bias_model.user_biases, bias_model.movie_biases, bias_model.params.lambda_u)


@dataclass(frozen=True)
class Candidates:
    """Which movies may be recommended: an allow-list (only these) and a block-list (never these)."""

    allow: DataFrame | None = None  # (movie_id)
    block: DataFrame | None = None  # (movie_id)

    def apply(self, movies: DataFrame, id_col: str = "movie_id") -> DataFrame:
        if self.allow is not None:
            movies = movies.join(self.allow.select(F.col("movie_id").alias(id_col)).distinct(), id_col, "left_semi")
        if self.block is not None:
            movies = movies.join(self.block.select(F.col("movie_id").alias(id_col)), id_col, "left_anti")
        return movies


def _with_component(factors: DataFrame, value: Column) -> DataFrame:
    return factors.select("id", F.concat("features", F.array(value.cast("float"))).alias("features"))


def _bias_of(factors: DataFrame, biases: DataFrame, id_col: str) -> DataFrame:
    """factors plus their bias as column `bias` (0 where the table has none)."""
    table = F.broadcast(biases.select(F.col(id_col).alias("id"), F.col("bias").alias("_bias")))
    return factors.join(table, "id", "left").select("id", "features", F.coalesce("_bias", F.lit(0.0)).alias("bias"))


def scoring_factors(user_factors: DataFrame, item_factors: DataFrame,
                    baseline: Baseline | None) -> tuple[DataFrame, DataFrame]:
    """(users, items) factors whose dot product ranks as the model does: [x, 1] . [y, b_i] with biases."""
    if baseline is None:
        return user_factors.select("id", "features"), item_factors.select("id", "features")
    items = _bias_of(item_factors.select("id", "features"), baseline.movie_biases, "movie_id")
    return _with_component(user_factors, F.lit(1.0)), _with_component(items, F.col("bias"))


def _reported(lists: DataFrame, mu: float, biases: DataFrame | None, key: str) -> DataFrame:
    """lists' scores plus mu + the bias of each row's `key` (user or movie; 0 where unknown)."""
    bias = F.lit(0.0)
    if biases is not None:
        lists = lists.join(F.broadcast(biases.select(F.col(key), F.col("bias").alias("_bias"))), key, "left")
        bias = F.coalesce(F.col("_bias"), F.lit(0.0))
    return lists.withColumn("score", (F.col("score") + F.lit(mu) + bias).cast("float")).drop("_bias")


def recommend_for_users(user_factors: DataFrame, item_factors: DataFrame, seen: DataFrame | None, n: int,
                        baseline: Baseline | None = None, users: DataFrame | None = None,
                        candidates: Candidates | None = None, sizes: BlockSizes | None = None) -> DataFrame:
    """Top-N unseen movies per user: `(user_id, rank, movie_id, score)`.

    seen: (user_id, movie_id) pairs never recommended (every rating of the input); users:
    optional (user_id) subset (duplicates collapse; users without factors get no rows
    here, see `fallback_lists`).
    """
    queries, items = scoring_factors(user_factors, item_factors, baseline)
    exclude = None if seen is None else \
        seen.select(F.col("user_id").alias("query_id"), F.col("movie_id").alias("candidate_id"))
    if users is not None:
        subset = users.select(F.col("user_id").cast("int")).distinct()
        queries = queries.join(subset.withColumnRenamed("user_id", "id"), "id", "left_semi")
        if exclude is not None and not reads_exclusions_directly(exclude):
            exclude = exclude.join(subset.withColumnRenamed("user_id", "query_id"), "query_id", "left_semi")
    items = (candidates or Candidates()).apply(items, "id")
    lists = top_n(queries, items, n, exclude, sizes)
    named = lists.select(F.col("query_id").alias("user_id"), "rank", F.col("candidate_id").alias("movie_id"),
                         "score")
    if baseline is not None:
        named = _reported(named, baseline.mu, baseline.user_biases, "user_id")
    return named.select(*LIST_COLUMNS)


def audiences(user_factors: DataFrame, item_factors: DataFrame, seen: DataFrame, n: int,
              baseline: Baseline | None = None, sizes: BlockSizes | None = None) -> DataFrame:
    """Top-N users per movie among those who have not rated it: `(movie_id, rank, user_id, score)`.

    The same engine with the roles swapped; with biases the users carry b_u ([x, b_u] . [y, 1])
    and mu + b_i is added to the reported score.
    """
    queries, candidates = item_factors.select("id", "features"), user_factors.select("id", "features")
    if baseline is not None:
        users = _bias_of(candidates, baseline.user_biases, "user_id")
        queries, candidates = _with_component(queries, F.lit(1.0)), _with_component(users, F.col("bias"))
    exclude = seen.select(F.col("movie_id").alias("query_id"), F.col("user_id").alias("candidate_id"))
    lists = top_n(queries, candidates, n, exclude, sizes)
    named = lists.select(F.col("query_id").alias("movie_id"), "rank", F.col("candidate_id").alias("user_id"),
                         "score")
    if baseline is not None:
        named = _reported(named, baseline.mu, baseline.movie_biases, "movie_id")
    return named.select("movie_id", "rank", "user_id", "score")


def similar_movies(item_factors: DataFrame, k: int, sizes: BlockSizes | None = None, movies: DataFrame | None = None,
                   candidates: Candidates | None = None) -> DataFrame:
    """Top-K movies by cosine similarity of item factors, the movie itself excluded:
    `(movie_id, rank, similar_movie_id, similarity)`. Zero vectors have no neighbours. `movies` (movie_id): the
    movies whose neighbours are wanted (None: all); `candidates`: which movies may be neighbours."""
    norm = F.sqrt(F.aggregate("features", F.lit(0.0), lambda acc, v: acc + v * v))
    unit = item_factors.where(norm > 0).select(
        "id", F.transform("features", lambda v: (v / norm).cast("float")).alias("features"))
    queries = unit if movies is None else unit.join(
        movies.select(F.col("movie_id").cast("int").alias("id")).distinct(), "id", "left_semi")
    exclude = queries.select(F.col("id").alias("query_id"), F.col("id").alias("candidate_id"))
    lists = top_n(queries, (candidates or Candidates()).apply(unit, "id"), k, exclude, sizes)
    return lists.select(F.col("query_id").alias("movie_id"), "rank",
                       F.col("candidate_id").alias("similar_movie_id"), F.col("score").alias("similarity"))


def cold_start_users(user_factors: DataFrame, ratings: DataFrame, requested: DataFrame | None,
                     min_ratings: int) -> DataFrame:
    """(user_id, reason, ratings) of the requested users (default: every user with factors or ratings) who get a
    cold-start list: `unknown` (no factors) or `few_ratings` (fewer than `min_ratings` in `ratings`)."""
    counts = ratings.groupBy("user_id").agg(F.count(F.lit(1)).cast("int").alias("ratings"))
    known = user_factors.select(F.col("id").alias("user_id"), F.lit(True).alias("_known"))
    wanted = requested.select("user_id").distinct() if requested is not None \
        else counts.select("user_id").union(known.select("user_id")).distinct()
    table = wanted.join(counts, "user_id", "left").fillna(0, subset=["ratings"]).join(known, "user_id", "left")
    reason = F.when(F.col("_known").isNull(), "unknown").when(F.col("ratings") < min_ratings, "few_ratings")
    return table.withColumn("reason", reason).where(F.col("reason").isNotNull()).select("user_id", "reason", "ratings")


FALLBACK_ORDERS = ("popularity", "bias")


def fallback_lists(users: DataFrame, movie_biases: DataFrame, mu: float, seen: DataFrame | None, n: int,
                   user_biases: DataFrame | None = None, candidates: Candidates | None = None,
                   sizes: BlockSizes | None = None, order: str = "popularity") -> DataFrame:
    """Cold-start lists from the bias model's movie table (movie_id, bias, count): each user's N unseen movies.

    users: (user_id). `order` "popularity": most training ratings first (ties: smaller id);
    "bias": highest damped b_i (sum of residuals / (n_i + lambda_i): a movie with two five-star
    ratings is pulled towards the mean and does not top the list). Popularity is the default
    because it ranks better for users the model cannot serve (benchmarks/results/ranking.md:
    precision@10 for users with 5 training ratings 0.034 against 0.016 by b_i). The reported
    score is the baseline prediction mu + b_u + b_i either way.
    """
    if order not in FALLBACK_ORDERS:
        raise ValueError(f"order must be one of {FALLBACK_ORDERS}, got {order!r}")
    queries = users.select(F.col("user_id").cast("int").alias("id")).distinct() \
        .select("id", F.array(F.lit(1.0).cast("float")).alias("features"))
    key = F.col("count") if order == "popularity" else F.col("bias")
    movies = movie_biases.select(F.col("movie_id").alias("id"), F.array(key.cast("float")).alias("features"))
    movies = (candidates or Candidates()).apply(movies, "id")
    exclude = None if seen is None else \
        seen.select(F.col("user_id").alias("query_id"), F.col("movie_id").alias("candidate_id"))
    if exclude is not None and not reads_exclusions_directly(exclude):
        exclude = exclude.join(queries.select(F.col("id").alias("query_id")), "query_id", "left_semi")
    lists = top_n(queries, movies, n, exclude, sizes)
    named = lists.select(F.col("query_id").alias("user_id"), "rank", F.col("candidate_id").alias("movie_id"))
    scored = named.join(F.broadcast(movie_biases.select("movie_id", F.col("bias").alias("score"))), "movie_id")
    return _reported(scored, mu, user_biases, "user_id").select(*LIST_COLUMNS)


def favourite_genres(ratings: DataFrame, movies: DataFrame, count: int = 3, min_rating: float = 4.0) -> DataFrame:
    """(user_id, genre, genre_rank): each user's `count` genres with the most ratings >= min_rating
    (ties: alphabetical)."""
    from pyspark.sql import Window

    liked = ratings.where(F.col("rating") >= min_rating).join(movies.select("movie_id", "genres"), "movie_id")
    per_genre = liked.select("user_id", F.explode("genres").alias("genre")).groupBy("user_id", "genre").count()
    order = Window.partitionBy("user_id").orderBy(F.col("count").desc(), F.col("genre"))
    return per_genre.withColumn("genre_rank", F.row_number().over(order)).where(F.col("genre_rank") <= count) \
        .select("user_id", "genre", "genre_rank")


# Genres per engine pass: a movie's genres travel as bits of a long (2^62 is still exact as a double).
GENRES_PER_PASS = 63
GENRE_ROW_SCHEMA = "user_id int, genre string, genre_rank int, rank int, movie_id int, score float"


def genre_rows(user_factors: DataFrame, item_factors: DataFrame, seen: DataFrame, movies: DataFrame,
               favourites: DataFrame, n: int, baseline: Baseline | None = None,
               sizes: BlockSizes | None = None) -> DataFrame:
    """Per user, the top N unseen movies within each favourite genre (`favourite_genres`), scored as
    `recommend_for_users`: `(user_id, genre, genre_rank, rank, movie_id, score)`.

    One engine pass for up to GENRES_PER_PASS genres (MovieLens has 20): each user keeps one
    list per favourite genre, each movie carries its genres as bits, and every score a user's
    tile computes is offered to each of that user's lists (kernels.Lists), so the rows cost
    one scoring pass, not one per genre. The genre names reach the driver (a few dozen), no
    factors do.
    """
    genres = [row["genre"] for row in favourites.select("genre").distinct().orderBy("genre").collect()]
    queries, items = scoring_factors(user_factors, item_factors, baseline)
    exclude = seen.select(F.col("user_id").alias("query_id"), F.col("movie_id").alias("candidate_id"))
    passes = [_genre_pass(queries, items, movies, favourites, genres[start:start + GENRES_PER_PASS], n, exclude, sizes)
              for start in range(0, len(genres), GENRES_PER_PASS)]
    if not passes:
        return favourites.sparkSession.createDataFrame([], GENRE_ROW_SCHEMA)
    rows = functools.reduce(DataFrame.union, passes)
    if baseline is not None:
        rows = _reported(rows, baseline.mu, baseline.user_biases, "user_id")
    return rows.join(favourites.select("user_id", "genre", "genre_rank"), ["user_id", "genre"]) \
        .select("user_id", "genre", "genre_rank", "rank", "movie_id", F.col("score").cast("float"))


def _genre_pass(queries: DataFrame, items: DataFrame, movies: DataFrame, favourites: DataFrame, genres: list[str],
                n: int, exclude: DataFrame, sizes: BlockSizes | None) -> DataFrame:
    """`(user_id, genre, rank, movie_id, score)` for these genres (group i = genres[i]) in one engine run."""
    names = F.array(*[F.lit(genre) for genre in genres])

    def group(genre: Column) -> Column:
        return (F.array_position(names, genre) - 1).cast("int")  # -1: not in this pass

    fans = favourites.where(group(F.col("genre")) >= 0).groupBy(F.col("user_id").alias("id")) \
        .agg(F.collect_list(group(F.col("genre"))).alias(LIST_GROUPS))
    bits = F.aggregate("genres", F.lit(0).cast("long"), lambda mask, genre: mask.bitwiseOR(
        F.when(group(genre) >= 0, F.pow(F.lit(2.0), group(genre)).cast("long")).otherwise(F.lit(0).cast("long"))))
    members = items.join(movies.select(F.col("movie_id").alias("id"), "genres"), "id") \
        .select("id", "features", bits.alias(GROUP_MASK)).where(F.col(GROUP_MASK) != 0)
    lists = top_n(queries.join(fans, "id"), members, n, exclude, sizes)
    return lists.select(F.col("query_id").alias("user_id"), F.element_at(names, F.col("group") + 1).alias("genre"),
                        "rank", F.col("candidate_id").alias("movie_id"), "score")

