"""Time the bias baseline's fit + evaluation on Spark against a numpy reference on the same split.

    .venv/bin/python benchmarks/bench_baseline.py SOURCE [--sweeps 10] [--work DIR] [--profile local]

SOURCE is an ingest output directory (reads SOURCE/ratings) or a MovieLens ratings.csv. The
random 80/20 split is written once to WORK/split (untimed), then both sides read it:

- Spark: `BiasModel.fit` (DataFrame aggregations, `sweeps` alternating refits) and RMSE/MAE of
  `predict` on the test part;
- numpy: the same sweeps with `np.bincount` over integer codes in one process, the same
  cold-start rule (bias 0) and clipping.

Both must agree on RMSE (printed); the ratio says what the distributed version costs on one
machine, where the whole table fits in memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from mfspark.evaluation.metrics import rating_metrics
from mfspark.evaluation.split import uniform_draw
from mfspark.models.bias import BiasModel, BiasParams
from mfspark.runtime.provenance import versions
from mfspark.runtime.session import build_session, load_profile

log = logging.getLogger("bench_baseline")
CSV_SCHEMA = "userId int, movieId int, rating float, timestamp long"


def read_source(spark, source: Path):
    if source.suffix == ".csv":
        raw = spark.read.csv(str(source), header=True, schema=CSV_SCHEMA)
        return raw.select(F.col("userId").alias("user_id"), F.col("movieId").alias("movie_id"), "rating")
    return spark.read.parquet(str(source / "ratings")).select("user_id", "movie_id", "rating")


def spark_side(spark, split_dir: str, params: BiasParams) -> dict:
    started = time.perf_counter()
    data = spark.read.parquet(split_dir)
    train = data.where(~F.col("is_test")).drop("is_test")
    test = data.where(F.col("is_test")).drop("is_test")
    model = BiasModel.fit(train, params)
    fitted = time.perf_counter()
    metrics = rating_metrics(model.predict(test))
    return {"fit_s": fitted - started, "evaluate_s": time.perf_counter() - fitted, **metrics}


def numpy_side(split_dir: str, params: BiasParams) -> dict:
    started = time.perf_counter()
    data = pd.read_parquet(split_dir, columns=["user_id", "movie_id", "rating", "is_test"])
    loaded = time.perf_counter()
    train, test = data[~data["is_test"]], data[data["is_test"]]
    users, movies = pd.Index(pd.unique(train["user_id"])), pd.Index(pd.unique(train["movie_id"]))
    u, m = users.get_indexer(train["user_id"]), movies.get_indexer(train["movie_id"])
    rating = train["rating"].to_numpy(np.float64)
    mu = rating.mean()
    r = rating - mu
    n_u, n_i = np.bincount(u, minlength=len(users)), np.bincount(m, minlength=len(movies))
    b_u = np.zeros(len(users))
    for _ in range(params.sweeps):
        b_i = np.bincount(m, r - b_u[u], minlength=len(movies)) / (n_i + params.lambda_i)
        b_u = np.bincount(u, r - b_i[m], minlength=len(users)) / (n_u + params.lambda_u)
    fitted = time.perf_counter()
    tu, tm = users.get_indexer(test["user_id"]), movies.get_indexer(test["movie_id"])
    prediction = mu + np.where(tu >= 0, b_u[tu], 0.0) + np.where(tm >= 0, b_i[tm], 0.0)
    scale = params.resolved((rating.min(), rating.max()))  # the clipping `BiasModel.fit` sets (default: observed)
    error = np.clip(prediction, scale.min_rating, scale.max_rating) - test["rating"].to_numpy(np.float64)
    return {"read_s": loaded - started, "fit_s": fitted - loaded, "evaluate_s": time.perf_counter() - fitted,
            "rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error))), "count": len(test)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="ingest output directory or a ratings.csv")
    parser.add_argument("--work", default="out/bench_baseline", help="scratch directory (split, Spark temp)")
    parser.add_argument("--profile", default="local")
    parser.add_argument("--sweeps", type=int, default=BiasParams.sweeps)
    parser.add_argument("--lambda-u", type=float, default=BiasParams.lambda_u)
    parser.add_argument("--lambda-i", type=float, default=BiasParams.lambda_i)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = BiasParams(args.lambda_u, args.lambda_i, args.sweeps)
    spark = build_session(load_profile(args.profile, args.work), "bench-baseline")
    split_dir = str(Path(args.work).resolve() / "split")
    ratings = read_source(spark, args.source)
    ratings.withColumn("is_test", uniform_draw(args.seed) < 0.2).write.mode("overwrite").parquet(split_dir)
    rows = spark.read.parquet(split_dir).count()
    log.info("split of %d ratings written to %s", rows, split_dir)
    ours = spark_side(spark, split_dir, params)
    log.info("spark: %s", ours)
    reference = numpy_side(split_dir, params)
    log.info("numpy: %s", reference)
    result = {
        "source": str(args.source), "ratings": rows, "sweeps": args.sweeps, "spark_master": spark.sparkContext.master,
        "spark": {k: round(v, 6) for k, v in ours.items()}, "numpy": {k: round(v, 6) for k, v in reference.items()},
        "rmse_difference": abs(ours["rmse"] - reference["rmse"]),
        "ratio_fit_plus_evaluate": (ours["fit_s"] + ours["evaluate_s"]) / (reference["fit_s"] + reference["evaluate_s"]
                                                                          + reference["read_s"]),
        "versions": {**versions(spark), "numpy": np.__version__},
    }
    spark.stop()
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
