"""Spark MLlib's ALS as the reference for ours: the same split, rank, reg and iterations.

`compare` fits both on the same training ratings and scores both on the same test ratings
(those whose user and movie were seen in training: MLlib's "drop"). With biases, both fit
the residuals of the one bias baseline and predict baseline + dot. Used by
`mfspark compare-mllib`, `mfspark report` and `benchmarks/bench_als.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from pyspark.ml.recommendation import ALS as MLlibALS
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from mfspark.evaluation.metrics import rating_metrics
from mfspark.models.als.blocks import factor_gram
from mfspark.models.als.estimator import ALS, ALSParams
from mfspark.models.bias import BiasModel, clipped, with_bias_columns

TIMING = "each fit timed after an untimed 1-iteration warm-up fit of the same implementation on the same data"

Model = TypeVar("Model")


def fit_mllib(train: DataFrame, params: ALSParams, num_blocks: int) -> tuple[object, float]:
    """MLlib ALS with the same hyper-parameters; returns (model, fit seconds)."""
    estimator = MLlibALS(
        rank=params.rank, regParam=params.reg, maxIter=params.max_iter, seed=params.seed,
        numUserBlocks=params.num_user_blocks or num_blocks, numItemBlocks=params.num_item_blocks or num_blocks,
        nonnegative=params.nonnegative, checkpointInterval=params.checkpoint_interval or -1,
        implicitPrefs=params.implicit, alpha=params.alpha,
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


def warmed_up_fit(fit: Callable[[int], Model], max_iter: int) -> tuple[Model, float]:
    """`fit(1)` untimed, then `fit(max_iter)` timed; returns (model, seconds of the timed fit).

    Whichever implementation runs first in a fresh session otherwise pays for the JVM warming up (JIT), the
    Python workers starting and the cached input being read: ours, fitted first, looked 1.25x MLlib's time at
    0.8M ratings where a fresh process per fit measured 0.45x.
    """
    fit(1)
    started = time.perf_counter()
    model = fit(max_iter)
    return model, time.perf_counter() - started


def compare(train: DataFrame, test: DataFrame, params: ALSParams) -> dict:
    """Fit both on `train`, score both on `test`; the bias baseline (if any) is fitted once and shared."""
    spark = train.sparkSession
    parallelism = spark.sparkContext.defaultParallelism
    ours, ours_fit = warmed_up_fit(
        lambda iterations: ALS(**{**vars(params), "max_iter": iterations}).fit(train),
        params.max_iter)
    ours_metrics = rating_metrics(ours.predict(test, "drop"))
    baseline = None
    mllib_train = train
    if params.biases:
        baseline = ours.baseline
        mllib_train = baseline.residual_ratings(train)
    mllib_model, mllib_fit = warmed_up_fit(
        lambda iterations: fit_mllib(mllib_train, replace(params, max_iter=iterations), parallelism)[0],
        params.max_iter)
    mllib_metrics = rating_metrics(mllib_predictions(mllib_model, test, baseline))
    return {
        "rank": params.rank, "reg": params.reg, "max_iter": params.max_iter, "biases": params.biases,
        "ours_rmse": ours_metrics["rmse"], "mllib_rmse": mllib_metrics["rmse"],
        "ours_mae": ours_metrics["mae"], "mllib_mae": mllib_metrics["mae"],
        "ours_fit_s": round(ours_fit, 2), "mllib_fit_s": round(mllib_fit, 2),
        "fit_time_ratio": round(ours_fit / mllib_fit, 3),
        "rmse_rel_diff": (ours_metrics["rmse"] - mllib_metrics["rmse"]) / mllib_metrics["rmse"],
        "scored": ours_metrics["count"], "timing": TIMING,
    }


def implicit_objective(ratings: DataFrame, user_factors: DataFrame, item_factors: DataFrame, reg: float,
                       alpha: float) -> float:
    """The implicit-feedback objective (MLlib's `implicitPrefs`) of any model's factor tables (id, features).

    sum over all (u,i) of c (p - x.y)^2 + reg * (sum_u n+_u |x_u|^2 + sum_i n+_i |y_i|^2), with
    c = 1 + alpha |r|, p = [r > 0] on rated pairs and c = 1, p = 0 elsewhere. The all-pairs part
    is sum(X^T X * Y^T Y) from the two Grams (a small reduce each), plus a correction per rated
    pair, c (p - s)^2 - s^2; so ours and MLlib's fits are scored by the same numbers.
    """
    x_gram, y_gram = factor_gram(user_factors), factor_gram(item_factors)
    dot = F.aggregate(F.zip_with("_x", "_y", lambda a, b: a * b), F.lit(0.0), lambda acc, v: acc + v)
    confidence = 1.0 + alpha * F.abs(F.col("rating"))
    preference = (F.col("rating") > 0).cast("double")
    rated = (ratings.join(user_factors.select(F.col("id").alias("user_id"), F.col("features").alias("_x")), "user_id")
             .join(item_factors.select(F.col("id").alias("movie_id"), F.col("features").alias("_y")), "movie_id")
             .withColumn("_s", dot))
    norm = lambda column: F.aggregate(column, F.lit(0.0), lambda acc, v: acc + v * v)  # noqa: E731
    row = rated.agg(
        F.sum(confidence * (preference - F.col("_s")) ** 2 - F.col("_s") ** 2).alias("correction"),
        F.sum(preference * (norm(F.col("_x")) + norm(F.col("_y")))).alias("penalty"),
    ).first()
    return float((x_gram * y_gram).sum()) + row["correction"] + reg * row["penalty"]
