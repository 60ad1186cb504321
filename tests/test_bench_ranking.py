"""benchmarks/bench_ranking.py without Spark: its EASE equals the model's closed form, its lists follow the
pipeline's rules (training movies excluded, movies without an interaction never listed, ties by movie id)."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mfspark.models.ease import ease_weights
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import bench_ranking  # noqa: E402 (a script's module, importable once its directory is on the path)


@pytest.mark.parametrize("users", [12, 60])  # fewer users than movies (where Woodbury pays) and more
def test_ease_scores_equal_the_closed_form_of_the_ease_model(users):
    rng = np.random.default_rng(3)
    x = sp.csr_matrix((rng.random((users, 30)) < 0.3).astype(np.float32))
    rows = np.arange(0, users, 2)
    weights = ease_weights((x.T @ x).toarray().astype(np.float64), 7.0)
    expected = x[rows].toarray() @ weights
    np.testing.assert_allclose(bench_ranking.fit_ease(x, 7.0)(rows), expected, atol=1e-9)


def ratings(rows: list[tuple[int, int, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["userId", "movieId", "rating"])


def test_lists_exclude_training_movies_skip_movies_without_interactions_and_break_ties_by_id(monkeypatch):
    monkeypatch.setattr(bench_ranking, "K", 2)
    fit = ratings([(1, 10, 5.0), (2, 10, 4.0), (2, 20, 4.5), (3, 30, 4.0), (3, 40, 4.0), (1, 50, 2.0)])
    held_out = ratings([(1, 30, 4.0), (1, 40, 5.0), (2, 50, 4.0)])
    task = bench_ranking.Task(fit, held_out)
    liked = task.matrix(4.0)  # movie 50 has no liked rating: never listed from this matrix
    popularity = bench_ranking.fit_popularity(liked)
    # user 1: 10 and 50 seen; 20, 30, 40 tie at one like each -> 20, 30 (hit at rank 2); user 2: 30, 40 (no hit).
    got = task.score(popularity, liked)
    assert got["users"] == 2
    assert got["precision@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert got["ndcg@2"] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)) / 2)


def test_our_rows_name_the_lists_model_a_run_fitted_and_the_one_auto_chose():
    from bench_ranking import lists_label

    als = {"rank": 64, "reg": 0.3, "alpha": 0.5, "max_iter": 10}
    ease = {"reg": 200.0, "min_rating": 3.0, "max_items": 10000}
    assert lists_label({"model": "implicit", "min_rating": 4.0, "als": als}, {}) == (
        "ours: implicit ALS, rank 64, reg 0.3, alpha 0.5, 10 iterations", 4.0)
    assert lists_label({"model": "ease", "ease": ease}, {}) == (
        "ours: EASE, reg 200, liked >= 3, max_items 10000", 3.0)
    assert lists_label({"model": "auto"}, {"lists_candidates": {"chosen": {"model": "ease", **ease}}}) == (
        "ours: --lists auto chose EASE, reg 200, liked >= 3, max_items 10000", 3.0)
    assert lists_label({}, {}) == (None, None)
