"""`mfspark download`: fetch a GroupLens release into the cache (see `mfspark.data.download`)."""

from __future__ import annotations

import argparse

from mfspark.data.download import GROUPLENS_URL, download_dataset
from mfspark.data.movielens import RELEASES

NEEDS_SPARK = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=RELEASES, help="GroupLens release name")
    parser.add_argument("--cache-dir", help="where releases are kept (default $MFSPARK_DATA_DIR or ~/.cache/mfspark)")
    parser.add_argument("--base-url", default=GROUPLENS_URL, help=f"mirror to download from (default {GROUPLENS_URL})")
    parser.add_argument("--md5", help="expected md5 of the zip (default: the published <name>.zip.md5)")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)")


def run(args: argparse.Namespace, spark: None = None) -> dict:
    path = download_dataset(args.dataset, args.cache_dir, args.base_url, args.md5, args.timeout)
    return {"dataset": args.dataset, "path": str(path)}
