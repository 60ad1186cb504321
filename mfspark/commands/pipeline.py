"""`mfspark pipeline`: ingest -> baseline -> train -> train_lists -> evaluate -> recommend into
ROOT/runs/<run_id>/ (see `mfspark.pipeline.run`).

Settings come from the built-in defaults, then the profile's `[pipeline]` table
(`conf/<profile>.toml`), then the command line.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, fields, replace
from pathlib import Path

import tomllib
from pyspark.sql import SparkSession

from mfspark.commands.args import add_release_arguments, release_source
from mfspark.data.ingest import DEFAULT_MAX_REJECT_FRACTION
from mfspark.errors import ConfigError
from mfspark.models.als.estimator import PRESETS
from mfspark.models.bias import BiasParams
from mfspark.pipeline.run import check_run_id, run_pipeline
from mfspark.pipeline.stages import LIST_MODELS, LISTS_ALS, PIPELINE_SPLITS, PipelineConfig, SplitParams
from mfspark.runtime.session import profile_text

# Options a profile's [pipeline] table may set, with their built-in defaults.
DEFAULTS = {
    "split": "random", "test_fraction": 0.2, "seed": 42, "max_reject_fraction": DEFAULT_MAX_REJECT_FRACTION,
    "rank": 10, "reg": 0.1, "max_iter": 10, "biases": True, "checkpoint_interval": 10,
    "lambda_u": BiasParams.lambda_u, "lambda_i": BiasParams.lambda_i, "top_n": 10, "max_input_age_hours": None,
    "preset": None,
    "warm_start": None, "lists": "implicit", "lists_alpha": LISTS_ALS.alpha,
}


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
    stage.add_argument("--max-reject-fraction", type=float, help="ingest: fail above this share of rejected rows")
    stage.add_argument("--split", choices=PIPELINE_SPLITS, help="test split (default random)")
    stage.add_argument("--test-fraction", type=float, help="share of ratings held out for evaluate (default 0.2)")
    stage.add_argument("--seed", type=int, help="seed of the split and of ALS (default 42)")
    stage.add_argument("--lambda-u", type=float, help="baseline: user bias damping")
    stage.add_argument("--lambda-i", type=float, help="baseline: movie bias damping")
    stage.add_argument("--rank", type=int, help="ALS rank (default 10)")
    stage.add_argument("--reg", type=float, help="ALS lambda (default 0.1)")
    stage.add_argument("--max-iter", type=int, help="ALS iterations (default 10)")
    stage.add_argument("--biases", action=argparse.BooleanOptionalAction, help="ALS on bias residuals (default on)")
    stage.add_argument("--preset", choices=sorted(PRESETS),
                       help="ALS hyper-parameters chosen on validation splits (docs/accuracy.md); "
                            "options given here win")
    stage.add_argument("--checkpoint-interval", type=int, help="ALS iterations between checkpoints (default 10)")
    stage.add_argument("--warm-start", metavar="MODEL_DIR",
                       help="train: start from this model's factors (e.g. ROOT/latest/train/factors)")
    stage.add_argument("--top-n", type=int, help="recommend: list length (default 10; 0 = no recommend stage)")
    stage.add_argument("--lists", choices=LIST_MODELS,
                       help="recommend: lists from implicit-feedback ALS on the ratings >= 4 (default; it ranks "
                            "best, docs/accuracy.md) or from the train stage's model of rating values")
    stage.add_argument("--lists-alpha", type=float, help="implicit lists' model: confidence 1 + alpha * rating")


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def profile_settings(profile: str, conf_dir: str | None) -> dict:
    """The `[pipeline]` table of the profile (empty when it has none); unknown keys are an error."""
    text, source = profile_text(profile, conf_dir)
    table = tomllib.loads(text).get("pipeline", {})
    unknown = sorted(set(table) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"{source}: unknown [pipeline] settings {', '.join(unknown)} (known: {', '.join(DEFAULTS)})")
    return table


def settings(args: argparse.Namespace) -> dict:
    """Built-in defaults, overridden by the profile, by the preset (named in either), by the command line."""
    given = {name: getattr(args, name) for name in DEFAULTS if getattr(args, name) is not None}
    chosen = DEFAULTS | profile_settings(args.profile, args.conf_dir) | given
    preset = chosen["preset"]
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset '{preset}' (known: {', '.join(PRESETS)})")
    return chosen | (PRESETS[preset] if preset else {}) | given


def run_id(args: argparse.Namespace) -> str | None:
    """--run-id, else a non-empty MFSPARK_RUN_ID (how a scheduler such as Airflow passes it), checked."""
    given, origin = (args.run_id, "--run-id") if args.run_id is not None else \
        (os.environ.get("MFSPARK_RUN_ID") or None, "MFSPARK_RUN_ID")
    if given is not None:
        check_run_id(given, origin)
    return given


def pipeline_config(args: argparse.Namespace, spark: SparkSession | None = None) -> PipelineConfig:
    s = settings(args)
    if s["max_iter"] < 1:
        raise ConfigError(f"--max-iter must be at least 1, got {s['max_iter']}")
    if s["lists"] not in LIST_MODELS:
        raise ConfigError(f"lists must be one of {', '.join(LIST_MODELS)}, got '{s['lists']}'")
    if s["top_n"] < 0:
        raise ConfigError(f"--top-n must be 0 (no recommend stage) or more, got {s['top_n']}")
    lists_als = replace(LISTS_ALS, seed=s["seed"], alpha=s["lists_alpha"])
    lists_als.validate()  # a bad --lists-alpha fails here, not in the train_lists stage
    defaults = PipelineConfig(root=args.out, source_dir=Path())  # the release is looked for once all is checked
    als = {f.name: s[f.name] for f in fields(defaults.als) if f.name in s} | {"seed": s["seed"]}
    config = replace(
        defaults, max_reject_fraction=s["max_reject_fraction"],
        split=SplitParams(s["split"], s["test_fraction"], s["seed"]),
        bias=BiasParams(**asdict(defaults.bias) | {"lambda_u": s["lambda_u"], "lambda_i": s["lambda_i"]}),
        als=replace(defaults.als, **als), top_n=s["top_n"], force=args.force,
        max_input_age_hours=s["max_input_age_hours"], run_id=run_id(args), warm_start=s["warm_start"],
        lists=s["lists"], lists_als=lists_als,
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
