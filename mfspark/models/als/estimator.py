"""Block-partitioned ALS for explicit ratings: the estimator (`ALS.fit`) and `ALSModel`.

Objective (the same as Spark MLlib's, so results compare; ALS-WR weighting):

    sum_(u,i) (r_ui - x_u . y_i)^2 + reg * (sum_u n_u |x_u|^2 + sum_i n_i |y_i|^2)

With `biases=True` the factors fit the residuals of the bias baseline and the model
predicts mu + b_u + b_i + x_u . y_i. The bias baseline is fitted with every model (it is the
"baseline" cold-start path; see `mfspark.models.base` for the prediction rule).
"""

from __future__ import annotations

import gc
import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
from pyspark import RDD, Accumulator, StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from mfspark.errors import ConfigError
from mfspark.models.als import blocks
from mfspark.models.base import DEFAULT_COLD_START, Model, clip_to_scale, with_cold_start
from mfspark.models.bias import BiasModel, BiasParams, baseline_value, fit_biases, with_bias_columns
from mfspark.models.inputs import validate_ratings
from mfspark.runtime.spark_internals import jvm_gc
from mfspark.runtime.storage import HadoopPaths

log = logging.getLogger(__name__)

FACTOR_SCHEMA = "id int, features array<float>"
# What the layout (blocked ratings) and the bias baseline depend on: equal across `fit_each` variants.
LAYOUT_FIELDS = ("num_user_blocks", "num_item_blocks", "storage_level", "biases", "bias_reg_user",
                 "bias_reg_item", "bias_sweeps", "min_rating", "max_rating")


@dataclass
class ALSParams:
    rank: int = 10
    reg: float = 0.1
    max_iter: int = 10
    num_user_blocks: int | None = None  # default: spark.default.parallelism
    num_item_blocks: int | None = None
    seed: int = 0
    nonnegative: bool = False
    checkpoint_interval: int = 10  # iterations between checkpoints of the factors; 0 disables
    storage_level: str = "MEMORY_AND_DISK"
    biases: bool = False
    bias_reg_user: float = 5.0
    bias_reg_item: float = 5.0
    bias_sweeps: int = 2
    min_rating: float | None = 0.5  # rating scale every prediction is clipped to; None: no clipping
    max_rating: float | None = 5.0

    @classmethod
    def from_dict(cls, saved: dict) -> ALSParams:
        """Params from a metadata.json; older ones also hold `cold_start`, now chosen at prediction time."""
        return cls(**{k: v for k, v in saved.items() if k != "cold_start"})

    def validate(self) -> None:
        if self.rank < 1 or self.max_iter < 0 or self.reg < 0:
            raise ConfigError(f"need rank >= 1, max_iter >= 0, reg >= 0 (got {self.rank}, {self.max_iter}, {self.reg})")
        if None not in (self.min_rating, self.max_rating) and self.min_rating > self.max_rating:
            raise ConfigError(f"min_rating {self.min_rating} is above max_rating {self.max_rating}")
        for name in ("num_user_blocks", "num_item_blocks"):
            count = getattr(self, name)
            if count is not None and not 1 <= count <= blocks.MAX_BLOCKS:
                raise ConfigError(f"{name} must be between 1 and {blocks.MAX_BLOCKS}, got {count}")
        if not hasattr(StorageLevel, self.storage_level):
            raise ConfigError(f"unknown storage level '{self.storage_level}'")


@dataclass
class IterationLog:
    iteration: int
    train_rmse: float
    objective: float
    seconds: float


@dataclass
class FitHistory:
    iterations: list[IterationLog] = field(default_factory=list)
    build_seconds: float = 0.0
    fit_seconds: float = 0.0
    num_ratings: int = 0


class ALS:
    """Estimator: `ALS(rank=..., reg=...).fit(ratings)` with ratings (user_id, movie_id, rating)."""

    def __init__(self, **params):
        if "cold_start" in params:
            raise ConfigError("cold_start is chosen at prediction time: model.predict(pairs, cold_start=...)")
        self.params = ALSParams(**params)
        self.params.validate()

    def fit(self, ratings: DataFrame) -> ALSModel:
        """Fit on (user_id, movie_id, rating) rows, checked by `validate_ratings`."""
        (model,) = self.fit_each(ratings, [self.params])
        return model

    def fit_each(self, ratings: DataFrame, variants: Sequence[ALSParams]) -> Iterator[ALSModel]:
        """Fit one model per variant on one layout and one bias baseline, yielding each as it is fitted.

        A grid search (rank x reg, iteration counts) then blocks and shuffles the ratings once
        instead of once per point. Variants may differ in rank, reg, max_iter, seed, nonnegative and
        checkpointing; the fields that shape the layout or the baseline (`LAYOUT_FIELDS`) must equal
        this estimator's. The layout is released when the iteration ends.
        """
        p = self.params
        for variant in variants:
            variant.validate()
            differing = [name for name in LAYOUT_FIELDS if getattr(variant, name) != getattr(p, name)]
            if differing:
                raise ConfigError(f"fit_each: variants share one layout and baseline; they differ in {differing}")
        spark = ratings.sparkSession
        started = time.perf_counter()
        ratings = validate_ratings(ratings)
        baseline = fit_biases(ratings, BiasParams(p.bias_reg_user, p.bias_reg_item, p.bias_sweeps, p.min_rating,
                                                  p.max_rating))
        train = baseline.residual_ratings(ratings) if p.biases else ratings
        parallelism = min(spark.sparkContext.defaultParallelism, blocks.MAX_BLOCKS)
        users, items, num_ratings = blocks.build_layout(
            train, p.num_user_blocks or parallelism, p.num_item_blocks or parallelism,
            getattr(StorageLevel, p.storage_level))
        build_seconds = time.perf_counter() - started
        log.info("ALS layout: %d ratings in %d user x %d item blocks (%.1f s)", num_ratings,
                 users.num_blocks, items.num_blocks, build_seconds)
        try:
            for variant in variants:
                variant_started = time.perf_counter()
                history = FitHistory(num_ratings=num_ratings, build_seconds=build_seconds)
                user_factors, item_factors, checkpoint_file = ALS(**asdict(variant))._alternate(
                    spark, users, items, history)
                if checkpoint_file:  # the model's blocks have their own checkpoint
                    HadoopPaths(spark).delete(checkpoint_file)
                history.fit_seconds = build_seconds + time.perf_counter() - variant_started
                yield ALSModel.from_blocks(spark, variant, user_factors, item_factors, baseline, history)
        finally:
            for side in (users, items):
                side.blocks.unpersist()

    def _alternate(self, spark: SparkSession, users: blocks.Side, items: blocks.Side, history: FitHistory):
        """The ALS loop: each iteration solves the items from the users, then the users from the items.

        (Items first, as MLlib does.) The iterations between two checkpoints are one Spark
        job, a stage per half-step, so the loop pays no per-iteration job or collect. Each
        solve reports its objective terms to an accumulator, which a reporter thread turns
        into per-iteration log lines while the job runs. At the end of every
        `checkpoint_interval` iterations the user factors are checkpointed, so lineage and
        shuffle files stay bounded however many iterations run.
        """
        p = self.params
        level = getattr(StorageLevel, p.storage_level)
        sc = spark.sparkContext
        terms = sc.accumulator({}, blocks.TermsAccumulator())
        reporter = _IterationReporter(terms, users.num_blocks, items.num_blocks, history, p)
        user_solved = blocks.initial_solved_blocks(users, p.rank, p.seed, p.nonnegative)
        # With no iteration at all the model is the starting point.
        item_solved = blocks.initial_solved_blocks(items, p.rank, p.seed + 1, p.nonnegative)
        checkpoint_file, done = None, 0
        for end in _segment_ends(p.max_iter, p.checkpoint_interval):
            previous = user_solved
            for iteration in range(done + 1, end + 1):
                item_solved = blocks.solve_half_step(items, blocks.route_factors(user_solved, items.num_blocks),
                                                     p.rank, p.reg, p.nonnegative, terms, 2 * iteration - 1)
                if iteration == p.max_iter:  # the model's item factors: kept, not recomputed
                    _keep_model_factors(item_solved, level)
                user_solved = blocks.solve_half_step(users, blocks.route_factors(item_solved, users.num_blocks),
                                                     p.rank, p.reg, p.nonnegative, terms, 2 * iteration)
            if end < p.max_iter:
                user_solved.persist(level)
                if p.checkpoint_interval > 0 and end % p.checkpoint_interval == 0:
                    user_solved.checkpoint()
                with reporter.running(sc):
                    user_solved.count()
                if user_solved.isCheckpointed():
                    checkpoint_file = _replace_checkpoint(spark, checkpoint_file, user_solved.getCheckpointFile())
            else:
                _keep_model_factors(user_solved, level)
                with reporter.running(sc):
                    blocks.materialise(user_solved, item_solved)
            reporter.finish(end)
            previous.unpersist()
            done = end
        if p.max_iter == 0:
            for solved in (user_solved, item_solved):
                _keep_model_factors(solved, level)
            blocks.materialise(user_solved, item_solved)
        return user_solved, item_solved, checkpoint_file


def _keep_model_factors(solved: RDD, level: StorageLevel) -> None:
    """Mark the model's final factor blocks to be kept by the job that computes them.

    Persisted, and checkpointed to the checkpoint directory by the job that computes them
    (lineage cut once written): the model's DataFrames read the executors' copies, and the
    blocks of an executor lost after the fit are read back from the checkpoint files.
    (`localCheckpoint`, as MLlib's fit, keeps only the executors' copies: a lost executor left
    a model that could not be read, CHECKPOINT_RDD_BLOCK_ID_NOT_FOUND, tests/test_cluster.py.)
    The files are removed with the model (spark.cleaner.referenceTracking.cleanCheckpoints).
    """
    solved.persist(level)
    solved.checkpoint()


def _segment_ends(max_iter: int, checkpoint_interval: int) -> list[int]:
    """Last iteration of each job: every checkpoint_interval iterations, and the final one."""
    if max_iter == 0:
        return []
    step = checkpoint_interval if checkpoint_interval > 0 else max_iter
    return sorted(set(range(step, max_iter, step)) | {max_iter})


class _IterationReporter:
    """Turns the accumulated objective terms into `IterationLog`s and log lines as iterations complete.

    Iteration i is complete once every item block has reported half-step 2i - 1 and every
    user block half-step 2i; its seconds run from the previous iteration's last task (or the
    job's start) to its own.
    """

    POLL_SECONDS = 0.5

    def __init__(self, terms: Accumulator, num_user_blocks: int, num_item_blocks: int, history: FitHistory,
                 params: ALSParams):
        self.terms, self.history, self.params = terms, history, params
        self.num_blocks = {0: num_user_blocks, 1: num_item_blocks}  # by parity of the half-step
        self.last_end = time.time()
        self.lock = threading.Lock()

    @contextmanager
    def running(self, sc):
        """Poll for completed iterations on a thread while the job inside this block runs."""
        stop = threading.Event()

        def poll():
            while not stop.wait(self.POLL_SECONDS):
                self.report_completed()

        thread = threading.Thread(target=poll, name="als-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def report_completed(self) -> None:
        with self.lock:
            terms = self.terms.value
            while True:
                i = len(self.history.iterations) + 1
                steps = [[terms.get((step, b)) for b in range(self.num_blocks[step % 2])]
                         for step in (2 * i - 1, 2 * i)]
                if i > self.params.max_iter or any(t is None for step in steps for t in step):
                    return
                self._log(i, *steps)

    def finish(self, last_iteration: int) -> None:
        """Report what remains after a job; every iteration up to `last_iteration` must be there."""
        self.report_completed()
        if len(self.history.iterations) < last_iteration:
            raise RuntimeError(f"ALS: objective terms of iteration {len(self.history.iterations) + 1} are missing")

    def _log(self, iteration: int, item_terms: list, user_terms: list) -> None:
        squared_error = sum(t[0] for t in user_terms)
        penalty = sum(t[1] for t in user_terms) + sum(t[1] for t in item_terms)
        end = max(t[2] for t in user_terms)
        entry = IterationLog(iteration, math.sqrt(squared_error / max(self.history.num_ratings, 1)),
                             squared_error + self.params.reg * penalty, max(end - self.last_end, 0.0))
        self.last_end = end
        self.history.iterations.append(entry)
        log.info("ALS iteration %d/%d: train RMSE %.4f, objective %.1f (%.2f s)", iteration, self.params.max_iter,
                 entry.train_rmse, entry.objective, entry.seconds)


def _replace_checkpoint(spark: SparkSession, previous: str | None, current: str | None) -> str | None:
    """Delete the previous checkpoint once a newer one exists, and let the JVM drop old shuffles.

    The checkpointed RDD no longer references earlier iterations, so after a driver GC the
    ContextCleaner removes their shuffle files; without this, long runs fill the disk.
    """
    if previous and previous != current:
        HadoopPaths(spark).delete(previous)
    gc.collect()
    jvm_gc(spark)
    return current


class ALSModel(Model):
    """Trained factors: `user_factors`/`item_factors` DataFrames (id, features array<float>), and the
    bias baseline `baseline` (None only for plain models saved by an older mfspark)."""

    def __init__(self, user_factors: DataFrame, item_factors: DataFrame, params: ALSParams,
                 baseline: BiasModel | None = None, history: FitHistory | None = None):
        self.user_factors = user_factors
        self.item_factors = item_factors
        self.params = params
        self.baseline = baseline
        self.history = history or FitHistory()

    @classmethod
    def from_blocks(cls, spark: SparkSession, params: ALSParams, user_factors: RDD, item_factors: RDD,
                    baseline: BiasModel, history: FitHistory) -> ALSModel:
        """Factor DataFrames over the kept factor blocks (no job here: as MLlib's `toDF` of its factor RDDs).

        Not cached: a cached frame stays registered with Spark until unpersisted, and would keep
        every fitted model's blocks alive; the blocks themselves are kept as long as the model is.
        """
        users, items = (spark.createDataFrame(blocks.factor_rows(solved), FACTOR_SCHEMA)
                        for solved in (user_factors, item_factors))
        return cls(users, items, params, baseline, history)

    @property
    def rank(self) -> int:
        return self.params.rank

    def predict(self, pairs: DataFrame, cold_start: str = DEFAULT_COLD_START) -> DataFrame:
        """Add `prediction` to (user_id, movie_id, ...) rows.

        A pair whose user and movie both have factors gets x_u . y_i (plus mu + b_u + b_i when biased),
        clipped to [min_rating, max_rating]; the others follow `cold_start`: "nan" (NaN, as MLlib),
        "drop" (the row is removed) or "baseline" (mu + b_u + b_i, unknown biases 0, clipped).
        """
        if self.params.biases and self.baseline is None:
            raise ConfigError("this biased model has no bias baseline: it was not saved whole")
        users = self.user_factors.select(F.col("id").alias("user_id"), F.col("features").alias("_uf"))
        items = self.item_factors.select(F.col("id").alias("movie_id"), F.col("features").alias("_if"))
        joined = pairs.join(users, "user_id", "left").join(items, "movie_id", "left")
        dot = F.aggregate(F.zip_with("_uf", "_if", lambda a, b: a * b), F.lit(0.0), lambda acc, v: acc + v)
        known = F.col("_uf").isNotNull() & F.col("_if").isNotNull()
        fallback = None
        if self.baseline is not None:
            joined = with_bias_columns(joined, self.baseline.user_biases, self.baseline.movie_biases)
            fallback = self._clipped(baseline_value(self.baseline.mu))
        score = self._clipped(baseline_value(self.baseline.mu) + dot if self.params.biases else dot)
        predicted = with_cold_start(joined, known, score, fallback, cold_start)
        return predicted.drop("_uf", "_if", "_b_u", "_b_i")

    def _clipped(self, value):
        return clip_to_scale(value, self.params.min_rating, self.params.max_rating)

    def save(self, path: str) -> None:
        """Parquet factors (+ baseline) and JSON metadata under `path` (overwritten)."""
        spark = self.user_factors.sparkSession
        self.user_factors.write.mode("overwrite").parquet(f"{path}/users")
        self.item_factors.write.mode("overwrite").parquet(f"{path}/items")
        if self.baseline is not None:
            self.baseline.save(f"{path}/baseline")
        meta = {"params": asdict(self.params), "history": asdict(self.history), "format": 1}
        HadoopPaths(spark).write_text(f"{path}/metadata.json", json.dumps(meta, indent=2))

    @classmethod
    def load(cls, spark: SparkSession, path: str) -> ALSModel:
        meta = json.loads(HadoopPaths(spark).read_text(f"{path}/metadata.json"))
        params = ALSParams.from_dict(meta["params"])
        baseline = None
        if HadoopPaths(spark).exists(f"{path}/baseline"):
            baseline = BiasModel.load(spark, f"{path}/baseline")
        history = FitHistory(**{**meta["history"],
                                "iterations": [IterationLog(**it) for it in meta["history"]["iterations"]]})
        return cls(spark.read.parquet(f"{path}/users"), spark.read.parquet(f"{path}/items"), params, baseline,
                   history)

    # Recommendation slots: thin delegates to mfspark.recommend (imported late: it builds on this package).
    def recommend_for_users(self, users: DataFrame | None, n: int, exclude: DataFrame | None = None) -> DataFrame:
        """Top-N (user_id, rank, movie_id, score) for `users` (user_id; None: all), never an `exclude` pair."""
        from mfspark.recommend.lists import Baseline, recommend_for_users

        baseline = Baseline.of(self.baseline) if self.params.biases else None
        return recommend_for_users(self.user_factors, self.item_factors, exclude, n, baseline, users)

    def similar_items(self, n: int) -> DataFrame:
        """(movie_id, rank, similar_movie_id, similarity): top-n by cosine of the item factors."""
        from mfspark.recommend.lists import similar_movies

        return similar_movies(self.item_factors, n)

    def fold_in(self, ratings) -> np.ndarray:
        """A new user's factors from (movie_id, rating) rows (pandas or Spark DataFrame, or pairs), items fixed."""
        from mfspark.recommend.foldin import fold_in, rating_pairs
        from mfspark.recommend.lists import Baseline

        baseline = Baseline.of(self.baseline) if self.params.biases else None
        return fold_in(self.item_factors, rating_pairs(ratings), self.params.reg, baseline,
                       self.params.nonnegative).factors
