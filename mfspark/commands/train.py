"""`mfspark train`: split the ingested ratings, fit block-partitioned ALS, evaluate, write factors.

Outputs (committed atomically): `OUT/factors/users`, `OUT/factors/items` (id int,
features array<float>), `OUT/factors/metadata.json`, `OUT/factors/baseline/` for biased
models, and `OUT/metrics.json`. `--implicit` models are scored by ranking metrics of their
top-10 lists (training movies excluded; relevant: test rating >= 4) instead of RMSE;
`--warm-start DIR` starts from a previous model (a `train --out` directory or its `factors/`).
"""

from __future__ import annotations

import argparse
import logging
import time

from pyspark.sql import SparkSession

from mfspark.commands.args import (
    add_als_arguments,
    add_split_arguments,
    als_params,
    cold_start,
    load_split,
    model_dir,
    run_info,
)
from mfspark.evaluation.metrics import ranking_metrics, rating_metrics
from mfspark.models.als.estimator import ALS, ALSModel, model_name
from mfspark.runtime.commit import atomic_output, write_json

log = logging.getLogger(__name__)
IMPLICIT_TOP_N = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_split_arguments(parser)
    add_als_arguments(parser)
    parser.add_argument("--warm-start", metavar="MODEL_DIR",
                        help="start from this model's factors (a train --out directory or its factors/)")
    parser.add_argument("--out", required=True, help="output directory (replaced atomically)")


def load_initial_model(spark: SparkSession, path: str) -> ALSModel:
    """The model under `path`: a train output (model in factors/) or a model directory itself."""
    return ALSModel.load(spark, model_dir(spark, path, "--warm-start"))


def run(args: argparse.Namespace, spark: SparkSession) -> dict:
    params, strategy = als_params(args, spark), cold_start(args, spark)
    split = load_split(spark, args)
    started = time.perf_counter()
    initial = load_initial_model(spark, args.warm_start) if args.warm_start else None
    model = ALS(**vars(params)).fit(split.train, initial_model=initial)
    fit_seconds = time.perf_counter() - started
    if params.implicit:  # preference scores: judged by the lists they make, not by RMSE
        lists = model.recommend_for_users(None, IMPLICIT_TOP_N, split.train.select("user_id", "movie_id"))
        metrics = {**ranking_metrics(lists, split.test, IMPLICIT_TOP_N), "rmse": None, "mae": None}
    else:
        metrics = rating_metrics(model.predict(split.test, strategy))
        metrics["unscored"] = metrics["excluded"]
    result = {
        **run_info(spark, args, split),
        "model": model_name(params),
        "params": {**vars(params), "cold_start": strategy, "warm_start": args.warm_start},
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
    log.info("ALS rank %d: test %s, fit %.1f s", params.rank, {k: v for k, v in metrics.items() if "@" in k or
                                                                 k in ("rmse", "mae")}, fit_seconds)
    summary = {k: metrics[k] for k in metrics if "@" in k} if params.implicit else {}
    return {k: result[k] for k in ("model", "rmse", "mae")} | summary | {"fit_s": round(fit_seconds, 2)}
