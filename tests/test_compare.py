"""Our ALS against Spark MLlib's on the same data: real ml-latest-small and planted synthetic data."""

import argparse

import pandas as pd
import pytest
from pyspark.sql import functions as F

from mfspark.data.synth import generate
from mfspark.evaluation.mllib_reference import compare
from mfspark.evaluation.split import random_split
from mfspark.models.als.estimator import ALSParams

CSV_SCHEMA = "user_id int, movie_id int, rating float, ts long"


@pytest.fixture(scope="module")
def small_split(spark, ml_latest_small):
    ratings = spark.read.csv(str(ml_latest_small / "ratings.csv"), header=True, schema=CSV_SCHEMA)
    split = random_split(ratings.select("user_id", "movie_id", "rating"), 0.2, seed=42)
    return split.train.cache(), split.test.cache()


def test_matches_mllib_on_ml_latest_small_within_one_percent(small_split):
    train, test = small_split
    result = compare(train, test, ALSParams(rank=10, reg=0.1, max_iter=10, seed=1))
    assert abs(result["ours_rmse"] - result["mllib_rmse"]) / result["mllib_rmse"] <= 0.01
    assert 0.85 < result["ours_rmse"] < 0.92  # MLlib's rank-10 figure on such a split is about 0.88-0.89


def test_both_reach_the_planted_noise_floor(spark, tmp_path):
    truth = generate("ml-1m", tmp_path / "synth", seed=3, scale=0.05)
    frame = pd.read_csv(tmp_path / "synth" / "ratings.dat", sep="::", engine="python", encoding="latin-1",
                        names=["user_id", "movie_id", "rating", "ts"])
    ratings = spark.createDataFrame(frame[["user_id", "movie_id", "rating"]].astype({"rating": "float32"}),
                                    "user_id int, movie_id int, rating float")
    split = random_split(ratings, 0.2, seed=5)
    result = compare(split.train, split.test, ALSParams(rank=10, reg=0.05, max_iter=10, biases=True, seed=2))
    floor = truth["noise_floor_rmse"]
    assert result["ours_rmse"] < 1.12 * floor, (result, floor)
    assert result["mllib_rmse"] < 1.12 * floor, (result, floor)


def test_compare_job_writes_comparison_json(spark, tmp_path, small_split):
    from mfspark.commands import compare_mllib as job
    from mfspark.runtime.storage import read_json

    ingest_out = tmp_path / "ingest"
    train, test = small_split
    sample = train.unionByName(test).where(F.col("user_id") <= 60).withColumn("rated_at", F.current_timestamp())
    sample.write.parquet(str(ingest_out / "ratings"))
    parser = argparse.ArgumentParser()
    job.add_arguments(parser)
    args = parser.parse_args(["--input", str(ingest_out), "--out", str(tmp_path / "cmp"), "--max-iter", "3"])
    result = job.run(args, spark)
    saved = read_json(spark, str(tmp_path / "cmp" / "comparison.json"))
    assert saved["ours_rmse"] == pytest.approx(result["ours_rmse"])
    assert {"ours_rmse", "mllib_rmse", "ours_fit_s", "mllib_fit_s"} <= saved.keys()
    assert saved["split"]["train"] + saved["split"]["test"] == sample.count()
