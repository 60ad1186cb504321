"""The ratings table a model job reads (an ingest output) and the split it evaluates on."""

from __future__ import annotations

import argparse
import platform

import pyspark
from pyspark.sql import DataFrame, SparkSession

import mfspark
from mfspark.errors import InputError
from mfspark.evaluation import split as splits
from mfspark.runtime.storage import HadoopPaths


def add_split_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("input and split")
    group.add_argument("--input", required=True, metavar="INGEST_OUT",
                       help="output directory of `mfspark ingest` (reads INGEST_OUT/ratings)")
    group.add_argument("--split", choices=("random", "temporal"), default="random")
    group.add_argument("--test-fraction", type=float, default=0.2)
    group.add_argument("--seed", type=int, default=42)


def read_ratings(spark: SparkSession, ingest_out: str) -> DataFrame:
    path = f"{ingest_out.rstrip('/')}/ratings"
    if not HadoopPaths(spark).exists(path):
        raise InputError(f"{path} not found: --input must be an `mfspark ingest` output directory")
    return spark.read.parquet(path).select("user_id", "movie_id", "rating", "rated_at")


def load_split(spark: SparkSession, args: argparse.Namespace) -> splits.Split:
    """Read the ratings, split them, and cache both sides (each is read several times)."""
    ratings = read_ratings(spark, args.input)
    if args.split == "temporal":
        split = splits.temporal_split(ratings, test_fraction=args.test_fraction)
    else:
        split = splits.random_split(ratings, args.test_fraction, args.seed)
    return splits.Split(split.name, split.train.cache(), split.test.cache())


def run_info(spark: SparkSession, args: argparse.Namespace, split: splits.Split) -> dict:
    """Provenance for metrics.json: input, split, counts, versions."""
    return {
        "input": args.input,
        "split": {"kind": args.split, "test_fraction": args.test_fraction, "seed": args.seed,
                  **splits.cold_start_counts(split)},
        "versions": {"mfspark": mfspark.__version__, "spark": spark.version, "pyspark": pyspark.__version__,
                     "python": platform.python_version()},
    }
