"""The numpy ranking metrics (benchmarks without Spark) on the hand-made case of test_metrics.py (the Spark
metrics' case, same expected values) and against a per-user loop written from the definitions."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from mfspark.evaluation.ranking_numpy import NO_ITEM, ranking_metrics


def log2(x: float) -> float:
    return math.log(x, 2)


def as_arrays(recs: list[tuple[int, int, int]], test: list[tuple[int, int, float]], width: int):
    """(list_users, lists padded with NO_ITEM, test users, movies, ratings) from (user, movie, rank) rows."""
    list_users = sorted({u for u, _, _ in recs})
    lists = np.full((len(list_users), width), NO_ITEM, dtype=np.int64)
    for u, m, rank in recs:
        lists[list_users.index(u), rank - 1] = m
    users, movies, ratings = (np.array(column) for column in zip(*test, strict=True))
    return np.array(list_users), lists, users, movies, ratings


def test_ranking_metrics_by_hand():
    recs = [(1, 100, 1), (1, 101, 2), (1, 104, 3), (1, 103, 4),  # hits at ranks 2 and 3; rank 4 is beyond k
            (2, 200, 1), (2, 201, 2),                            # fewer than k recommendations, hit at rank 1
            (3, 300, 1), (3, 301, 2), (3, 302, 3),               # no hit
            (4, 400, 1)]                                         # no relevant test rating: not averaged
    test = [(1, 100, 3.0), (1, 101, 5.0), (1, 103, 4.0), (1, 104, 4.5),  # relevant: 101, 103, 104
            (2, 200, 4.0),
            (3, 303, 5.0),
            (4, 400, 2.0),
            (5, 500, 4.0)]                                               # relevant item, no list: scores 0
    got = ranking_metrics(*as_arrays(recs, test, width=4), k=3)
    ideal_3 = 1 + 1 / log2(3) + 1 / log2(4)
    assert got["users"] == 4
    assert got["precision@3"] == pytest.approx((2 / 3 + 1 / 3) / 4, abs=1e-12)
    assert got["recall@3"] == pytest.approx((2 / 3 + 1) / 4, abs=1e-12)
    assert got["ndcg@3"] == pytest.approx(((1 / log2(3) + 1 / log2(4)) / ideal_3 + 1) / 4, abs=1e-12)
    assert got["map@3"] == pytest.approx(((1 / 2 + 2 / 3) / 3 + 1) / 4, abs=1e-12)
    assert got["hit_rate@3"] == pytest.approx(2 / 4, abs=1e-12)


def test_threshold_decides_relevance_and_a_duplicate_test_pair_counts_once():
    arrays = as_arrays([(1, 10, 1), (1, 11, 2)], [(1, 10, 3.5), (1, 11, 4.0), (1, 11, 4.0)], width=2)
    assert ranking_metrics(*arrays, k=2)["precision@2"] == pytest.approx(0.5)
    assert ranking_metrics(*arrays, k=2)["recall@2"] == pytest.approx(1.0)
    assert ranking_metrics(*arrays, k=2, threshold=3.5)["precision@2"] == pytest.approx(1.0)


def by_definition(recs, test, k: int, threshold: float = 4.0) -> dict[str, float]:
    """The metrics user by user, in plain Python."""
    relevant: dict[int, set[int]] = {}
    for u, m, r in test:
        if r >= threshold:
            relevant.setdefault(u, set()).add(m)
    totals = dict.fromkeys(("precision", "recall", "ndcg", "map"), 0.0)
    for u, liked in relevant.items():
        ranked = [m for _, m, _ in sorted((rank, m, uu) for uu, m, rank in recs if uu == u)][:k]
        hit_ranks = [rank for rank, m in enumerate(ranked, start=1) if m in liked]
        ideal = min(k, len(liked))
        totals["precision"] += len(hit_ranks) / k
        totals["recall"] += len(hit_ranks) / len(liked)
        totals["ndcg"] += sum(1 / log2(r + 1) for r in hit_ranks) / sum(1 / log2(i + 1) for i in range(1, ideal + 1))
        totals["map"] += sum((i + 1) / r for i, r in enumerate(hit_ranks)) / ideal
    return {f"{name}@{k}": total / len(relevant) for name, total in totals.items()}


def test_ranking_metrics_equal_a_per_user_computation_on_random_lists():
    rng = random.Random(5)
    k, recs, test = 5, [], []
    for u in range(40):
        for rank, movie in enumerate(rng.sample(range(60), rng.choice([0, 2, k, 8])), start=1):
            recs.append((u, movie, rank))
        for movie in rng.sample(range(60), rng.randint(1, 12)):
            test.append((u, movie, rng.choice([1.0, 2.5, 3.5, 4.0, 4.5, 5.0])))
    got = ranking_metrics(*as_arrays(recs, test, width=8), k=k)
    for name, expected in by_definition(recs, test, k).items():
        assert got[name] == pytest.approx(expected, abs=1e-12), name
