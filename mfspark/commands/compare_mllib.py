"""`mfspark compare-mllib`: ours and Spark MLlib's ALS on the same split, same rank, reg and iterations.

Prints one JSON line (ours_rmse, mllib_rmse, ours_fit_s, mllib_fit_s, ...) and a table.
With `--biases` both fit the residuals of the same bias baseline and predict baseline + dot.
Both score the test ratings whose user and movie were seen in training (MLlib's "drop").
"""

from __future__ import annotations

import argparse
import logging
import time

from pyspark.ml.recommendation import ALS as MLlibALS
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from mfspark.commands.args import add_split_arguments, load_split, run_info
from mfspark.commands.train import add_als_arguments, als_params
from mfspark.evaluation.metrics import rating_metrics
from mfspark.models.als.estimator import ALS, ALSParams
from mfspark.models.bias import BiasModel, clipped, with_bias_columns
from mfspark.runtime.storage import atomic_output, write_json

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_split_arguments(parser)
    add_als_arguments(parser)
    parser.add_argument("--out", required=True, help="directory for comparison.json (replaced atomically)")


def fit_mllib(train: DataFrame, params: ALSParams, num_blocks: int) -> tuple[object, float]:
    """MLlib ALS with the same hyper-parameters; returns (model, fit seconds)."""
    estimator = MLlibALS(
        rank=params.rank, regParam=params.reg, maxIter=params.max_iter, seed=params.seed,
        numUserBlocks=params.num_user_blocks or num_blocks, numItemBlocks=params.num_item_blocks or num_blocks,
        nonnegative=params.nonnegative, checkpointInterval=params.checkpoint_interval or -1,
        userCol="user_id", itemCol="movie_id", ratingCol="rating", coldStartStrategy="drop",
    )
    started = time.perf_counter()
    model = estimator.fit(train)
    return model, time.perf_counter() - started


def mllib_predictions(model, test: DataFrame, baseline: BiasModel | None) -> DataFrame:
    scored = model.transform(test)
    if baseline is None:
        return scored
    scored = with_bias_columns(scored, baseline.user_biases, baseline.movie_biases)
    return scored.withColumn("prediction", clipped(baseline.baseline_column() + F.col("prediction"), baseline.params))


def compare(train: DataFrame, test: DataFrame, params: ALSParams) -> dict:
    """Fit both on `train`, score both on `test`; the bias baseline (if any) is fitted once and shared."""
    spark = train.sparkSession
    parallelism = spark.sparkContext.defaultParallelism
    started = time.perf_counter()
    ours = ALS(**{**vars(params), "cold_start": "drop"}).fit(train)
    ours_fit = time.perf_counter() - started
    ours_metrics = rating_metrics(ours.predict(test, "drop"))
    baseline = None
    mllib_train = train
    if params.biases:
        baseline = ours.baseline
        mllib_train = baseline.residuals(train).select("user_id", "movie_id", F.col("residual").alias("rating"))
    mllib_model, mllib_fit = fit_mllib(mllib_train, params, parallelism)
    mllib_metrics = rating_metrics(mllib_predictions(mllib_model, test, baseline))
    return {
        "rank": params.rank, "reg": params.reg, "max_iter": params.max_iter, "biases": params.biases,
        "ours_rmse": ours_metrics["rmse"], "mllib_rmse": mllib_metrics["rmse"],
        "ours_mae": ours_metrics["mae"], "mllib_mae": mllib_metrics["mae"],
        "ours_fit_s": round(ours_fit, 2), "mllib_fit_s": round(mllib_fit, 2),
        "fit_time_ratio": round(ours_fit / mllib_fit, 3),
        "rmse_rel_diff": (ours_metrics["rmse"] - mllib_metrics["rmse"]) / mllib_metrics["rmse"],
        "scored": ours_metrics["count"],
    }


def table(result: dict) -> str:
    rows = [("", "ours", "MLlib"), ("RMSE", f"{result['ours_rmse']:.4f}", f"{result['mllib_rmse']:.4f}"),
            ("MAE", f"{result['ours_mae']:.4f}", f"{result['mllib_mae']:.4f}"),
            ("fit s", f"{result['ours_fit_s']:.1f}", f"{result['mllib_fit_s']:.1f}")]
    return "\n".join(f"{a:<8}{b:>10}{c:>10}" for a, b, c in rows)


def run(args: argparse.Namespace, spark: SparkSession) -> dict:
    split = load_split(spark, args)
    result = compare(split.train, split.test, als_params(args))
    with atomic_output(spark, args.out) as staging:
        write_json(spark, f"{staging}/comparison.json", {**run_info(spark, args, split), **result})
    print(table(result))
    return result
