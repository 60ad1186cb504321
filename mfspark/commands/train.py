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

from mfspark.commands.args import add_split_arguments, load_split, run_info
from mfspark.evaluation.metrics import rating_metrics
from mfspark.models.als.estimator import ALS, ALSParams
from mfspark.runtime.storage import atomic_output, write_json

log = logging.getLogger(__name__)


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
    group.add_argument("--biases", action="store_true", help="fit factors to the bias baseline's residuals")
    group.add_argument("--bias-reg-user", type=float, default=defaults.bias_reg_user)
    group.add_argument("--bias-reg-item", type=float, default=defaults.bias_reg_item)
    group.add_argument("--cold-start", choices=("nan", "drop", "baseline"), default="baseline")


def als_params(args: argparse.Namespace) -> ALSParams:
    return ALSParams(
        rank=args.rank, reg=args.reg, max_iter=args.max_iter, num_user_blocks=args.user_blocks,
        num_item_blocks=args.item_blocks, seed=args.seed, nonnegative=args.nonnegative,
        checkpoint_interval=args.checkpoint_interval, storage_level=args.storage_level, biases=args.biases,
        bias_reg_user=args.bias_reg_user, bias_reg_item=args.bias_reg_item, cold_start=args.cold_start,
    )


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
    scored = model.predict(split.test).cache()
    metrics = rating_metrics(scored)
    metrics["unscored"] = scored.where("isnan(prediction)").count()
    scored.unpersist()
    result = {
        **run_info(spark, args, split),
        "model": "als-biased" if params.biases else "als",
        "params": vars(params),
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
