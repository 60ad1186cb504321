"""Where a report reads from: an ingest output, a train output and optionally a recommend output, a sweep and the
lists model (a pipeline run's train_lists stage).

Given explicitly (`--ingest`, `--model`, `--recs`, `--sweep`, `--lists`) or found in a pipeline run: `--run ROOT`
(its latest complete run) or `--run ROOT/runs/<run_id>`, read through `mfspark.pipeline.layout` like every other
reader: a run's model is its `train` stage, its held-out metrics `evaluate/metrics.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mfspark.errors import InputError
from mfspark.pipeline import layout
from mfspark.runtime.fs import FileSystem

# Stage of each report input inside one run directory (ROOT/runs/<run_id>/<stage>/).
RUN_LAYOUT = {"ingest": "ingest", "model": "train", "metrics": "evaluate", "recs": "recommend", "sweep": "sweep",
              "lists": "train_lists"}
PRODUCED_BY = {"ingest": "ingest", "model": "train", "recs": "recommend", "sweep": "sweep",
               "lists": "pipeline"}


@dataclass(frozen=True)
class ReportInputs:
    ingest: str
    model: str
    metrics: str | None = None  # the directory holding metrics.json: `model`'s own (a train output) or evaluate/
    recs: str | None = None
    sweep: str | None = None
    lists: str | None = None  # a run's train_lists stage: the lists model (its similar movies beside the ALS model's)

    @property
    def metrics_json(self) -> str:
        return f"{self.metrics or self.model}/metrics.json"


def resolve_run(fs: FileSystem, run: str) -> ReportInputs:
    """The inputs of one pipeline run (`run` = a pipeline root or one run directory)."""
    directory = layout.resolve_run(fs, run)
    found = {key: layout.stage_location(fs, directory, stage) for key, stage in RUN_LAYOUT.items()}
    found = {key: location for key, location in found.items() if fs.exists(location)}
    missing = [RUN_LAYOUT[key] for key in ("ingest", "model") if key not in found]
    if missing:
        raise InputError(f"{directory} is not a pipeline run: no {' or '.join(missing)}/ stage directory in it")
    return ReportInputs(**found)


def report_inputs(paths: FileSystem, run: str | None, ingest: str | None, model: str | None,
                  recs: str | None, sweep: str | None, lists: str | None = None) -> ReportInputs:
    """`--run`, or `--ingest` with `--model`; explicit `--recs`/`--sweep`/`--lists` override what a run holds."""
    if run:
        inputs = resolve_run(paths, run)
    elif ingest and model:
        inputs = ReportInputs(ingest, model)
    else:
        raise InputError("give --run (a pipeline root or run directory), or both --ingest and --model")
    inputs = replace(inputs, recs=recs or inputs.recs, sweep=sweep or inputs.sweep, lists=lists or inputs.lists)
    for name, path in (("ingest", f"{inputs.ingest}/ratings"), ("ingest", f"{inputs.ingest}/movies"),
                       ("model", f"{inputs.model}/factors/metadata.json"), ("model", inputs.metrics_json),
                       ("recs", inputs.recs and f"{inputs.recs}/recommendations"),
                       ("sweep", inputs.sweep and f"{inputs.sweep}/sweep"),
                       ("lists", inputs.lists)):
        if path and not paths.exists(path):
            raise InputError(f"{path} not found: --{name} must be an `mfspark {PRODUCED_BY[name]}` output directory")
    return inputs
