"""How a pipeline root is laid out, and the one way to read it (the same on a local disk, HDFS and S3).

    ROOT/LATEST                        {"run_id": ..., "run": "runs/<run_id>"}: the latest complete run;
                                       replaced in one step (rename on local/HDFS, one PUT on S3)
    ROOT/latest -> runs/<run_id>       local disks only, for people; programs read LATEST
    ROOT/runs/<run_id>/plan.json       the stages' keys, written when the run starts
    ROOT/runs/<run_id>/<stage>/        a stage's outputs and `_SUCCESS`: its key, seconds, summary and
                                       files (name -> bytes, checked before the stage is reused)
    ROOT/runs/<run_id>/<stage>/_SUCCESS  alone, with `location`: a stage reused from an earlier run,
                                       `location` naming the original stage directory (relative to ROOT)
    ROOT/runs/<run_id>/manifest.json   inputs, parameters, versions, rows, metrics, seconds, stage locations
    ROOT/runs/<run_id>/_SUCCESS        the run is complete (written after the manifest)

Readers (`mfspark runs`, `recommend --model`, `report --run`, `--warm-start`, the Airflow DAG) go through
`resolve_run` and `stage_location`, so a reused stage is read where it was written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mfspark.errors import InputError
from mfspark.runtime.fs import FileSystem, LocalFileSystem, join, local_path

SUCCESS = "_SUCCESS"
PLAN = "plan.json"
MANIFEST = "manifest.json"
RUNS = "runs"
LATEST_POINTER = "LATEST"
LATEST_LINK = "latest"
STAGES = ("ingest", "baseline", "train", "train_lists", "evaluate", "recommend")


@dataclass(frozen=True)
class RunInfo:
    """One run directory as `mfspark runs` lists it."""

    run_id: str
    uri: str
    state: str  # complete, incomplete
    latest: bool
    manifest: dict | None

    def row(self) -> dict:
        m = self.manifest or {}
        metrics = m.get("metrics", {})
        return {"run_id": self.run_id, "state": self.state + (" (latest)" if self.latest else ""),
                "started": m.get("started_at", ""), "finished": m.get("finished_at", ""),
                "seconds": m.get("seconds", {}),
                "rmse": metrics.get("als", {}).get("rmse"),
                "precision@10": metrics.get("lists", metrics.get("als", {})).get("precision@10"),
                "uri": self.uri}


def runs_dir(root: str) -> str:
    return join(root, RUNS)


def run_dir(root: str, run_id: str) -> str:
    return join(root, RUNS, run_id)


def is_complete(fs: FileSystem, run: str) -> bool:
    return fs.exists(join(run, SUCCESS)) and fs.exists(join(run, MANIFEST))


def latest_run_id(fs: FileSystem, root: str) -> str | None:
    """The run id `ROOT/LATEST` names; on a local root from before the pointer, the `latest` link's target."""
    pointer = fs.read_json_or_none(join(root, LATEST_POINTER))
    if pointer is not None:
        return pointer["run_id"]
    local = local_path(root)
    if isinstance(fs, LocalFileSystem) and local is not None and (local / LATEST_LINK).is_symlink():
        return (local / LATEST_LINK).resolve().name
    return None


def latest_run(fs: FileSystem, root: str) -> str | None:
    """The URI of the latest complete run of `root`, or None."""
    run_id = latest_run_id(fs, root)
    if run_id is None or not is_complete(fs, run_dir(root, run_id)):
        return None
    return run_dir(root, run_id)


def is_root(fs: FileSystem, path: str) -> bool:
    return fs.exists(join(path, LATEST_POINTER)) or fs.exists(join(path, RUNS))


def is_run(fs: FileSystem, path: str) -> bool:
    """A pipeline run directory: it has a plan (an ingest output has a manifest.json too, but no plan)."""
    return fs.exists(join(path, PLAN))


def root_of_run(run: str) -> str:
    """ROOT of ROOT/runs/<run_id>."""
    parent, _, _ = str(run).rstrip("/").rpartition("/")
    return parent.rpartition("/")[0]


def resolve_run(fs: FileSystem, root_or_run: str) -> str:
    """A complete run from ROOT (its latest complete run) or from a run URI itself; one clear line otherwise."""
    path = str(root_or_run).rstrip("/")
    if is_run(fs, path):
        if not is_complete(fs, path):
            raise InputError(f"{path} is an incomplete pipeline run (no _SUCCESS): it may still be running, or was "
                             "killed; read the root for its latest complete run")
        return path
    latest = latest_run(fs, path)
    if latest is None:
        what = "an output root with no complete run yet" if is_root(fs, path) else "neither a pipeline run nor root"
        raise InputError(f"{path} is {what}")
    return latest


def stage_record(fs: FileSystem, run: str, stage: str) -> dict | None:
    return fs.read_json_or_none(join(run, stage, SUCCESS))


def stage_location(fs: FileSystem, run: str, stage: str) -> str:
    """Where a run's stage output is: its own directory, or the earlier run's it was reused from."""
    record = stage_record(fs, run, stage) or {}
    if "location" in record:
        return join(root_of_run(run), record["location"])
    return join(run, stage)


def lists_stage(fs: FileSystem, run: str) -> str:
    """The stage whose model made the run's lists (train_lists, or train when lists come from ratings)."""
    manifest = fs.read_json_or_none(join(run, MANIFEST)) or {}
    return manifest.get("lists_stage") or ("train_lists" if fs.exists(join(run, "train_lists")) else "train")


def resolve_stage(fs: FileSystem, path: str, stage: str) -> str:
    """`path` itself, or when it is a pipeline root or run, the location of that run's `stage`
    ("lists" = the stage that made the lists)."""
    if not (is_run(fs, path) or is_root(fs, path)):
        return path
    run = resolve_run(fs, path)
    return stage_location(fs, run, lists_stage(fs, run) if stage == "lists" else stage)


def list_runs(fs: FileSystem, root: str) -> list[RunInfo]:
    """Every run directory of `root`, oldest first."""
    latest = latest_run_id(fs, root)
    runs = []
    for run_id in fs.list_dir(runs_dir(root)):
        uri = run_dir(root, run_id)
        if not fs.is_dir(uri):
            continue
        complete = is_complete(fs, uri)
        manifest = fs.read_json_or_none(join(uri, MANIFEST)) if complete else None
        runs.append(RunInfo(run_id, fs.qualify(uri), "complete" if complete else "incomplete",
                            run_id == latest and complete, manifest))
    return sorted(runs, key=lambda r: ((r.manifest or {}).get("started_at", ""), r.run_id))


def format_runs(runs: list[RunInfo]) -> str:
    """A plain table: id, state, start, seconds per stage, headline metrics."""
    lines = [f"{'run id':<34} {'state':<20} {'started':<26} {'rmse':>7} {'p@10':>7}  seconds per stage"]
    for info in runs:
        row = info.row()
        seconds = " ".join(f"{stage}={row['seconds'][stage]:.1f}" for stage in STAGES if stage in row["seconds"])
        rmse = f"{row['rmse']:.4f}" if row["rmse"] is not None else "-"
        p10 = f"{row['precision@10']:.4f}" if row["precision@10"] is not None else "-"
        lines.append(f"{info.run_id:<34} {row['state']:<20} {row['started']:<26} {rmse:>7} {p10:>7}  {seconds}")
    return "\n".join(lines)


def runs_json(runs: list[RunInfo]) -> str:
    return json.dumps([info.row() for info in runs], indent=2, sort_keys=True, default=str)
