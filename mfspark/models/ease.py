"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data") on Spark: a lists model.

With X the users x movies matrix of liked movies (1 where a user rated the movie >= the liked threshold) and
G = X^T X (co-like counts), EASE is the item-item matrix B minimising |X - X B|^2 + reg |B|^2 with diag(B) = 0.
Its closed form: P = (G + reg I)^-1, B_ij = -P_ij / P_jj (i != j), B_jj = 0. A user's score of movie j is
s_uj = sum_(i liked by u) B_ij.

Worked example: two users who both liked movies a and b, one who liked only a: G = [[3, 2], [2, 2]]; with reg 1,
P = inv([[4, 2], [2, 3]]) = [[3, -2], [-2, 4]] / 8, so B_ab = 2/4 = 0.5 and B_ba = 2/3: the third user's score
of b is B_ab = 0.5 (a co-liked movie), of a itself nothing (excluded as seen).

Where each part runs:
- G: a Spark aggregation. The users (their liked movies, as indices into the modelled movies) are coalesced to
  one partition per core; each partition adds X_p^T X_p, one user's co-likes at a time (|items|^2 cells, not a
  dense row x n product), into one dense n x n block; the blocks are summed by a tree
  reduce. The ratings are never collected: the driver receives n x n counts per partition.
- P and B: numpy on the driver (n x n doubles: 800 MB at the default cap of 10,000 movies; the inverse of 5,774
  movies takes 14-20 s on 2 cores, and a Cholesky route (LAPACK potrf + potri, or + trtri and a product) measured
  no faster here). The catalogue is capped by `max_items`: the movies liked by the most users; the others get no
  EASE score (they are never in an EASE list) and the cap is logged.
- Scores: our top-N engine (`mfspark.recommend.lists`) with each user's liked row (0/1 over the n movies) as the
  query vector and B's column j as movie j's vector, so x_u . B[:, j] = s_uj and seen movies are excluded the
  same way as for ALS. Similar movies: the one-hot row of movie i as the query, so the score of j is B_ij.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from mfspark.errors import ConfigError, InputError
from mfspark.params import check, param
from mfspark.recommend.lists import Candidates, recommend_for_users
from mfspark.recommend.topn import BlockSizes
from mfspark.runtime.fs import HadoopFileSystem

log = logging.getLogger(__name__)

FORMAT = "mfspark-ease/1"


@dataclass(frozen=True)
class EASEParams:
    """EASE's parameters (`mfspark.params`: options, profile table `[pipeline.ease]`, parameter files)."""

    # reg 200 and ratings >= 3: the best on validation of the pipeline's split of ml-latest-small (docs/accuracy.md,
    # "Ranking quality"; ratings >= 3 beat >= 3.5 and >= 4 at every reg tried).
    reg: float = param(200.0, "EASE's lambda: L2 weight on the item-item matrix (MovieLens: a few hundred)", low=0,
                       option="ease-reg")
    max_items: int = param(10_000, "catalogue cap: the movies liked by the most users are modelled (the driver "
                                   "holds max_items^2 doubles: 10,000 -> 800 MB)", low=1, option="ease-max-items")
    min_rating: float = param(3.0, "ratings >= this count as liked (the rows of X)", low=0, option="ease-min-rating")

    @property
    def layout(self) -> tuple[int, float]:
        """What the Gram matrix depends on (variants sharing it are fitted from one: `EASE.fit_each`)."""
        return self.max_items, self.min_rating

    def validate(self) -> None:
        check(self)
        if not self.reg > 0:  # G + 0 I is singular whenever two movies have the same likers
            raise ConfigError(f"reg (--ease-reg) must be above 0, got {self.reg}")


class EASE:
    def __init__(self, params: EASEParams | None = None, **changes):
        self.params = EASEParams(**changes) if params is None else params
        self.params.validate()

    def fit(self, liked: DataFrame) -> EASEModel:
        """The model of `liked` (user_id, movie_id): each row one liked pair (duplicates count once; the caller
        keeps the ratings >= params.min_rating)."""
        return next(self.fit_each(liked, [self.params]))

    def fit_each(self, liked: DataFrame, variants: list[EASEParams]) -> Iterator[EASEModel]:
        """One model per variant, lazily (regs may differ, `max_items` must not): the Gram matrix is summed once
        and only the n x n inverse is computed per variant, when the caller asks for it (one B in memory at a
        time while a search scores them)."""
        if {v.layout for v in variants} != {self.params.layout}:
            raise ConfigError("EASE.fit_each: every variant must share max_items and min_rating")
        started = time.perf_counter()
        pairs = liked.select(F.col("user_id").cast("int"), F.col("movie_id").cast("int")).distinct()
        movies = modelled_movies(pairs, self.params.max_items)
        if not movies:
            raise InputError("EASE: no liked ratings to fit")
        index = pairs.sparkSession.createDataFrame(
            pd.DataFrame({"movie_id": movies, "index": np.arange(len(movies), dtype=np.int32)}),
            "movie_id int, index int")
        users = (pairs.join(F.broadcast(index), "movie_id")
                 .groupBy("user_id").agg(F.sort_array(F.collect_list("index")).alias("items"))).cache()
        gram = gram_matrix(users, len(movies))
        log.info("EASE: %d movies modelled (cap %d), %d users, Gram matrix in %.1f s", len(movies),
                 self.params.max_items, users.count(), time.perf_counter() - started)
        for variant in variants:
            variant.validate()
            weights = ease_weights(gram, variant.reg).astype(np.float32)
            log.info("EASE reg %g fitted (%.1f s so far)", variant.reg, time.perf_counter() - started)
            yield EASEModel(variant, np.asarray(movies, dtype=np.int32), weights, users)


def modelled_movies(pairs: DataFrame, cap: int) -> list[int]:
    """The movie ids EASE models, most liked first (ties by id), at most `cap` (only counts reach the driver)."""
    counts = pairs.groupBy("movie_id").count().orderBy(F.desc("count"), "movie_id")
    total = counts.count()
    if total > cap:
        log.warning("EASE: %d liked movies, modelling the %d liked by the most users (max_items)", total, cap)
    return sorted(int(row.movie_id) for row in counts.limit(cap).collect())


def gram_matrix(users: DataFrame, n: int) -> np.ndarray:
    """G = X^T X (float64, n x n) from (user_id, items: sorted indices) rows: one dense sum per partition (one
    partition per core: each ships n x n counts), summed pairwise on the executors (treeReduce), so only n x n
    numbers come to the driver."""
    def partial(rows):
        total = np.zeros((n, n), dtype=np.float32)  # counts stay exact in float32 up to 2^24 users
        for row in rows:
            items = np.asarray(row.items, dtype=np.int64)
            total[np.ix_(items, items)] += 1.0  # the user's co-likes only (distinct items: each cell once)
        yield total

    cores = users.sparkSession.sparkContext.defaultParallelism
    return users.coalesce(cores).rdd.mapPartitions(partial).treeReduce(np.add).astype(np.float64)


def ease_weights(gram: np.ndarray, reg: float) -> np.ndarray:
    """B from G: P = (G + reg I)^-1, B = -P / diag(P) column-wise, diag(B) = 0 (Steck 2019, eq. 8)."""
    inverse = np.linalg.inv(gram + reg * np.eye(len(gram)))
    weights = -inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


class EASEModel:
    """A fitted EASE: the modelled movie ids, B (float32) and the training users' liked movies."""

    def __init__(self, params: EASEParams, movies: np.ndarray, weights: np.ndarray, users: DataFrame):
        self.params, self.movies, self.weights, self.users = params, movies, weights, users
        self.baseline = None  # no bias part: cold-start users get the popularity lists (write_top_n)
        self.list_baseline = None

    @property
    def spark(self) -> SparkSession:
        return self.users.sparkSession

    @property
    def user_factors(self) -> DataFrame:
        """(id, features): each training user's 0/1 row over the modelled movies (the query of the engine)."""
        n = len(self.movies)
        return self.users.select(F.col("user_id").alias("id"), F.transform(
            F.sequence(F.lit(0), F.lit(n - 1)),
            lambda i: F.when(F.array_contains("items", i), 1.0).otherwise(0.0).cast("float")).alias("features"))

    @cached_property
    def item_factors(self) -> DataFrame:
        """(id, features): movie j with B's column j, so that user row . column = the EASE score. Built once per
        model: each list or evaluation of it reuses the same n x n table."""
        return self._rows(self.weights.T)

    def _rows(self, matrix: np.ndarray, ids: np.ndarray | None = None) -> DataFrame:
        """(id, features) of `matrix`'s rows (ids: the movies), handed to Spark as one Arrow table built on the
        flat float32 buffer (a pandas frame of n arrays converts row by row: 8 s for 5,774 x 5,774)."""
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        features = pa.ListArray.from_arrays(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32),
                                            pa.array(matrix.ravel()))
        ids = self.movies if ids is None else ids
        table = pa.table({"id": pa.array(ids, pa.int32()), "features": features})
        return self.spark.createDataFrame(table, "id int, features array<float>")

    def recommend_for_users(self, users: DataFrame | None, n: int, exclude: DataFrame | None = None, *,
                            candidates: Candidates | None = None, sizes: BlockSizes | None = None) -> DataFrame:
        """Top-N (user_id, rank, movie_id, score) for `users` (user_id; None: all), never an `exclude` pair;
        `candidates` and `sizes` as `recommend.lists.recommend_for_users` (the same call as `ALSModel`'s)."""
        return recommend_for_users(self.user_factors, self.item_factors, exclude, n, None, users, candidates, sizes)

    def similar_items(self, n: int, movies: DataFrame | None = None,
                      candidates: Candidates | None = None) -> DataFrame:
        """(movie_id, rank, similar_movie_id, similarity): the n largest B_ij of each movie i (what liking i adds
        to j's score), i itself excluded; for `movies` (movie_id; None: every modelled movie; the ids come to the
        driver, a query row each), the neighbours among `candidates` (None: all)."""
        rows = np.arange(len(self.movies)) if movies is None else np.flatnonzero(np.isin(self.movies, [
            row.movie_id for row in movies.select("movie_id").distinct().collect()]))
        one_hot = self._rows(np.eye(len(self.movies), dtype=np.float32)[rows], self.movies[rows])
        itself = one_hot.select(F.col("id").alias("user_id"), F.col("id").alias("movie_id"))
        lists = recommend_for_users(one_hot, self.item_factors, itself, n, candidates=candidates)
        return lists.select(F.col("user_id").alias("movie_id"), "rank", F.col("movie_id").alias("similar_movie_id"),
                            F.col("score").alias("similarity"))

    def save(self, path: str) -> None:
        """`path/items` (movie_id, weights: B's row), `path/users` (user_id, items) and `path/metadata.json`."""
        frame = pd.DataFrame({"movie_id": self.movies, "weights": list(self.weights)})
        self.spark.createDataFrame(frame, "movie_id int, weights array<float>").write.parquet(f"{path}/items")
        self.users.write.parquet(f"{path}/users")
        HadoopFileSystem(self.spark).write_text(f"{path}/metadata.json", json.dumps(
            {"format": FORMAT, "model": "ease", "params": asdict(self.params), "movies": len(self.movies)}, indent=2))

    @classmethod
    def load(cls, spark: SparkSession, path: str) -> EASEModel:
        meta = json.loads(HadoopFileSystem(spark).read_text(f"{path}/metadata.json"))
        if meta.get("format") != FORMAT:
            raise InputError(f"{path}/metadata.json is not an EASE model ({FORMAT})")
        items = spark.read.parquet(f"{path}/items").toPandas().sort_values("movie_id")  # n rows: the model itself
        weights = np.stack(items["weights"].to_numpy()).astype(np.float32)
        return cls(EASEParams(**meta["params"]), items["movie_id"].to_numpy(np.int32), weights,
                   spark.read.parquet(f"{path}/users"))
