"""The nightly job a Spark user writes with MLlib alone: the yardstick of `bench_pipeline.py`.

    python benchmarks/mllib_pipeline.py --input RELEASE --out DIR [--master local[*]] [--driver-memory 8g]

The six stages of `mfspark pipeline`, written the plain way (no quarantine, no manifests, no seen-movie filter):
ingest `spark.read.csv` with a schema, the newest rating of each (user, movie) kept by `row_number`, to Parquet;
baseline `randomSplit` 80/20 (seed 42), undamped biases by two aggregations, their test RMSE; train
`ALS.fit` (explicit, rank 10, 10 iterations); train_lists `ALS.fit(implicitPrefs=True)` on the ratings >= 4;
evaluate `RegressionEvaluator` (RMSE) and `RankingEvaluator` (precision@10, NDCG@10) over
`recommendForUserSubset` of the test users, relevant = test rating >= 4; recommend `recommendForAllUsers(10)`
exploded to Parquet. Prints one JSON line: each stage's seconds and the metrics.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path

from pyspark.ml.evaluation import RankingEvaluator, RegressionEvaluator
from pyspark.ml.recommendation import ALS
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

RATINGS = "userId INT, movieId INT, rating DOUBLE, timestamp LONG"
K = 10


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="a release directory (ratings.csv or .dat)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--reg", type=float, default=0.1)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    spark = (SparkSession.builder.master(args.master).appName("mllib-pipeline")
             .config("spark.driver.memory", args.driver_memory).config("spark.ui.enabled", "false")
             .config("spark.local.dir", str(args.out / "_spark_tmp")).getOrCreate())
    spark.sparkContext.setCheckpointDir(str(args.out / "_checkpoints"))
    seconds: dict[str, float] = {}
    metrics: dict[str, float] = {}

    @contextmanager
    def timed(name: str):
        started = time.perf_counter()
        yield
        seconds[name] = round(time.perf_counter() - started, 2)

    with timed("ingest"):
        ingest(spark, args)
    with timed("baseline"):
        ratings = spark.read.parquet(str(args.out / "ratings"))
        train, test = (part.cache() for part in ratings.randomSplit([0.8, 0.2], seed=42))
        metrics["baseline_rmse"] = bias_rmse(train, test)
    als = dict(rank=args.rank, maxIter=args.max_iter, regParam=args.reg, userCol="userId", itemCol="movieId",
               ratingCol="rating", seed=1)
    with timed("train"):
        explicit = ALS(**als, coldStartStrategy="drop").fit(train)
    with timed("train_lists"):
        lists = ALS(**als, implicitPrefs=True, alpha=1.0).fit(train.where("rating >= 4"))
    with timed("evaluate"):
        metrics["rmse"] = RegressionEvaluator(metricName="rmse", labelCol="rating").evaluate(explicit.transform(test))
        metrics.update(ranking(lists, test))
    with timed("recommend"):
        (lists.recommendForAllUsers(K).select("userId", F.posexplode("recommendations").alias("pos", "rec"))
         .select("userId", (F.col("pos") + 1).alias("rank"), F.col("rec.movieId").alias("movieId"),
                 F.col("rec.rating").alias("score"))
         .write.mode("overwrite").parquet(str(args.out / "recommendations")))
    spark.stop()
    print(json.dumps({"seconds": seconds, "metrics": metrics}))


def ingest(spark: SparkSession, args: argparse.Namespace) -> None:
    csv = args.input / "ratings.csv"  # ml-latest, ml-20m and later; ml-10m and ml-1m have `::`-separated .dat
    raw = (spark.read.csv(str(csv), schema=RATINGS, header=True, mode="PERMISSIVE") if csv.exists() else
           spark.read.csv(str(args.input / "ratings.dat"), schema=RATINGS, sep="::", mode="PERMISSIVE"))
    newest = Window.partitionBy("userId", "movieId").orderBy(F.desc("timestamp"))
    (raw.dropna().withColumn("n", F.row_number().over(newest)).where("n = 1").drop("n")
     .write.mode("overwrite").parquet(str(args.out / "ratings")))


def bias_rmse(train, test) -> float:
    mu = train.agg(F.avg("rating")).first()[0]
    movie = train.groupBy("movieId").agg(F.avg(F.col("rating") - mu).alias("bi"))
    user = (train.join(movie, "movieId").groupBy("userId")
            .agg(F.avg(F.col("rating") - mu - F.col("bi")).alias("bu")))
    predicted = (test.join(movie, "movieId", "left").join(user, "userId", "left")
                 .withColumn("prediction", F.lit(mu) + F.coalesce("bi", F.lit(0.0)) + F.coalesce("bu", F.lit(0.0))))
    return RegressionEvaluator(metricName="rmse", labelCol="rating").evaluate(predicted)


def ranking(model, test) -> dict[str, float]:
    """precision@10 and NDCG@10 of the lists for every test user with a relevant (>= 4) rating."""
    relevant = (test.where("rating >= 4").groupBy("userId")
                .agg(F.collect_list(F.col("movieId").cast("double")).alias("label")))
    top = (model.recommendForUserSubset(relevant.select("userId"), K)
           .select("userId", F.col("recommendations.movieId").cast("array<double>").alias("prediction")))
    scored = relevant.join(top, "userId", "left").withColumn(
        "prediction", F.coalesce("prediction", F.array().cast("array<double>")))
    evaluator = RankingEvaluator(labelCol="label", predictionCol="prediction", k=K)
    return {"precision@10": evaluator.setMetricName("precisionAtK").evaluate(scored),
            "ndcg@10": evaluator.setMetricName("ndcgAtK").evaluate(scored)}


if __name__ == "__main__":
    main()
