"""Run the stages into `ROOT/runs/<run_id>/<stage>/`, skip what is already done, then move `ROOT/latest`.

Layout of an output root:

    ROOT/runs/<run_id>/<stage>/...        a stage's outputs, with `_SUCCESS` (its key, seconds, summary)
    ROOT/runs/<run_id>/plan.json          the stages' keys, written when the run starts
    ROOT/runs/<run_id>/manifest.json      inputs with checksums, parameters, versions, rows, metrics, seconds
    ROOT/runs/<run_id>/_SUCCESS           the run is complete
    ROOT/latest -> runs/<run_id>          the last complete run (a link swapped in one rename)

`<run_id>` is the scheduler's when one is given (`PipelineConfig.run_id`, e.g. the night's date): a
rerun with the same id resumes that directory, whatever other runs exist; without one it is the
start time and a key prefix.

A stage's key hashes its parameters and its upstream stages' keys (the ingest stage's
parameters include the input files' md5), so equal keys mean equal outputs. A stage is
skipped when the run being resumed already holds it, or linked from an earlier complete run
that does; when every stage matches the latest run there is nothing to do. A killed run
is resumed at its first incomplete stage by the next invocation with the same inputs and
parameters. `latest` moves only after every stage and the manifest are written, so readers
of `ROOT/latest` never see a partial run and, at every instant, see a complete one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

import mfspark
from mfspark.data.ingest import DEFAULT_MAX_REJECT_FRACTION, describe_input, ingest_release, input_files
from mfspark.data.movielens import detect_release, release_named
from mfspark.errors import ConfigError, InputError, MfsparkError, PipelineStageError
from mfspark.evaluation import split as splits
from mfspark.evaluation.metrics import held_out_ranking, rating_metrics
from mfspark.models.als.estimator import ALS, ALSModel, ALSParams, model_name
from mfspark.models.bias import BiasModel, BiasParams
from mfspark.runtime.provenance import versions
from mfspark.runtime.storage import check_parquet_table, local_path, output_lock, pause_point, point_link

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"
RATING_COLUMNS = ("user_id", "movie_id", "rating", "rated_at")
RANKING_K = 10  # the evaluate stage's list length, as the report's ranking columns (precision@10, ...)
# The lists' model: implicit-feedback ALS on the ratings >= 4 (who liked what). On ml-latest-small's temporal
# split its top-10 lists beat popularity (precision@10 0.084 vs 0.057) where the rating-value models rank far
# below it (biased ALS 0.011, plain 0.0025): docs/accuracy.md, "Ranking quality".
LIST_MODELS = ("implicit", "ratings")
LISTS_MIN_RATING = 4.0
LISTS_ALS = ALSParams(rank=10, reg=0.1, max_iter=10, implicit=True, alpha=1.0)
# A run id names one directory under ROOT/runs: no separators, no "." or "..", no leading "-" or ".".
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class SplitParams:
    kind: str = "random"  # or "temporal"
    test_fraction: float = 0.2
    seed: int = 42


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a run depends on; `root` is the output root (a local directory)."""

    root: str
    source_dir: Path
    release: str | None = None
    max_reject_fraction: float = DEFAULT_MAX_REJECT_FRACTION
    split: SplitParams = SplitParams()
    bias: BiasParams = BiasParams()
    als: ALSParams = field(default_factory=lambda: ALSParams(biases=True))
    top_n: int = 10  # 0: no recommend stage
    force: bool = False
    max_input_age_hours: float | None = None  # stale-input check, off when None
    run_id: str | None = None  # the scheduler's name for the run directory; None: a new timestamped one
    warm_start: str | None = None  # train: a model directory to start from (e.g. the last run's)
    lists: str = "implicit"  # what recommend's lists come from: the train_lists model, or "ratings": train's
    lists_als: ALSParams = field(default_factory=lambda: replace(LISTS_ALS))

    @property
    def lists_stage(self) -> str:
        """The stage whose model makes the lists (no lists, top_n 0: no train_lists stage either)."""
        return "train_lists" if self.lists == "implicit" and self.top_n > 0 else "train"


@dataclass(frozen=True)
class Stage:
    name: str
    parameters: dict  # what the output depends on besides the upstream stages
    upstream: tuple[str, ...]
    run: Callable[[StageContext, Path], dict]  # writes the stage's outputs, returns its summary


@dataclass(frozen=True)
class PlannedStage:
    stage: Stage
    key: str
    action: str  # "run", "skip" (done in this run) or "reuse" (linked from an earlier complete run)
    why: str
    source: Path | None = None  # the stage directory reused: <earlier run>/<stage>


class StageContext:
    """What the stages share within one process: the run directory and the (cached) split."""

    def __init__(self, spark: SparkSession, config: PipelineConfig, run_dir: Path):
        self.spark, self.config, self.run_dir = spark, config, run_dir

    def stage_dir(self, name: str) -> Path:
        return self.run_dir / name

    @functools.cached_property
    def split(self) -> splits.Split:
        """The ingested ratings split once: baseline, train and evaluate see the same rows."""
        path = str(self.stage_dir("ingest") / "ratings")
        check_parquet_table(self.spark, path, "the ingest stage's ratings")
        ratings = self.spark.read.parquet(path).select(*RATING_COLUMNS)
        p = self.config.split
        split = (splits.temporal_split(ratings, test_fraction=p.test_fraction) if p.kind == "temporal"
                 else splits.random_split(ratings, p.test_fraction, p.seed))
        return splits.Split(split.name, split.train.cache(), split.test.cache())


# ---------------------------------------------------------------- stages

def run_ingest(ctx: StageContext, out: Path) -> dict:
    c = ctx.config
    manifest = ingest_release(ctx.spark, c.source_dir, str(out), c.release, c.max_reject_fraction)
    return {"rows": {table: t["rows"] for table, t in manifest["tables"].items()},
            "rejected": manifest["rejects"]["rows"], "inputs": manifest["inputs"]}


def run_baseline(ctx: StageContext, out: Path) -> dict:
    split = ctx.split
    model = BiasModel.fit(split.train, ctx.config.bias)
    model.save(str(out / "biases"))
    metrics = rating_metrics(model.predict(split.test))
    write_json_file(out / "metrics.json", metrics)
    return {"rows": {"train": split.train.count(), "test": split.test.count()}, "metrics": metrics}


def run_train(ctx: StageContext, out: Path) -> dict:
    warm_start = ctx.config.warm_start
    initial = ALSModel.load(ctx.spark, warm_start) if warm_start else None
    model = ALS(**asdict(ctx.config.als)).fit(ctx.split.train, initial_model=initial)
    model.save(str(out / "factors"))
    history = model.history.iterations
    return {"iterations": len(history), "objective": history[-1].objective if history else None,
            "train_rmse": history[-1].train_rmse if history else None}


def run_train_lists(ctx: StageContext, out: Path) -> dict:
    """The lists' model: implicit-feedback ALS fitted on the training ratings >= LISTS_MIN_RATING."""
    liked = ctx.split.train.where(F.col("rating") >= LISTS_MIN_RATING)
    model = ALS(**asdict(ctx.config.lists_als)).fit(liked)
    model.save(str(out / "factors"))
    return {"rows": {"positives": model.history.num_ratings}, "iterations": len(model.history.iterations)}


def run_evaluate(ctx: StageContext, out: Path) -> dict:
    """Held-out RMSE/MAE and top-10 ranking metrics of the ALS model and of the bias baseline, on one split,
    and the ranking metrics of the lists' model when it is the implicit one (`lists`).

    `metrics.json` has the shape of a `mfspark train` output's (split, params, rmse, test), so the
    report reads a run the same way it reads a train directory.
    """
    split, c = ctx.split, ctx.config
    als = ALSModel.load(ctx.spark, str(ctx.stage_dir("train") / "factors"))
    baseline = BiasModel.load(ctx.spark, str(ctx.stage_dir("baseline") / "biases"))
    metrics = {name: rating_metrics(model.predict(split.test))
               | held_out_ranking(model.recommend_for_users, split, RANKING_K)
               for name, model in (("als", als), ("baseline", baseline))}
    if c.lists_stage != "train":
        lists = ALSModel.load(ctx.spark, str(ctx.stage_dir(c.lists_stage) / "factors"))
        metrics["lists"] = held_out_ranking(lists.recommend_for_users, split, RANKING_K)
    report_view = {
        "model": model_name(c.als), "params": asdict(c.als),
        "rmse": metrics["als"]["rmse"], "mae": metrics["als"]["mae"], "test": metrics["als"],
        "split": asdict(c.split) | splits.cold_start_counts(split), "baseline": metrics["baseline"],
        "lists": metrics.get("lists", metrics["als"]),
    }
    write_json_file(out / "metrics.json", report_view)
    return {"metrics": metrics}


def run_recommend(ctx: StageContext, out: Path) -> dict:
    rows = recommend_top_n(ctx.spark, str(ctx.stage_dir(ctx.config.lists_stage) / "factors"),
                           str(ctx.stage_dir("ingest")), str(out), ctx.config.top_n)
    return {"rows": {"recommendations": rows}}


def recommend_top_n(spark: SparkSession, model_dir: str, ingest_dir: str, out_dir: str, top_n: int) -> int:
    """Each user's `top_n` unrated movies from the model in `model_dir` (cold-start users: damped popularity),
    as Parquet under `out_dir`; returns the number of rows."""
    from mfspark.recommend.lists import write_top_n

    model = ALSModel.load(spark, model_dir)
    ratings = spark.read.parquet(f"{ingest_dir}/ratings").select("user_id", "movie_id", "rating")
    write_top_n(model, ratings, out_dir, top_n)
    return spark.read.parquet(f"{out_dir}/recommendations").count()


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
        stages.append(Stage("train_lists", {"split": split, "min_rating": LISTS_MIN_RATING, "als": asdict(c.lists_als)},
                            ("ingest",), run_train_lists))
    stages.append(Stage("evaluate", {"split": split, "ranking_k": RANKING_K}, ("baseline", "train", *lists),
                        run_evaluate))
    if c.top_n > 0:
        stages.append(Stage("recommend", {"top_n": c.top_n}, (c.lists_stage, "ingest"), run_recommend))
    return stages


def stage_keys(stages: list[Stage]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for stage in stages:
        text = json.dumps({"stage": stage.name, "parameters": stage.parameters, "mfspark": mfspark.__version__,
                           "upstream": [keys[name] for name in stage.upstream]}, sort_keys=True, default=str)
        keys[stage.name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return keys


# ---------------------------------------------------------------- run directories

def runs_dir(root: Path) -> Path:
    return root / "runs"


def latest_run(root: Path) -> Path | None:
    link = root / "latest"
    return link.resolve() if link.is_symlink() else None


def is_complete(run_dir: Path) -> bool:
    return (run_dir / SUCCESS).is_file()


def stage_done(stage_dir: Path, key: str) -> bool:
    try:
        return json.loads((stage_dir / SUCCESS).read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def complete_runs(root: Path) -> list[Path]:
    """Complete runs, the latest one first, then newest first."""
    found = sorted((p for p in runs_dir(root).glob("*") if p.is_dir() and is_complete(p)), reverse=True)
    latest = latest_run(root)
    return ([latest] if latest in found else []) + [p for p in found if p != latest]


def resumable_run(root: Path, keys: dict[str, str]) -> Path | None:
    """The newest incomplete run started with the same stage keys (a killed run to finish)."""
    for run_dir in sorted(runs_dir(root).glob("*"), reverse=True):
        if run_dir.is_dir() and not is_complete(run_dir) and read_plan_keys(run_dir) == keys:
            return run_dir
    return None


def check_run_id(run_id: str, origin: str = "run id") -> None:
    """Refuse a run id that is not one safe directory name (`origin` says where it came from)."""
    if not RUN_ID.fullmatch(run_id):
        raise ConfigError(f"{origin} {run_id!r} is not a usable run id: it names ROOT/runs/<run id>/, so it must "
                          "be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")


def named_run(root: Path, run_id: str, keys: dict[str, str], force: bool) -> Path | None:
    """The existing directory of the run the scheduler names, to resume (None: it is new).

    A complete run is never rewritten (`latest` may name it): rerunning it is a no-op when its
    stage keys are these, and an error otherwise.
    """
    run_dir = runs_dir(root) / run_id
    if not run_dir.is_dir():
        return None
    if is_complete(run_dir) and (force or read_plan_keys(run_dir) != keys):
        raise ConfigError(f"run {run_id} in {root} is complete with {'' if force else 'other '}inputs and "
                          f"parameters{' (--force)' if force else ''}; a complete run is never rewritten: "
                          "give another run id")
    return run_dir


def read_plan_keys(run_dir: Path) -> dict[str, str] | None:
    try:
        return json.loads((run_dir / "plan.json").read_text()).get("keys")
    except (OSError, ValueError):
        return None


def plan_run(config: PipelineConfig, stages: list[Stage]) -> tuple[Path | None, list[PlannedStage]]:
    """The run directory to resume (or None for a new one) and what happens to each stage, and why."""
    root = Path(config.root)
    keys = stage_keys(stages)
    if config.run_id is not None:
        resumed = named_run(root, config.run_id, keys, config.force)
    else:
        resumed = None if config.force else resumable_run(root, keys)
    earlier = complete_runs(root)
    planned = []
    for stage in stages:
        key = keys[stage.name]
        if config.force:
            planned.append(PlannedStage(stage, key, "run", "--force"))
            continue
        if resumed is not None and stage_done(resumed / stage.name, key):
            planned.append(PlannedStage(stage, key, "skip", f"done in run {resumed.name}, which this run resumes"))
            continue
        source = next((run / stage.name for run in earlier if stage_done(run / stage.name, key)), None)
        if source is not None:
            planned.append(PlannedStage(stage, key, "reuse", f"same inputs and parameters as run {source.parent.name}",
                                        source))
        else:
            planned.append(PlannedStage(stage, key, "run", "no output for these inputs and parameters"
                                        + (f" (resuming run {resumed.name})" if resumed else "")))
    return resumed, planned


def identical_run(planned: list[PlannedStage], resumed: Path | None, run_id: str | None) -> Path | None:
    """The complete run whose own outputs are every stage's (a new run would be a copy of it), if any.

    With a run id only that run counts: the scheduler gets the directory it names.
    """
    sources = {p.source.parent if p.action == "reuse" else resumed if p.action == "skip" else None
               for p in planned}
    same = sources.pop() if len(sources) == 1 else None
    if same is None or not is_complete(same) or (run_id is not None and same.name != run_id):
        return None
    return same


def start_run_dir(root: Path, resumed: Path | None, run_id: str | None, keys: dict[str, str]) -> Path:
    """The run's directory (the resumed one, or a new one named by `run_id` or the time), with this plan."""
    run_dir = resumed or runs_dir(root) / (run_id or f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-"
                                                     f"{keys[list(keys)[-1]][:8]}")
    run_dir.mkdir(parents=True, exist_ok=resumed is not None)
    write_json_file(run_dir / "plan.json", {"keys": keys})
    return run_dir


def remove_abandoned_runs(root: Path, keep: Path) -> None:
    """Incomplete runs other than the one being resumed can never complete: remove them (we hold the lock)."""
    for run_dir in runs_dir(root).glob("*"):
        if run_dir != keep and run_dir.is_dir() and not is_complete(run_dir):
            log.info("removing the abandoned incomplete run %s", run_dir.name)
            shutil.rmtree(run_dir, ignore_errors=True)


def clear(path: Path) -> None:
    """Remove a stage directory left by a killed attempt (a directory or a link)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def write_json_file(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def check_input_age(config: PipelineConfig, stages: list[Stage]) -> None:
    """Stale-input check: refuse input files last modified longer ago than `max_input_age_hours`."""
    if config.max_input_age_hours is None:
        return
    newest = max((config.source_dir / name).stat().st_mtime for name in stages[0].parameters["inputs"])
    age_hours = (time.time() - newest) / 3600
    if age_hours > config.max_input_age_hours:
        raise InputError(f"{config.source_dir}: newest input file is {age_hours:.1f} h old, older than "
                         f"--max-input-age-hours {config.max_input_age_hours:g} (stale input: did the export run?)")


# ---------------------------------------------------------------- the run

def describe_plan(planned: list[PlannedStage]) -> list[dict]:
    return [{"stage": p.stage.name, "action": p.action, "why": p.why, "key": p.key} for p in planned]


def run_pipeline(spark: SparkSession | None, config: PipelineConfig, dry_run: bool = False) -> dict:
    """Run (or with `dry_run`, only plan) the pipeline; returns the run's summary."""
    root = local_path(config.root)
    if root is None:
        raise ConfigError(f"--out {config.root}: the pipeline needs a local output root (it commits by link swap)")
    if config.run_id is not None:
        check_run_id(config.run_id)
    stages = build_stages(config)
    check_input_age(config, stages)
    resumed, planned = plan_run(config, stages)
    for p in planned:
        log.info("plan: %-9s %-6s %s", p.stage.name, p.action, p.why)
    if dry_run:
        return {"dry_run": True, "root": str(root), "run_id": resumed.name if resumed else config.run_id,
                "plan": describe_plan(planned)}
    with output_lock(root, "mfspark pipeline"):
        same = identical_run(planned, resumed, config.run_id)
        if same is not None:  # e.g. a run killed after it completed, before `latest` moved
            if latest_run(root) != same:
                point_link(root / "latest", same)
            log.info("up to date: run %s has the same inputs and parameters (--force reruns)", same.name)
            return {"run_id": same.name, "run_dir": str(same), "up_to_date": True, "plan": describe_plan(planned)}
        run_dir = start_run_dir(root, resumed, config.run_id, {p.stage.name: p.key for p in planned})
        remove_abandoned_runs(root, run_dir)
        log.info("run %s in %s (%s)", run_dir.name, root, "resumed" if resumed else "new")
        ctx = StageContext(spark, config, run_dir)
        records = {p.stage.name: run_stage(ctx, p, i, len(planned)) for i, p in enumerate(planned, 1)}
        manifest = run_manifest(spark, config, run_dir, planned, records)
        write_json_file(run_dir / "manifest.json", manifest)
        write_json_file(run_dir / SUCCESS, {"run_id": run_dir.name})
        pause_point("latest")
        point_link(root / "latest", run_dir)
        log.info("run %s complete: %s now names it", run_dir.name, root / "latest")
    return {"run_id": run_dir.name, "run_dir": str(run_dir), "metrics": manifest["metrics"],
            "seconds": manifest["seconds"], "plan": describe_plan(planned)}


def run_stage(ctx: StageContext, planned: PlannedStage, number: int, total: int) -> dict:
    """Run, skip or link one stage; its `_SUCCESS` (key, seconds, summary) is written last."""
    name, out = planned.stage.name, ctx.stage_dir(planned.stage.name)
    progress = f"stage {number}/{total} {name}"
    if planned.action == "skip":
        log.info("%s: skipped, %s", progress, planned.why)
        return {**json.loads((out / SUCCESS).read_text()), "action": "skip"}
    if planned.action == "reuse":
        clear(out)
        point_link(out, planned.source)
        log.info("%s: reused, %s", progress, planned.why)
        return {**json.loads((out / SUCCESS).read_text()), "action": "reuse",
                "reused_from": planned.source.parent.name}
    clear(out)
    log.info("%s: running (%s)", progress, planned.why)
    started = time.perf_counter()
    try:
        summary = planned.stage.run(ctx, out)
    except (KeyboardInterrupt, SystemExit):
        raise
    except MfsparkError as exc:
        raise PipelineStageError(f"stage {name} failed: {exc}") from exc
    except Exception as exc:  # Spark/Py4J errors: the first line names the cause, the log has the trace
        log.debug("stage %s failed", name, exc_info=True)
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise PipelineStageError(f"stage {name} failed: {type(exc).__name__}: {first}") from exc
    seconds = round(time.perf_counter() - started, 3)
    record = {"key": planned.key, "seconds": seconds, "summary": summary}
    write_json_file(out / SUCCESS, record)
    log.info("%s: done in %.1f s", progress, seconds)
    return {**record, "action": "run"}


def run_manifest(spark: SparkSession, config: PipelineConfig, run_dir: Path, planned: list[PlannedStage],
                 records: dict[str, dict]) -> dict:
    summaries = {name: r["summary"] for name, r in records.items()}
    rows = {"ingest": summaries["ingest"]["rows"], "split": summaries["baseline"]["rows"],
            **({"recommendations": summaries["recommend"]["rows"]["recommendations"]} if "recommend" in summaries
               else {})}
    return {
        "run_id": run_dir.name,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_dir": str(config.source_dir),
        "inputs": summaries["ingest"]["inputs"],
        "parameters": {p.stage.name: p.stage.parameters for p in planned if p.stage.name != "ingest"}
        | {"ingest": {k: v for k, v in planned[0].stage.parameters.items() if k != "inputs"}},
        "stages": {name: {"key": r["key"], "action": r["action"], "seconds": r["seconds"],
                          **({"reused_from": r["reused_from"]} if "reused_from" in r else {})}
                   for name, r in records.items()},
        "seconds": {name: r["seconds"] for name, r in records.items()},
        "rows": rows,
        "metrics": summaries["evaluate"]["metrics"],
        "versions": versions(spark),
    }


def resolve_run(root_or_run: str | Path) -> Path:
    """A run directory from ROOT (its latest complete run) or from a run directory itself."""
    path = Path(root_or_run)
    if is_complete(path):
        return path.resolve()
    latest = latest_run(path)
    if latest is None or not is_complete(latest):
        raise InputError(f"{path} is neither a complete pipeline run nor an output root with a latest run")
    return latest

