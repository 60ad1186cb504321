"""Run the stages into `ROOT/runs/<run_id>/<stage>/`, skip what is already done, then move `ROOT/LATEST`.

The root's layout is `mfspark.pipeline.layout`'s; the stages are `mfspark.pipeline.stages`'. The same
protocol holds on a local disk, HDFS and S3 (see `mfspark.runtime.fs` for each primitive):

1. Take the root's lock (`mfspark.runtime.locks`): one run per root at a time, on every filesystem.
2. Plan: a stage is *skipped* when the run being resumed holds it, *reused* from an earlier complete run
   that holds it (its record names the original directory, never another reference), else *run*. Before
   a stage is skipped or reused its files are checked against the names and sizes its `_SUCCESS`
   recorded: a damaged output is run again, never trusted.
3. Run each stage into the run directory; its `_SUCCESS` is written last.
4. Write `manifest.json`, then the run's `_SUCCESS`; make the files durable (fsync on a local disk).
5. Confirm the lock is still ours, then replace `ROOT/LATEST` in one step (and, locally, the `latest` link).

A kill at any moment leaves `LATEST` naming the previous complete run. The next invocation with the same
inputs and parameters resumes the killed run at its first incomplete stage; an incomplete run with other
keys is abandoned and removed (its `plan.json` first, so a half-removed run is never resumable).

`<run_id>` is the scheduler's when one is given (`PipelineConfig.run_id`, e.g. the night's date): a rerun
with the same id resumes that directory, whatever other runs exist; without one it is the start time and a
key prefix. With `keep`, complete runs beyond the newest `keep` are removed after a successful run, except
the latest and any run a kept run reuses a stage from.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from mfspark.errors import ConfigError, InputError, MfsparkError, PipelineStageError
from mfspark.pipeline import layout
from mfspark.pipeline.layout import MANIFEST, PLAN, SUCCESS, is_complete, run_dir, stage_record
from mfspark.pipeline.stages import PipelineConfig, PlannedStage, Stage, StageContext, build_stages, stage_keys
from mfspark.runtime.commit import pause_point, point_link
from mfspark.runtime.fs import FileSystem, LocalFileSystem, filesystem, join, local_path
from mfspark.runtime.locks import hold_lock
from mfspark.runtime.provenance import versions

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# A run id names one directory under ROOT/runs: no separators, no "." or "..", no leading "-" or ".".
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class Root:
    """An output root on its filesystem."""

    fs: FileSystem
    uri: str

    def run(self, run_id: str) -> str:
        return run_dir(self.uri, run_id)


# ---------------------------------------------------------------- checks of what is on disk

def stage_files(fs: FileSystem, stage_dir: str) -> dict[str, int]:
    return {name: size for name, size in fs.list_files(stage_dir).items() if name != SUCCESS}


def stage_done(fs: FileSystem, run: str, stage: str, key: str) -> tuple[bool, str]:
    """(whether the run holds this stage with this key and intact files, why not)."""
    record = stage_record(fs, run, stage)
    if record is None or record.get("key") != key:
        return False, "no output for these inputs and parameters"
    location = layout.stage_location(fs, run, stage)
    original = stage_record(fs, location.rsplit("/", 1)[0], stage) if "location" in record else record
    if original is None or original.get("key") != key:
        return False, f"the reused output {location} is gone"
    expected = original.get("files")
    if expected is None:  # a record from before file lists: trusted as it was
        return True, ""
    found = stage_files(fs, location)
    if found != expected:
        missing = sorted(set(expected) - set(found))
        changed = sorted(n for n in set(expected) & set(found) if expected[n] != found[n])
        detail = f"{len(missing)} files missing" if missing else f"{len(changed)} files changed size"
        example = (missing or changed or sorted(set(found) - set(expected)))[:1]
        log.warning("stage %s in %s is damaged (%s, e.g. %s): running it again", stage, location, detail, example)
        return False, f"its output in {location} is damaged ({detail})"
    return True, ""


def read_plan_keys(fs: FileSystem, run: str) -> dict[str, str] | None:
    plan = fs.read_json_or_none(join(run, PLAN))
    return plan.get("keys") if isinstance(plan, dict) else None


def run_ids(root: Root) -> list[str]:
    return [name for name in root.fs.list_dir(layout.runs_dir(root.uri)) if root.fs.is_dir(root.run(name))]


def complete_runs(root: Root) -> list[str]:
    """Complete run ids, the latest one first, then newest first."""
    found = sorted((r for r in run_ids(root) if is_complete(root.fs, root.run(r))), reverse=True)
    latest = layout.latest_run_id(root.fs, root.uri)
    return ([latest] if latest in found else []) + [r for r in found if r != latest]


def resumable_run(root: Root, keys: dict[str, str]) -> str | None:
    """The newest incomplete run started with the same stage keys (a killed run to finish)."""
    for run_id in sorted(run_ids(root), reverse=True):
        run = root.run(run_id)
        if not is_complete(root.fs, run) and read_plan_keys(root.fs, run) == keys:
            return run_id
    return None


def check_run_id(run_id: str, origin: str = "run id") -> None:
    """Refuse a run id that is not one safe directory name (`origin` says where it came from)."""
    if not RUN_ID.fullmatch(run_id):
        raise ConfigError(f"{origin} {run_id!r} is not a usable run id: it names ROOT/runs/<run id>/, so it must "
                          "be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")


def named_run(root: Root, run_id: str, keys: dict[str, str], force: bool) -> str | None:
    """The existing run the scheduler names, to resume (None: it is new).

    A complete run is never rewritten (`LATEST` may name it): rerunning it is a no-op when its
    stage keys are these, and an error otherwise.
    """
    run = root.run(run_id)
    if not root.fs.is_dir(run):
        return None
    if is_complete(root.fs, run) and (force or read_plan_keys(root.fs, run) != keys):
        raise ConfigError(f"run {run_id} in {root.uri} is complete with {'' if force else 'other '}inputs and "
                          f"parameters{' (--force)' if force else ''}; a complete run is never rewritten: "
                          "give another run id")
    return run_id


# ---------------------------------------------------------------- the plan

def plan_run(root: Root, config: PipelineConfig, stages: list[Stage]) -> tuple[str | None, list[PlannedStage]]:
    """The run id to resume (or None for a new run) and what happens to each stage, and why."""
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
        why = "no output for these inputs and parameters"
        if resumed is not None:
            done, why = stage_done(root.fs, root.run(resumed), stage.name, key)
            if done:
                planned.append(PlannedStage(stage, key, "skip", f"done in run {resumed}, which this run resumes"))
                continue
        source = next((run_id for run_id in earlier if stage_done(root.fs, root.run(run_id), stage.name, key)[0]),
                      None)
        if source is not None:
            location = layout.stage_location(root.fs, root.run(source), stage.name)
            planned.append(PlannedStage(stage, key, "reuse", f"same inputs and parameters as run {source}",
                                        location, location.rsplit("/", 2)[1]))
        else:
            planned.append(PlannedStage(stage, key, "run", why + (f" (resuming run {resumed})" if resumed else "")))
    return resumed, planned


def identical_run(root: Root, planned: list[PlannedStage], resumed: str | None, run_id: str | None) -> str | None:
    """The complete run whose own outputs are every stage's (a new run would be a copy of it), if any.

    With a run id only that run counts: the scheduler gets the directory it names.
    """
    sources = set()
    for p in planned:
        if p.action == "run":
            return None
        run = root.run(resumed) if p.action == "skip" else root.run(p.source_run)
        record = stage_record(root.fs, run, p.stage.name) or {}
        sources.add(record.get("reused_from") or (resumed if p.action == "skip" else p.source_run))
    same = sources.pop() if len(sources) == 1 else None
    if same is None or not is_complete(root.fs, root.run(same)) or (run_id is not None and same != run_id):
        return None
    return same


def describe_plan(planned: list[PlannedStage]) -> list[dict]:
    return [{"stage": p.stage.name, "action": p.action, "why": p.why, "key": p.key} for p in planned]


# ---------------------------------------------------------------- run directories

def start_run_dir(root: Root, resumed: str | None, run_id: str | None, keys: dict[str, str]) -> str:
    """The run's id (the resumed one, or a new one named by `run_id` or the time), its directory holding this plan."""
    chosen = resumed or run_id or f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{keys[list(keys)[-1]][:8]}"
    run = root.run(chosen)
    root.fs.mkdirs(run)
    plan = root.fs.read_json_or_none(join(run, PLAN)) or {}
    root.fs.write_json(join(run, PLAN), {"keys": keys,
                                      "started_at": plan.get("started_at") or datetime.now(timezone.utc).isoformat(
                                          timespec="seconds")})
    return chosen


def remove_run(root: Root, run_id: str, why: str) -> None:
    """Remove a run so that no step of the removal leaves it resumable or complete: plan and markers first."""
    log.info("removing run %s (%s)", run_id, why)
    run = root.run(run_id)
    for marker in (PLAN, SUCCESS, MANIFEST):
        root.fs.delete(join(run, marker))
    root.fs.delete(run)


def remove_abandoned_runs(root: Root, keep: str) -> None:
    """Incomplete runs other than the one being resumed can never complete: remove them (we hold the lock)."""
    for run_id in run_ids(root):
        if run_id != keep and not is_complete(root.fs, root.run(run_id)):
            remove_run(root, run_id, "an abandoned incomplete run")


def referenced_runs(root: Root, run_id: str) -> set[str]:
    """The runs whose stage directories `run_id` reads (itself and those it reused stages from)."""
    manifest = root.fs.read_json_or_none(join(root.run(run_id), MANIFEST)) or {}
    return {run_id} | {s["location"].split("/")[1] for s in manifest.get("stages", {}).values() if "location" in s}


def retire_old_runs(root: Root, keep: int) -> list[str]:
    """Remove complete runs beyond the newest `keep`, never the latest one or a run a kept run reads from."""
    complete = sorted(complete_runs(root), key=lambda r: (finished_at(root, r), r), reverse=True)
    kept = set(complete[:keep]) | {layout.latest_run_id(root.fs, root.uri)}
    needed = set().union(*(referenced_runs(root, r) for r in kept if r))
    retired = [r for r in complete if r not in needed]
    for run_id in retired:
        remove_run(root, run_id, f"older than the newest {keep} runs (--keep)")
    return retired


def finished_at(root: Root, run_id: str) -> str:
    manifest = root.fs.read_json_or_none(join(root.run(run_id), MANIFEST)) or {}
    return manifest.get("finished_at", "")


def sweep_root(root: Root) -> None:
    """Remove what a kill during a pointer update left: temporary pointer files and links."""
    for name in root.fs.list_dir(root.uri):
        if name.startswith((".latest.link-", f".{layout.LATEST_POINTER}.tmp-")):
            log.info("removing %s (left by an interrupted pointer update)", join(root.uri, name))
            root.fs.delete(join(root.uri, name))


def publish_latest(root: Root, run_id: str) -> None:
    """Replace ROOT/LATEST in one step (programs read it); locally, also point the `latest` link (for people)."""
    root.fs.publish_text(join(root.uri, layout.LATEST_POINTER),
                         json.dumps({"run_id": run_id, "run": f"{layout.RUNS}/{run_id}",
                                     "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
                         + "\n")
    local = local_path(root.uri)
    if isinstance(root.fs, LocalFileSystem) and local is not None:
        point_link(local / layout.LATEST_LINK, local / layout.RUNS / run_id)


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

def run_pipeline(spark: SparkSession | None, config: PipelineConfig, dry_run: bool = False,
                 keep: int | None = None) -> dict:
    """Run (or with `dry_run`, only plan) the pipeline; returns the run's summary."""
    config.validate()
    if config.run_id is not None:
        check_run_id(config.run_id)
    root = Root(filesystem(config.root, spark), str(config.root).rstrip("/"))
    stages = build_stages(config)
    check_input_age(config, stages)
    if dry_run:  # no lock: a plan may be printed while a run holds the root
        resumed, planned = logged_plan(root, config, stages)
        return {"dry_run": True, "root": root.uri, "run_id": resumed or config.run_id, "plan": describe_plan(planned)}
    with hold_lock(root.fs, root.uri, "mfspark pipeline") as lock:
        sweep_root(root)
        resumed, planned = logged_plan(root, config, stages)
        same = identical_run(root, planned, resumed, config.run_id)
        if same is not None:  # e.g. a run killed after it completed, before `LATEST` moved
            if layout.latest_run_id(root.fs, root.uri) != same:
                lock.check()
                publish_latest(root, same)
            log.info("up to date: run %s has the same inputs and parameters (--force reruns)", same)
            return {"run_id": same, "run_dir": root.run(same), "up_to_date": True, "plan": describe_plan(planned)}
        run_id = start_run_dir(root, resumed, config.run_id, {p.stage.name: p.key for p in planned})
        remove_abandoned_runs(root, run_id)
        log.info("run %s in %s (%s)", run_id, root.uri, "resumed" if resumed else "new")
        ctx = StageContext(spark, root.fs, config, root.run(run_id))
        records = {p.stage.name: run_stage(ctx, p, i, len(planned)) for i, p in enumerate(planned, 1)}
        manifest = run_manifest(spark, root, config, run_id, planned, records)
        root.fs.write_json(join(root.run(run_id), MANIFEST), manifest)
        pause_point("manifest")
        root.fs.write_json(join(root.run(run_id), SUCCESS), {"run_id": run_id})
        root.fs.sync_tree(root.run(run_id))
        pause_point("latest")
        lock.check()
        publish_latest(root, run_id)
        log.info("run %s complete: %s now names it", run_id, join(root.uri, layout.LATEST_POINTER))
        retired = retire_old_runs(root, keep) if keep is not None else []
    return {"run_id": run_id, "run_dir": root.run(run_id), "metrics": manifest["metrics"],
            "seconds": manifest["seconds"], "plan": describe_plan(planned), "retired": retired}


def logged_plan(root: Root, config: PipelineConfig, stages: list[Stage]) -> tuple[str | None, list[PlannedStage]]:
    resumed, planned = plan_run(root, config, stages)
    for p in planned:
        log.info("plan: %-11s %-6s %s", p.stage.name, p.action, p.why)
    return resumed, planned


def run_stage(ctx: StageContext, planned: PlannedStage, number: int, total: int) -> dict:
    """Run, skip or reuse one stage; its `_SUCCESS` (key, seconds, summary, files) is written last."""
    name, fs = planned.stage.name, ctx.fs
    out = join(ctx.run_dir, name)
    progress = f"stage {number}/{total} {name}"
    if planned.action == "skip":
        log.info("%s: skipped, %s", progress, planned.why)
        return {**stage_record(fs, ctx.run_dir, name), "action": "skip"}
    fs.delete(out)  # what a killed attempt left
    if planned.action == "reuse":
        original = stage_record(fs, planned.source.rsplit("/", 1)[0], name)
        root = layout.root_of_run(ctx.run_dir)
        record = {"key": planned.key, "seconds": original["seconds"], "summary": original["summary"],
                  "reused_from": planned.source_run, "location": planned.source.removeprefix(root + "/")}
        ctx.fs.write_json(join(out, SUCCESS), record)
        log.info("%s: reused, %s", progress, planned.why)
        return {**record, "action": "reuse"}
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
    record = {"key": planned.key, "seconds": seconds, "summary": summary, "files": stage_files(fs, out)}
    ctx.fs.write_json(join(out, SUCCESS), record)
    log.info("%s: done in %.1f s", progress, seconds)
    return {**record, "action": "run"}


def run_manifest(spark: SparkSession, root: Root, config: PipelineConfig, run_id: str,
                 planned: list[PlannedStage], records: dict[str, dict]) -> dict:
    summaries = {name: r["summary"] for name, r in records.items()}
    rows = {"ingest": summaries["ingest"]["rows"], "split": summaries["baseline"]["rows"],
            **({"recommendations": summaries["recommend"]["rows"]["recommendations"]} if "recommend" in summaries
               else {})}
    plan = root.fs.read_json_or_none(join(root.run(run_id), PLAN)) or {}
    return {
        "run_id": run_id,
        "started_at": plan.get("started_at"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source_dir": str(config.source_dir),
        "inputs": summaries["ingest"]["inputs"],
        "lists_stage": config.lists_stage,
        "parameters": {p.stage.name: p.stage.parameters for p in planned if p.stage.name != "ingest"}
        | {"ingest": {k: v for k, v in planned[0].stage.parameters.items() if k != "inputs"}},
        "stages": {name: {"key": r["key"], "action": r["action"], "seconds": r["seconds"],
                          **({"reused_from": r["reused_from"], "location": r["location"]} if "location" in r
                             else {})}
                   for name, r in records.items()},
        "seconds": {name: r["seconds"] for name, r in records.items()},
        "rows": rows,
        "metrics": summaries["evaluate"]["metrics"],
        "versions": versions(spark),
    }

