"""`mfspark train`: split the ingested ratings, fit block-partitioned ALS, evaluate, write factors.

Outputs (committed atomically): `OUT/factors/users`, `OUT/factors/items` (id int,
features array<float>), `OUT/factors/metadata.json`, `OUT/factors/baseline/` for biased
models, and `OUT/metrics.json`.
"""

from __future__ import annotations

import argparse
import logging
import time

from pyspark.sql import SparkSession

from mfspark.commands.args import add_als_arguments, add_split_arguments, als_params, load_split, run_info
from mfspark.evaluation.metrics import rating_metrics
from mfspark.models.als.estimator import ALS, model_name
from mfspark.runtime.storage import atomic_output, write_json

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_split_arguments(parser)
    add_als_arguments(parser)
    parser.add_argument("--out", required=True, help="output directory (replaced atomically)")


def run(args: argparse.Namespace, spark: SparkSession) -> dict:
    split = load_split(spark, args)
    params = als_params(args)
    started = time.perf_counter()
    model = ALS(**vars(params)).fit(split.train)
    fit_seconds = time.perf_counter() - started
    metrics = rating_metrics(model.predict(split.test, args.cold_start))
    metrics["unscored"] = metrics["excluded"]
    result = {
        **run_info(spark, args, split),
        "model": model_name(params),
        "params": {**vars(params), "cold_start": args.cold_start},
        "rmse": metrics["rmse"],
        "mae": metrics["mae"],
        "test": metrics,
        "objective": [it.objective for it in model.history.iterations],
        "train_rmse": [it.train_rmse for it in model.history.iterations],
        "timings": {"fit_s": fit_seconds, "build_s": model.history.build_seconds,
                    "iterations_s": [it.seconds for it in model.history.iterations]},
    }
    with atomic_output(spark, args.out) as staging:
        model.save(f"{staging}/factors")
        write_json(spark, f"{staging}/metrics.json", result)
    log.info("ALS rank %d: test RMSE %.4f, MAE %.4f, fit %.1f s", params.rank, metrics["rmse"], metrics["mae"],
             fit_seconds)
    return {k: result[k] for k in ("model", "rmse", "mae")} | {"fit_s": round(fit_seconds, 2)}
