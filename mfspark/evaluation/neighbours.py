"""How acceptable a model's similar movies are to a person, by two numbers over (movie, neighbour) pairs:

- genre agreement: the share of pairs whose genre lists share at least one genre (MovieLens genres, as ingested);
- co-watch lift: P(both) / (P(movie) P(neighbour)) over the users of `watched`, i.e. N n_ab / (n_a n_b) with N the
  users, n_a and n_b the users who watched each and n_ab those who watched both; averaged over the pairs (1: as
  often watched together as chance; a pair nobody watched together: 0).

The pairs are those of the `count` most-watched movies (the report: 200, 10 neighbours each), so only a few
thousand rows are joined to the ratings and one row of averages reaches the driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import functions as F

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def most_watched(watched: DataFrame, count: int) -> DataFrame:
    """(movie_id) of the `count` movies with the most distinct users in `watched` (user_id, movie_id), ties by the
    smaller id."""
    users = watched.select("user_id", "movie_id").distinct().groupBy("movie_id").count()
    return users.orderBy(F.desc("count"), "movie_id").limit(count).select("movie_id")


def neighbour_quality(pairs: DataFrame, genres: DataFrame, watched: DataFrame) -> dict[str, float]:
    """genre_agreement, lift (means over `pairs`: movie_id, similar_movie_id) and `pairs` (how many), with genres
    from `genres` (movie_id, genres) and who watched what from `watched` (user_id, movie_id)."""
    watched = watched.select("user_id", "movie_id").distinct()
    users = watched.select("user_id").distinct().count()
    pairs = pairs.select(F.col("movie_id").alias("a"), F.col("similar_movie_id").alias("b")).distinct()
    counts = watched.groupBy("movie_id").agg(F.count(F.lit(1)).alias("n"))
    both = (pairs.join(watched.withColumnRenamed("movie_id", "a"), "a")
            .join(watched.withColumnRenamed("movie_id", "b"), ["user_id", "b"])
            .groupBy("a", "b").agg(F.count(F.lit(1)).alias("n_ab")))
    of = {side: genres.select(F.col("movie_id").alias(side), F.col("genres").alias(f"genres_{side}"))
          for side in ("a", "b")}
    scored = (pairs.join(both, ["a", "b"], "left").fillna(0, subset=["n_ab"])
              .join(counts.select(F.col("movie_id").alias("a"), F.col("n").alias("n_a")), "a", "left")
              .join(counts.select(F.col("movie_id").alias("b"), F.col("n").alias("n_b")), "b", "left")
              .join(of["a"], "a", "left").join(of["b"], "b", "left"))
    shared = F.coalesce(F.arrays_overlap("genres_a", "genres_b"), F.lit(False))
    lift = F.coalesce(F.lit(float(users)) * F.col("n_ab") / (F.col("n_a") * F.col("n_b")), F.lit(0.0))
    row = scored.agg(F.count(F.lit(1)).alias("pairs"), F.avg(shared.cast("double")).alias("genre_agreement"),
                     F.avg(lift).alias("lift")).first()
    return {"genre_agreement": row.genre_agreement, "lift": row.lift, "pairs": int(row.pairs)}
