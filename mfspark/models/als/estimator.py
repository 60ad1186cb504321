"""Block-partitioned ALS for explicit ratings: the estimator (`ALS.fit`) and `ALSModel`.

Objective (the same as Spark MLlib's, so results compare; ALS-WR weighting):

    sum_(u,i) (r_ui - x_u . y_i)^2 + reg * (sum_u n_u |x_u|^2 + sum_i n_i |y_i|^2)

With `biases=True` the model predicts mu + b_u + b_i + x_u . y_i. `bias_fit="baseline"`: the
bias baseline is fitted first and the factors fit its residuals. `bias_fit="learned"`: the
biases are learned inside ALS, each side solving [x_u, b_u] jointly (mu fixed at the global
mean), with bias_reg * b^2 (not scaled by the count) added to the objective:

    sum_(u,i) (r_ui - mu - b_u - b_i - x_u . y_i)^2 + reg * (sum_u n_u |x_u|^2 + sum_i n_i |y_i|^2)
        + bias_reg_user * sum_u b_u^2 + bias_reg_item * sum_i b_i^2

`rated_weight` w > 0 (learned biases) adds who rated what (the rated indicator; the literature's
"implicit information", not implicit feedback), as a
collective factorisation of the rated-indicator matrix N (1 where u rated i in the training
ratings, 0 elsewhere, every cell) with its own item factors z_i:

    + w * sum_(u, every i) (N_ui - x_u . z_i)^2 + reg * sum_i n_i |z_i|^2

`rated_sides="both"` fits the transposed indicator too, with rated user factors v_u sharing
the item factors: + w * sum_(every u, i) (N_ui - v_u . y_i)^2 + reg * sum_u n_u |v_u|^2 (cmfrec's
`add_implicit_features`; on ml-latest-small it is what makes the rated indicator pay, see
docs/accuracy.md). `scale_reg=False` (learned biases) replaces every reg * n |f|^2 by a constant reg * |f|^2,
cmfrec's default: with it, reg is on the scale of a count (e.g. 10, not 0.1).

With `implicit=True` the ratings are observations of strength |r| and the model fits
preferences (implicit feedback: Hu, Koren, Volinsky; MLlib's `implicitPrefs`, see
`implicit_kernels`); it predicts the unclipped preference score x_u . y_i.

Every model has the pre-fitted bias baseline: it is the "baseline" cold-start path (see
`mfspark.models.base` for the prediction rule) and gives learned biases their mu. A model that
does not train on it (plain, implicit) fits it on first use, so `fit` pays only for what it trains.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import cache, partial
from typing import ClassVar

import numpy as np
from pyspark import RDD, Accumulator, StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from mfspark.errors import ConfigError, InputError
from mfspark.models.als import blocks, solvers
from mfspark.models.als.foldin import LearnedItems, fold_in, rating_pairs
from mfspark.models.als.ids import IdIndexes
from mfspark.models.als.implicit_kernels import IMPLICIT_SOLVERS
from mfspark.models.base import (
    DEFAULT_COLD_START,
    OBSERVED,
    Model,
    check_scale,
    clip_to_scale,
    resolve_scale,
    with_cold_start,
)
from mfspark.models.bias import BiasModel, BiasParams, baseline_value, fit_biases, with_bias_columns
from mfspark.models.inputs import check_ratings, checkable_while_packing
from mfspark.params import check, param
from mfspark.recommend.lists import Baseline, Candidates, recommend_for_users, similar_movies
from mfspark.recommend.topn import BlockSizes
from mfspark.runtime.fs import HadoopFileSystem
from mfspark.runtime.spark_internals import jvm_gc

log = logging.getLogger(__name__)

FACTOR_SCHEMA = "id int, features array<float>"
# What the layout (blocked ratings) and the bias baseline depend on: equal across `fit_each` variants.
LAYOUT_FIELDS = ("num_user_blocks", "num_item_blocks", "storage_level", "bias_sweeps", "min_rating", "max_rating")
BIAS_FITS = ("baseline", "learned")
RATED_SIDES = ("users", "both")
# `train --preset` / `pipeline --preset`: fixed hyper-parameters chosen on validation splits of several
# releases (docs/accuracy.md, "The accurate preset"); fields not named keep their values.
PRESETS = {
    "accurate": {"rank": 50, "reg": 0.12, "max_iter": 15, "biases": True, "bias_fit": "learned",
                 "bias_reg_user": 5.0, "bias_reg_item": 5.0, "rated_weight": 0.3},
}


STORAGE_LEVELS = tuple(name for name in vars(StorageLevel) if name.isupper())


@dataclass
class ALSParams:
    """ALS's hyper-parameters, each declared once (`mfspark.params`): the options of train, tune, sweep,
    compare-mllib and pipeline, the profile's `[pipeline.als]`/`[pipeline.lists]` tables, parameter files
    (`tune` writes one, `--params` reads it) and docs/configuration.md are derived from these fields."""

    # The rated indicator's fields before they were renamed (they said "implicit", as implicit feedback does): what
    # metadata.json, profiles, parameter files and library calls written before may still use.
    RENAMED: ClassVar[dict[str, str]] = {"implicit_weight": "rated_weight", "implicit_sides": "rated_sides"}

    rank: int = param(10, "number of latent factors", low=1)
    reg: float = param(0.1, "lambda: L2 regularisation, scaled by each user's or movie's rating count (ALS-WR) "
                            "unless --constant-reg", low=0)
    # 0 iterations: the initial factors (library use, e.g. a warm start's mapped factors); commands need >= 1.
    max_iter: int = param(10, "ALS iterations (1 or more; the library also takes 0: the initial factors)", low=0)
    num_user_blocks: int | None = param(None, "user blocks (default: spark.default.parallelism)", kind=int, low=1,
                                        high=blocks.MAX_BLOCKS, option="user-blocks")
    num_item_blocks: int | None = param(None, "movie blocks (default: spark.default.parallelism)", kind=int, low=1,
                                        high=blocks.MAX_BLOCKS, option="item-blocks")
    seed: int = param(0, "seed of the initial factors (commands: --seed, shared with the split)", settable=False)
    nonnegative: bool = param(False, "nonnegative factors (NNLS solves)")
    checkpoint_interval: int = param(10, "iterations between checkpoints of the factors; 0 disables", low=0)
    storage_level: str = param("MEMORY_AND_DISK", "Spark storage level of the cached blocks", choices=STORAGE_LEVELS)
    biases: bool = param(False, "user and movie biases (see --bias-fit)")
    bias_reg_user: float = param(5.0, "reg of the user biases", low=0)
    bias_reg_item: float = param(5.0, "reg of the movie biases", low=0)
    bias_sweeps: int = param(2, "alternating sweeps of the pre-fitted bias baseline", low=1, settable=False)
    # Rating scale every prediction is clipped to; None: no clipping; OBSERVED: the lowest or highest training
    # rating, set by `fit` (the fitted model's params hold the numbers).
    min_rating: float | str | None = param(OBSERVED, "lowest prediction", kind=float, settable=False)
    max_rating: float | str | None = param(OBSERVED, "highest prediction", kind=float, settable=False)
    bias_fit: str = param("baseline", "with biases: baseline (fitted first, factors on its residuals) or learned "
                                      "(inside ALS, jointly with the factors)", choices=BIAS_FITS)
    # Who rated what ("implicit information" in the literature, not implicit feedback): the options keep their
    # old spelling, and saved models, profiles and parameter files with the old keys still load (RENAMED).
    rated_weight: float = param(0.0, "> 0 (with learned biases): also fit who rated what with this weight", low=0,
                                option="implicit-weight")
    rated_sides: str = param("users", "with --implicit-weight: who rated what for the users' factors only, "
                                      "or both sides", choices=RATED_SIDES, option="implicit-sides")
    scale_reg: bool = param(True, "(learned biases only) reg * |f|^2 per entity, not ALS-WR's "
                                  "reg * n * |f|^2 (reg then ~10, not ~0.1)", option="constant-reg", negate=True)
    implicit: bool = param(False, "implicit feedback (Hu/Koren/Volinsky, MLlib's implicitPrefs): ratings are "
                                  "confidences")
    alpha: float = param(1.0, "implicit feedback: confidence 1 + alpha * |rating|", low=0)
    implicit_solver: str = param("cholesky", "implicit feedback: solve each user's and movie's equations exactly "
                                             "(cholesky) or by a few conjugate-gradient steps from the previous "
                                             "iteration's factors (cg: faster at high rank)",
                                 choices=IMPLICIT_SOLVERS)
    cg_steps: int = param(3, "implicit feedback with the cg solver: conjugate-gradient steps per user or movie "
                             "and half-step", low=1)

    @property
    def learned_biases(self) -> bool:
        return self.biases and self.bias_fit == "learned"

    def layout_key(self) -> tuple:
        """What the blocked ratings and the pre-fitted baseline depend on (variants sharing it share a layout).

        The layout holds the baseline's residuals for pre-fitted biases, the ratings otherwise,
        and the baseline (the cold-start path of every model) depends on the bias regs.
        """
        return (*(getattr(self, name) for name in LAYOUT_FIELDS), self.biases and not self.learned_biases,
                self.bias_reg_user, self.bias_reg_item)

    @classmethod
    def from_dict(cls, saved: dict) -> ALSParams:
        """Params from a metadata.json; older ones also hold `cold_start`, now chosen at prediction time, and
        name the rated indicator's fields by their old names (`RENAMED`)."""
        return cls(**{k: v for k, v in renamed(saved).items() if k != "cold_start"})

    def validate(self) -> None:
        """Each field's own bound or choices (`mfspark.params.check`), then what holds between fields."""
        check(self)
        if self.implicit and self.biases:
            raise ConfigError("implicit feedback has no biases (--implicit without --biases)")
        check_scale(self.min_rating, self.max_rating)
        if self.rated_weight > 0 and not self.learned_biases:
            raise ConfigError(f"rated_weight {self.rated_weight} (--implicit-weight) needs learned biases "
                              "(--biases --bias-fit learned)")
        if not self.scale_reg and not self.learned_biases:
            raise ConfigError("a constant reg (--constant-reg) needs learned biases (--biases --bias-fit learned)")
        if self.implicit and self.implicit_solver == "cg" and self.nonnegative:
            raise ConfigError("nonnegative factors need the exact implicit solver (--implicit-solver cholesky)")
        if self.learned_biases and self.nonnegative:
            raise ConfigError("nonnegative factors are not available with learned biases")


def renamed(values: dict) -> dict:
    """`values` with the old field names of `ALSParams.RENAMED` replaced by the new ones."""
    return {ALSParams.RENAMED.get(key, key): value for key, value in values.items()}


def model_name(params: ALSParams) -> str:
    """als, als-biased, als-learned-biases, als-implicit (the rated indicator: the name outputs have always
    carried) or als-implicit-feedback."""
    if params.implicit:
        return "als-implicit-feedback"
    if not params.biases:
        return "als"
    if not params.learned_biases:
        return "als-biased"
    return "als-implicit" if params.rated_weight > 0 else "als-learned-biases"


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
    """Estimator: `ALS(rank=..., reg=...).fit(ratings)` with ratings (user_id, movie_id, rating); the rated
    indicator's old keyword names (`RENAMED`) are still taken."""

    def __init__(self, **params):
        if "cold_start" in params:
            raise ConfigError("cold_start is chosen at prediction time: model.predict(pairs, cold_start=...)")
        self.params = ALSParams(**renamed(params))
        self.params.validate()

    def fit(self, ratings: DataFrame, initial_model: ALSModel | None = None) -> ALSModel:
        """Fit on (user_id, movie_id, rating) rows, checked by `check_ratings` (ids: ints, longs or strings).

        With `initial_model` (a warm start, e.g. last night's model) the users and movies it has
        start from its factors, new ones from the seeded vectors; ones it has that `ratings` lack
        are dropped. Its rank must equal this estimator's.
        """
        (model,) = self.fit_each(ratings, [self.params], initial_model)
        return model

    def fit_each(self, ratings: DataFrame, variants: Sequence[ALSParams],
                 initial_model: ALSModel | None = None) -> Iterator[ALSModel]:
        """Fit one model per variant on one layout and one bias baseline, yielding each as it is fitted.

        A grid search (rank x reg, iteration counts) then blocks and shuffles the ratings once
        instead of once per point. Variants may differ in rank, reg, max_iter, seed, nonnegative,
        checkpointing and rated weight, and be plain or learned-bias models (both block the
        ratings themselves); what shapes the layout or the baseline (`ALSParams.layout_key`) must
        equal this estimator's. The layout is released when the iteration ends.
        """
        p = self.params
        for variant in variants:
            variant.validate()
            if variant.layout_key() != p.layout_key():
                raise ConfigError("fit_each: variants share one layout and baseline; "
                                  f"{variant.layout_key()} differs from {p.layout_key()}")
            if initial_model is not None and initial_model.rank != variant.rank:
                raise ConfigError(f"warm start: the initial model has rank {initial_model.rank}, "
                                  f"this fit rank {variant.rank}")
        spark = ratings.sparkSession
        started = time.perf_counter()
        # The layout's own read checks the ratings when nothing reads them before it (a pre-fitted
        # baseline does) and its casts hide nothing; flagged ratings (or none) get the full check.
        check_first = (p.biases and not p.learned_biases) or not checkable_while_packing(ratings)
        checked = self._layout(ratings, check_first)
        if checked is None:
            checked = self._layout(ratings, check_first=True)
        ratings, baseline, indexes, layout = checked
        # The observed scale: the layout's own count when it holds the ratings, else the baseline's (which was
        # fitted on them, with the same bounds as every variant, LAYOUT_FIELDS).
        scale = (baseline().params.min_rating, baseline().params.max_rating) if p.biases and not p.learned_biases \
            else resolve_scale(p.min_rating, p.max_rating, layout.rating_range)
        if initial_model is not None:
            initial_model = initial_model.encoded(indexes)
        users, items, num_ratings = layout.users, layout.items, layout.num_ratings
        build_seconds = time.perf_counter() - started
        log.info("ALS layout: %d ratings in %d user x %d item blocks (%.1f s)", num_ratings,
                 users.num_blocks, items.num_blocks, build_seconds)
        try:
            for variant in variants:
                variant_started = time.perf_counter()
                history = FitHistory(num_ratings=num_ratings, build_seconds=build_seconds)
                user_factors, item_factors, checkpoint_files = ALS(**asdict(variant))._alternate(
                    spark, users, items, baseline, history, initial_model)
                for checkpoint_file in checkpoint_files:  # the model's blocks have their own checkpoint
                    HadoopFileSystem(spark).delete(checkpoint_file)
                history.fit_seconds = build_seconds + time.perf_counter() - variant_started
                yield ALSModel.from_blocks(spark, replace(variant, min_rating=scale[0], max_rating=scale[1]),
                                           user_factors, item_factors, baseline, history, indexes)
        finally:
            layout.release()

    def _layout(self, ratings: DataFrame, check_first: bool
                ) -> tuple[DataFrame, Callable[[], BiasModel], IdIndexes, blocks.Layout] | None:
        """(checked ratings, deferred baseline, id indexes, layout), or None (layout released) when the
        layout's read of unchecked ratings (`check_first` False) flagged any, or found none."""
        p = self.params
        indexed = ()
        if check_first:
            ratings, indexed = check_ratings(ratings, any_ids=True)
        # Deferred: fitted here only when the factors train on it, else when a model first needs it.
        baseline = cache(lambda: fit_biases(ratings, BiasParams(p.bias_reg_user, p.bias_reg_item, p.bias_sweeps,
                                                                 p.min_rating, p.max_rating)))
        train = baseline().residual_ratings(ratings) if p.biases and not p.learned_biases else ratings
        # Ids that are not ints (strings, longs beyond 2^31-1) are numbered once; int ids need nothing.
        indexes = IdIndexes.build(train, indexed)
        parallelism = min(ratings.sparkSession.sparkContext.defaultParallelism, blocks.MAX_BLOCKS)
        layout = blocks.build_layout(indexes.encode(train), p.num_user_blocks or parallelism,
                                     p.num_item_blocks or parallelism, getattr(StorageLevel, p.storage_level))
        if not check_first and (layout.flagged or not layout.num_ratings):
            layout.release()
            log.info("ALS input: %d ratings with a null, a NaN or infinite rating or an id below 1 (or no ratings):"
                     " running the full input check", layout.flagged)
            return None
        return ratings, baseline, indexes, layout

    def _alternate(self, spark: SparkSession, users: blocks.Side, items: blocks.Side,
                   baseline: Callable[[], BiasModel], history: FitHistory, initial_model: ALSModel | None = None):
        """The ALS loop: each iteration solves the items from the users, then the users from the items.

        (Items first, as MLlib does.) The iterations between two checkpoints are one Spark
        job, a stage per half-step, so the loop pays no per-iteration job or collect. Each
        solve reports its objective terms to an accumulator, which a reporter thread turns
        into per-iteration log lines while the job runs. At the end of every
        `checkpoint_interval` iterations the user factors are checkpointed (with the implicit cg
        solver, which starts each side from its previous factors, the item factors too), so lineage
        and shuffle files stay bounded however many iterations run. Returns (user blocks, item
        blocks, the checkpoint files of the last segment end, which the caller deletes).
        """
        p = self.params
        level = getattr(StorageLevel, p.storage_level)
        sc = spark.sparkContext
        terms = sc.accumulator({}, blocks.TermsAccumulator())
        reporter = _IterationReporter(terms, users.num_blocks, items.num_blocks, history, p)
        mu = baseline().mu if p.learned_biases else 0.0
        user_step, item_step = solvers.half_steps(p.rank, p.reg, p.nonnegative, p.learned_biases, mu,
                                                  p.bias_reg_user, p.bias_reg_item, p.rated_weight,
                                                  p.alpha if p.implicit else None, p.rated_sides, p.scale_reg,
                                                  p.implicit_solver, p.cg_steps)
        user_solved = blocks.initial_solved_blocks(users, user_step, p.seed)
        # With no iteration at all the model is the starting point.
        item_solved = blocks.initial_solved_blocks(items, item_step, p.seed + 1)
        if initial_model is not None:
            user_solved, item_solved = (
                blocks.warm_solved_blocks(seeded, _factor_pairs(previous), side.num_blocks, step)
                for seeded, previous, side, step in ((user_solved, initial_model.user_factors, users, user_step),
                                                     (item_solved, initial_model.item_factors, items, item_step)))
        # A warm solver (implicit cg) starts each half-step from the side's previous factors: every solved
        # side is then read twice (routed to the other side, and as its next start), so each is kept until the
        # job that reads it has run, and at the end of a segment the item factors are kept (and checkpointed)
        # with the users'.
        warm = user_step.warm
        checkpoint_files, done = {}, 0
        for end in _segment_ends(p.max_iter, p.checkpoint_interval):
            spent = [user_solved, item_solved] if warm else [user_solved]  # released after this segment's job
            if warm:
                for solved in spent:
                    solved.persist(level)
            for iteration in range(done + 1, end + 1):
                item_solved = blocks.solve_half_step(items, blocks.route_factors(user_solved, items.num_blocks),
                                                     item_step, user_step.width, terms, 2 * iteration - 1,
                                                     item_solved if warm else None)
                if iteration == p.max_iter:  # the model's item factors: kept, not recomputed
                    _keep_model_factors(item_solved, level)
                user_solved = blocks.solve_half_step(users, blocks.route_factors(item_solved, users.num_blocks),
                                                     user_step, item_step.width, terms, 2 * iteration,
                                                     user_solved if warm else None)
                if warm and iteration < end:
                    spent += [item_solved.persist(level), user_solved.persist(level)]
            if end < p.max_iter:
                kept = {"users": user_solved, "items": item_solved} if warm else {"users": user_solved}
                for solved in kept.values():
                    solved.persist(level)
                    if p.checkpoint_interval > 0 and end % p.checkpoint_interval == 0:
                        solved.checkpoint()
                with reporter.running(sc):
                    blocks.materialise(*kept.values())
                for name, solved in kept.items():
                    if solved.isCheckpointed():
                        checkpoint_files[name] = _replace_checkpoint(spark, checkpoint_files.get(name),
                                                                     solved.getCheckpointFile())
            else:
                _keep_model_factors(user_solved, level)
                with reporter.running(sc):
                    blocks.materialise(user_solved, item_solved)
            reporter.finish(end)
            for solved in spent:
                solved.unpersist()
            done = end
        if p.max_iter == 0:
            for solved in (user_solved, item_solved):
                _keep_model_factors(solved, level)
            blocks.materialise(user_solved, item_solved)
        return user_solved, item_solved, list(checkpoint_files.values())


def _read_metadata(spark: SparkSession, path: str) -> dict:
    """A saved model's metadata.json, or an InputError naming the path when it is missing or not ours."""
    paths = HadoopFileSystem(spark)
    if not paths.exists(f"{path}/metadata.json"):
        raise InputError(f"{path} holds no ALS model (no metadata.json)")
    try:
        meta = json.loads(paths.read_text(f"{path}/metadata.json"))
    except ValueError as exc:
        raise InputError(f"{path}/metadata.json is not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("params"), dict):
        raise InputError(f"{path}/metadata.json is not an mfspark ALS model's metadata (no params)")
    return meta


def check_factor_ranks(path: str, rank: int, users: DataFrame, items: DataFrame) -> None:
    """Every saved factor row has the model's rank (one job over both small tables)."""
    length = F.size("features")
    lengths = users.select(F.lit("users").alias("side"), length.alias("n")).union(
        items.select(F.lit("items").alias("side"), length.alias("n")))
    found = {row["side"]: (row["lo"], row["hi"])
             for row in lengths.groupBy("side").agg(F.min("n").alias("lo"), F.max("n").alias("hi")).collect()}
    wrong = {side: bounds for side, bounds in found.items() if bounds != (rank, rank)}
    if wrong:
        shown = ", ".join(f"{side} {lo}" if lo == hi else f"{side} {lo} to {hi}"
                          for side, (lo, hi) in sorted(wrong.items()))
        raise InputError(f"{path}: the model has rank {rank} but its factors do not ({shown}): "
                         "users and movies must have the same rank")


def _factor_pairs(factors: DataFrame) -> RDD:
    """(id, features) pairs of a model's factor table, for a warm start."""
    return factors.select("id", "features").rdd.map(tuple)


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
                             squared_error + penalty, max(end - self.last_end, 0.0))
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
        HadoopFileSystem(spark).delete(previous)
    gc.collect()
    jvm_gc(spark)
    return current


class ALSModel(Model):
    """Trained factors: `user_factors`/`item_factors` DataFrames (id, features array<float>), and the
    bias baseline `baseline` (None only for plain models saved by an older mfspark; given as a
    zero-argument function, it is fitted on first use).

    With learned biases, `learned_biases` holds the biases fitted inside ALS (a BiasModel: mu,
    user and movie tables), which known pairs are scored with; `baseline` stays the cold-start
    path. The rated-indicator model also keeps the items' rated factors `rated_factors` (id,
    features) and their Gram Z^T Z `rated_gram`, which folding in a new user needs.

    The factor (and bias) tables carry the ids as given to `fit` (int, long or string). `indexes`
    holds the dense index of each id column that is not int (see `mfspark.models.als.ids`); the
    recommendation slots work on the indexed ints and map their lists back.
    """

    def __init__(self, user_factors: DataFrame, item_factors: DataFrame, params: ALSParams,
                 baseline: BiasModel | Callable[[], BiasModel] | None = None, history: FitHistory | None = None,
                 learned_biases: BiasModel | None = None, rated_factors: DataFrame | None = None,
                 rated_gram: np.ndarray | None = None, indexes: IdIndexes | None = None):
        self.user_factors = user_factors
        self.item_factors = item_factors
        self.params = params
        self._baseline = baseline
        self.history = history or FitHistory()
        self.learned_biases = learned_biases
        self.rated_factors = rated_factors
        self.rated_gram = rated_gram
        self.indexes = indexes or IdIndexes()

    @classmethod
    def from_blocks(cls, spark: SparkSession, params: ALSParams, user_factors: RDD, item_factors: RDD,
                    baseline: Callable[[], BiasModel], history: FitHistory, indexes: IdIndexes | None = None
                    ) -> ALSModel:
        """Factor DataFrames over the kept factor blocks (no job here: as MLlib's `toDF` of its factor RDDs).

        Not cached: a cached frame stays registered with Spark until unpersisted, and would keep
        every fitted model's blocks alive; the blocks themselves are kept as long as the model is.
        Learned biases (the column after the factors) become bias tables; the rated-indicator model's
        Z^T Z is summed by one small job. Indexed ids are mapped back to the ids given to `fit`.
        """
        indexes = indexes or IdIndexes()
        k = params.rank
        users, items = (spark.createDataFrame(blocks.factor_rows(solved, 0, k), FACTOR_SCHEMA)
                        for solved in (user_factors, item_factors))
        learned = rated_factors = rated_gram = None
        if params.learned_biases:
            user_biases, movie_biases = (
                spark.createDataFrame(blocks.bias_rows(solved, k), f"{key} int, bias double, count int")
                for solved, key in ((user_factors, "user_id"), (item_factors, "movie_id")))
            user_biases, movie_biases = (indexes.decode(user_biases, "user_id", None),
                                         indexes.decode(movie_biases, None, "movie_id"))
            learned = BiasModel(baseline().mu, user_biases, movie_biases,
                                BiasParams(params.bias_reg_user, params.bias_reg_item, params.max_iter,
                                           params.min_rating, params.max_rating))
        if params.rated_weight > 0:
            rated_factors = indexes.decode(
                spark.createDataFrame(blocks.factor_rows(item_factors, k + 1), FACTOR_SCHEMA), None, "id")
            rated_gram = blocks.summed_gram(item_factors)
            if params.rated_sides == "both":  # [Y^T Y, Z^T Z] stacked
                rated_gram = rated_gram[1]
        users, items = indexes.decode(users, "id", None), indexes.decode(items, None, "id")
        return cls(users, items, params, baseline, history, learned, rated_factors, rated_gram, indexes)

    def encoded(self, indexes: IdIndexes) -> ALSModel:
        """This model with the factor ids numbered by `indexes` (ids the indexes lack dropped), e.g. for
        a warm start or for the int-only recommendation kernels."""
        users, items = indexes.encode(self.user_factors, "id", None), indexes.encode(self.item_factors, None, "id")
        rated = None if self.rated_factors is None else indexes.encode(self.rated_factors, None, "id")
        return ALSModel(users, items, self.params, self._baseline, self.history, self.learned_biases, rated,
                        self.rated_gram)

    @property
    def baseline(self) -> BiasModel | None:
        if callable(self._baseline):
            self._baseline = self._baseline()
        return self._baseline

    @property
    def rank(self) -> int:
        return self.params.rank

    def predict(self, pairs: DataFrame, cold_start: str = DEFAULT_COLD_START) -> DataFrame:
        """Add `prediction` to (user_id, movie_id, ...) rows.

        A pair whose user and movie both have factors gets x_u . y_i (plus mu + b_u + b_i when biased),
        clipped to [min_rating, max_rating]; the others follow `cold_start`: "nan" (NaN, as MLlib),
        "drop" (the row is removed), "baseline" (mu + b_u + b_i of the pre-fitted baseline, unknown
        biases 0, clipped) or "learned" (the same with the learned biases; without them as "baseline").
        An implicit-feedback model predicts preference scores, not ratings: x_u . y_i unclipped,
        and 0 (no preference seen) for unknown pairs under "baseline".
        """
        if self.params.biases and self.scoring_biases is None:
            raise ConfigError("this biased model has no bias tables: it was not saved whole")
        users = self.user_factors.select(F.col("id").alias("user_id"), F.col("features").alias("_uf"))
        items = self.item_factors.select(F.col("id").alias("movie_id"), F.col("features").alias("_if"))
        joined = pairs.join(users, "user_id", "left").join(items, "movie_id", "left")
        dot = F.aggregate(F.zip_with("_uf", "_if", lambda a, b: a * b), F.lit(0.0), lambda acc, v: acc + v)
        known = F.col("_uf").isNotNull() & F.col("_if").isNotNull()
        score = dot
        if self.learned_biases is not None:  # known pairs' biases: the learned ones (renamed out of the way)
            learned = self.learned_biases
            joined = with_bias_columns(joined, learned.user_biases, learned.movie_biases).withColumnsRenamed(
                {"_b_u": "_lb_u", "_b_i": "_lb_i"})
            score = F.lit(learned.mu) + F.col("_lb_u") + F.col("_lb_i") + dot
        fallback = None
        if cold_start == "learned" and self.learned_biases is not None:
            fallback = self._clipped(baseline_value(self.learned_biases.mu, "_lb_u", "_lb_i"))
        elif self.baseline is not None:
            joined = with_bias_columns(joined, self.baseline.user_biases, self.baseline.movie_biases)
            fallback = self._clipped(baseline_value(self.baseline.mu))
            if self.params.biases and self.learned_biases is None:
                score = baseline_value(self.baseline.mu) + dot
        score = self._clipped(score)
        if self.params.implicit:
            score, fallback = dot, F.lit(0.0)
        predicted = with_cold_start(joined, known, score, fallback, cold_start)
        return predicted.drop("_uf", "_if", "_b_u", "_b_i", "_lb_u", "_lb_i")

    @property
    def scoring_biases(self) -> BiasModel | None:
        """The biases known pairs are scored with: the learned ones, else the pre-fitted baseline."""
        return self.learned_biases if self.params.learned_biases else self.baseline

    def _clipped(self, value):
        return clip_to_scale(value, self.params.min_rating, self.params.max_rating)

    def save(self, path: str) -> None:
        """Parquet factors (+ baseline) and JSON metadata under `path` (overwritten)."""
        spark = self.user_factors.sparkSession
        self.user_factors.write.mode("overwrite").parquet(f"{path}/users")
        self.item_factors.write.mode("overwrite").parquet(f"{path}/items")
        if self.baseline is not None:
            self.baseline.save(f"{path}/baseline")
        self.indexes.save(f"{path}/index")
        meta = {"params": asdict(self.params), "history": asdict(self.history), "format": 1}
        if self.learned_biases is not None:
            self.learned_biases.save(f"{path}/learned_biases")
        if self.rated_factors is not None:
            # On-disk names of before the rename (directory `implicit`, key `implicit_gram`): old models load.
            self.rated_factors.write.mode("overwrite").parquet(f"{path}/implicit")
            meta["implicit_gram"] = np.asarray(self.rated_gram).tolist()
        HadoopFileSystem(spark).write_text(f"{path}/metadata.json", json.dumps(meta, indent=2))

    @classmethod
    def load(cls, spark: SparkSession, path: str) -> ALSModel:
        """The model `save` wrote under `path`; refused in one line when `path` holds none, or its users' and
        movies' factors do not have the model's rank (scoring would read past or ignore components)."""
        meta = _read_metadata(spark, path)
        params = ALSParams.from_dict(meta["params"])
        baseline = None
        if HadoopFileSystem(spark).exists(f"{path}/baseline"):  # read when first used (`baseline`): an unbiased
            baseline = partial(BiasModel.load, spark, f"{path}/baseline")  # model's lists never need it
        history = FitHistory(**{**meta["history"],
                                "iterations": [IterationLog(**it) for it in meta["history"]["iterations"]]})
        learned = BiasModel.load(spark, f"{path}/learned_biases") if params.learned_biases else None
        rated_factors = rated_gram = None
        if params.rated_weight > 0:
            rated_factors, rated_gram = spark.read.parquet(f"{path}/implicit"), np.array(meta["implicit_gram"])
        indexes = IdIndexes.load(spark, f"{path}/index", HadoopFileSystem(spark).exists)
        users, items = spark.read.parquet(f"{path}/users"), spark.read.parquet(f"{path}/items")
        check_factor_ranks(path, params.rank, users, items)
        return cls(users, items, params, baseline, history, learned, rated_factors, rated_gram, indexes)

    @property
    def list_baseline(self) -> Baseline | None:
        """The bias part of its lists' scores (`recommend.lists`): the scoring biases of a biased model, else None."""
        return Baseline.of(self.scoring_biases) if self.params.biases else None

    # Recommendation slots: thin delegates to the engine over factor tables (mfspark.recommend) and to fold-in.
    def recommend_for_users(self, users: DataFrame | None, n: int, exclude: DataFrame | None = None, *,
                            candidates: Candidates | None = None, sizes: BlockSizes | None = None) -> DataFrame:
        """Top-N (user_id, rank, movie_id, score) for `users` (user_id; None: all), never an `exclude` pair;
        `candidates` (movie_id allow/block lists) and `sizes` as `recommend.lists.recommend_for_users`. The one
        route from this model to its lists (`models.als.lists.write_top_n` comes here): ids outside int go
        through the fit's index both ways."""
        baseline = self.list_baseline
        if not self.indexes.any:
            return recommend_for_users(self.user_factors, self.item_factors, exclude, n, baseline, users,
                                       candidates, sizes)
        ints = self.encoded(self.indexes)
        if baseline is not None:
            baseline = replace(baseline, user_biases=self.indexes.encode(baseline.user_biases, "user_id", None),
                               movie_biases=self.indexes.encode(baseline.movie_biases, None, "movie_id"))
        if candidates is not None:
            candidates = Candidates(*(None if movies is None else self.indexes.encode(movies, None, "movie_id")
                                      for movies in (candidates.allow, candidates.block)))
        lists = recommend_for_users(ints.user_factors, ints.item_factors,
                                    None if exclude is None else self.indexes.encode(exclude), n, baseline,
                                    None if users is None else self.indexes.encode(users, "user_id", None),
                                    candidates, sizes)
        return self.indexes.decode(lists)

    def similar_items(self, n: int, movies: DataFrame | None = None,
                      candidates: Candidates | None = None) -> DataFrame:
        """(movie_id, rank, similar_movie_id, similarity): top-n by cosine of the item factors, for `movies`
        (movie_id; None: all), the neighbours among `candidates` (None: all)."""
        encode = self.indexes.encode
        if movies is not None and self.indexes.any:
            movies = encode(movies, None, "movie_id")
        if candidates is not None and self.indexes.any:
            candidates = Candidates(*(None if allowed is None else encode(allowed, None, "movie_id")
                                      for allowed in (candidates.allow, candidates.block)))
        similar = similar_movies(self.encoded(self.indexes).item_factors, n, movies=movies, candidates=candidates)
        return self.indexes.decode(self.indexes.decode(similar, None, "movie_id"), None, "similar_movie_id")

    def fold_in(self, ratings) -> np.ndarray:
        """A new user's factors from (movie_id, rating) rows (pandas or Spark DataFrame, or pairs), items fixed."""
        return self.folded_user(ratings).factors

    def folded_user(self, ratings):
        """`fold_in` with the new user's bias and how many of the ratings the model could use (a FoldedUser)."""
        learned = None
        if self.params.learned_biases:
            learned = LearnedItems(self.params.bias_reg_user, self.rated_factors, self.rated_gram,
                                   self.params.rated_weight, self.params.scale_reg)
        return fold_in(self.item_factors, rating_pairs(ratings), self.params.reg, self.list_baseline,
                       self.params.nonnegative, learned, self.params.alpha if self.params.implicit else None)
