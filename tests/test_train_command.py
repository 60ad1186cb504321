"""`mfspark train` end to end on a tiny ingest-shaped table."""

import argparse
import datetime as dt
import math
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from chispa import assert_df_equality

from mfspark.commands import train as train_job
from mfspark.models.als.estimator import ALS, ALSModel
from mfspark.runtime.commit import read_json
from tests.independent import precision_at_k, predicted_ratings, rmse, temporal_split


def ingest_like(spark, path):
    rows = [(u, m, float((u * m) % 5 + 1), dt.datetime(2020, 1, 1) + dt.timedelta(days=u + m))
            for u in range(1, 25) for m in range(1, 16) if (u + m) % 3]
    rows.append((1, 99, 4.0, dt.datetime(2021, 1, 1)))  # rated once, last: a temporal split's unseen movie
    spark.createDataFrame(rows, "user_id int, movie_id int, rating float, rated_at timestamp") \
        .write.parquet(f"{path}/ratings")
    return len(rows)


def run_train(spark, argv):
    parser = argparse.ArgumentParser()
    train_job.add_arguments(parser)
    return train_job.run(parser.parse_args(argv), spark)


def fitted_models(monkeypatch) -> list:
    """Collects the models `ALS.fit` returns while a job runs: the in-memory models it saved."""
    models = []
    fit = ALS.fit
    monkeypatch.setattr(ALS, "fit", lambda self, ratings, **kw: models.append(fit(self, ratings, **kw)) or models[-1])
    return models


def test_train_writes_factors_and_metrics_atomically(spark, tmp_path, monkeypatch):
    total = ingest_like(spark, tmp_path / "ingest")
    in_memory = fitted_models(monkeypatch)
    out = str(tmp_path / "als")
    argv = ["--input", str(tmp_path / "ingest"), "--out", out, "--rank", "3", "--max-iter", "4", "--biases",
            "--split", "temporal"]
    summary = run_train(spark, argv)
    metrics = read_json(spark, f"{out}/metrics.json")
    # The held-out RMSE of the written model, recomputed with numpy on the same temporal split made with pandas.
    train, test = temporal_split(pq.read_table(tmp_path / "ingest" / "ratings").to_pandas(), 0.2)
    assert (metrics["split"]["train"], metrics["split"]["test"]) == (len(train), len(test))
    assert len(train) + len(test) == total
    expected = rmse(predicted_ratings(Path(out) / "factors", test, (train.rating.min(), train.rating.max())),
                    test.rating)
    assert metrics["rmse"] == pytest.approx(expected, rel=1e-6) and summary["rmse"] == pytest.approx(expected, rel=1e-6)
    assert len(metrics["objective"]) == 4 and metrics["objective"] == sorted(metrics["objective"], reverse=True)
    assert metrics["params"]["biases"] is True and metrics["model"] == "als-biased"
    users = spark.read.parquet(f"{out}/factors/users")
    assert users.schema.simpleString() == "struct<id:int,features:array<float>>"
    assert users.count() == 24
    loaded = ALSModel.load(spark, f"{out}/factors")
    assert_df_equality(loaded.item_factors, in_memory[0].item_factors, ignore_row_order=True, ignore_nullable=True)
    assert_df_equality(loaded.user_factors, in_memory[0].user_factors, ignore_row_order=True, ignore_nullable=True)
    assert loaded.baseline.mu == in_memory[0].baseline.mu

    before = sorted(users.collect())
    run_train(spark, argv)  # a rerun replaces the output whole and gives the same factors
    assert sorted(spark.read.parquet(f"{out}/factors/users").collect()) == before


def test_missing_input_is_a_clear_error(spark, tmp_path):
    from mfspark.errors import InputError

    with pytest.raises(InputError, match="mfspark ingest"):
        run_train(spark, ["--input", str(tmp_path / "nowhere"), "--out", str(tmp_path / "als")])


def test_cold_start_nan_reports_a_real_rmse_and_how_many_were_left_out(spark, tmp_path):
    ingest_like(spark, tmp_path / "ingest")
    argv = ["--input", str(tmp_path / "ingest"), "--rank", "2", "--max-iter", "2", "--split", "temporal"]
    nan = run_train(spark, [*argv, "--out", str(tmp_path / "nan"), "--cold-start", "nan"])
    drop = run_train(spark, [*argv, "--out", str(tmp_path / "drop"), "--cold-start", "drop"])
    metrics = read_json(spark, str(tmp_path / "nan" / "metrics.json"))
    assert not math.isnan(nan["rmse"]) and nan["rmse"] == pytest.approx(drop["rmse"], rel=1e-12)
    unseen = metrics["split"]["test_unseen_any"]
    assert unseen > 0 and metrics["test"]["excluded"] == metrics["test"]["unscored"] == unseen
    assert metrics["test"]["count"] == metrics["split"]["test"] - unseen
    assert metrics["params"]["cold_start"] == "nan"


def test_zero_iterations_is_refused(spark, tmp_path):
    from mfspark.errors import ConfigError

    ingest_like(spark, tmp_path / "ingest")
    with pytest.raises(ConfigError, match=r"max_iter \(--max-iter\) must be 1 or more, got 0"):
        run_train(spark, ["--input", str(tmp_path / "ingest"), "--out", str(tmp_path / "als"), "--max-iter", "0"])
    assert not (tmp_path / "als").exists()


def parsed(argv):
    parser = argparse.ArgumentParser()
    train_job.add_arguments(parser)
    return train_job.als_params(parser.parse_args(["--out", "o", *argv]))


def test_bias_options_and_the_accurate_preset():
    from mfspark.models.als.estimator import PRESETS

    assert (parsed([]).biases, parsed(["--biases"]).biases, parsed(["--biases"]).bias_fit) == (False, True, "baseline")
    learned = parsed(["--biases", "--bias-fit", "learned", "--implicit-weight", "0.2"])
    assert (learned.learned_biases, learned.rated_weight) == (True, 0.2)
    accurate = parsed(["--preset", "accurate", "--rank", "7", "--user-blocks", "3"])
    # the preset's values, except an option given: it wins, as in `pipeline` (later wins: default, preset, option)
    assert {key: getattr(accurate, key) for key in PRESETS["accurate"]} == PRESETS["accurate"] | {"rank": 7}
    assert accurate.num_user_blocks == 3  # options the preset does not name still apply


def test_train_scores_a_predefined_ml100k_fold_with_implicit_information(spark, tmp_path):
    rows = [(u, m, (u * m) % 5 + 1, 881250949 + u) for u in range(1, 21) for m in range(1, 13) if (u + m) % 3]
    base, test = rows[::2] + rows[1::4], rows[3::4]
    for name, part in (("u1.base", base), ("u1.test", test)):
        (tmp_path / name).write_text("".join("\t".join(map(str, r)) + "\n" for r in part))
    out = str(tmp_path / "als")
    summary = run_train(spark, ["--split", "predefined", "--predefined-dir", str(tmp_path), "--predefined-name", "u1",
                                "--out", out, "--rank", "2", "--max-iter", "3", "--biases", "--bias-fit", "learned",
                                "--implicit-weight", "0.2"])
    metrics = read_json(spark, f"{out}/metrics.json")
    assert summary["model"] == "als-implicit" and metrics["split"]["predefined"] == f"{tmp_path}/u1"
    assert (metrics["split"]["train"], metrics["split"]["test"]) == (len(base), len(test))
    assert metrics["objective"] == sorted(metrics["objective"], reverse=True)
    assert ALSModel.load(spark, f"{out}/factors").rated_gram.shape == (2, 2)


def test_a_predefined_split_needs_its_directory_and_the_others_an_input(spark, tmp_path):
    from mfspark.errors import ConfigError

    with pytest.raises(ConfigError, match="--predefined-dir"):
        run_train(spark, ["--split", "predefined", "--out", str(tmp_path / "als")])
    with pytest.raises(ConfigError, match="--input .* is required with --split random"):
        run_train(spark, ["--out", str(tmp_path / "als")])


def test_train_implicit_scores_lists_and_warm_start_begins_at_the_given_model(spark, tmp_path, monkeypatch):
    ingest_like(spark, tmp_path / "ingest")
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    base = ["--input", str(tmp_path / "ingest"), "--rank", "3", "--implicit", "--alpha", "2", "--split", "temporal"]
    summary = run_train(spark, [*base, "--out", first, "--max-iter", "3"])
    metrics = read_json(spark, f"{first}/metrics.json")
    assert metrics["model"] == "als-implicit-feedback" and metrics["rmse"] is None
    train, test = temporal_split(pq.read_table(tmp_path / "ingest" / "ratings").to_pandas(), 0.2)
    expected = precision_at_k(Path(first) / "factors", train, test, 10)  # numpy, from the written factors
    assert metrics["test"]["users"] > 0 and 0 < expected < 1
    assert metrics["test"]["precision@10"] == pytest.approx(expected) and summary["precision@10"] == pytest.approx(
        expected)
    starts = []
    fit = ALS.fit
    monkeypatch.setattr(ALS, "fit", lambda self, ratings, initial_model=None: starts.append(initial_model)
                        or fit(self, ratings, initial_model=initial_model))
    run_train(spark, [*base, "--out", second, "--max-iter", "1", "--warm-start", first])
    assert_df_equality(starts[0].user_factors, spark.read.parquet(f"{first}/factors/users"), ignore_row_order=True,
                       ignore_nullable=True)
    assert read_json(spark, f"{second}/metrics.json")["params"]["warm_start"] == first
