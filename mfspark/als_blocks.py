"""Spark plumbing of block-partitioned ALS: rating blocks, in-blocks, out-blocks, routing.

Layout (in the spirit of MLlib's ALS.scala). Users are hashed into `num_user_blocks`
blocks and items into `num_item_blocks`; within a block entities are numbered by sorted id.
For each *destination* block (the side being solved) an in-block holds, CSR-like, every
rating of its entities with the row of the source factor it needs; for each *source* block
an out-block lists, per destination block, which of its local factors that block needs.
A half-step then moves only those factors across the shuffle, once per (source block,
destination block) pair, however many ratings use them.

Every block RDD here holds exactly one record per partition, `(block_id, value)`, in
partition `block_id`. That is what lets the in-blocks stay put: PySpark's `join`/`cogroup`
is a union plus `groupByKey` that reshuffles both sides every time, even co-partitioned
ones (measured: NOTES.md), so the co-partitioned join of in-blocks with routed factors is
done as a partition-wise `zip` (a narrow JVM dependency) that checks the block ids match.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark import RDD, StorageLevel
from pyspark.serializers import BatchedSerializer, CPickleSerializer
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from mfspark.als_kernels import initial_factors, solve_block

# One pickled record per serialized batch, so `zip` pairs records, not batches of them.
_ONE_RECORD_PER_BATCH = BatchedSerializer(CPickleSerializer(), 1)


@dataclass(frozen=True)
class InBlock:
    """All ratings of one destination block, CSR by local entity index."""

    ids: np.ndarray  # raw ids of the block's entities, ascending (position = local index)
    indptr: np.ndarray  # int64, len(ids) + 1
    cols: np.ndarray  # int32, row in the stack of received source factors
    ratings: np.ndarray  # float32
    src_counts: np.ndarray  # int64 per source block: how many factors it sends here

    @property
    def num_ratings(self) -> int:
        return int(self.indptr[-1])


# Destination block id -> ascending local indices of the source factors it needs.
OutBlock = dict[int, np.ndarray]


@dataclass(frozen=True)
class FactorBlock:
    """Factors of one block (float32, as shipped) and its share of the objective.

    `source_penalties` carries the penalty terms of the source blocks whose factors this
    block was solved from, so one job per iteration yields the whole objective.
    """

    factors: np.ndarray
    squared_error: float = 0.0
    penalty: float = 0.0
    source_penalties: dict[int, float] | None = None


@dataclass(frozen=True)
class Side:
    """One side (users or items) of the block layout."""

    in_blocks: RDD  # (block, InBlock): this side as destination
    out_blocks: RDD  # (block, OutBlock): this side as source
    num_blocks: int


def block_of(id_col: str, num_blocks: int) -> Column:
    """Block of an id: a fixed hash (xxhash64), so layout never depends on the process or input order."""
    return F.pmod(F.xxhash64(F.col(id_col)), F.lit(num_blocks)).cast("int")


def index_entities(ratings: DataFrame, id_col: str, num_blocks: int, prefix: str) -> DataFrame:
    """(id, block, local index) for every distinct id; local index = rank of the id within its block."""
    by_block = Window.partitionBy(f"{prefix}_block").orderBy(id_col)
    return (
        ratings.select(id_col).distinct()
        .withColumn(f"{prefix}_block", block_of(id_col, num_blocks))
        .withColumn(f"{prefix}_local", (F.row_number().over(by_block) - 1).cast("int"))
    )


def build_layout(
    ratings: DataFrame, num_user_blocks: int, num_item_blocks: int, storage_level: StorageLevel
) -> tuple[Side, Side]:
    """Build and persist the user and item sides from (user_id, movie_id, rating).

    The result depends only on the set of ratings, never on their order or partitioning,
    so recomputing a lost block on a task retry reproduces it exactly.
    """
    users = index_entities(ratings, "user_id", num_user_blocks, "u")
    items = index_entities(ratings, "movie_id", num_item_blocks, "i")
    indexed = (
        ratings.select("user_id", "movie_id", F.col("rating").cast("float"))
        .join(F.broadcast(users), "user_id").join(F.broadcast(items), "movie_id")
    )
    user_in, item_out = _blocks_for(indexed, ("u", "user_id"), ("i", num_item_blocks), num_user_blocks)
    item_in, user_out = _blocks_for(indexed, ("i", "movie_id"), ("u", num_user_blocks), num_item_blocks)
    user_side = Side(_persist(user_in, storage_level), _persist(user_out, storage_level), num_user_blocks)
    item_side = Side(_persist(item_in, storage_level), _persist(item_out, storage_level), num_item_blocks)
    return user_side, item_side


def _blocks_for(indexed: DataFrame, dst: tuple[str, str], src: tuple[str, int], num_dst: int) -> tuple[RDD, RDD]:
    """In-blocks of the destination side and out-blocks of the source side, from one grouping.

    Each destination block's ratings are assembled into arrays in one pandas call (Arrow
    transfer, no per-row Python); the out-blocks fall out of the same pass, since a
    destination block needs exactly the source factors its ratings refer to.
    """
    (dst_prefix, dst_id), (src_prefix, num_src) = dst, src
    columns = [f"{dst_prefix}_block", f"{dst_prefix}_local", dst_id, f"{src_prefix}_block", f"{src_prefix}_local",
               "rating"]

    def assemble(frame: pd.DataFrame) -> pd.DataFrame:
        block = int(frame.iloc[0, 0])
        payload = pickle.dumps(assemble_in_block(*(frame[c].to_numpy() for c in columns[1:]), num_src), protocol=5)
        return pd.DataFrame({"block": [block], "payload": [payload]})

    assembled = (
        indexed.select(*columns).groupBy(columns[0])
        .applyInPandas(assemble, schema="block int, payload binary")
        .rdd.map(lambda row: (row.block, pickle.loads(row.payload)))
    )
    per_block = one_record_per_partition(assembled, num_dst, default=None)
    in_blocks = per_block.map(lambda kv: (kv[0], kv[1][0] if kv[1] else empty_in_block(num_src)),
                              preservesPartitioning=True)
    links = per_block.flatMap(lambda kv: [(s, (kv[0], idx)) for s, idx in (kv[1][1] if kv[1] else {}).items()])
    out_blocks = one_record_per_partition(links, num_src, default=None, combine=dict)
    return _one_record_batches(in_blocks), out_blocks


def assemble_in_block(
    dst_local: np.ndarray, dst_ids: np.ndarray, src_block: np.ndarray, src_local: np.ndarray,
    ratings: np.ndarray, num_src: int,
) -> tuple[InBlock, OutBlock]:
    """Arrays of one destination block's ratings -> (InBlock, out-block links by source block).

    Received factors are stacked in source-block order, each source block's in ascending
    local index, so `cols` is that block's offset plus the rank of the local index.
    """
    order = np.argsort(dst_local, kind="stable")
    dst_local, src_block, src_local = dst_local[order], src_block[order], src_local[order]
    n = int(dst_local.max()) + 1 if len(dst_local) else 0
    ids = np.zeros(n, dtype=np.int64)
    ids[dst_local] = dst_ids[order]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(dst_local, minlength=n))]).astype(np.int64)
    cols = np.empty(len(order), dtype=np.int32)
    src_counts = np.zeros(num_src, dtype=np.int64)
    links: OutBlock = {}
    offset = 0
    for s in range(num_src):
        rows = np.flatnonzero(src_block == s)
        needed, position = np.unique(src_local[rows], return_inverse=True)
        cols[rows] = offset + position
        if len(needed):
            links[s] = needed.astype(np.int32)
        src_counts[s] = len(needed)
        offset += len(needed)
    in_block = InBlock(ids, indptr, cols, np.asarray(ratings, dtype=np.float32)[order], src_counts)
    return in_block, links


def empty_in_block(num_src: int) -> InBlock:
    return InBlock(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32),
                   np.zeros(num_src, np.int64))


def one_record_per_partition(pairs: RDD, num_blocks: int, default, combine=None) -> RDD:
    """Shuffle (block, value) pairs so partition b holds exactly one record (b, value).

    With `combine`, all values of a block are merged (e.g. `dict` of (key, value) pairs);
    otherwise a block must have at most one value. Missing blocks get `default`.
    """

    def gather(index: int, records):
        values = [value for _, value in records]
        if combine is not None:
            return [(index, combine(values))]
        if len(values) > 1:
            raise ValueError(f"block {index} received {len(values)} records, expected at most one")
        return [(index, values[0] if values else default)]

    grouped = pairs.partitionBy(num_blocks, lambda block: block).mapPartitionsWithIndex(gather, True)
    return _one_record_batches(grouped)


def zip_blocks(left: RDD, right: RDD) -> RDD:
    """Co-partitioned join of two one-record-per-partition RDDs without a shuffle.

    Both sides hold (block, value) in partition `block`, so the join is the partition-wise
    pairing; the block ids are checked so a layout mismatch fails loudly instead of mixing blocks.
    """

    def pair(record):
        (left_block, left_value), (right_block, right_value) = record
        if left_block != right_block:
            raise ValueError(f"block mismatch in co-partitioned join: {left_block} != {right_block}")
        return left_block, (left_value, right_value)

    return left.zip(right).map(pair, preservesPartitioning=True)


def initial_factor_blocks(side: Side, rank: int, seed: int, nonnegative: bool) -> RDD:
    """Starting factors for a side, one FactorBlock per block (depends on seed and ids only)."""
    return _one_record_batches(side.in_blocks.mapValues(
        lambda block: FactorBlock(initial_factors(block.ids, rank, seed, nonnegative).astype(np.float32))))


def route_factors(src_factors: RDD, src: Side, num_dst: int) -> RDD:
    """Send each destination block exactly the source factors its in-block refers to."""

    def messages(record):
        src_block, (factor_block, out_block) = record
        return [(dst, (src_block, (factor_block.factors[idx], factor_block.penalty)))
                for dst, idx in out_block.items()]

    return one_record_per_partition(zip_blocks(src_factors, src.out_blocks).flatMap(messages), num_dst,
                                    default=None, combine=dict)


def solve_half_step(dst: Side, received: RDD, rank: int, reg: float, nonnegative: bool) -> RDD:
    """New factors of every destination block from its in-block and the factors routed to it."""

    def solve(record):
        block, (in_block, received_by_src) = record
        empty = (np.zeros((0, rank), np.float32), 0.0)
        stack = np.vstack([received_by_src.get(s, empty)[0] for s in range(len(in_block.src_counts))])
        if stack.shape[0] != int(in_block.src_counts.sum()):
            raise ValueError(f"block {block}: received {stack.shape[0]} factors, "
                             f"expected {int(in_block.src_counts.sum())}")
        result = solve_block(in_block.indptr, in_block.cols, in_block.ratings, stack, reg, nonnegative)
        source_penalties = {s: penalty for s, (_, penalty) in received_by_src.items()}
        return block, FactorBlock(result.factors.astype(np.float32), result.squared_error, result.penalty,
                                  source_penalties)

    return _one_record_batches(zip_blocks(dst.in_blocks, received).map(solve, preservesPartitioning=True))


def factor_rows(factors: RDD, side: Side) -> RDD:
    """(id, [floats]) rows of a side's factors, for a DataFrame."""
    return zip_blocks(factors, side.in_blocks).flatMap(
        lambda kv: zip(kv[1][1].ids.tolist(), kv[1][0].factors.tolist()))


def _one_record_batches(rdd: RDD) -> RDD:
    # pyspark's zip re-pickles both sides through an extra Python pass unless their batch
    # sizes already agree; fixing batches of one record keeps zip a pure JVM pairing.
    return rdd._reserialize(_ONE_RECORD_PER_BATCH)


def _persist(rdd: RDD, storage_level: StorageLevel) -> RDD:
    return rdd.persist(storage_level)
