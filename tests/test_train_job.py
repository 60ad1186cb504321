"""`mfspark train` end to end on a tiny ingest-shaped table."""

import argparse
import datetime as dt

import pytest
from chispa import assert_df_equality

from mfspark.commands import train as train_job
from mfspark.models.als.estimator import ALSModel
from mfspark.runtime.storage import read_json


def ingest_like(spark, path):
    rows = [(u, m, float((u * m) % 5 + 1), dt.datetime(2020, 1, 1) + dt.timedelta(days=u + m))
            for u in range(1, 25) for m in range(1, 16) if (u + m) % 3]
    spark.createDataFrame(rows, "user_id int, movie_id int, rating float, rated_at timestamp") \
        .write.parquet(f"{path}/ratings")
    return len(rows)


def run_train(spark, argv):
    parser = argparse.ArgumentParser()
    train_job.add_arguments(parser)
    return train_job.run(parser.parse_args(argv), spark)


def test_train_writes_factors_and_metrics_atomically(spark, tmp_path):
    total = ingest_like(spark, tmp_path / "ingest")
    out = str(tmp_path / "als")
    argv = ["--input", str(tmp_path / "ingest"), "--out", out, "--rank", "3", "--max-iter", "4", "--biases",
            "--split", "temporal"]
    summary = run_train(spark, argv)
    metrics = read_json(spark, f"{out}/metrics.json")
    assert metrics["rmse"] == pytest.approx(summary["rmse"])
    assert metrics["split"]["train"] + metrics["split"]["test"] == total
    assert len(metrics["objective"]) == 4 and metrics["objective"] == sorted(metrics["objective"], reverse=True)
    assert metrics["params"]["biases"] is True and metrics["model"] == "als-biased"
    users = spark.read.parquet(f"{out}/factors/users")
    assert users.schema.simpleString() == "struct<id:int,features:array<float>>"
    assert users.count() == 24
    model = ALSModel.load(spark, f"{out}/factors")
    assert_df_equality(model.item_factors, spark.read.parquet(f"{out}/factors/items"), ignore_row_order=True)

    before = sorted(users.collect())
    run_train(spark, argv)  # a rerun replaces the output whole and gives the same factors
    assert sorted(spark.read.parquet(f"{out}/factors/users").collect()) == before


def test_missing_input_is_a_clear_error(spark, tmp_path):
    from mfspark.errors import InputError

    with pytest.raises(InputError, match="mfspark ingest"):
        run_train(spark, ["--input", str(tmp_path / "nowhere"), "--out", str(tmp_path / "als")])
