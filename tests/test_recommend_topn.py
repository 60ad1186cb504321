"""Spark top-N engine: block pairing and merging against brute-force numpy top-N."""

import numpy as np
import pytest

from mfspark.recommend.topn import BlockSizes, top_n


def factor_frame(spark, ids, factors):
    return spark.createDataFrame([(int(i), [float(v) for v in row]) for i, row in zip(ids, factors)],
                                 "id int, features array<float>")


def brute_force_rows(query_ids, queries, candidate_ids, candidates, excluded_pairs, n):
    scores = queries.astype(np.float64) @ candidates.T.astype(np.float64)
    rows = []
    for q, query_id in enumerate(query_ids):
        keep = np.array([(int(query_id), int(c)) not in excluded_pairs for c in candidate_ids])
        order = np.lexsort((candidate_ids[keep], -scores[q][keep]))[:n]
        rows += [(int(query_id), rank + 1, int(candidate_ids[keep][o]), float(scores[q][keep][o]))
                 for rank, o in enumerate(order)]
    return sorted(rows)


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(11)
    query_ids = rng.choice(10_000, 60, replace=False)
    candidate_ids = rng.choice(10_000, 45, replace=False)
    queries = rng.integers(-2, 3, (60, 3)).astype(np.float32)
    candidates = rng.integers(-2, 3, (45, 3)).astype(np.float32)
    excluded = {(int(q), int(c)) for q in query_ids for c in candidate_ids if rng.random() < 0.3}
    excluded |= {(123_456, int(candidate_ids[0]))}  # a query without factors: ignored
    return query_ids, queries, candidate_ids, candidates, excluded


@pytest.mark.parametrize("n, sizes", [(5, BlockSizes()), (5, BlockSizes(queries=7, candidates=4)),
                                      (100, BlockSizes(queries=16, candidates=9))])
def test_top_n_equals_brute_force_for_any_blocking(spark, problem, n, sizes):
    query_ids, queries, candidate_ids, candidates, excluded = problem
    exclude = spark.createDataFrame(sorted(excluded), "query_id int, candidate_id int")
    lists = top_n(factor_frame(spark, query_ids, queries), factor_frame(spark, candidate_ids, candidates), n,
                  exclude, sizes)
    got = sorted(tuple(r) for r in lists.collect())
    assert lists.columns == ["query_id", "rank", "candidate_id", "score"]
    assert got == brute_force_rows(query_ids, queries, candidate_ids, candidates, excluded, n)
    per_query = {q: sum(1 for c in candidate_ids if (int(q), int(c)) not in excluded) for q in query_ids}
    counts = {}
    for row in got:
        counts[row[0]] = counts.get(row[0], 0) + 1
    assert counts == {int(q): min(n, c) for q, c in per_query.items() if c}
