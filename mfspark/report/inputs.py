"""Where a report reads from: an ingest output, a train output and optionally a recommend output.

Given explicitly (`--ingest`, `--model`, `--recs`, `--sweep`) or found in a pipeline run: `--run ROOT` (its latest
complete run) or `--run ROOT/runs/<run_id>`. The pipeline's layout lives in one place, `RUN_LAYOUT` and
`resolve_run`: a run's model is `train/factors`, its held-out metrics `evaluate/metrics.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mfspark.errors import InputError
from mfspark.runtime.storage import HadoopPaths

# Stage directory of each report input inside one run directory (ROOT/runs/<run_id>/<stage>/).
RUN_LAYOUT = {"ingest": "ingest", "model": "train", "metrics": "evaluate", "recs": "recommend", "sweep": "sweep"}
PRODUCED_BY = {"ingest": "ingest", "model": "train", "recs": "recommend", "sweep": "sweep"}
LATEST_POINTER = "latest"  # ROOT/latest: a symlink to the run directory, or a file naming it
RUNS_DIR = "runs"


@dataclass(frozen=True)
class ReportInputs:
    ingest: str
    model: str
    metrics: str | None = None  # the directory holding metrics.json: `model`'s own (a train output) or evaluate/
    recs: str | None = None
    sweep: str | None = None

    @property
    def metrics_json(self) -> str:
        return f"{self.metrics or self.model}/metrics.json"


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def run_directory(paths: HadoopPaths, run: str) -> str:
    """The run directory `run` stands for: itself, or the run ROOT/latest names when `run` is a pipeline root.

    `latest` may be a symbolic link (resolved by the filesystem) or a small text file holding a run id
    (ROOT/runs/<id>) or a path relative to ROOT.
    """
    pointer = _join(run, LATEST_POINTER)
    if not paths.exists(pointer):
        return run
    if paths.exists(_join(pointer, RUN_LAYOUT["model"])):  # a link to (or copy of) the run directory
        return pointer
    target = paths.read_text(pointer).strip()
    if not target:
        raise InputError(f"{pointer} is empty: the pipeline root has no complete run yet")
    for candidate in (_join(_join(run, RUNS_DIR), target), _join(run, target), target):
        if paths.exists(candidate):
            return candidate
    raise InputError(f"{pointer} names '{target}', which is neither {run}/{RUNS_DIR}/{target} nor {run}/{target}")


def resolve_run(paths: HadoopPaths, run: str) -> ReportInputs:
    """The inputs of one pipeline run (`run` = a pipeline root or one run directory)."""
    directory = run_directory(paths, run)
    found = {key: _join(directory, stage) for key, stage in RUN_LAYOUT.items()
             if paths.exists(_join(directory, stage))}
    missing = [RUN_LAYOUT[key] for key in ("ingest", "model") if key not in found]
    if missing:
        raise InputError(f"{directory} is not a pipeline run: no {' or '.join(missing)}/ stage directory in it")
    return ReportInputs(**found)


def report_inputs(paths: HadoopPaths, run: str | None, ingest: str | None, model: str | None,
                  recs: str | None, sweep: str | None) -> ReportInputs:
    """`--run`, or `--ingest` with `--model`; explicit `--recs`/`--sweep` override what a run holds."""
    if run:
        inputs = resolve_run(paths, run)
    elif ingest and model:
        inputs = ReportInputs(ingest, model)
    else:
        raise InputError("give --run (a pipeline root or run directory), or both --ingest and --model")
    inputs = replace(inputs, recs=recs or inputs.recs, sweep=sweep or inputs.sweep)
    for name, path in (("ingest", f"{inputs.ingest}/ratings"), ("ingest", f"{inputs.ingest}/movies"),
                       ("model", f"{inputs.model}/factors/metadata.json"), ("model", inputs.metrics_json),
                       ("recs", inputs.recs and f"{inputs.recs}/recommendations"),
                       ("sweep", inputs.sweep and f"{inputs.sweep}/sweep")):
        if path and not paths.exists(path):
            raise InputError(f"{path} not found: --{name} must be an `mfspark {PRODUCED_BY[name]}` output directory")
    return inputs
