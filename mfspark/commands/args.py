"""Argument groups shared by commands: the ratings table a model job reads (an ingest output),
the split it evaluates on, and ALS's hyper-parameters."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from pyspark.sql import SparkSession

from mfspark.data.datasets import resolve_dataset
from mfspark.data.ingest import read_ratings
from mfspark.data.movielens import RELEASES
from mfspark.errors import ConfigError, InputError
from mfspark.evaluation import split as splits
from mfspark.models.als.estimator import BIAS_FITS, IMPLICIT_SIDES, PRESETS, ALSParams
from mfspark.models.base import COLD_START_STRATEGIES, DEFAULT_COLD_START
from mfspark.runtime.fs import HadoopFileSystem, HadoopPath, input_path
from mfspark.runtime.provenance import versions

# What a directory that is not a model holds, by a file it has: said in the refusal, so the user sees what they passed.
NOT_A_MODEL = (
    ("biases/model.json", "a `mfspark baseline` output (bias tables, no factors)"),
    ("metadata/part-00000", "a Spark MLlib model directory"),
    ("manifest.json", "an `mfspark ingest` output"),
)


def add_release_arguments(parser: argparse.ArgumentParser) -> None:
    """Where a MovieLens release comes from: a directory, or a release by name (ingest, pipeline)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="DIR", help="release directory (holding ratings.csv, ratings.dat or u.data)")
    source.add_argument("--dataset", metavar="NAME", help=f"release by name: {', '.join(RELEASES)}")
    parser.add_argument("--data-dir", help="where --dataset looks first (then $MFSPARK_DATA_DIR, the download cache)")
    parser.add_argument("--cache-dir",
                        help="download cache for --dataset (default $MFSPARK_DATA_DIR or ~/.cache/mfspark)")
    parser.add_argument("--format", choices=RELEASES, help="release format (default: detected from the files)")


def release_source(args: argparse.Namespace, spark: SparkSession | None = None) -> tuple[Path | HadoopPath, str | None]:
    """The release directory (local, or on HDFS/S3 through `spark`) and its format name (None: detect it) from
    `add_release_arguments`' options."""
    if args.input:
        return input_path(args.input, spark), args.format
    return resolve_dataset(args.dataset, args.data_dir, args.cache_dir), args.format or args.dataset


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("input and split")
    group.add_argument("--input", metavar="INGEST_OUT",
                       help="output directory of `mfspark ingest` (reads INGEST_OUT/ratings); "
                            "not needed with --split predefined")
    group.add_argument("--split", choices=("random", "temporal", "predefined"), default="random")
    group.add_argument("--predefined-dir", metavar="DIR",
                       help="--split predefined: ml-100k directory holding u1.base, u1.test, ...")
    group.add_argument("--predefined-name", choices=splits.PREDEFINED_SPLITS, default="u1")
    group.add_argument("--test-fraction", type=float, default=0.2)
    group.add_argument("--seed", type=int, default=42)


def comma_list(kind: type):
    """argparse type: comma-separated values of `kind`, as a tuple."""
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got '{text}'") from None
    return parse


def load_split(spark: SparkSession, args: argparse.Namespace) -> splits.Split:
    """Read the ratings, split them, and cache both sides (each is read several times)."""
    if args.split != "predefined" and not args.input:
        raise ConfigError(f"--input (an `mfspark ingest` output) is required with --split {args.split}")
    ratings = read_ratings(spark, args.input) if args.split != "predefined" else None
    [split] = splits.make_splits(ratings, args.split, test_fraction=args.test_fraction, seed=args.seed,
                                 predefined_dir=args.predefined_dir, predefined_name=args.predefined_name, spark=spark)
    return splits.Split(split.name, split.train.cache(), split.test.cache())


def run_info(spark: SparkSession, args: argparse.Namespace, split: splits.Split) -> dict:
    """Provenance for metrics.json: input, split, counts, versions."""
    return {
        "input": args.input,
        "split": {"kind": args.split, "test_fraction": args.test_fraction, "seed": args.seed,
                  "predefined": f"{args.predefined_dir}/{args.predefined_name}" if args.split == "predefined" else None,
                  **splits.cold_start_counts(split)},
        "versions": versions(spark),
    }


def add_als_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ALSParams()
    group = parser.add_argument_group("ALS")
    group.add_argument("--rank", type=int, default=defaults.rank)
    group.add_argument("--reg", type=float, default=defaults.reg, help="lambda, scaled by each entity's rating count")
    group.add_argument("--max-iter", type=int, default=defaults.max_iter)
    group.add_argument("--user-blocks", type=int, help="default: spark.default.parallelism")
    group.add_argument("--item-blocks", type=int, help="default: spark.default.parallelism")
    group.add_argument("--nonnegative", action="store_true")
    group.add_argument("--checkpoint-interval", type=int, default=defaults.checkpoint_interval)
    group.add_argument("--storage-level", default=defaults.storage_level)
    group.add_argument("--biases", action="store_true", help="user and movie biases (see --bias-fit)")
    group.add_argument("--bias-fit", choices=BIAS_FITS, default=defaults.bias_fit,
                       help="with --biases: baseline (fitted first, factors on its residuals; default) or learned "
                            "(inside ALS, jointly with the factors)")
    group.add_argument("--bias-reg-user", type=float, default=defaults.bias_reg_user)
    group.add_argument("--bias-reg-item", type=float, default=defaults.bias_reg_item)
    group.add_argument("--implicit-weight", type=float, default=defaults.implicit_weight,
                       help="> 0 (with --biases --bias-fit learned): also fit who rated what with this weight")
    group.add_argument("--implicit-sides", choices=IMPLICIT_SIDES, default=defaults.implicit_sides,
                       help="with --implicit-weight: implicit information for the users only (default) or both sides")
    group.add_argument("--constant-reg", action="store_true",
                       help="with --bias-fit learned: reg * |f|^2 per entity, not ALS-WR's reg * n * |f|^2 "
                            "(reg then ~10, not ~0.1)")
    group.add_argument("--preset", choices=sorted(PRESETS),
                       help="accurate: rank, reg, iterations and biases chosen on validation splits "
                            "(docs/accuracy.md); replaces those options, the others apply")
    group.add_argument("--implicit", action="store_true",
                       help="implicit feedback (Hu/Koren/Volinsky, MLlib's implicitPrefs): ratings are confidences")
    group.add_argument("--alpha", type=float, default=defaults.alpha, help="implicit: confidence 1 + alpha * |rating|")
    group.add_argument("--cold-start", choices=COLD_START_STRATEGIES, default=DEFAULT_COLD_START,
                       help="test ratings of users or movies unseen in training: baseline (mu + the pre-fitted "
                            "biases), learned (mu + the biases learned inside ALS), nan or drop (left out of the RMSE) "
                            "(default: %(default)s)")


def als_params(args: argparse.Namespace) -> ALSParams:
    if args.max_iter < 1:  # zero iterations would write the random initial factors as if they were a model
        raise ConfigError(f"--max-iter must be at least 1, got {args.max_iter}")
    params = ALSParams(
        rank=args.rank, reg=args.reg, max_iter=args.max_iter, num_user_blocks=args.user_blocks,
        num_item_blocks=args.item_blocks, seed=args.seed, nonnegative=args.nonnegative,
        checkpoint_interval=args.checkpoint_interval, storage_level=args.storage_level, biases=args.biases,
        bias_reg_user=args.bias_reg_user, bias_reg_item=args.bias_reg_item, bias_fit=args.bias_fit,
        implicit_weight=args.implicit_weight, implicit=args.implicit, alpha=args.alpha,
        implicit_sides=args.implicit_sides, scale_reg=not args.constant_reg,
    )
    params = replace(params, **PRESETS[args.preset]) if args.preset else params
    params.validate()  # before any data is read
    return params


def model_dir(spark: SparkSession, path: str, option: str) -> str:
    """The ALS model directory of `path`: a `mfspark train` output (the model in factors/) or that factors/
    directory itself; anything else is refused in one line saying what it looks like."""
    path = path.rstrip("/") or "/"
    paths = HadoopFileSystem(spark)
    for candidate in (f"{path}/factors", path):
        if paths.exists(f"{candidate}/metadata.json"):
            return candidate
    if not paths.exists(path):
        raise InputError(f"{option} {path} not found: expected a `mfspark train` output directory")
    looks = next((what for marker, what in NOT_A_MODEL if paths.exists(f"{path}/{marker}")), None)
    raise InputError(f"{option} {path} is not a `mfspark train` output (no factors/metadata.json)"
                     + (f": it looks like {looks}" if looks else ""))
