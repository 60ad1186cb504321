"""Metrics on hand-computed cases and against pyspark.ml's RegressionEvaluator and RankingEvaluator."""

from __future__ import annotations

import math
import random

import pytest
from pyspark.ml.evaluation import RankingEvaluator, RegressionEvaluator

from mfspark.evaluation.metrics import catalog_coverage, held_out_ranking, ranking_metrics, rating_metrics
from mfspark.evaluation.split import Split

RECS = "user_id int, movie_id int, rank int"
TEST = "user_id int, movie_id int, rating float"


def log2(x: float) -> float:
    return math.log(x, 2)


def test_rating_metrics_by_hand(spark):
    predictions = spark.createDataFrame([(4.0, 3.0), (3.0, 5.0), (2.0, 2.0)], "rating float, prediction double")
    got = rating_metrics(predictions)
    assert got["rmse"] == pytest.approx(math.sqrt(5 / 3), abs=1e-12)
    assert got["mae"] == pytest.approx(1.0, abs=1e-12)
    assert got["count"] == 3 and got["excluded"] == 0


def test_rating_metrics_leave_out_nan_and_null_predictions_and_count_them(spark):
    predictions = spark.createDataFrame([(4.0, 3.0), (3.0, float("nan")), (2.0, None), (5.0, 5.0)],
                                        "rating float, prediction double")
    got = rating_metrics(predictions)
    assert got["rmse"] == pytest.approx(math.sqrt(1 / 2), abs=1e-12)
    assert got["mae"] == pytest.approx(0.5, abs=1e-12)
    assert (got["count"], got["excluded"]) == (2, 2)


def test_ranking_metrics_by_hand(spark):
    recs = spark.createDataFrame([
        (1, 100, 1), (1, 101, 2), (1, 104, 3), (1, 103, 4),  # hits at ranks 2 and 3; rank 4 is beyond k
        (2, 200, 1), (2, 201, 2),                            # fewer than k recommendations, hit at rank 1
        (3, 300, 1), (3, 301, 2), (3, 302, 3),               # no hit
        (4, 400, 1),                                         # no relevant test rating: not averaged
    ], RECS)
    test = spark.createDataFrame([
        (1, 100, 3.0), (1, 101, 5.0), (1, 103, 4.0), (1, 104, 4.5),  # relevant: 101, 103, 104
        (2, 200, 4.0),
        (3, 303, 5.0),
        (4, 400, 2.0),
        (5, 500, 4.0),                                               # relevant item, no recommendations
    ], TEST)
    got = ranking_metrics(recs, test, k=3, catalog_size=10)
    ideal_3 = 1 + 1 / log2(3) + 1 / log2(4)
    assert got["users"] == 4
    assert got["precision@3"] == pytest.approx((2 / 3 + 1 / 3) / 4, abs=1e-12)
    assert got["recall@3"] == pytest.approx((2 / 3 + 1) / 4, abs=1e-12)
    assert got["ndcg@3"] == pytest.approx(((1 / log2(3) + 1 / log2(4)) / ideal_3 + 1) / 4, abs=1e-12)
    assert got["map@3"] == pytest.approx(((1 / 2 + 2 / 3) / 3 + 1) / 4, abs=1e-12)
    assert got["hit_rate@3"] == pytest.approx(2 / 4, abs=1e-12)
    assert got["coverage@3"] == pytest.approx(9 / 10)  # 100, 101, 104, 200, 201, 300, 301, 302, 400


def test_threshold_decides_relevance(spark):
    recs = spark.createDataFrame([(1, 10, 1), (1, 11, 2)], RECS)
    test = spark.createDataFrame([(1, 10, 3.5), (1, 11, 4.0)], TEST)
    assert ranking_metrics(recs, test, k=2)["precision@2"] == pytest.approx(0.5)
    assert ranking_metrics(recs, test, k=2, threshold=3.5)["precision@2"] == pytest.approx(1.0)


def test_catalog_coverage(spark):
    recs = spark.createDataFrame([(1, 10, 1), (2, 10, 1), (2, 11, 2), (3, 12, 3)], RECS)
    assert catalog_coverage(recs, 2, 4) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        catalog_coverage(recs, 2, 0)


def random_case(seed: int = 5, users: int = 25, movies: int = 40, k: int = 5):
    """Random recommendation lists (some short, some empty) and test ratings."""
    rng = random.Random(seed)
    recs, test = [], []
    for u in range(users):
        for rank, movie in enumerate(rng.sample(range(movies), rng.choice([0, 2, k, 8])), start=1):
            recs.append((u, movie, rank))
        for movie in rng.sample(range(movies), rng.randint(1, 10)):
            test.append((u, movie, rng.choice([1.0, 2.5, 3.5, 4.0, 4.5, 5.0])))
    return recs, test


def test_ranking_metrics_equal_spark_ranking_evaluator(spark):
    k = 5
    recs, test = random_case(k=k)
    ours = ranking_metrics(spark.createDataFrame(recs, RECS), spark.createDataFrame(test, TEST), k=k)
    # Spark's input: one row per user with a relevant item: the ranked list and the relevant set.
    relevant = {}
    for u, m, r in test:
        if r >= 4.0:
            relevant.setdefault(u, []).append(float(m))
    ranked = {u: [float(m) for uu, m, _ in sorted(recs, key=lambda t: t[2]) if uu == u] for u in relevant}
    rows = [(ranked[u], relevant[u]) for u in sorted(relevant)]
    spark_input = spark.createDataFrame(rows, "prediction array<double>, label array<double>")
    assert ours["users"] == len(rows)
    evaluator = RankingEvaluator(k=k)
    for spark_name, our_name in [("precisionAtK", "precision"), ("recallAtK", "recall"), ("ndcgAtK", "ndcg"),
                                 ("meanAveragePrecisionAtK", "map")]:
        expected = evaluator.evaluate(spark_input, {evaluator.metricName: spark_name})
        assert ours[f"{our_name}@{k}"] == pytest.approx(expected, abs=1e-12), spark_name


def test_rating_metrics_equal_spark_regression_evaluator(spark):
    rng = random.Random(3)
    rows = [(rng.choice([0.5, 2.0, 3.5, 5.0]), rng.uniform(0.5, 5.0)) for _ in range(200)]
    predictions = spark.createDataFrame(rows, "rating float, prediction double")
    ours = rating_metrics(predictions)
    evaluator = RegressionEvaluator(labelCol="rating", predictionCol="prediction")
    assert ours["rmse"] == pytest.approx(evaluator.evaluate(predictions, {evaluator.metricName: "rmse"}), abs=1e-12)
    assert ours["mae"] == pytest.approx(evaluator.evaluate(predictions, {evaluator.metricName: "mae"}), abs=1e-12)


def test_held_out_ranking_asks_for_test_users_with_training_movies_excluded(spark):
    train = spark.createDataFrame([(1, 10, 5.0), (1, 11, 3.0), (2, 10, 4.0), (3, 12, 4.0)],
                                  "user_id int, movie_id int, rating float")
    test = spark.createDataFrame([(1, 12, 5.0), (2, 11, 4.5), (2, 12, 1.0)], "user_id int, movie_id int, rating float")
    asked = {}

    def recommend(users, n, exclude):
        asked.update(users=sorted(r.user_id for r in users.collect()), n=n,
                     exclude=sorted((r.user_id, r.movie_id) for r in exclude.collect()))
        return spark.createDataFrame([(1, 1, 12, 0.9), (2, 1, 12, 0.8), (2, 2, 11, 0.7)],
                                     "user_id int, rank int, movie_id int, score float")

    metrics = held_out_ranking(recommend, Split("t", train, test), 2)
    assert asked == {"users": [1, 2], "n": 2, "exclude": [(1, 10), (1, 11), (2, 10), (3, 12)]}
    # user 1: hit at rank 1 of 1 relevant; user 2: relevant {11}, hit at rank 2
    assert metrics["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert metrics["recall@2"] == pytest.approx(1.0)
    assert metrics["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert metrics["map@2"] == pytest.approx((1 + 1 / 2) / 2)
    assert metrics["coverage@2"] == pytest.approx(2 / 3) and metrics["users"] == 2
