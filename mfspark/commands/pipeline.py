"""`mfspark pipeline`: ingest -> baseline -> train -> train_lists -> evaluate -> recommend into
ROOT/runs/<run_id>/ (see `mfspark.pipeline.run`).

Settings come from the built-in defaults, then the profile's `[pipeline]` table and its model tables
`[pipeline.baseline]`, `[pipeline.als]`, `[pipeline.lists]` (`conf/<profile>.toml`), then (models only) the
`--preset` and a `--params` file, then the command line.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace
from pathlib import Path

import tomllib
from pyspark.sql import SparkSession

from mfspark import params
from mfspark.commands.args import (
    add_model_options,
    add_preset_and_params_file,
    add_release_arguments,
    given_params,
    read_params_file,
    release_source,
)
from mfspark.data.ingest import DEFAULT_MAX_REJECT_FRACTION
from mfspark.errors import ConfigError
from mfspark.models.als.estimator import PRESETS, ALSParams
from mfspark.models.base import COLD_START_STRATEGIES, DEFAULT_COLD_START
from mfspark.models.bias import BiasParams
from mfspark.models.ease import EASEParams
from mfspark.params import settable_names
from mfspark.pipeline.run import check_run_id, run_pipeline
from mfspark.pipeline.stages import (
    ALS_FIELDS,
    BASELINE_FIELDS,
    LIST_MODELS,
    LISTS_ALS,
    LISTS_FIELDS,
    PIPELINE_ALS,
    PIPELINE_SPLITS,
    PipelineConfig,
    SplitParams,
)
from mfspark.runtime.session import profile_text

log = logging.getLogger(__name__)

# Settings of the run a profile's [pipeline] table may set, with their built-in defaults. The models' parameters
# are declared by their dataclasses (mfspark.params) and set in the [pipeline.baseline], [pipeline.als] and
# [pipeline.lists] tables, by a --params file or by their options.
DEFAULTS = {
    "split": "random", "test_fraction": 0.2, "seed": 42, "max_reject_fraction": DEFAULT_MAX_REJECT_FRACTION,
    "top_n": 10, "max_input_age_hours": None, "preset": None, "warm_start": None, "lists": "implicit",
    "cold_start": DEFAULT_COLD_START,
}
# table -> (its dataclass, the fields it may set, the option prefix, the pipeline's built-in model)
MODELS = {
    "baseline": (BiasParams, BASELINE_FIELDS, "", BiasParams()),
    "als": (ALSParams, ALS_FIELDS, "", PIPELINE_ALS),
    "lists": (ALSParams, LISTS_FIELDS, "lists-", LISTS_ALS),
    "ease": (EASEParams, settable_names(EASEParams), "", EASEParams()),
}
# [pipeline] keys from before the models had tables of their own: still read, with a warning naming the new place.
LEGACY_KEYS = {"rank": ("als", "rank"), "reg": ("als", "reg"), "max_iter": ("als", "max_iter"),
               "biases": ("als", "biases"), "checkpoint_interval": ("als", "checkpoint_interval"),
               "lambda_u": ("baseline", "lambda_u"), "lambda_i": ("baseline", "lambda_i"),
               "lists_alpha": ("lists", "alpha")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_release_arguments(parser)
    parser.add_argument("--out", required=True, metavar="ROOT",
                        help="output root (a local path, hdfs://... or s3a://...): runs go to ROOT/runs/<run_id>/, "
                             "ROOT/LATEST names the last complete one")
    parser.add_argument("--run-id", metavar="ID",
                        help="name the run ROOT/runs/ID/ (default: env MFSPARK_RUN_ID, else the start time); "
                             "rerunning with the same ID resumes that run, e.g. a scheduler's retry of one night")
    parser.add_argument("--force", action="store_true", help="rerun every stage even when its outputs exist")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (each stage: run, skip or reuse, why)")
    parser.add_argument("--keep", type=positive_int, metavar="N",
                        help="after a successful run, remove complete runs older than the newest N (never the "
                             "latest, nor a run whose stages a kept run reuses); default: keep every run")
    parser.add_argument("--max-input-age-hours", type=float,
                        help="refuse input files older than this (stale-input check; default off)")
    stage = parser.add_argument_group("stage options (default: the profile's [pipeline] table, then built-in)")
    stage.add_argument("--max-reject-fraction", type=float,
                       help=f"ingest: fail above this share of rejected rows "
                            f"(default {DEFAULTS['max_reject_fraction']})")
    stage.add_argument("--split", choices=PIPELINE_SPLITS, help=f"test split (default {DEFAULTS['split']})")
    stage.add_argument("--test-fraction", type=float,
                       help=f"share of ratings held out for evaluate (default {DEFAULTS['test_fraction']})")
    stage.add_argument("--seed", type=int, help=f"seed of the split and of ALS (default {DEFAULTS['seed']})")
    stage.add_argument("--warm-start", metavar="MODEL_DIR",
                       help="train: start from this model's factors (e.g. ROOT/latest/train/factors)")
    stage.add_argument("--top-n", type=int,
                       help=f"recommend: list length (default {DEFAULTS['top_n']}; 0 = no recommend stage)")
    stage.add_argument("--lists", choices=LIST_MODELS,
                       help="recommend: lists from implicit-feedback ALS on the ratings >= 4 (default), from EASE "
                            "on the same ratings (ranks best on ml-latest-small, docs/accuracy.md) or from the train "
                            "stage's model of rating values")
    stage.add_argument("--cold-start", choices=COLD_START_STRATEGIES,
                       help=f"evaluate: how ALS scores test ratings of unseen users or movies (default "
                            f"{DEFAULTS['cold_start']}; a --params file from `mfspark tune` sets its choice)")
    titles = {"baseline": "the baseline stage's biases: [pipeline.baseline]",
              "als": "the train stage's ALS: [pipeline.als] (later wins: built-in, profile, --preset, --params FILE, "
                     "an option given)",
              "lists": "the train_lists stage's implicit ALS: [pipeline.lists]",
              "ease": "the train_lists stage's EASE (--lists ease): [pipeline.ease]"}
    for table, (cls, names, prefix, built_in) in MODELS.items():
        group = parser.add_argument_group(titles[table])
        add_model_options(group, cls, prefix=prefix, names=names, defaults=built_in)
        if table == "als":
            add_preset_and_params_file(group)


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def profile_settings(profile: str, conf_dir: str | None) -> tuple[dict, dict[str, dict]]:
    """The profile's `[pipeline]` settings and its model tables (`MODELS`), checked; unknown keys are an error."""
    text, source = profile_text(profile, conf_dir)
    table = dict(tomllib.loads(text).get("pipeline", {}))
    models = {name: dict(table.pop(name, {})) for name in MODELS}
    for key in sorted(set(table) & set(LEGACY_KEYS)):
        model, name = LEGACY_KEYS[key]
        log.warning("%s: [pipeline] %s is now [pipeline.%s] %s (read from here for now)", source, key, model, name)
        models[model].setdefault(name, table.pop(key))
    unknown = sorted(set(table) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"{source}: unknown [pipeline] settings {', '.join(unknown)} (known: "
                          f"{', '.join(DEFAULTS)}, and the tables {', '.join(f'[pipeline.{m}]' for m in MODELS)})")
    return table, {name: params.from_table(MODELS[name][0], values, f"{source} [pipeline.{name}]",
                                           names=MODELS[name][1])
                   for name, values in models.items()}


def settings(args: argparse.Namespace, spark: SparkSession | None = None) -> tuple[dict, dict]:
    """The run's settings and each model's parameters: built-in defaults, then the profile, the preset (named in
    either; ALS only), the --params file, the options given."""
    given = {name: getattr(args, name) for name in DEFAULTS if getattr(args, name, None) is not None}
    run_table, model_tables = profile_settings(args.profile, args.conf_dir)
    chosen = DEFAULTS | run_table | given
    preset = args.preset or chosen["preset"]
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    from_file = read_params_file(args.params, spark) if args.params else {}
    for key, setting in (("cold_start", "cold_start"), ("lists_model", "lists")):  # the file's choices
        if from_file.get(key) and setting not in given:
            chosen[setting] = from_file[key]
    models = {}
    for name, (cls, _, prefix, built_in) in MODELS.items():
        preset_layer = PRESETS[preset] if preset and name == "als" else {}
        models[name] = params.layered(built_in, model_tables[name], preset_layer, from_file.get(name, {}),
                                      given_params(args, cls, prefix=prefix))
    return chosen, models


def run_id(args: argparse.Namespace) -> str | None:
    """--run-id, else a non-empty MFSPARK_RUN_ID (how a scheduler such as Airflow passes it), checked."""
    given, origin = (args.run_id, "--run-id") if args.run_id is not None else \
        (os.environ.get("MFSPARK_RUN_ID") or None, "MFSPARK_RUN_ID")
    if given is not None:
        check_run_id(given, origin)
    return given


def pipeline_config(args: argparse.Namespace, spark: SparkSession | None = None) -> PipelineConfig:
    s, models = settings(args, spark)
    if s["lists"] not in LIST_MODELS:
        raise ConfigError(f"lists must be one of {', '.join(LIST_MODELS)}, got '{s['lists']}'")
    if s["top_n"] < 0:
        raise ConfigError(f"--top-n must be 0 (no recommend stage) or more, got {s['top_n']}")
    config = PipelineConfig(
        root=args.out, source_dir=Path(),  # the release is looked for once all is checked
        max_reject_fraction=s["max_reject_fraction"], split=SplitParams(s["split"], s["test_fraction"], s["seed"]),
        bias=models["baseline"], als=replace(models["als"], seed=s["seed"]), top_n=s["top_n"], force=args.force,
        max_input_age_hours=s["max_input_age_hours"], run_id=run_id(args), warm_start=s["warm_start"],
        lists=s["lists"], lists_als=replace(models["lists"], seed=s["seed"]), cold_start=s["cold_start"],
        ease=models["ease"],
    )
    config.validate()  # before a --dataset download and before any stage runs
    source, release = release_source(args, spark)
    return replace(config, source_dir=source, release=release)


def run(args: argparse.Namespace, spark: SparkSession) -> dict:
    result = run_pipeline(spark, pipeline_config(args, spark), dry_run=args.dry_run, keep=args.keep)
    if args.dry_run:
        for step in result["plan"]:
            print(f"{step['stage']:<10} {step['action']:<6} {step['why']}")
    return result
