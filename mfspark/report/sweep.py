"""Rank x lambda grid of mfspark's ALS on one split: train and held-out RMSE per point.

Every point is fitted by `ALS.fit_each` on one layout: the ratings are blocked, shuffled and cached
once (and the bias baseline fitted once) for the whole grid, since neither depends on rank or lambda.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace

from pyspark.sql import DataFrame, SparkSession

from mfspark.errors import ConfigError
from mfspark.evaluation.metrics import rating_metrics
from mfspark.evaluation.split import Split
from mfspark.models.als.estimator import ALS, ALSParams

log = logging.getLogger(__name__)

SWEEP_SCHEMA = "rank int, reg double, max_iter int, biases boolean, train_rmse double, test_rmse double, " \
               "test_mae double, fit_s double"


def grid(base: ALSParams, ranks: list[int], regs: list[float]) -> list[ALSParams]:
    if not ranks or not regs:
        raise ConfigError("the sweep needs at least one rank and one lambda")
    return [replace(base, rank=rank, reg=reg) for rank in ranks for reg in regs]


def run_sweep(split: Split, base: ALSParams, ranks: list[int], regs: list[float]) -> list[dict]:
    """Fit every (rank, lambda) on `split.train`; RMSE on the training ratings and on `split.test`.

    `fit_s` is the point's own iterations; the layout (and bias baseline) they share is built once, before.
    """
    points = []
    started = time.perf_counter()
    for model in ALS(**asdict(base)).fit_each(split.train, grid(base, ranks, regs)):
        p = model.params
        train = rating_metrics(model.predict(split.train))
        test = rating_metrics(model.predict(split.test))
        points.append({"rank": p.rank, "reg": p.reg, "max_iter": p.max_iter, "biases": p.biases,
                       "train_rmse": train["rmse"], "test_rmse": test["rmse"], "test_mae": test["mae"],
                       "fit_s": round(model.history.fit_seconds - model.history.build_seconds, 3)})
        log.info("sweep rank %d, lambda %g: train RMSE %.4f, held-out RMSE %.4f (%d/%d, %.0f s so far)", p.rank,
                 p.reg, train["rmse"], test["rmse"], len(points), len(ranks) * len(regs),
                 time.perf_counter() - started)
    return points


def points_frame(spark: SparkSession, points: list[dict]) -> DataFrame:
    columns = [c.split()[0] for c in SWEEP_SCHEMA.split(", ")]
    return spark.createDataFrame([tuple(p[c] for c in columns) for p in points], SWEEP_SCHEMA)


def read_points(spark: SparkSession, path: str) -> list[dict]:
    """A sweep's Parquet results (a grid: a few dozen rows)."""
    return [row.asDict() for row in spark.read.parquet(path).orderBy("rank", "reg").collect()]
