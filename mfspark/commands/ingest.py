"""`mfspark ingest`: a MovieLens release directory -> validated Parquet tables (see `mfspark.data.ingest`)."""

from __future__ import annotations

import argparse

from pyspark.sql import SparkSession

from mfspark.commands.args import add_release_arguments, release_source
from mfspark.data.ingest import DEFAULT_MAX_REJECT_FRACTION, ingest_release


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_release_arguments(parser)
    parser.add_argument("--out", required=True, help="output directory (replaced atomically)")
    parser.add_argument("--max-reject-fraction", type=float, default=DEFAULT_MAX_REJECT_FRACTION,
                        help="fail when more than this fraction of one file's rows is rejected (default 0.001)")


def run(args: argparse.Namespace, spark: SparkSession) -> dict:
    source_dir, release = release_source(args, spark)
    return ingest_release(spark, source_dir, args.out, release, args.max_reject_fraction)
