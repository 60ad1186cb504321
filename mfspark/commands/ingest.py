"""`mfspark ingest`: a MovieLens release directory -> validated Parquet tables (see `mfspark.data.ingest`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyspark.sql import SparkSession

from mfspark.data.datasets import resolve_dataset
from mfspark.data.ingest import DEFAULT_MAX_REJECT_FRACTION, ingest_release
from mfspark.data.movielens import RELEASES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="DIR", help="release directory (holding ratings.csv, ratings.dat or u.data)")
    source.add_argument("--dataset", metavar="NAME", help=f"release by name: {', '.join(RELEASES)}")
    parser.add_argument("--data-dir", help="where --dataset looks first (then $MFSPARK_DATA_DIR, the download cache)")
    parser.add_argument("--cache-dir",
                        help="download cache for --dataset (default $MFSPARK_DATA_DIR or ~/.cache/mfspark)")
    parser.add_argument("--out", required=True, help="output directory (replaced atomically)")
    parser.add_argument("--format", choices=RELEASES, help="release format (default: detected from the files)")
    parser.add_argument("--max-reject-fraction", type=float, default=DEFAULT_MAX_REJECT_FRACTION,
                        help="fail when more than this fraction of one file's rows is rejected (default 0.001)")


def run(args: argparse.Namespace, spark: SparkSession) -> dict:
    if args.input:
        return ingest_release(spark, Path(args.input), args.out, args.format, args.max_reject_fraction)
    source_dir = resolve_dataset(args.dataset, args.data_dir, args.cache_dir)
    return ingest_release(spark, source_dir, args.out, args.format or args.dataset, args.max_reject_fraction)
