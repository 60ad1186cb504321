"""`mfspark baseline` end to end: tiny ingested tables, and the real ml-latest-small."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from mfspark.commands import baseline as baseline_command
from mfspark.commands.main import build_parser
from mfspark.errors import ConfigError, InputError
from mfspark.models.bias import BiasModel

SCHEMA = "user_id int, movie_id int, rating float, rated_at timestamp"
EPOCH = dt.datetime(2021, 3, 1)


def parse(*argv: str):
    return build_parser("baseline").parse_args(["baseline", *argv])


@pytest.fixture(scope="module")
def ingested(spark, tmp_path_factory):
    """A tiny ingest output: 12 users x 8 movies, ratings tied to user and movie so biases mean something."""
    rows = [(u, m, float(min(5, max(1, (u % 3) + (m % 4)))), EPOCH + dt.timedelta(hours=u * m))
            for u in range(1, 13) for m in range(1, 9) if (u + m) % 3]
    root = tmp_path_factory.mktemp("ingested")
    spark.createDataFrame(rows, SCHEMA).write.parquet(str(root / "ratings"))
    (root / "manifest.json").write_text(json.dumps({"release": "tiny"}))
    return root


def test_job_writes_biases_and_metrics(spark, ingested, tmp_path):
    out = tmp_path / "out"
    summary = baseline_command.run(parse("--input", str(ingested), "--out", str(out), "--sweeps", "2", "--top-k", "3",
                                     "--seed", "3"), spark)
    metrics = json.loads((out / "metrics.json").read_text())
    assert summary["dataset"] == metrics["dataset"] == "tiny"
    assert summary["rmse"] == pytest.approx(metrics["rmse"]) and metrics["rmse"] < metrics["global_mean_rmse"]
    counts = metrics["counts"]
    assert counts["train"] + counts["test"] == 64 and counts["test"] > 0
    assert {"test_unseen_user", "test_unseen_movie", "test_unseen_any"} <= counts.keys()
    assert metrics["parameters"]["sweeps"] == 2 and metrics["split"]["kind"] == "random"
    assert set(metrics["splits"][0]["ranking"]) >= {"precision@3", "ndcg@3", "map@3", "coverage@3"}
    assert {"mfspark", "spark", "pyspark", "python"} == metrics["versions"].keys()  # provenance.versions
    model = BiasModel.load(spark, str(out / "biases"))
    assert model.mu == pytest.approx(metrics["mu"])
    assert model.user_biases.count() == 12
    assert not list(tmp_path.glob("out.staging-*"))


def test_job_tunes_on_a_validation_carve(spark, ingested, tmp_path):
    args = parse("--input", str(ingested), "--out", str(tmp_path / "out"), "--split", "temporal", "--tune",
                 "--grid-lambda-u", "0,5", "--grid-lambda-i", "1,50", "--sweeps", "1", "--top-k", "0")
    summary = baseline_command.run(args, spark)
    tuning = json.loads((tmp_path / "out" / "metrics.json").read_text())["tuning"]
    assert len(tuning["grid"]) == 4
    best = tuning["grid"][0]
    assert tuning["chosen"] == {"lambda_u": best["lambda_u"], "lambda_i": best["lambda_i"]}
    assert (summary["lambda_u"], summary["lambda_i"]) == (best["lambda_u"], best["lambda_i"])


def test_job_kfold_averages_folds_and_fits_on_everything(spark, ingested, tmp_path):
    args = parse("--input", str(ingested), "--out", str(tmp_path / "out"), "--split", "kfold", "--folds", "3",
                 "--sweeps", "1", "--top-k", "0")
    baseline_command.run(args, spark)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [s["split"] for s in metrics["splits"]] == ["fold-1", "fold-2", "fold-3"]
    assert sum(c["test"] for c in metrics["counts"]) == 64
    assert metrics["rmse"] == pytest.approx(sum(s["rmse"] for s in metrics["splits"]) / 3)
    assert metrics["biases_fitted_on"] == "all ratings"


def test_tuning_on_kfold_is_refused(spark, ingested, tmp_path):
    args = parse("--input", str(ingested), "--out", str(tmp_path / "out"), "--split", "kfold", "--tune")
    with pytest.raises(ConfigError, match="--tune cannot be combined with --split kfold"):
        baseline_command.run(args, spark)
    assert not (tmp_path / "out").exists()


def test_job_input_errors(spark, tmp_path):
    with pytest.raises(InputError, match="ratings"):
        baseline_command.run(parse("--input", str(tmp_path), "--out", str(tmp_path / "out")), spark)
    with pytest.raises(ConfigError, match="predefined-dir"):
        baseline_command.run(parse("--out", str(tmp_path / "out"), "--split", "predefined"), spark)


@pytest.fixture(scope="module")
def ingested_small(spark, ml_latest_small, tmp_path_factory):
    from mfspark.data.ingest import ingest_release

    out = tmp_path_factory.mktemp("ml-latest-small") / "ingested"
    ingest_release(spark, ml_latest_small, str(out))
    return out


def test_damped_biases_beat_undamped_and_global_mean_on_ml_latest_small(spark, ingested_small, tmp_path):
    def rmse(*extra: str) -> dict:
        out = tmp_path / f"out{len(extra)}"
        baseline_command.run(parse("--input", str(ingested_small), "--out", str(out), "--sweeps", "3", *extra), spark)
        return json.loads((out / "metrics.json").read_text())

    damped = rmse()
    undamped = rmse("--lambda-u", "0", "--lambda-i", "0", "--top-k", "0")
    assert damped["dataset"] == "ml-latest-small" and damped["counts"]["test"] + damped["counts"]["train"] == 100836
    assert damped["global_mean_rmse"] == pytest.approx(1.0426, abs=1e-3)  # 80/20 random split, seed 42
    assert damped["rmse"] < undamped["rmse"] < damped["global_mean_rmse"]
    assert damped["rmse"] < 0.878  # a well-known library's bias baseline on an 80/20 split
    ranking = damped["splits"][0]["ranking"]
    assert ranking["users"] > 500
    assert ranking["precision@10"] == pytest.approx(
        precision_at_10_reference(spark, ingested_small, BiasModel.load(spark, str(tmp_path / "out0" / "biases"))),
        abs=1e-12)


def precision_at_10_reference(spark, ingested_small, model: BiasModel) -> float:
    """The job's precision@10 recomputed in pandas: each test user's 10 best-bias movies among the 200
    best, minus what the user rated in training; hits are test ratings >= 4; mean over users with a hit
    possible (a relevant test rating)."""
    from mfspark.evaluation.split import random_split

    ratings = spark.read.parquet(str(ingested_small / "ratings")).select("user_id", "movie_id", "rating")
    split = random_split(ratings, 0.2, 42)
    train, test = split.train.toPandas(), split.test.toPandas()
    pool = model.movie_biases.toPandas().sort_values(["bias", "movie_id"], ascending=[False, True]).head(200)
    rated = train.groupby("user_id")["movie_id"].agg(set)
    relevant = test[test["rating"] >= 4.0].groupby("user_id")["movie_id"].agg(set)
    precisions = []
    for user, liked in relevant.items():
        top = [m for m in pool["movie_id"] if m not in rated.get(user, set())][:10]
        precisions.append(sum(m in liked for m in top) / 10)
    return sum(precisions) / len(precisions)


def test_command_ranks_the_lists_of_bias_model_recommend_for_users(spark, ingested, tmp_path):
    """The command's ranking metrics are those of the saved model's `recommend_for_users` lists on the same split
    and exclusions (the pipeline's evaluate scores the same lists), also for users who rated most of the catalogue
    (the old pool of the `--candidates` largest biases cut their lists short)."""
    from mfspark.data.ingest import read_ratings
    from mfspark.evaluation.metrics import held_out_ranking
    from mfspark.evaluation.split import make_splits

    out = tmp_path / "out"
    baseline_command.run(parse("--input", str(ingested), "--out", str(out), "--sweeps", "2", "--top-k", "4",
                               "--seed", "5", "--candidates", "3"), spark)
    metrics = json.loads((out / "metrics.json").read_text())
    split = make_splits(read_ratings(spark, str(ingested)).select("user_id", "movie_id", "rating", "rated_at"),
                        "random", test_fraction=0.2, seed=5)[0]
    model = BiasModel.load(spark, str(out / "biases"))
    expected = held_out_ranking(model.recommend_for_users, split, 4)
    assert expected["users"] > 0 and metrics["parameters"]["candidates"] is None
    assert metrics["splits"][0]["ranking"] == pytest.approx(expected)
    lists = model.recommend_for_users(split.test.select("user_id"), 4, split.train.select("user_id", "movie_id"))
    assert lists.groupBy("user_id").count().agg({"count": "max"}).first()[0] == 4  # beyond the 3 of --candidates


def test_split_options_are_the_shared_declaration_plus_kfold():
    """baseline's split options come from commands.args.add_split_arguments (as train's), with --folds for kfold."""
    def split_options(command: str) -> dict:
        parser = build_parser(command)._subparsers._group_actions[0].choices[command]
        return {a.option_strings[0]: (a.default, a.choices) for a in parser._actions
                if a.option_strings and a.option_strings[0] in {"--input", "--split", "--test-fraction", "--seed",
                                                                "--predefined-dir", "--predefined-name", "--folds"}}
    train, baseline = split_options("train"), split_options("baseline")
    assert baseline.pop("--folds") == (5, None)
    assert baseline.pop("--split") == ("random", ("random", "temporal", "kfold", "predefined"))
    assert train.pop("--split") == ("random", ("random", "temporal", "predefined"))
    assert baseline == train
    args = parse("--out", "x", "--grid-lambda-u", "0, 2.5,", "--split", "kfold", "--folds", "3")
    assert args.grid_lambda_u == (0.0, 2.5) and args.grid_lambda_i == (0, 1, 2, 5, 10, 15, 25, 50)
    with pytest.raises(SystemExit):
        parse("--out", "x", "--grid-lambda-u", "1,x")
