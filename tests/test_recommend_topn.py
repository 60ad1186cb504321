"""Spark top-N engine: block pairing and merging against brute-force numpy top-N."""

import numpy as np
import pytest

from mfspark.recommend.topn import BlockSizes, _pack_exclusions, assemble_block, decode_pairs, encode_pairs, top_n


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


def test_top_n_with_exclusions_read_straight_from_parquet_equals_brute_force(spark, problem, tmp_path):
    """Excluded pairs that are plain columns of a Parquet table (the seen movies of an ingest output) are
    read by pyarrow in the tasks; the lists are the same, for several files and a rename of the columns."""
    from pyspark.sql import functions as F

    from mfspark.runtime.spark_internals import parquet_columns

    query_ids, queries, candidate_ids, candidates, excluded = problem
    rows = [(c, q, 1.0) for q, c in sorted(excluded)]
    spark.createDataFrame(rows, "movie_id int, user_id int, rating float").repartition(3) \
        .write.parquet(str(tmp_path / "ratings"))
    exclude = spark.read.parquet(str(tmp_path / "ratings")) \
        .select(F.col("user_id").alias("query_id"), F.col("movie_id").alias("candidate_id"))
    assert parquet_columns(exclude)[1] == ["user_id", "movie_id"]  # the pyarrow path is taken
    lists = top_n(factor_frame(spark, query_ids, queries), factor_frame(spark, candidate_ids, candidates), 4,
                  exclude, BlockSizes(queries=7, candidates=4))
    assert sorted(tuple(r) for r in lists.collect()) == \
        brute_force_rows(query_ids, queries, candidate_ids, candidates, excluded, 4)


def test_some_users_lists_exclude_seen_pairs_alike_when_read_from_parquet_or_semi_joined(spark, problem, tmp_path):
    """A subset of users: a local Parquet table of seen pairs is read whole by the engine's tasks (the other users'
    pairs are dropped when blocks are assembled); any other table is first semi-joined to the subset. Both give
    the brute-force lists of the subset."""
    from pyspark.sql import functions as F

    from mfspark.recommend.lists import recommend_for_users
    from mfspark.recommend.topn import reads_exclusions_directly

    query_ids, queries, candidate_ids, candidates, excluded = problem
    spark.createDataFrame(sorted(excluded), "user_id int, movie_id int").write.parquet(str(tmp_path / "seen"))
    from_parquet = spark.read.parquet(str(tmp_path / "seen"))
    in_memory = spark.createDataFrame(sorted(excluded), "user_id int, movie_id int")

    def as_pairs(seen):
        return seen.select(F.col("user_id").alias("query_id"), F.col("movie_id").alias("candidate_id"))

    assert reads_exclusions_directly(as_pairs(from_parquet)) and not reads_exclusions_directly(as_pairs(in_memory))
    some = {int(q) for q in query_ids[::3]}
    users = spark.createDataFrame([(u,) for u in sorted(some)], "user_id int")
    expected = [row for row in brute_force_rows(query_ids, queries, candidate_ids, candidates, excluded, 4)
                if row[0] in some]
    for seen in (from_parquet, in_memory):
        lists = recommend_for_users(factor_frame(spark, query_ids, queries),
                                    factor_frame(spark, candidate_ids, candidates), seen, 4, users=users,
                                    sizes=BlockSizes(queries=7, candidates=4))
        assert sorted(tuple(r) for r in lists.collect()) == expected


def test_block_assembly_sorts_factors_and_builds_the_exclusion_csr_from_chunks():
    factor_chunks = [{"ids": np.array([30, 10]), "factors": np.array([[3.0], [1.0]], np.float32)},
                     {"ids": np.array([20]), "factors": np.array([[2.0]], np.float32)}]
    exclusion_chunks = [(np.array([30, 10, 99], np.int32), np.array([7, 5, 1], np.int32)),  # 99: no factors here
                        (np.array([10, 30, 10], np.int32), np.array([-4, 2, 8], np.int32))]
    block = assemble_block(factor_chunks, exclusion_chunks)
    np.testing.assert_array_equal(block.ids, [10, 20, 30])
    np.testing.assert_array_equal(block.factors, [[1.0], [2.0], [3.0]])
    np.testing.assert_array_equal(block.exclude_indptr, [0, 3, 3, 5])
    np.testing.assert_array_equal(block.exclude_ids, [-4, 5, 8, 2, 7])


def test_exclusions_are_packed_per_block_of_the_query_id():
    import pickle

    import pyarrow as pa

    from mfspark.models.als.inblock import block_of

    queries = np.array([4, -7, 4, 2**31 - 1, 12, 4], np.int32)
    excluded = np.arange(6, dtype=np.int32) * 10
    batch = pa.RecordBatch.from_arrays([pa.array(queries), pa.array(excluded)], names=["query_id", "candidate_id"])
    packed = {block: decode_pairs(pickle.loads(payload)[1]) for block, payload in _pack_exclusions(iter([batch]), 3)}
    owners = block_of(queries, 3)
    assert set(packed) == set(owners.tolist())
    for block, (query_ids, candidate_ids) in packed.items():
        np.testing.assert_array_equal(query_ids, queries[owners == block])
        np.testing.assert_array_equal(candidate_ids, excluded[owners == block])


@pytest.mark.parametrize("queries, candidates", [
    ([], []),
    ([5], [7]),
    ([3, 3, 3, 9, 9, 3], [1, 4, 9, 2, 3, 5]),  # sorted runs (the seen movies of an ingest), a query coming back
    ([1, 1, 2, 1], [2**31 - 1, -2**31, 0, -5]),  # unsorted, extreme ids: differences beyond int32
])
def test_encoded_pairs_decode_to_the_same_pairs_in_the_same_order(queries, candidates):
    query_ids, candidate_ids = np.array(queries, np.int32), np.array(candidates, np.int32)
    decoded = decode_pairs(encode_pairs(query_ids, candidate_ids))
    assert [column.dtype for column in decoded] == [np.int32, np.int32]
    np.testing.assert_array_equal(decoded[0], query_ids)
    np.testing.assert_array_equal(decoded[1], candidate_ids)


def test_sorted_runs_of_pairs_encode_to_about_two_bytes_each():
    """Why the encoding: 10,000 users' sorted seen movies (ids below 60,000) cost the shuffle about 2 bytes a pair,
    not 8."""
    rng = np.random.default_rng(2)
    users = np.repeat(np.arange(10_000, dtype=np.int32), 100)
    movies = np.concatenate([np.sort(rng.choice(60_000, 100, replace=False)) for _ in range(10_000)]).astype(np.int32)
    assert len(encode_pairs(users, movies)) < 2.5 * len(users)
