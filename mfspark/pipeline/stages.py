"""The pipeline's stages: what each one computes, what it depends on, and its key.

A stage's key hashes its parameters, its upstream stages' keys and the identity of the code (a hash of
every source file of the package), so equal keys mean equal outputs: a code change reruns every stage.
The ingest stage's parameters include the input files' md5.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from mfspark.data.ingest import DEFAULT_MAX_REJECT_FRACTION, describe_input, ingest_release, input_files
from mfspark.data.movielens import detect_release, release_named
from mfspark.errors import ConfigError
from mfspark.evaluation import split as splits
from mfspark.evaluation.metrics import held_out_ranking, rating_metrics, training_catalog
from mfspark.evaluation.tuning import ListsGrid, best_list_row, list_point, point_key, score_lists, search_lists
from mfspark.models.als.estimator import ALS, ALSModel, ALSParams, model_name
from mfspark.models.base import COLD_START_STRATEGIES, DEFAULT_COLD_START
from mfspark.models.bias import BiasModel, BiasParams
from mfspark.models.ease import EASEModel, EASEParams
from mfspark.models.lists_model import IMPLICIT_LISTS, LIKED_MIN_RATING, fit_lists_model, load_model, save_lists_model
from mfspark.params import settable_names
from mfspark.pipeline.layout import stage_location
from mfspark.runtime.commit import check_parquet_table
from mfspark.runtime.fs import FileSystem, join

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

RATING_COLUMNS = ("user_id", "movie_id", "rating", "rated_at")
RANKING_K = 10  # the evaluate stage's list length, as the report's ranking columns (precision@10, ...)
# The lists' model: implicit-feedback ALS on the ratings >= 4 (who liked what). On ml-latest-small's temporal
# split its top-10 lists beat popularity (precision@10 0.084 vs 0.057) where the rating-value models rank far
# below it (biased ALS 0.011, plain 0.0025): docs/accuracy.md, "Ranking quality".
# "ease": EASE (mfspark.models.ease) on the same liked ratings; on ml-latest-small's default split it ranks best
# (docs/accuracy.md, "Ranking quality").
# "auto": the train_lists stage searches AUTO_LISTS_GRID on a validation part of the training ratings and fits the
# best by NDCG@10 (`mfspark.evaluation.tuning.search_lists`, as `mfspark tune --lists`).
LIST_MODELS = ("implicit", "ease", "auto", "ratings")
# Its candidates: the implicit default and alpha 1, EASE's reg log-spaced (x2) over the few hundreds where MovieLens
# peaks, at two liked thresholds (>= 3 and >= 4; docs/accuracy.md, "Ranking quality").
AUTO_LISTS_GRID = ListsGrid(ranks=(64,), regs=(0.3,), alphas=(0.5, 1.0), ease_regs=(100.0, 200.0, 400.0, 800.0),
                            ease_min_ratings=(3.0, 4.0))
LISTS_ALS = IMPLICIT_LISTS
PIPELINE_ALS = ALSParams(biases=True)  # the train stage's model: ALS on the bias baseline's residuals
# What options, profile tables and parameter files may set of each model of the pipeline (mfspark.params):
# the train stage's rating model (implicit feedback is the lists model's), the lists model, the baseline.
ALS_FIELDS = settable_names(ALSParams, exclude=("implicit", "alpha", "implicit_solver", "cg_steps"))
LISTS_FIELDS = ("rank", "reg", "max_iter", "alpha", "implicit_solver", "cg_steps")
BASELINE_FIELDS = ("lambda_u", "lambda_i")


PIPELINE_SPLITS = ("random", "temporal")


@dataclass(frozen=True)
class SplitParams:
    kind: str = "random"  # or "temporal"
    test_fraction: float = 0.2
    seed: int = 42


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a run depends on; `root` is the output root (a local directory or a Hadoop URI)."""

    root: str
    source_dir: Path
    release: str | None = None
    max_reject_fraction: float = DEFAULT_MAX_REJECT_FRACTION
    split: SplitParams = SplitParams()
    bias: BiasParams = BiasParams()
    als: ALSParams = field(default_factory=lambda: replace(PIPELINE_ALS))
    top_n: int = 10  # 0: no recommend stage
    force: bool = False
    max_input_age_hours: float | None = None  # stale-input check, off when None
    run_id: str | None = None  # the scheduler's name for the run directory; None: a new timestamped one
    warm_start: str | None = None  # train: a model directory to start from (e.g. the last run's)
    lists: str = "implicit"  # what recommend's lists come from: the train_lists model, or "ratings": train's
    lists_als: ALSParams = field(default_factory=lambda: replace(LISTS_ALS))
    cold_start: str = DEFAULT_COLD_START  # evaluate: how the ALS model scores test ratings of unseen users/movies
    ease: EASEParams = EASEParams()  # the lists model with lists="ease"
    lists_grid: ListsGrid = AUTO_LISTS_GRID  # the candidates of lists="auto"

    def validate(self) -> None:
        """What the stages would refuse, refused before the first of them runs (a bad rank is not found after
        ingest and the baseline have run)."""
        if not 0 <= self.max_reject_fraction <= 1:
            raise ConfigError(f"--max-reject-fraction must be between 0 and 1, got {self.max_reject_fraction}")
        if self.split.kind not in PIPELINE_SPLITS:
            raise ConfigError(f"split must be one of {', '.join(PIPELINE_SPLITS)}, got '{self.split.kind}'")
        splits.check_fraction(self.split.test_fraction)
        self.bias.validate()
        self.ease.validate()
        for name, model in (("als", self.als), ("lists", self.lists_als)):
            model.validate()
            if model.max_iter < 1:  # zero iterations would publish the random initial factors as a model
                raise ConfigError(f"{name} max_iter must be 1 or more, got {model.max_iter}")
        if self.als.implicit or not self.lists_als.implicit:
            raise ConfigError("the train stage fits rating values and the lists model implicit feedback "
                              "(implicit must be false in [pipeline.als] and true in [pipeline.lists])")
        if self.cold_start not in COLD_START_STRATEGIES:
            raise ConfigError(f"cold_start must be one of {', '.join(COLD_START_STRATEGIES)}, got '{self.cold_start}'")

    @property
    def lists_stage(self) -> str:
        """The stage whose model makes the lists (no lists, top_n 0: no train_lists stage either)."""
        return "train_lists" if self.lists != "ratings" and self.top_n > 0 else "train"

    @property
    def lists_parameters(self) -> dict:
        """What the train_lists stage's output depends on besides the split."""
        if self.lists == "ease":
            return {"model": "ease", "ease": asdict(self.ease)}
        if self.lists == "auto":
            return {"model": "auto", "grid": asdict(self.lists_grid), "als": asdict(self.lists_als),
                    "ease": asdict(self.ease)}
        return {"min_rating": LIKED_MIN_RATING, "model": self.lists, "als": asdict(self.lists_als)}


@dataclass(frozen=True)
class Stage:
    name: str
    parameters: dict  # what the output depends on besides the upstream stages
    upstream: tuple[str, ...]
    run: Callable[[StageContext, str], dict]  # writes the stage's outputs, returns its summary


@dataclass(frozen=True)
class PlannedStage:
    stage: Stage
    key: str
    action: str  # "run", "skip" (done in this run) or "reuse" (linked from an earlier complete run)
    why: str
    source: str | None = None  # the stage directory reused (the original, never another reference)
    source_run: str | None = None  # the run id that wrote it


class StageContext:
    """What the stages share within one process: the filesystem, the run directory and the (cached) split."""

    def __init__(self, spark: SparkSession, fs: FileSystem, config: PipelineConfig, run_dir: str):
        self.spark, self.fs, self.config, self.run_dir = spark, fs, config, run_dir

    def stage_dir(self, name: str) -> str:
        """Where stage `name`'s outputs are (this run's directory, or the earlier run's it reuses)."""
        return stage_location(self.fs, self.run_dir, name)

    @functools.cached_property
    def split(self) -> splits.Split:
        """The ingested ratings split once: baseline, train and evaluate see the same rows."""
        path = join(self.stage_dir("ingest"), "ratings")
        check_parquet_table(self.spark, path, "the ingest stage's ratings")
        ratings = self.spark.read.parquet(path).select(*RATING_COLUMNS)
        p = self.config.split
        [split] = splits.make_splits(ratings, p.kind, test_fraction=p.test_fraction, seed=p.seed)
        return splits.Split(split.name, split.train.cache(), split.test.cache())


# ---------------------------------------------------------------- stages

def run_ingest(ctx: StageContext, out: str) -> dict:
    c = ctx.config
    manifest = ingest_release(ctx.spark, c.source_dir, out, c.release, c.max_reject_fraction, commit=False)
    return {"rows": {table: t["rows"] for table, t in manifest["tables"].items()},
            "rejected": manifest["rejects"]["rows"], "inputs": manifest["inputs"]}


def run_baseline(ctx: StageContext, out: str) -> dict:
    split = ctx.split
    model = BiasModel.fit(split.train, ctx.config.bias)
    model.save(join(out, "biases"))
    metrics = rating_metrics(model.predict(split.test))
    ctx.fs.write_json(join(out, "metrics.json"), metrics)
    return {"rows": {"train": split.train.count(), "test": split.test.count()}, "metrics": metrics}


def run_train(ctx: StageContext, out: str) -> dict:
    warm_start = ctx.config.warm_start
    initial = ALSModel.load(ctx.spark, warm_start) if warm_start else None
    model = ALS(**asdict(ctx.config.als)).fit(ctx.split.train, initial_model=initial)
    model.save(join(out, "factors"))
    history = model.history.iterations
    return {"iterations": len(history), "objective": history[-1].objective if history else None,
            "train_rmse": history[-1].train_rmse if history else None}


def run_train_lists(ctx: StageContext, out: str) -> dict:
    """The lists' model (implicit-feedback ALS, or EASE; with "auto" the best of AUTO_LISTS_GRID on a validation
    part of the training ratings) fitted on the liked training ratings."""
    c = ctx.config
    kind, params, search = c.lists, (c.ease if c.lists == "ease" else c.lists_als), None
    if kind == "auto":
        search = search_lists(ctx.split.train, c.lists_grid.points(c.lists_als, c.ease))
        kind, params = search.best_kind, search.best
        ctx.fs.write_json(join(out, "candidates.json"), {"chosen": {"model": kind, **asdict(params)},
                                                          "candidates": search.points})
    model = fit_lists_model(kind, params, ctx.split.train)
    save_lists_model(model, out)
    summary = {"model": kind, **({"validation": search.points} if search else {})}
    if isinstance(model, EASEModel):
        return summary | {"movies": len(model.movies)}
    return summary | {"rows": {"positives": model.history.num_ratings}, "iterations": len(model.history.iterations)}


def run_evaluate(ctx: StageContext, out: str) -> dict:
    """Held-out RMSE/MAE and top-10 ranking metrics of the ALS model and of the bias baseline, on one split,
    and the ranking metrics of the lists' model when it is the implicit one (`lists`).

    `metrics.json` has the shape of a `mfspark train` output's (split, params, rmse, test), so the
    report reads a run the same way it reads a train directory.
    """
    split, c = ctx.split, ctx.config
    als = ALSModel.load(ctx.spark, join(ctx.stage_dir("train"), "factors"))
    baseline = BiasModel.load(ctx.spark, join(ctx.stage_dir("baseline"), "biases"))
    # What every model's lists share: the catalogue size, and the training pairs each list excludes, written once
    # (the top-N engine reads a local Parquet table of them in its tasks; at 10M ratings about 4 s a model less
    # than converting the cached split's 8M pairs in the JVM each time). The stage's own scratch: removed below,
    # and with the rest of the stage directory when a killed attempt is run again.
    catalog, seen_path = training_catalog(split), join(out, "_train_pairs")
    split.train.select("user_id", "movie_id").write.parquet(seen_path)
    seen = ctx.spark.read.parquet(seen_path)
    metrics = {name: rating_metrics(model.predict(split.test, cold_start))
               | held_out_ranking(model.recommend_for_users, split, RANKING_K, catalog=catalog, seen=seen)
               for name, model, cold_start in (("als", als, c.cold_start), ("baseline", baseline, DEFAULT_COLD_START))}
    if c.lists_stage != "train":
        lists = load_model(ctx.spark, ctx.stage_dir(c.lists_stage))
        metrics["lists"] = held_out_ranking(lists.recommend_for_users, split, RANKING_K, catalog=catalog, seen=seen)
    ctx.fs.delete(seen_path)
    report_view = {
        "model": model_name(c.als), "params": asdict(c.als),
        "rmse": metrics["als"]["rmse"], "mae": metrics["als"]["mae"], "test": metrics["als"],
        "split": asdict(c.split) | splits.cold_start_counts(split), "baseline": metrics["baseline"],
        "lists": metrics.get("lists", metrics["als"]),
        **_lists_candidates(ctx, metrics.get("lists")),
    }
    ctx.fs.write_json(join(out, "metrics.json"), report_view)
    return {"metrics": metrics}


def _lists_candidates(ctx: StageContext, chosen_test: dict | None) -> dict:
    """With --lists auto: every candidate of train_lists/candidates.json with its validation scores and its test
    scores (`test_ndcg`, `test_precision`): each one refitted on all the training ratings and its lists scored on
    the test split, as the chosen one is (its scores: `chosen_test`, the lists model's own)."""
    c = ctx.config
    path = join(ctx.stage_dir(c.lists_stage), "candidates.json")
    if c.lists != "auto" or not ctx.fs.exists(path):
        return {}
    record = ctx.fs.read_json(path)
    chosen = point_key(best_list_row(record["candidates"]))
    others = [(kind, params) for kind, params in c.lists_grid.points(c.lists_als, c.ease)
              if point_key(list_point(kind, params)) != chosen]
    tested = {point_key(row): row for _, _, row in score_lists(ctx.split, others, "test")}
    tested[chosen] = {"test_ndcg": chosen_test["ndcg@10"], "test_precision": chosen_test["precision@10"]}
    record["candidates"] = [row | {name: tested[point_key(row)][name] for name in ("test_ndcg", "test_precision")}
                            for row in record["candidates"]]
    return {"lists_candidates": record}


def run_recommend(ctx: StageContext, out: str) -> dict:
    rows = recommend_top_n(ctx.spark, ctx.stage_dir(ctx.config.lists_stage),
                           ctx.stage_dir("ingest"), out, ctx.config.top_n)
    return {"rows": {"recommendations": rows}}


def recommend_top_n(spark: SparkSession, stage_dir: str, ingest_dir: str, out_dir: str, top_n: int) -> int:
    """Each user's `top_n` unrated movies from the model a stage wrote in `stage_dir` (cold-start users: damped
    popularity), as Parquet under `out_dir`; returns the number of rows."""
    from mfspark.models.als.lists import write_top_n

    model = load_model(spark, stage_dir)
    ratings = spark.read.parquet(f"{ingest_dir}/ratings").select("user_id", "movie_id", "rating")
    return write_top_n(model, ratings, out_dir, top_n).rows


def build_stages(config: PipelineConfig) -> list[Stage]:
    c = config
    release = release_named(c.release) if c.release else detect_release(c.source_dir)
    inputs = {path.name: describe_input(path) for _, path in input_files(c.source_dir, release)}
    split = asdict(c.split)
    stages = [
        Stage("ingest", {"release": release.name, "inputs": {name: {"bytes": i["bytes"], "md5": i["md5"]}
                                                             for name, i in inputs.items()},
                         "max_reject_fraction": c.max_reject_fraction}, (), run_ingest),
        Stage("baseline", {"split": split, "bias": asdict(c.bias)}, ("ingest",), run_baseline),
        Stage("train", {"split": split, "als": asdict(c.als), **({"warm_start": c.warm_start} if c.warm_start else {})},
              ("ingest",), run_train),
    ]
    lists = () if c.lists_stage == "train" else (c.lists_stage,)
    if lists:
        stages.append(Stage("train_lists", {"split": split, **c.lists_parameters}, ("ingest",), run_train_lists))
    stages.append(Stage("evaluate", {"split": split, "ranking_k": RANKING_K, "cold_start": c.cold_start},
                        ("baseline", "train", *lists),
                        run_evaluate))
    if c.top_n > 0:
        stages.append(Stage("recommend", {"top_n": c.top_n}, (c.lists_stage, "ingest"), run_recommend))
    return stages


@functools.cache
def code_identity() -> str:
    """A hash of every source file of the package (read through importlib.resources, so it works from an
    install, an editable checkout or a `--py-files` zip): any code change gives new stage keys."""
    digest = hashlib.sha256()
    pending = [resources.files("mfspark")]
    while pending:
        entry = pending.pop()
        for child in sorted(entry.iterdir(), key=lambda c: c.name):
            if child.is_dir() and child.name != "__pycache__":
                pending.append(child)
            elif child.name.endswith(".py"):
                digest.update(f"{child.name}\0".encode() + child.read_bytes())
    return digest.hexdigest()[:16]


def stage_keys(stages: list[Stage]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for stage in stages:
        text = json.dumps({"stage": stage.name, "parameters": stage.parameters, "code": code_identity(),
                           "upstream": [keys[name] for name in stage.upstream]}, sort_keys=True, default=str)
        keys[stage.name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return keys


