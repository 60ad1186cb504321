"""The report's numbers, computed on Spark; only small aggregates (a few hundred rows) reach the driver.

Each function returns plain Python data (lists of dicts, small numpy arrays) for `figures` and `page`.
The big matrices (the bias-residual matrix of every user x every movie, the item factors) stay
distributed: SVD and PCA go through MLlib's `IndexedRowMatrix`/`RowMatrix`, whose results are
k x n or n x k with k <= a few dozen.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace

import numpy as np
from pyspark import RDD, StorageLevel
from pyspark.mllib.linalg import SparseVector, Vectors
from pyspark.mllib.linalg.distributed import RowMatrix
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from mfspark.evaluation.metrics import Recommender, held_out_ranking, rating_metrics
from mfspark.evaluation.mllib_reference import fit_mllib
from mfspark.evaluation.neighbours import most_watched, neighbour_quality
from mfspark.evaluation.split import Split
from mfspark.models.als.estimator import ALS, ALSModel, ALSParams
from mfspark.models.bias import BiasModel, BiasParams, clipped, with_bias_columns
from mfspark.models.ease import EASEModel
from mfspark.recommend.lists import Candidates, genre_rows, recommend_for_users

log = logging.getLogger(__name__)

# Genres a movie is coloured by, most distinctive first: a movie takes the first of these it has
# (MovieLens lists a movie's genres alphabetically, so "the first listed genre" would favour "Action").
DISPLAY_GENRES = ("Animation", "Horror", "Sci-Fi", "Romance", "Crime", "Action", "Comedy", "Drama")
OTHER_GENRE = "Other"
# Movies the seed project compares residuals of (title, year as ingested); missing ones are skipped.
FAMOUS_MOVIES = (("Godfather, The", 1972), ("Godfather: Part II, The", 1974), ("You've Got Mail", 1998),
                 ("Sleepless in Seattle", 1993), ("Pulp Fiction", 1994), ("Notting Hill", 1999),
                 ("Star Wars: Episode IV - A New Hope", 1977), ("Star Wars: Episode V - The Empire Strikes Back", 1980))
RANKING_K = 10
RANKING_KEYS = ("precision@10", "recall@10", "ndcg@10", "map@10", "coverage@10")


def display_title(title: str, year: int | None) -> str:
    return f"{title} ({year})" if year else title


def display_genre() -> F.Column:
    """The first of DISPLAY_GENRES a movie has, else "Other" (a column over `genres`)."""
    choice = F.lit(OTHER_GENRE)
    for genre in reversed(DISPLAY_GENRES):
        choice = F.when(F.array_contains("genres", genre), F.lit(genre)).otherwise(choice)
    return choice


def dot(a: str, b: str) -> F.Column:
    return F.aggregate(F.zip_with(a, b, lambda x, y: x * y), F.lit(0.0), lambda acc, v: acc + v)


def norm(a: str) -> F.Column:
    return F.sqrt(dot(a, a))


def movie_table(movies: DataFrame, train: DataFrame) -> DataFrame:
    """movie_id, title (with year), genres, display genre and training rating count (0 if unrated)."""
    counts = train.groupBy("movie_id").agg(F.count(F.lit(1)).alias("count"))
    title = F.when(F.col("year").isNotNull(), F.format_string("%s (%d)", "title", "year")).otherwise(F.col("title"))
    return (movies.join(counts, "movie_id", "left").fillna(0, subset=["count"])
            .select("movie_id", title.alias("title"), "genres", display_genre().alias("genre"), "count"))


# ---------------------------------------------------------------- accuracy


def _scored_row(name: str, description: str, scored: DataFrame, seconds: float) -> dict:
    metrics = rating_metrics(scored)
    return {"model": name, "description": description, "rmse": metrics["rmse"], "mae": metrics["mae"],
            "scored": metrics["count"], "fit_s": round(seconds, 2)}


def global_mean_row(split: Split) -> dict:
    started = time.perf_counter()
    mu = split.train.agg(F.avg(F.col("rating").cast("double"))).first()[0]
    return _scored_row("global mean", f"every rating predicted as mu = {mu:.3f}",
                       split.test.withColumn("prediction", F.lit(mu)), time.perf_counter() - started)


def bias_row(split: Split, model: ALSModel) -> tuple[dict, BiasModel]:
    """The damped bias model: the trained model's own baseline when it has one (fitted on the same training
    ratings), else fitted here with `mfspark baseline`'s defaults."""
    started = time.perf_counter()
    biases = model.baseline
    origin = "the trained model's own baseline"
    if biases is None:
        biases = BiasModel.fit(split.train, BiasParams())
        origin = "fitted here with `mfspark baseline`'s defaults"
    p = biases.params
    row = _scored_row("biases", f"mu + b_u + b_i, damped (lambda_u = {p.lambda_u:g}, lambda_i = {p.lambda_i:g}, "
                      f"{p.sweeps} sweeps), {origin}", biases.predict(split.test), time.perf_counter() - started)
    return row | ranking_columns(biases.recommend_for_users, split), biases


def ranking_columns(recommend: Recommender, split: Split) -> dict:
    """The accuracy table's ranking columns (RANKING_KEYS) for one model's top-10 lists on the split."""
    metrics = held_out_ranking(recommend, split, RANKING_K)
    return {key: metrics[key] for key in RANKING_KEYS}


# Up to this many columns, the SVD is one pass: the n x n Gramian (128 MiB at 4096) aggregated on Spark and
# decomposed on the driver, as `computeSVD`'s local modes do. Beyond it, `computeSVD`'s distributed ARPACK, one
# pass over the (persisted) rows per iteration. The matrix is oriented so its columns are the smaller side.
GRAMIAN_LIMIT = 4096


def column_index_of(frame: DataFrame, key: str = "movie_id") -> DataFrame:
    """key -> column 0..n-1 (ordered by key) over the distinct keys of `frame` (one row per user or movie)."""
    return frame.select(key).distinct().select(key, (F.row_number().over(Window.orderBy(key)) - 1).alias("column"))


def sparse_rows(cells: DataFrame, row_key: str, columns: DataFrame, num_columns: int) -> RDD:
    """(row key, SparseVector) per row of the matrix whose cells are (row_key, column key, residual)."""
    column_key = next(c for c in columns.columns if c != "column")
    grouped = (cells.join(F.broadcast(columns), column_key)
               .groupBy(row_key).agg(F.collect_list(F.struct("column", "residual")).alias("cells")))
    return grouped.rdd.map(lambda row: (row[0], SparseVector(
        num_columns, sorted((c.column, c.residual) for c in row.cells))))


def top_singular(rows: RDD, num_columns: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest singular values and right singular vectors (num_columns x k) of the rows' matrix."""
    matrix = RowMatrix(rows, numCols=num_columns)
    if num_columns <= GRAMIAN_LIMIT:
        values, vectors = np.linalg.eigh(matrix.computeGramianMatrix().toArray())
        order = np.argsort(values)[::-1][:k]
        return vectors[:, order], np.sqrt(np.maximum(values[order], 0.0))
    svd = matrix.computeSVD(k)
    return svd.V.toArray(), svd.s.toArray()


def principal_components(matrix: RowMatrix, k: int) -> tuple[np.ndarray, list[float]]:
    """The k leading principal components (columns x k) and their shares of the variance, from one
    distributed pass (`computeCovariance`) and an eigendecomposition of the small covariance on the driver."""
    covariance = matrix.computeCovariance().toArray()
    values, vectors = np.linalg.eigh(covariance)
    order = np.argsort(values)[::-1][:k]
    total = float(np.trace(covariance)) or 1.0
    return vectors[:, order], [float(values[i]) / total for i in order]


def svd_row(split: Split, biases: BiasModel, k: int) -> dict:
    """Truncated SVD of the training bias-residual matrix (users x movies, zeros filled), as in the seed project.

    Prediction = mu + b_u + b_i + (U S V^T)_ui, clipped; users or movies outside the matrix get the biases.
    With A the residual matrix oriented so its n columns are the smaller side, U S = A V: the row side's
    vectors are projected on Spark, the n x k matrix V is the only dense piece on the driver.
    """
    spark = split.train.sparkSession
    started = time.perf_counter()
    cells = biases.residuals(split.train.select("user_id", "movie_id", "rating")).select(
        "user_id", "movie_id", "residual")
    sizes = cells.agg(F.countDistinct("user_id").alias("users"), F.countDistinct("movie_id").alias("movies")).first()
    row_key, column_key = ("movie_id", "user_id") if sizes.users <= sizes.movies else ("user_id", "movie_id")
    columns = column_index_of(cells, column_key).cache()
    n = columns.count()
    k = min(k, n - 1)
    rows = sparse_rows(cells, row_key, columns, n).persist(StorageLevel.MEMORY_AND_DISK)
    v, singular = top_singular(rows.values(), n, k)
    v_shared = spark.sparkContext.broadcast(v)
    projected = rows.map(lambda kv: (kv[0], (v_shared.value[kv[1].indices].T @ kv[1].values).tolist()))
    row_vectors = spark.createDataFrame(projected, f"{row_key} int, _r array<double>")
    keys = [r[0] for r in columns.orderBy("column").select(column_key).collect()]
    column_vectors = spark.createDataFrame([(int(key), vec.tolist()) for key, vec in zip(keys, v)],
                                           f"{column_key} int, _c array<double>")
    scored = (with_bias_columns(split.test, biases.user_biases, biases.movie_biases)
              .join(row_vectors, row_key, "left").join(F.broadcast(column_vectors), column_key, "left"))
    residual = F.coalesce(dot("_r", "_c"), F.lit(0.0))
    scored = scored.withColumn("prediction", clipped(biases.baseline_column() + residual, biases.params))
    how = "one Gramian pass" if n <= GRAMIAN_LIMIT else "RowMatrix.computeSVD"
    row = _scored_row(f"SVD rank {k}", f"biases + rank-{k} SVD of the bias-residual matrix (zeros filled, "
                      f"{sizes.users} users x {sizes.movies} movies; on Spark: {how})", scored,
                      time.perf_counter() - started)
    rows.unpersist()
    columns.unpersist()
    v_shared.unpersist()
    row["singular_values"] = singular.tolist()
    return row


def describe_als(params: ALSParams) -> str:
    kind = "biased ALS: biases + factors of the residuals" if params.biases else "plain ALS: factors of the ratings"
    return f"{kind} (rank {params.rank}, lambda {params.reg:g}, {params.max_iter} iterations)"


def als_name(biases: bool) -> str:
    return "ALS (biased)" if biases else "ALS (plain)"


def trained_row(metrics: dict, model: ALSModel, split: Split) -> dict:
    """The trained model's row as its metrics.json reports it; ranking metrics computed here when absent."""
    params = model.params
    row = {"model": als_name(params.biases), "description": describe_als(params) + ": the trained model",
           "rmse": metrics["rmse"], "mae": metrics["mae"], "scored": metrics.get("test", {}).get("count"),
           "fit_s": metrics.get("timings", {}).get("fit_s")}
    ranking = metrics.get("test", {})
    if all(key in ranking for key in RANKING_KEYS):
        return row | {key: ranking[key] for key in RANKING_KEYS}
    return row | ranking_columns(model.recommend_for_users, split)


def other_als_row(split: Split, params: ALSParams) -> dict:
    """ALS with the trained model's parameters and the other choice of biases, on the same split."""
    variant = replace(params, biases=not params.biases)
    started = time.perf_counter()
    model = ALS(**asdict(variant)).fit(split.train)
    seconds = time.perf_counter() - started
    return (_scored_row(als_name(variant.biases), describe_als(variant), model.predict(split.test), seconds)
            | ranking_columns(model.recommend_for_users, split))


def mllib_row(split: Split, params: ALSParams, biases: BiasModel) -> dict:
    """Spark MLlib's ALS, same rank, lambda, iterations and seed; pairs it has no factors for get the biases."""
    spark = split.train.sparkSession
    model, seconds = fit_mllib(split.train, replace(params, biases=False), spark.sparkContext.defaultParallelism)
    known = model.transform(split.test.select("user_id", "movie_id")).select(  # MLlib drops unknown pairs
        "user_id", "movie_id", clipped(F.col("prediction"), biases.params).alias("_mllib"))
    scored = biases.predict(split.test, prediction_col="_baseline").join(known, ["user_id", "movie_id"], "left")
    scored = scored.withColumn("prediction", F.coalesce("_mllib", "_baseline"))
    factors = [frame.select(F.col("id").cast("int"), F.col("features").cast("array<float>"))
               for frame in (model.userFactors, model.itemFactors)]
    ranked = ranking_columns(lambda users, n, seen: recommend_for_users(*factors, seen, n, users=users), split)
    return _scored_row("MLlib ALS", f"Spark MLlib ALS (rank {params.rank}, regParam {params.reg:g}, "
                       f"{params.max_iter} iterations), unseen users/movies scored by the biases; top-10 lists "
                       "from its factors", scored, seconds) | ranked


# ---------------------------------------------------------------- convergence


def heldout_by_iteration(split: Split, params: ALSParams, iterations: list[int]) -> list[dict]:
    """Held-out RMSE after each of `iterations`, from refits with max_iter = i on one shared layout.

    ALS is deterministic for a seed and a blocking, so the fit with max_iter = i is iteration i of the
    longer run; `fit_each` builds the layout and the bias baseline once for all of them.
    """
    variants = [replace(params, max_iter=i) for i in sorted(set(iterations))]
    points = []
    for model in ALS(**asdict(params)).fit_each(split.train, variants):
        metrics = rating_metrics(model.predict(split.test))
        points.append({"iteration": model.params.max_iter, "heldout_rmse": metrics["rmse"],
                       "train_rmse": model.history.iterations[-1].train_rmse if model.history.iterations else None})
    return points


# ---------------------------------------------------------------- latent space


def item_map(model: ALSModel, movies: DataFrame, limit: int) -> tuple[list[dict], list[float]]:
    """The `limit` most-rated movies projected on the first two principal components of all item factors.

    Returns the points (movie_id, title, genre, count, x, y) and the share of variance of each component.
    """
    vectors = model.item_factors.rdd.map(lambda row: Vectors.dense(row.features))
    components, explained = principal_components(RowMatrix(vectors), 2)  # rank x 2
    # Not centred: the mean only translates the map.
    c1, c2 = (F.array(*[F.lit(float(v)) for v in components[:, j]]) for j in range(2))
    projected = (model.item_factors.select(F.col("id").alias("movie_id"), "features")
                 .withColumn("_c1", c1).withColumn("_c2", c2)
                 .select("movie_id", dot("features", "_c1").alias("x"), dot("features", "_c2").alias("y")))
    top = movies.where(F.col("count") > 0).orderBy(F.desc("count"), "movie_id").limit(limit)
    rows = top.join(projected, "movie_id").orderBy(F.desc("count"), "movie_id").collect()
    return [row.asDict() for row in rows], explained


# ---------------------------------------------------------------- similarity


def popular_by_genre(movies: DataFrame, per_genre: int, genres: tuple[str, ...]) -> list[dict]:
    """The `per_genre` most-rated movies of each of `genres`, genre by genre.

    Genres the release lacks are skipped; when none is present, the release's most common genres stand in.
    """
    present = [r.genre for r in movies.where(F.col("genre").isNotNull()).groupBy("genre").count()
               .orderBy(F.desc("count"), "genre").collect()]  # one row per genre: a few dozen at most
    genres = tuple(g for g in genres if g in present) or tuple(present[: len(genres)])
    ranked = movies.where(F.col("genre").isin(*genres)).withColumn(
        "_rank", F.row_number().over(Window.partitionBy("genre").orderBy(F.desc("count"), "movie_id")))
    rows = ranked.where(F.col("_rank") <= per_genre).select("movie_id", "title", "genre", "count").collect()
    order = {g: i for i, g in enumerate(genres)}
    return sorted((r.asDict() for r in rows), key=lambda r: (order[r["genre"]], -r["count"], r["movie_id"]))


def cosine_matrix(model: ALSModel, movie_ids: list[int]) -> np.ndarray:
    """Cosine similarity of the item factors of `movie_ids` (a few dozen vectors reach the driver)."""
    rows = model.item_factors.where(F.col("id").isin(movie_ids)).collect()
    by_id = {row.id: np.asarray(row.features, dtype=float) for row in rows}
    vectors = np.vstack([by_id[m] for m in movie_ids])
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def similar_pairs(model: ALSModel | EASEModel, queries: DataFrame, k: int, movies: DataFrame,
                  min_count: int) -> DataFrame:
    """(movie_id, rank, similar_movie_id, similarity): the `model`'s k most similar movies of each of `queries`
    (movie_id) among the movies with >= min_count training ratings, by the model's own `similar_items` (ALS: cosine
    of the item factors; EASE: B_ij, what liking the movie adds to the other's score)."""
    frequent = Candidates(allow=movies.where(F.col("count") >= min_count).select("movie_id"))
    return model.similar_items(k, queries, frequent)


def nearest_neighbours(model: ALSModel | EASEModel, movies: DataFrame, movie_ids: list[int], k: int,
                       min_count: int) -> dict[int, list[dict]]:
    """Each of `movie_ids`' k most similar movies (`similar_pairs`) with their titles: k rows per movie reach
    the driver."""
    queries = movies.sparkSession.createDataFrame([(m,) for m in movie_ids], "movie_id int")
    titles = movies.select(F.col("movie_id").alias("similar_movie_id"), "title")
    rows = similar_pairs(model, queries, k, movies, min_count).join(titles, "similar_movie_id").collect()
    result: dict[int, list[dict]] = {m: [] for m in movie_ids}
    for row in sorted(rows, key=lambda r: (r.movie_id, r["rank"])):
        result[row.movie_id].append({"title": row.title, "similarity": row.similarity})
    return result


def similar_movie_quality(model: ALSModel | EASEModel, watched: DataFrame, movies: DataFrame, count: int, k: int,
                          min_count: int) -> dict[str, float]:
    """Genre agreement and co-watch lift (`evaluation.neighbours`) of the k neighbours (`similar_pairs`) of the
    `count` most-watched movies of `watched` (user_id, movie_id: the training ratings)."""
    pairs = similar_pairs(model, most_watched(watched, count), k, movies, min_count)
    return neighbour_quality(pairs, movies.select("movie_id", "genres"), watched)


# ---------------------------------------------------------------- residual structure


def famous_movies(movies: DataFrame, fallback: int) -> list[dict]:
    """FAMOUS_MOVIES found in the catalogue; when fewer than 3 are, the `fallback` most-rated movies."""
    wanted = F.lit(False)
    for title, year in FAMOUS_MOVIES:
        wanted = wanted | (F.col("title") == display_title(title, year))
    rows = [r.asDict() for r in movies.where(wanted & (F.col("count") > 0)).select("movie_id", "title").collect()]
    order = {display_title(t, y): i for i, (t, y) in enumerate(FAMOUS_MOVIES)}
    if len(rows) >= 3:
        return sorted(rows, key=lambda r: order[r["title"]])
    top = movies.orderBy(F.desc("count"), "movie_id").limit(fallback).select("movie_id", "title").collect()
    return [r.asDict() for r in top]


def residual_correlations(residuals: DataFrame, movie_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of the bias residuals of each pair of movies over the users who rated both,
    and how many users that is (a small self-join: only these movies' ratings)."""
    picked = residuals.where(F.col("movie_id").isin(movie_ids)).select("user_id", "movie_id", "residual")
    a = picked.select("user_id", F.col("movie_id").alias("a"), F.col("residual").alias("ra"))
    b = picked.select("user_id", F.col("movie_id").alias("b"), F.col("residual").alias("rb"))
    rows = (a.join(b, "user_id").groupBy("a", "b")
            .agg(F.corr("ra", "rb").alias("corr"), F.count(F.lit(1)).alias("n")).collect())
    index = {m: i for i, m in enumerate(movie_ids)}
    corr = np.full((len(movie_ids), len(movie_ids)), np.nan)
    counts = np.zeros_like(corr, dtype=int)
    for row in rows:
        corr[index[row.a], index[row.b]] = np.nan if row.corr is None else row.corr
        counts[index[row.a], index[row.b]] = row.n
    return corr, counts


def residual_components(residuals: DataFrame, movies: DataFrame, num_users: int, num_movies: int,
                        ends: int) -> dict:
    """First two principal components of the bias-residual matrix of the `num_users` most active users x
    the `num_movies` most-rated movies (zeros where unrated), with the `ends` movies at each end of each.

    The num_movies x num_movies covariance is aggregated on Spark (`RowMatrix.computeCovariance`).
    """
    active = (residuals.groupBy("user_id").agg(F.count(F.lit(1)).alias("_n"))
              .orderBy(F.desc("_n"), "user_id").limit(num_users).select("user_id"))
    popular = movies.orderBy(F.desc("count"), "movie_id").limit(num_movies).select("movie_id")
    columns = column_index_of(popular).cache()
    n = columns.count()
    cells = residuals.join(F.broadcast(active), "user_id")
    rows = sparse_rows(cells, "user_id", columns, n).values().persist(StorageLevel.MEMORY_AND_DISK)
    num_rows = rows.count()
    loadings, explained = principal_components(RowMatrix(rows, numCols=n), 2)  # n x 2
    rows.unpersist()
    titles = {r.column: r.title for r in columns.join(movies.select("movie_id", "title"), "movie_id").collect()}
    columns.unpersist()
    result = {"users": num_rows, "movies": n, "explained": explained, "components": []}
    for j in range(2):
        order = np.argsort(loadings[:, j])
        pick = [int(i) for i in order[:ends]] + [int(i) for i in order[::-1][:ends]]
        result["components"].append([{"title": titles[i], "loading": float(loadings[i, j])} for i in pick])
    return result


# ---------------------------------------------------------------- target user


def typical_active_user(ratings: DataFrame) -> int:
    """The user at the median activity among the top quarter of users by rating count (ties: lowest id)."""
    counts = ratings.groupBy("user_id").agg(F.count(F.lit(1)).alias("n"))
    q75 = counts.approxQuantile("n", [0.75], 0.0)[0]
    active = counts.where(F.col("n") >= q75)
    median = active.approxQuantile("n", [0.5], 0.0)[0]
    row = active.orderBy(F.abs(F.col("n") - F.lit(median)), "user_id").first()
    return int(row.user_id)


def genre_profile(ratings: DataFrame, movies: DataFrame, user_id: int) -> list[dict]:
    """The user's number of ratings and mean rating per genre (a movie counts in each of its genres)."""
    mine = ratings.where(F.col("user_id") == user_id).join(movies.select("movie_id", "genres"), "movie_id")
    rows = (mine.select("rating", F.explode("genres").alias("genre")).groupBy("genre")
            .agg(F.count(F.lit(1)).alias("count"), F.avg("rating").alias("mean_rating"))
            .orderBy(F.desc("count"), "genre").collect())
    return [r.asDict() for r in rows]


def user_lists(model: ALSModel, ratings: DataFrame, movies: DataFrame, user_id: int, n: int,
               genres: list[str], per_genre: int) -> tuple[list[dict], list[dict]]:
    """The user's top-n and, per genre of `genres` (in that order), the per_genre best unseen movies of that
    genre: the lists `mfspark recommend` writes for the user (`ALSModel.recommend_for_users`,
    `recommend.lists.genre_rows`: the engine, ranked by the model's unclipped score, ties by smaller movie id),
    every movie the user rated excluded. A user the model has no factors for gets none."""
    spark = ratings.sparkSession
    seen = ratings.where(F.col("user_id") == user_id).select("user_id", "movie_id")
    lists = model.recommend_for_users(spark.createDataFrame([(user_id,)], "user_id int"), n, seen)
    top_n = recommendations_for(lists, movies, user_id, n)
    if not genres:
        return top_n, []
    favourites = spark.createDataFrame([(user_id, genre, rank) for rank, genre in enumerate(genres, start=1)],
                                       "user_id int, genre string, genre_rank int")
    rows = genre_rows(model.user_factors, model.item_factors, seen, movies.select("movie_id", "genres"), favourites,
                      per_genre, model.list_baseline)
    order = {genre: i for i, genre in enumerate(genres)}
    return top_n, sorted(genre_rows_from_output(rows, movies, user_id, per_genre),
                         key=lambda row: (order[row["genre"]], row["rank"]))


def recommendations_for(recs: DataFrame, movies: DataFrame, user_id: int, n: int) -> list[dict]:
    """The user's list from a `mfspark recommend` output (user_id, rank, movie_id, score)."""
    rows = (recs.where((F.col("user_id") == user_id) & (F.col("rank") <= n))
            .join(movies.select("movie_id", "title", "genres"), "movie_id").orderBy("rank").collect())
    return [{"rank": r["rank"], "movie_id": r.movie_id, "title": r.title, "genres": list(r.genres or []),
             "score": float(r.score)} for r in rows]


def genre_rows_from_output(genre_rows: DataFrame, movies: DataFrame, user_id: int, n: int) -> list[dict]:
    """The user's genre rows from a `mfspark recommend` output (user_id, genre, rank, movie_id, score, ...)."""
    rows = (genre_rows.where((F.col("user_id") == user_id) & (F.col("rank") <= n))
            .join(movies.select("movie_id", "title"), "movie_id").orderBy("genre", "rank").collect())
    return [{"genre": r.genre, "rank": r["rank"], "movie_id": r.movie_id, "title": r.title,
             "score": float(r.score)} for r in rows]
