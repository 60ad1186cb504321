"""`mfspark tune`: every grid point scored on a validation split carved from training, the best once on test."""

import argparse
import json

import pytest

from mfspark.commands import tune as tune_job
from mfspark.errors import ConfigError
from mfspark.evaluation.tuning import Grid, by_layout, point_row
from mfspark.models.als.estimator import ALSParams
from tests.test_train_command import ingest_like


def run_tune(spark, argv):
    parser = argparse.ArgumentParser()
    tune_job.add_arguments(parser)
    return tune_job.run(parser.parse_args(argv), spark)


def test_grid_leaves_out_implicit_points_without_learned_biases_and_groups_by_layout():
    grid = Grid(ranks=(2, 4), regs=(0.1,), bias_fits=("baseline", "learned"), bias_regs=(1.0, 5.0),
                implicit_weights=(0.0, 0.5))
    points = grid.points(ALSParams())
    assert len(points) == 2 * (2 + 2 * 2)  # per rank: baseline x 2 bias regs, learned x 2 bias regs x 2 weights
    assert all(p.biases and (p.rated_weight == 0 or p.bias_fit == "learned") for p in points)
    groups = by_layout(points)
    # One layout per (bias fit, bias reg): ranks and implicit weights share it.
    assert sorted(len(g) for g in groups) == [2, 2, 4, 4]
    assert all(len({p.layout_key() for p in g}) == 1 for g in groups)
    with pytest.raises(ConfigError, match=r"bias_fit \(--bias-fit\) must be one of baseline, learned, got .both."):
        Grid(bias_fits=("both",)).points(ALSParams())


def test_tune_writes_every_point_and_the_table_and_scores_only_the_best_on_test(spark, tmp_path, capsys):
    ingest_like(spark, tmp_path / "ingest")
    out = tmp_path / "tune"
    summary = run_tune(spark, ["--input", str(tmp_path / "ingest"), "--out", str(out), "--max-iter", "2",
                               "--ranks", "2,3", "--regs", "0.1", "--bias-fits", "learned", "--bias-regs", "1",
                               "--implicit-weights", "0,0.5"])
    points = [row.asDict() for row in spark.read.parquet(str(out / "tune")).collect()]
    assert summary["points"] == len(points) == 4
    assert {(p["rank"], p["implicit_weight"]) for p in points} == {(2, 0.0), (2, 0.5), (3, 0.0), (3, 0.5)}
    best = min(points, key=lambda p: p["validation_rmse"])
    assert (summary["best"]["rank"], summary["best"]["implicit_weight"]) == (best["rank"], best["implicit_weight"])
    table = (out / "tune.md").read_text()
    assert capsys.readouterr().out.endswith(f"{table}chosen parameters: {out}/params.json (mfspark train/pipeline "
                                            "--params FILE)\n")
    chosen = json.loads((out / "params.json").read_text())
    assert chosen["format"] == "mfspark-params/1" and chosen["cold_start"] == best["cold_start"]
    assert (chosen["als"]["rank"], chosen["als"]["rated_weight"], chosen["als"]["max_iter"]) == (
        best["rank"], best["implicit_weight"], 2)
    rows = [line for line in table.splitlines() if line.startswith("| ")][2:]
    assert len(rows) == 4 and rows[0].startswith(f"| **{best['model']}** (chosen) | {best['rank']} |")
    assert f"{best['validation_rmse']:.4f}" in rows[0] and f"| {best['cold_start']} |" in rows[0]
    assert summary["best"]["cold_start"] == best["cold_start"] and {p["cold_start"] for p in points} <= {
        "baseline", "learned"}
    assert f"test RMSE **{summary['test_rmse']:.4f}**" in table


class ScoredByStrategy:
    """A fitted model stand-in whose predictions depend only on the cold-start strategy."""

    def __init__(self, spark, predictions: dict):
        self.spark, self.predictions = spark, predictions

    def predict(self, pairs, cold_start="baseline"):
        rows = [(4.0, value) for value in self.predictions[cold_start]]
        return self.spark.createDataFrame(rows, "rating double, prediction double")


@pytest.mark.parametrize(("learned_biases", "learned", "expected"), [
    (True, [4.0, 3.0], ("learned", 0.5 ** 0.5)),  # learned errors 0, 1 beat the baseline's 1, 1
    (True, [5.0, 3.0], ("baseline", 1.0)),  # a tie keeps the baseline
    (False, [4.0, 4.0], ("baseline", 1.0)),  # a model without learned biases is scored by the baseline only
])
def test_a_point_keeps_the_cold_start_biases_that_score_validation_best(spark, learned_biases, learned, expected):
    params = ALSParams(biases=True, bias_fit="learned" if learned_biases else "baseline")
    model = ScoredByStrategy(spark, {"baseline": [5.0, 3.0], "learned": learned, "drop": [4.0]})
    row = point_row(params, None, 1.0, model)
    assert (row["cold_start"], row["validation_rmse"]) == (expected[0], pytest.approx(expected[1]))
    assert row["validation_rmse_seen"] == 0.0
