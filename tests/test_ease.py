"""EASE on Spark against dense numpy: the closed form against per-movie ridge regressions, the Spark fit's B and
lists against numpy's X @ B, the catalogue cap, and the pipeline with `--lists ease`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mfspark.errors import ConfigError
from mfspark.models.ease import EASE, EASEModel, EASEParams, ease_weights


def liked_matrix(seed: int, users: int = 12, movies: int = 7, density: float = 0.45) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.random((users, movies)) < density).astype(np.float64)
    x[0, :] = 1.0  # every movie liked by someone
    return x


def test_the_closed_form_equals_one_ridge_regression_per_movie_on_the_other_movies():
    x, reg = liked_matrix(1), 2.5
    weights = ease_weights(x.T @ x, reg)
    for j in range(x.shape[1]):
        others = [i for i in range(x.shape[1]) if i != j]
        a = x[:, others]
        ridge = np.linalg.solve(a.T @ a + reg * np.eye(len(others)), a.T @ x[:, j])
        np.testing.assert_allclose(weights[others, j], ridge, rtol=1e-9, atol=1e-12)
        assert weights[j, j] == 0.0


def test_the_docstring_example():
    gram = np.array([[3.0, 2.0], [2.0, 2.0]])
    np.testing.assert_allclose(ease_weights(gram, 1.0), [[0.0, 0.5], [2 / 3, 0.0]])


def liked_frame(spark, x: np.ndarray, movie_ids: list[int]):
    rows = [(int(u) + 100, movie_ids[i]) for u, i in zip(*np.nonzero(x))]
    return spark.createDataFrame(rows + rows[:3], "user_id int, movie_id int")  # duplicates count once


def test_the_spark_fit_and_its_lists_equal_numpy(spark, tmp_path):
    x, reg = liked_matrix(2), 3.0
    movie_ids = [5, 9, 11, 20, 31, 40, 47]
    model = EASE(reg=reg).fit(liked_frame(spark, x, movie_ids))
    expected = ease_weights(x.T @ x, reg)
    np.testing.assert_array_equal(model.movies, movie_ids)
    np.testing.assert_allclose(model.weights, expected, rtol=1e-5, atol=1e-6)

    model.save(str(tmp_path / "ease"))
    loaded = EASEModel.load(spark, str(tmp_path / "ease"))
    np.testing.assert_array_equal(loaded.weights, model.weights)
    seen = liked_frame(spark, x, movie_ids).distinct()
    lists = {(r.user_id, r.rank): (r.movie_id, r.score)
             for r in loaded.recommend_for_users(None, 3, seen).collect()}
    scores = x @ expected
    for u in range(x.shape[0]):
        if not x[u].any():  # liked nothing: not an EASE user (the pipeline gives such users the popularity list)
            assert (u + 100, 1) not in lists
            continue
        unseen = sorted(-scores[u, j] for j in range(x.shape[1]) if x[u, j] == 0)[:3]
        got = [lists[(u + 100, rank)] for rank in range(1, len(unseen) + 1)]
        assert [score for _, score in got] == pytest.approx([-s for s in unseen], rel=1e-4, abs=1e-5)
        for movie, score in got:  # the movie named has that score and is unseen (ties may swap equal movies)
            j = movie_ids.index(movie)
            assert x[u, j] == 0 and scores[u, j] == pytest.approx(score, rel=1e-4, abs=1e-5)
        assert (u + 100, len(unseen) + 1) not in lists  # never a seen movie, never more than the unseen ones

    similar = {(r.movie_id, r.rank): (r.similar_movie_id, r.similarity) for r in loaded.similar_items(2).collect()}
    for i, movie in enumerate(movie_ids):
        best = [j for j in np.argsort(-expected[i], kind="stable") if j != i][:2]
        assert [similar[(movie, rank)][1] for rank in (1, 2)] == pytest.approx(expected[i, best], abs=1e-5)


def test_the_catalogue_cap_keeps_the_most_liked_movies(spark):
    x = liked_matrix(3, users=20, movies=6)
    counts = x.sum(axis=0)
    model = EASE(reg=1.0, max_items=3).fit(liked_frame(spark, x, list(range(1, 7))))
    kept = sorted(np.lexsort((np.arange(6), -counts))[:3] + 1)  # most likers first, ties by id
    np.testing.assert_array_equal(model.movies, kept)
    columns = [int(m) - 1 for m in kept]
    np.testing.assert_allclose(model.weights, ease_weights(x[:, columns].T @ x[:, columns], 1.0), rtol=1e-5,
                               atol=1e-6)


def test_parameters_are_checked():
    with pytest.raises(ConfigError, match=r"reg \(--ease-reg\) must be above 0, got 0.0"):
        EASEParams(reg=0.0).validate()
    with pytest.raises(ConfigError, match=r"max_items \(--ease-max-items\) must be 1 or more, got 0"):
        EASE(max_items=0)


def test_tune_lists_then_the_pipeline_runs_the_chosen_lists_model(cli_with_test_session, spark, tmp_path):
    """`mfspark tune --lists` picks the lists model by validation NDCG@10 and writes it; `mfspark pipeline
    --params` fits exactly that model in its train_lists stage and makes the lists from it."""
    from tests.test_pipeline import tiny_release

    release = tiny_release(tmp_path / "release", users=40, movies=25)
    main = cli_with_test_session
    assert main(["ingest", "--input", str(release), "--out", str(tmp_path / "ingest")]) == 0
    assert main(["tune", "--lists", "--input", str(tmp_path / "ingest"), "--out", str(tmp_path / "tune"),
                 "--lists-models", "ease", "--ease-regs", "5,500", "--ease-min-ratings", "3,4"]) == 0
    points = [row.asDict() for row in spark.read.parquet(str(tmp_path / "tune" / "lists")).collect()]
    assert sorted((p["model"], p["reg"], p["min_rating"]) for p in points) == [
        ("ease", 5.0, 3.0), ("ease", 5.0, 4.0), ("ease", 500.0, 3.0), ("ease", 500.0, 4.0)]
    best = max(points, key=lambda p: p["validation_ndcg"])
    chosen = json.loads((tmp_path / "tune" / "params.json").read_text())
    assert (chosen["lists_model"], chosen["ease"]["reg"], chosen["ease"]["min_rating"]) == (
        "ease", best["reg"], best["min_rating"])

    assert main(["pipeline", "--input", str(release), "--out", str(tmp_path / "root"),
                 "--params", str(tmp_path / "tune" / "params.json")]) == 0
    lists_stage = tmp_path / "root" / "latest" / "train_lists"
    saved = json.loads((lists_stage / "ease" / "metadata.json").read_text())
    assert (saved["params"]["reg"], saved["params"]["min_rating"]) == (best["reg"], best["min_rating"])
    assert not (lists_stage / "factors").exists()
    evaluate = json.loads((tmp_path / "root" / "latest" / "evaluate" / "metrics.json").read_text())
    assert 0 < evaluate["lists"]["ndcg@10"] <= 1
    recommendations = spark.read.parquet(str(tmp_path / "root" / "latest" / "recommend" / "recommendations"))
    assert recommendations.select("user_id").distinct().count() == 40


def test_lists_auto_fits_the_candidate_best_on_validation_and_records_every_candidate(spark, tmp_path):
    """train_lists fits the candidate best on validation; evaluate adds each candidate's test scores: every one
    refitted on all the training ratings and its lists scored on the test split, as the chosen one is."""
    from mfspark.evaluation.metrics import held_out_ranking
    from mfspark.evaluation.split import make_splits
    from mfspark.evaluation.tuning import ListsGrid
    from mfspark.models.lists_model import fit_lists_model
    from mfspark.pipeline.run import run_pipeline
    from tests.test_pipeline import config

    grid = ListsGrid(ranks=(2,), regs=(0.1,), alphas=(1.0,), max_iters=(3,), ease_regs=(5.0, 50.0),
                     ease_min_ratings=(4.0,))
    settings = config(tmp_path, top_n=5, lists="auto", lists_grid=grid)
    result = run_pipeline(spark, settings)
    stage = tmp_path / "root" / "latest" / "train_lists"
    record = json.loads((stage / "candidates.json").read_text())
    assert [(row["model"], row["reg"]) for row in record["candidates"]] == [
        ("implicit", 0.1), ("ease", 5.0), ("ease", 50.0)]
    best = max(record["candidates"], key=lambda row: row["validation_ndcg"])
    assert record["chosen"]["model"] == best["model"] and record["chosen"]["reg"] == best["reg"]
    fitted = "ease" if best["model"] == "ease" else "factors"
    saved = json.loads((stage / fitted / "metadata.json").read_text())["params"]
    assert saved["reg"] == best["reg"] and (best["model"] == "ease" or saved["rank"] == best["rank"])
    evaluate = json.loads((tmp_path / "root" / "latest" / "evaluate" / "metrics.json").read_text())
    assert result["metrics"]["lists"]["ndcg@10"] == evaluate["lists"]["ndcg@10"]

    listed = evaluate["lists_candidates"]
    assert listed["chosen"] == record["chosen"]
    assert [{k: v for k, v in row.items() if not k.startswith("test_")} for row in listed["candidates"]] == \
        record["candidates"]
    ratings = spark.read.parquet(str(tmp_path / "root" / "latest" / "ingest" / "ratings"))
    [split] = make_splits(ratings, "random", test_fraction=0.2, seed=42)
    for row, (kind, params) in zip(listed["candidates"], grid.points(settings.lists_als, settings.ease)):
        test = held_out_ranking(fit_lists_model(kind, params, split.train).recommend_for_users, split, 10)
        assert (row["test_ndcg"], row["test_precision"]) == pytest.approx((test["ndcg@10"], test["precision@10"]))
        if row is max(listed["candidates"], key=lambda r: r["validation_ndcg"]):
            assert row["test_ndcg"] == evaluate["lists"]["ndcg@10"]


def test_the_report_table_of_lists_candidates_marks_the_best_with_its_test_scores():
    from mfspark.report.page import lists_candidates_table

    candidates = {"candidates": [
        {"model": "implicit", "rank": 10, "reg": 0.1, "alpha": 1.0, "min_rating": 4.0, "validation_ndcg": 0.21,
         "validation_precision": 0.15},
        {"model": "ease", "rank": None, "reg": 200.0, "alpha": None, "min_rating": 4.0, "validation_ndcg": 0.25,
         "validation_precision": 0.17}]}
    html = lists_candidates_table(candidates, {"ndcg@10": 0.31, "precision@10": 0.227})
    rows = html.split("<tr")[2:]  # after the header
    assert "ease" in rows[0] and 'data-value="0.31"' in rows[0] and "reg 200" in rows[0]
    assert "implicit" in rows[1] and "rank 10, reg 0.1, alpha 1" in rows[1] and 'data-value="0.31"' not in rows[1]


def test_the_report_table_shows_every_candidates_test_scores_when_evaluate_gave_them():
    from mfspark.report.page import lists_candidates_table

    candidates = {"candidates": [
        {"model": "implicit", "rank": 64, "reg": 0.3, "alpha": 0.5, "min_rating": 4.0, "validation_ndcg": 0.19,
         "validation_precision": 0.13, "test_ndcg": 0.3005, "test_precision": 0.2253},
        {"model": "ease", "rank": None, "reg": 200.0, "alpha": None, "min_rating": 3.0, "validation_ndcg": 0.1954,
         "validation_precision": 0.1366, "test_ndcg": 0.321, "test_precision": 0.2384}]}
    rows = lists_candidates_table(candidates, {"ndcg@10": 0.321, "precision@10": 0.2384}).split("<tr")[2:]
    assert rows[0].startswith(' class="best"')  # the chosen one first, marked
    assert 'data-value="0.321"' in rows[0] and 'data-value="0.2384"' in rows[0] and "min_rating 3" in rows[0]
    assert 'data-value="0.3005"' in rows[1] and 'data-value="0.2253"' in rows[1]
