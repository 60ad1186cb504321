"""Blockwise top-N kernel against brute-force numpy top-N (exact: small integer factors, so ties are real)."""

import numpy as np
import pytest

from mfspark.recommend import kernels
from mfspark.recommend.kernels import TopN, update_top_n


def brute_force(queries, ids, candidates, excluded, n):
    """Every score, excluded ones dropped, sorted by (score desc, id asc), first n."""
    scores = queries.astype(np.float64) @ candidates.T.astype(np.float64)
    lists = []
    for q in range(len(queries)):
        keep = ~np.isin(ids, excluded[q])
        order = np.lexsort((ids[keep], -scores[q][keep]))[:n]
        lists.append((ids[keep][order], scores[q][keep][order]))
    return lists


def integer_problem(seed, num_queries=40, num_candidates=300, rank=3):
    rng = np.random.default_rng(seed)
    queries = rng.integers(-2, 3, (num_queries, rank)).astype(np.float32)
    candidates = rng.integers(-2, 3, (num_candidates, rank)).astype(np.float32)
    ids = rng.choice(100_000, num_candidates, replace=False)  # unsorted, sparse ids
    excluded = [np.sort(rng.choice(ids, rng.integers(0, 40), replace=False)) for _ in range(num_queries)]
    return queries, ids, candidates, excluded


def exclusions(excluded):
    return np.concatenate([[0], np.cumsum([len(e) for e in excluded])]), np.concatenate(excluded)


@pytest.mark.parametrize("n", [1, 10, 299, 1000])
@pytest.mark.parametrize("num_blocks", [1, 3])
def test_blockwise_top_n_equals_brute_force_with_ties(n, num_blocks, monkeypatch):
    monkeypatch.setattr(kernels, "TILE", 7)  # tiles smaller than n: the list spans many tiles and blocks
    queries, ids, candidates, excluded = integer_problem(seed=n + num_blocks)
    indptr, excluded_ids = exclusions(excluded)
    top = TopN.empty(len(queries), n)
    for block in np.array_split(np.arange(len(ids)), num_blocks):
        update_top_n(top, queries, ids[block], candidates[block], indptr, excluded_ids)
    expected = brute_force(queries, ids, candidates, excluded, n)
    scores = queries @ candidates.T
    assert len(np.unique(scores)) < scores.size / 10  # many ties
    for q, (want_ids, want_scores) in enumerate(expected):
        count = top.counts[q]
        assert count == min(n, len(ids) - len(excluded[q]))
        np.testing.assert_array_equal(top.ids[q, :count], want_ids)
        np.testing.assert_array_equal(top.scores[q, :count], want_scores)


def test_excluded_candidates_never_appear_even_when_best():
    queries = np.array([[1.0, 0.0]], np.float32)
    candidates = np.array([[5.0, 0.0], [4.0, 0.0], [3.0, 0.0]], np.float32)
    top = TopN.empty(1, 2)
    update_top_n(top, queries, np.array([10, 20, 30]), candidates, np.array([0, 1]), np.array([10]))
    np.testing.assert_array_equal(top.ids[0], [20, 30])
    np.testing.assert_array_equal(top.scores[0], [4.0, 3.0])


def test_flat_lists_ranks_and_skips_unfilled_slots():
    top = TopN.empty(2, 3)
    update_top_n(top, np.array([[1.0], [-1.0]], np.float32), np.array([7, 8]), np.array([[2.0], [1.0]], np.float32))
    rows, ranks, ids, scores = top.flat()
    np.testing.assert_array_equal(rows, [0, 0, 1, 1])
    np.testing.assert_array_equal(ranks, [1, 2, 1, 2])
    np.testing.assert_array_equal(ids, [7, 8, 8, 7])
    np.testing.assert_array_equal(scores, [2.0, 1.0, -1.0, -2.0])


def test_norm_bound_pruning_keeps_exact_results_on_real_valued_factors():
    rng = np.random.default_rng(3)
    queries = rng.standard_normal((200, 10)).astype(np.float32)
    candidates = (rng.standard_normal((5000, 10)) * rng.lognormal(0, 0.7, (5000, 1))).astype(np.float32)
    ids = np.arange(5000)
    top = TopN.empty(200, 10)
    update_top_n(top, queries, ids, candidates)
    reference = np.argsort(-(queries @ candidates.T), axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(top.ids, reference)


def test_n_must_be_positive():
    with pytest.raises(ValueError, match="n must be >= 1"):
        TopN.empty(3, 0)


def test_exclusions_given_unsorted_within_rows_are_still_excluded():
    queries = np.array([[1.0], [1.0]], np.float32)
    ids = np.array([1, 2, 3, 4, 5])
    candidates = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]], np.float32)
    top = TopN.empty(2, 2)
    update_top_n(top, queries, ids, candidates, np.array([0, 3, 4]), np.array([2, 1, 9, 3]))
    np.testing.assert_array_equal(top.ids, [[3, 4], [1, 2]])


def test_exclusion_csr_groups_by_row_and_sorts_each_row_like_numpy():
    rng = np.random.default_rng(4)
    rows = rng.integers(0, 50, 2000)
    ids = rng.integers(-2**31, 2**31, 2000)
    indptr, grouped = kernels.exclusion_csr(rows, ids, 60)  # rows 50..59 empty
    order = np.lexsort((ids, rows))
    np.testing.assert_array_equal(grouped, ids[order])
    np.testing.assert_array_equal(indptr, np.searchsorted(rows[order], np.arange(61)))


@pytest.mark.parametrize("num_blocks", [1, 3, 18, 70_000])
def test_group_by_block_matches_the_als_block_hash(num_blocks):
    from mfspark.models.als.inblock import block_of

    ids = np.array([5, 5, 5, -1, 0, -2**31, 2**31 - 1, 123_456_789, 5, -99, 7, 7], np.int32)
    order, bounds = kernels.group_by_block(ids, num_blocks)
    blocks = block_of(ids, num_blocks)
    assert len(bounds) == num_blocks + 1
    for b in range(num_blocks):
        rows = order[bounds[b]:bounds[b + 1]]
        np.testing.assert_array_equal(rows, np.flatnonzero(blocks == b))  # input order within a block


@pytest.mark.parametrize("n", [1, 4, 50])
def test_grouped_lists_equal_brute_force_within_each_group(n, monkeypatch):
    """Each query keeps 0-3 lists (genre rows), each over the candidates of one group: every list
    equals brute force over that group's non-excluded candidates, from one scoring pass."""
    monkeypatch.setattr(kernels, "TILE", 7)
    queries, ids, candidates, excluded = integer_problem(seed=n, num_queries=30, num_candidates=120)
    rng = np.random.default_rng(n)
    candidate_groups = rng.integers(0, 2**6, len(ids))  # 6 groups as bits; some candidates in none
    per_query = [sorted(rng.choice(6, rng.integers(0, 4), replace=False).tolist()) for _ in queries]
    per_query[0] = [kernels.ALL, 2]  # a plain list beside a grouped one
    lists = kernels.Lists(np.concatenate([[0], np.cumsum([len(g) for g in per_query])]),
                          np.array([g for groups in per_query for g in groups], np.int64))
    indptr, excluded_ids = exclusions(excluded)
    top = TopN.empty(len(lists.groups), n)
    for block in np.array_split(np.arange(len(ids)), 2):
        update_top_n(top, queries, ids[block], candidates[block], indptr, excluded_ids, lists, candidate_groups[block])
    row = 0
    for q, groups in enumerate(per_query):
        for group in groups:
            members = np.ones(len(ids), bool) if group == kernels.ALL else (candidate_groups >> group) & 1 == 1
            [(want_ids, want_scores)] = brute_force(queries[q:q + 1], ids[members], candidates[members],
                                                    [excluded[q]], n)
            count = top.counts[row]
            assert count == len(want_ids)
            np.testing.assert_array_equal(top.ids[row, :count], want_ids)
            np.testing.assert_array_equal(top.scores[row, :count], want_scores)
            row += 1
    assert row == len(lists.groups) and lists.owners().tolist() == [q for q, g in enumerate(per_query) for _ in g]


@pytest.mark.parametrize("query_rank, candidate_rank", [(4, 3), (2, 3)])
def test_queries_and_candidates_of_different_rank_are_refused_before_the_compiled_loop(query_rank, candidate_rank):
    """Rank 4 queries against rank 3 candidates would read past the candidates' array (scores ~1e35); rank 2
    would silently ignore a component. Equal ranks score exactly as numpy does."""
    rng = np.random.default_rng(3)
    candidates = rng.integers(-2, 3, (5, candidate_rank)).astype(np.float32)
    ids = np.arange(10, 15)
    top = TopN.empty(2, 3)
    with pytest.raises(ValueError, match=rf"queries \(2, {query_rank}\) and candidates \(5, {candidate_rank}\)"):
        update_top_n(top, rng.integers(-2, 3, (2, query_rank)).astype(np.float32), ids, candidates)
    assert (top.counts == 0).all()
    queries = rng.integers(-2, 3, (2, candidate_rank)).astype(np.float32)
    update_top_n(top, queries, ids, candidates)
    for q, (want_ids, want_scores) in enumerate(brute_force(queries, ids, candidates, [[], []], 3)):
        np.testing.assert_array_equal(top.ids[q], want_ids)
        np.testing.assert_array_equal(top.scores[q], want_scores)
