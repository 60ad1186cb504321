"""`mfspark sweep`: held-out RMSE of mfspark's ALS over a rank x lambda grid, on one split and one layout.

Writes `OUT/sweep` (Parquet: rank, reg, max_iter, biases, train_rmse, test_rmse, test_mae, fit_s),
`OUT/sweep.png` (train vs held-out curves) and `OUT/metrics.json`.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path

from pyspark.sql import SparkSession

from mfspark.commands.args import add_als_arguments, add_split_arguments, als_params, comma_list, load_split, run_info
from mfspark.errors import ConfigError
from mfspark.report import figures
from mfspark.report import sweep as sweeps
from mfspark.runtime.commit import atomic_output, write_json

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_split_arguments(parser)
    add_als_arguments(parser)
    group = parser.add_argument_group("grid")
    group.add_argument("--ranks", type=comma_list(int), default=[2, 5, 10, 20, 50], help="comma-separated")
    group.add_argument("--regs", type=comma_list(float), default=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
                       help="comma-separated lambdas")
    parser.add_argument("--out", required=True, help="output directory (replaced atomically)")


def run(args: argparse.Namespace, spark: SparkSession) -> dict:
    if min(args.ranks, default=0) < 1 or min(args.regs, default=-1) < 0:
        raise ConfigError(f"--ranks must be >= 1 and --regs >= 0 (got {args.ranks}, {args.regs})")
    split = load_split(spark, args)
    base = als_params(args)
    points = sweeps.run_sweep(split, base, args.ranks, args.regs)
    best = min(points, key=lambda p: p["test_rmse"])
    drawn = figures.sweep(points)
    with atomic_output(spark, args.out) as staging:
        sweeps.points_frame(spark, points).coalesce(1).write.parquet(f"{staging}/sweep")
        if "://" not in staging.removeprefix("file://"):  # a figure for people: local outputs only
            Path(staging.removeprefix("file:")).joinpath("sweep.png").write_bytes(drawn.png)
        write_json(spark, f"{staging}/metrics.json", {**run_info(spark, args, split), "params": asdict(base),
                                                     "points": points, "best": best})
    return {"points": len(points), "best_rank": best["rank"], "best_reg": best["reg"],
            "best_test_rmse": round(best["test_rmse"], 4)}
