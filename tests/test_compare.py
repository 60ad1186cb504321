"""Our ALS against Spark MLlib's on the same data: real ml-latest-small and planted synthetic data."""

import argparse
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from pyspark.ml.recommendation import ALS as MLlibALS
from pyspark.sql import functions as F

from mfspark.commands.compare_mllib import table
from mfspark.data.synth import generate
from mfspark.evaluation import mllib_reference
from mfspark.evaluation.mllib_reference import compare, warmed_up_fit
from mfspark.evaluation.split import random_split
from mfspark.models.als.estimator import ALS, ALSParams

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


def test_compare_job_writes_comparison_json(spark, tmp_path, small_split, monkeypatch):
    from mfspark.commands import compare_mllib as job
    from mfspark.runtime.commit import read_json

    ingest_out = tmp_path / "ingest"
    train, test = small_split
    sample = train.unionByName(test).where(F.col("user_id") <= 60).withColumn("rated_at", F.current_timestamp())
    sample.write.parquet(str(ingest_out / "ratings"))
    fitted = {"ours": [], "mllib": []}  # every model each side fitted (the warm-up's, then the timed fit's)
    for name, cls in (("ours", ALS), ("mllib", MLlibALS)):
        monkeypatch.setattr(cls, "fit", lambda self, *a, _fit=cls.fit, _to=fitted[name], **kw:
                            _to.append(_fit(self, *a, **kw)) or _to[-1])
    parser = argparse.ArgumentParser()
    job.add_arguments(parser)
    args = parser.parse_args(["--input", str(ingest_out), "--out", str(tmp_path / "cmp"), "--max-iter", "3"])
    job.run(args, spark)
    saved = read_json(spark, str(tmp_path / "cmp" / "comparison.json"))
    assert {"ours_rmse", "mllib_rmse", "ours_fit_s", "mllib_fit_s"} <= saved.keys()
    assert saved["split"]["train"] + saved["split"]["test"] == sample.count()

    # Both RMSEs recomputed with numpy from the timed fits' factors, on the job's split (seed 42) of the sample:
    # the test pairs whose user and movie both have factors (MLlib's "drop"), ours clipped to the training scale.
    split = random_split(spark.read.parquet(str(ingest_out / "ratings")).select("user_id", "movie_id", "rating"),
                         0.2, seed=42)
    train_rows, test_rows = split.train.toPandas(), split.test.toPandas()
    scale = (train_rows.rating.min(), train_rows.rating.max())
    ours, mllib = fitted["ours"][-1], fitted["mllib"][-1]
    expected = {"ours": held_out_rmse(ours.user_factors, ours.item_factors, test_rows, scale),
                "mllib": held_out_rmse(mllib.userFactors, mllib.itemFactors, test_rows, None)}
    assert saved["ours_rmse"] == pytest.approx(expected["ours"], rel=1e-6)
    assert saved["mllib_rmse"] == pytest.approx(expected["mllib"], rel=1e-6)


def held_out_rmse(user_factors, item_factors, test: pd.DataFrame, scale: tuple[float, float] | None) -> float:
    users, items = ({row["id"]: np.asarray(row["features"], np.float64) for row in side.collect()}
                    for side in (user_factors, item_factors))
    known = test[test.user_id.isin(users.keys()) & test.movie_id.isin(items.keys())]
    predicted = np.array([users[u] @ items[m] for u, m in zip(known.user_id, known.movie_id, strict=True)])
    if scale is not None:
        predicted = np.clip(predicted, *scale)
    assert len(known) > 100
    return float(np.sqrt(np.mean((predicted - known.rating.to_numpy(np.float64)) ** 2)))


def test_warmed_up_fit_times_only_the_fit_after_the_warm_up(monkeypatch):
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(mllib_reference, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    calls = []

    def fit(iterations):  # the warm-up is slow (a cold JVM), the real fit fast
        calls.append(iterations)
        clock.now += 100.0 if iterations == 1 else 7.0
        return f"model-{iterations}"

    assert warmed_up_fit(fit, 10) == ("model-10", 7.0)
    assert calls == [1, 10]


def test_each_timed_fit_follows_a_warm_up_of_the_same_implementation(spark, monkeypatch):
    fits = []

    def recording(name, fit, iterations_of):
        def wrapped(self, *args, **kwargs):
            fits.append((name, iterations_of(self)))
            return fit(self, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(ALS, "fit", recording("ours", ALS.fit, lambda est: est.params.max_iter))
    monkeypatch.setattr(MLlibALS, "fit", recording("mllib", MLlibALS.fit, lambda est: est.getMaxIter()))
    ratings = spark.createDataFrame([(u, m, float((u * m) % 5 + 1)) for u in range(1, 9) for m in range(1, 7)],
                                    "user_id int, movie_id int, rating float")
    result = compare(ratings, ratings, ALSParams(rank=2, reg=0.1, max_iter=3, seed=1))
    assert fits == [("ours", 1), ("ours", 3), ("mllib", 1), ("mllib", 3)]
    assert result["timing"] == mllib_reference.TIMING
    assert "warm-up" in table(result)
