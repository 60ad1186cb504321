"""Spark plumbing of blockwise top-N: query blocks x candidate blocks, scored by `kernels`.

Queries (users; or movies, for audiences and similar movies) and candidates are factor
DataFrames `(id int, features array<float>)`. Each side is cut into blocks by a fixed hash
of the id (`models.als.blocks.block_of`), about `block_size` ids each; a query block also
carries, CSR-like, the candidate ids its queries must never get (seen movies). Factor rows
and excluded pairs cross from the JVM to Python as Arrow batches and are packed into numpy
arrays per destination block where they arrive (`_blocks`: one shuffle of a few pickled
chunks per input partition, 8 bytes per excluded pair); each block is assembled once and
travels as one pickled binary cell, so the pairing below moves whole blocks, never rows:

    query blocks  x  candidate blocks   (a Spark cartesian product: one task per pair; each
                                          task reads its two blocks from the shuffle that built
                                          them, so with one candidate block every task gets
                                          the whole catalogue, like a broadcast)
    task (q, c):  running top-N of block q updated by block c   (kernels.update_top_n)
    merge:        with more than one candidate block, the per-pair lists of each query are
                  merged by score (ties: smaller candidate id) in a window limited to N

No users x movies matrix, cross join of rows, or collect to the driver happens.

Memory per task (independent of the number of users and movies): the query block
(b_q x (rank + 1) float32 factors plus its queries' excluded ids, 4 bytes each, twice while
pickled; about 40 bytes per excluded pair at the peak of the block's assembly), the
candidate block (b_c x (rank + 1) x 4 bytes plus the same again while it is reordered), the
running lists (b_q x N x 12 bytes) and one score tile (kernels.TILE floats). With the
defaults (b_q 4,096, b_c 65,536, rank 10, N 10): under 10 MB plus the excluded ids (ml-25m:
about 150 per user, 2.5 MB per block, 25 MB at the assembly's peak). A packing task holds
its input partition's pairs (Spark's Arrow batches) plus about 24 bytes per pair.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from mfspark.models.als import blocks
from mfspark.recommend.kernels import TopN, exclusion_csr, group_by_block, update_top_n

RESULT_SCHEMA = "query_id int, rank int, candidate_id int, score float"
_BLOCK_SCHEMA = "block int, payload binary"


@dataclass(frozen=True)
class BlockSizes:
    """Ids per query block and per candidate block (the per-task memory bound scales with these)."""

    queries: int = 4096
    candidates: int = 65536

    def __post_init__(self):
        if self.queries < 1 or self.candidates < 1:
            raise ValueError(f"block sizes must be >= 1, got {self.queries}, {self.candidates}")


def top_n(queries: DataFrame, candidates: DataFrame, n: int, exclude: DataFrame | None = None,
          sizes: BlockSizes | None = None) -> DataFrame:
    """Each query's N best candidates by dot product, as `(query_id, rank, candidate_id, score)`.

    queries, candidates: `(id, features)`; exclude: `(query_id, candidate_id)` pairs never
    recommended. A query gets min(N, candidates not excluded) rows, ranks 1.., ties broken by
    the smaller candidate id. Counts both inputs now (to size the blocks); the rest is lazy.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    sizes = sizes or BlockSizes()
    spark = queries.sparkSession
    num_candidate_blocks = _num_blocks(candidates, sizes.candidates)
    query_blocks = spark.createDataFrame(_blocks(queries, _num_blocks(queries, sizes.queries), exclude), _BLOCK_SCHEMA)
    candidate_blocks = spark.createDataFrame(_blocks(candidates, num_candidate_blocks, None), _BLOCK_SCHEMA)
    pairs = query_blocks.select(F.col("block").alias("q_block"), F.col("payload").alias("q_payload")) \
        .crossJoin(candidate_blocks.select(F.col("block").alias("c_block"), F.col("payload").alias("c_payload")))
    lists = pairs.mapInArrow(lambda batches: _score_pairs(batches, n), RESULT_SCHEMA)
    return lists if num_candidate_blocks == 1 else _merge_lists(lists, n)


def _num_blocks(factors: DataFrame, block_size: int) -> int:
    return max(1, math.ceil(factors.count() / block_size))


def _blocks(factors: DataFrame, num_blocks: int, exclude: DataFrame | None):
    """(block, pickled FactorBlock) pairs, one per partition: factor rows and excluded pairs routed by the query id.

    Both inputs cross to Python as Arrow batches and are packed into numpy arrays per block
    where they arrive, so the one shuffle moves a few large pickled chunks per partition,
    never rows; each block is then assembled from its chunks.
    """
    chunks = blocks.packed_by_block(factors.select(F.col("id").cast("int"), F.col("features")),
                                    lambda batches: _pack_factors(batches, num_blocks))
    if exclude is not None:
        pairs = exclude.select(F.col("query_id").cast("int"), F.col("candidate_id").cast("int"))
        chunks = chunks.union(blocks.packed_by_block(pairs, lambda batches: _pack_exclusions(batches, num_blocks)))
    return chunks.partitionBy(num_blocks, _identity).mapPartitions(_assemble_partition)


def _identity(block: int) -> int:
    return block


# Kinds of chunk a block is assembled from.
_FACTORS, _EXCLUSIONS = 0, 1


def _pack_factors(batches, num_blocks: int):
    """Arrow batches of (id, features) -> (block, pickled (FACTORS, (ids, factors))) per block present."""
    for batch in batches:
        ids, factors = factor_arrays(batch.column(0), batch.column(1))
        for block, rows in _rows_by_block(ids, num_blocks):
            yield block, pickle.dumps((_FACTORS, (ids[rows], factors[rows])), protocol=5)


def _pack_exclusions(batches, num_blocks: int):
    """Arrow batches of (query_id, candidate_id) -> (block, pickled (EXCLUSIONS, (query ids, candidate ids))).

    One chunk per block and partition, int32 ids: the shuffle moves 8 bytes per pair.
    """
    parts = [(_non_null(batch.column(0), "query_id"), _non_null(batch.column(1), "candidate_id"))
             for batch in batches]
    if not parts:
        return
    query_ids, candidate_ids = (np.concatenate(column).astype(np.int32, copy=False) for column in zip(*parts))
    for block, rows in _rows_by_block(query_ids, num_blocks):
        yield block, pickle.dumps((_EXCLUSIONS, (query_ids[rows], candidate_ids[rows])), protocol=5)


def _non_null(column, name: str) -> np.ndarray:
    if column.null_count:
        raise ValueError(f"{column.null_count} excluded pairs with a null {name}")
    return column.to_numpy()


def _rows_by_block(ids: np.ndarray, num_blocks: int):
    """(block, row indices) for each block present among `ids` (blocks.block_of), rows in input order."""
    order, bounds = group_by_block(ids, num_blocks)
    for b in range(num_blocks):
        if bounds[b + 1] > bounds[b]:
            yield b, order[bounds[b]:bounds[b + 1]]


def factor_arrays(id_column, feature_column) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64, factors float32 (rows, rank)) from Arrow columns id and features (list<float>)."""
    if id_column.null_count or feature_column.null_count:
        raise ValueError("factor rows with a null id or null features")
    lengths = np.diff(feature_column.offsets.to_numpy())
    rank = int(lengths[0]) if len(lengths) else 0
    if np.any(lengths != rank):
        raise ValueError(f"factor rows of different lengths: {sorted(set(lengths.tolist()))[:5]}")
    values = feature_column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return id_column.to_numpy().astype(np.int64), values.reshape(len(lengths), rank)


def _assemble_partition(chunks):
    """The partition's chunks -> its one (block, pickled FactorBlock), if any factor rows arrived."""
    block, parts = None, {_FACTORS: [], _EXCLUSIONS: []}
    for key, payload in chunks:
        block, (kind, arrays) = key, pickle.loads(payload)
        parts[kind].append(arrays)
    if parts[_FACTORS]:
        yield block, pickle.dumps(assemble_block(parts[_FACTORS], parts[_EXCLUSIONS]), protocol=5)


@dataclass(frozen=True)
class FactorBlock:
    """A block's ids (ascending), their factors, and per row the ids it must not get (CSR, ascending per row)."""

    ids: np.ndarray
    factors: np.ndarray
    exclude_indptr: np.ndarray
    exclude_ids: np.ndarray


def assemble_block(factor_chunks: list, exclusion_chunks: list) -> FactorBlock:
    """One block from its (ids, factors) chunks and (query ids, excluded ids) chunks.

    Excluded pairs of ids without factors here are dropped (a query outside the requested
    subset, or a user the model has no factors for).
    """
    ids = np.concatenate([chunk[0] for chunk in factor_chunks])
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if len(ids) > 1 and np.any(ids[1:] == ids[:-1]):
        raise ValueError(f"duplicate factor id {ids[1:][ids[1:] == ids[:-1]][0]}")
    factors = np.vstack([chunk[1] for chunk in factor_chunks])[order]
    owners = np.concatenate([np.zeros(0, np.int32)] + [chunk[0] for chunk in exclusion_chunks])
    excluded = np.concatenate([np.zeros(0, np.int32)] + [chunk[1] for chunk in exclusion_chunks])
    rows = np.searchsorted(ids, owners)
    known = rows < len(ids)
    known[known] = ids[rows[known]] == owners[known]
    indptr, exclude_ids = exclusion_csr(rows[known], excluded[known], len(ids))
    return FactorBlock(ids, factors, indptr, exclude_ids)


def _score_pairs(batches, n: int):
    """(query block, candidate block) rows -> the query blocks' lists, one Arrow batch per run of one query block.

    Consecutive rows of the same query block share its running lists, so a task handed
    several candidate blocks of one query block merges them as it goes.
    """
    current, top = None, None
    for batch in batches:
        columns = batch.to_pydict()
        for q_block, q_payload, c_payload in zip(columns["q_block"], columns["q_payload"], columns["c_payload"]):
            if q_block != (current[0] if current else None):
                if current is not None:
                    yield _lists_batch(current[1], top)
                current = (q_block, pickle.loads(q_payload))
                top = TopN.empty(len(current[1].ids), n)
            candidates = pickle.loads(c_payload)
            queries = current[1]
            update_top_n(top, queries.factors, candidates.ids, candidates.factors, queries.exclude_indptr,
                         queries.exclude_ids)
    if current is not None:
        yield _lists_batch(current[1], top)


def _lists_batch(queries: FactorBlock, top: TopN):
    import pyarrow as pa

    rows, ranks, ids, scores = top.flat()
    return pa.RecordBatch.from_arrays(
        [pa.array(queries.ids[rows].astype(np.int32)), pa.array(ranks), pa.array(ids.astype(np.int32)),
         pa.array(scores.astype(np.float32))], names=["query_id", "rank", "candidate_id", "score"])


def _merge_lists(lists: DataFrame, n: int) -> DataFrame:
    """Per query, the N best of its per-candidate-block lists (Spark limits each window group to N rows early)."""
    order = Window.partitionBy("query_id").orderBy(F.col("score").desc(), F.col("candidate_id"))
    return (lists.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= n)
            .select("query_id", "rank", "candidate_id", "score"))
