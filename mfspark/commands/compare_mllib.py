"""`mfspark compare-mllib`: ours and Spark MLlib's ALS on the same split, same rank, reg and iterations.

Prints one JSON line (ours_rmse, mllib_rmse, ours_fit_s, mllib_fit_s, ..., timing) and a table.
Each implementation is warmed up (an untimed 1-iteration fit on the same data) right before its timed fit
(`mfspark.evaluation.mllib_reference.warmed_up_fit`).
With `--biases` both fit the residuals of the same bias baseline and predict baseline + dot.
Both score the test ratings whose user and movie were seen in training (MLlib's "drop").
"""

from __future__ import annotations

import argparse
import logging

from pyspark.sql import SparkSession

from mfspark.commands.args import add_als_arguments, add_split_arguments, als_params, load_split, run_info
from mfspark.evaluation.mllib_reference import compare
from mfspark.runtime.commit import atomic_output, write_json

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_split_arguments(parser)
    add_als_arguments(parser)
    parser.add_argument("--out", required=True, help="directory for comparison.json (replaced atomically)")


def table(result: dict) -> str:
    rows = [("", "ours", "MLlib"), ("RMSE", f"{result['ours_rmse']:.4f}", f"{result['mllib_rmse']:.4f}"),
            ("MAE", f"{result['ours_mae']:.4f}", f"{result['mllib_mae']:.4f}"),
            ("fit s", f"{result['ours_fit_s']:.1f}", f"{result['mllib_fit_s']:.1f}")]
    lines = [f"{a:<8}{b:>10}{c:>10}" for a, b, c in rows]
    return "\n".join([*lines, f"fit s: {result['timing']}"])


def run(args: argparse.Namespace, spark: SparkSession) -> dict:
    split = load_split(spark, args)
    result = compare(split.train, split.test, als_params(args))
    with atomic_output(spark, args.out) as staging:
        write_json(spark, f"{staging}/comparison.json", {**run_info(spark, args, split), **result})
    print(table(result))
    return result
