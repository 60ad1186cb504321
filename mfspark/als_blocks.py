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
from pyspark import RDD, StorageLevel
from pyspark.serializers import BatchedSerializer, CPickleSerializer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from mfspark.als_kernels import initial_factors, solve_block, splitmix64

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
    src_ids: dict[int, np.ndarray]  # per source block: ascending raw ids of the factors it sends here

    @property
    def num_ratings(self) -> int:
        return int(self.indptr[-1])


# Destination block id -> local indices (in this source block) of the factors it needs, in its stacking order.
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


def block_of(ids: np.ndarray, num_blocks: int) -> np.ndarray:
    """Block of each id: a fixed hash of the id alone, so the layout never depends on the
    process, the input order or its partitioning."""
    return (splitmix64(np.asarray(ids, dtype=np.int64)) % np.uint64(num_blocks)).astype(np.int32)


def build_layout(
    ratings: DataFrame, num_user_blocks: int, num_item_blocks: int, storage_level: StorageLevel
) -> tuple[Side, Side, int]:
    """The persisted, materialised user and item sides from (user_id, movie_id, rating), and the rating count.

    The ratings cross from the JVM to Python once, as Arrow batches, packed into numpy
    arrays per (side, destination block) and shuffled once per side; each in-block numbers
    its own entities, and the out-blocks translate the ids other blocks ask for into local
    indices. Every block is a function of the set of ratings alone, so a retried task
    rebuilds exactly the same block.
    """
    sc = ratings.sparkSession.sparkContext
    triples = ratings.select(F.col("user_id").cast("int"), F.col("movie_id").cast("int"),
                             F.col("rating").cast("float"))
    packed = triples.mapInArrow(lambda batches: _pack_by_block(batches, num_user_blocks, num_item_blocks),
                                "side int, block int, payload binary")
    packed = packed.rdd.map(lambda row: ((row.side, row.block), row.payload)).persist(storage_level)
    user_in = _in_blocks(packed, 0, num_user_blocks, num_item_blocks).persist(storage_level)
    item_in = _in_blocks(packed, 1, num_item_blocks, num_user_blocks).persist(storage_level)
    users = Side(user_in, _out_blocks(item_in, user_in, num_user_blocks).persist(storage_level), num_user_blocks)
    items = Side(item_in, _out_blocks(user_in, item_in, num_item_blocks).persist(storage_level), num_item_blocks)
    # One job materialises all four block RDDs (the packed ratings are computed once) and counts the ratings.
    num_ratings = sc.union([users.in_blocks.map(lambda kv: kv[1].num_ratings), users.out_blocks.map(lambda kv: 0),
                            items.in_blocks.map(lambda kv: 0), items.out_blocks.map(lambda kv: 0)]).sum()
    packed.unpersist()
    return users, items, int(num_ratings)


# Ratings per packed chunk: keeps each Arrow binary value far below its 2 GB limit.
PACK_CHUNK_RATINGS = 4_000_000


def _pack_by_block(batches, num_user_blocks: int, num_item_blocks: int):
    """Arrow batches of one partition -> rows (side, block, payload) of packed numpy arrays.

    Side 0 packs (user id, item block, item id, rating) by user block, side 1 the mirror
    image by item block; the payload is a pickled tuple of those arrays.
    """
    import pyarrow as pa

    parts = [(b.column(0).to_numpy(), b.column(1).to_numpy(), b.column(2).to_numpy()) for b in batches]
    if not parts:
        return
    user_ids, item_ids, ratings = (np.concatenate(column) for column in zip(*parts))
    user_block, item_block = block_of(user_ids, num_user_blocks), block_of(item_ids, num_item_blocks)
    for side, dst_block, dst_ids, src_block, src_ids in (
            (0, user_block, user_ids, item_block, item_ids), (1, item_block, item_ids, user_block, user_ids)):
        order = np.argsort(dst_block, kind="stable")
        bounds = np.searchsorted(dst_block[order], np.arange(np.max(dst_block, initial=-1) + 2))
        rows = []
        for block in range(len(bounds) - 1):
            for lo in range(bounds[block], bounds[block + 1], PACK_CHUNK_RATINGS):
                chunk = order[lo:min(lo + PACK_CHUNK_RATINGS, bounds[block + 1])]
                arrays = (dst_ids[chunk], src_block[chunk], src_ids[chunk], ratings[chunk])
                rows.append((block, pickle.dumps(arrays, protocol=5)))
        if rows:
            yield pa.RecordBatch.from_arrays(
                [pa.array([side] * len(rows), pa.int32()), pa.array([r[0] for r in rows], pa.int32()),
                 pa.array([r[1] for r in rows], pa.binary())], names=["side", "block", "payload"])


def _in_blocks(packed: RDD, side: int, num_dst: int, num_src: int) -> RDD:
    """(block, InBlock) of one side as destination, from its packed chunks."""

    def assemble(chunks: list) -> InBlock:
        if not chunks:
            return empty_in_block(num_src)
        return assemble_in_block(*(np.concatenate(column) for column in zip(*map(pickle.loads, chunks))), num_src)

    keyed = packed.filter(lambda kv: kv[0][0] == side).map(lambda kv: (kv[0][1], kv[1]))
    return one_record_per_partition(keyed, num_dst, assemble)


def _out_blocks(dst_in_blocks: RDD, src_in_blocks: RDD, num_src: int) -> RDD:
    """(block, OutBlock) of the source side: which local factors each destination block asked for.

    Destination in-blocks name the source factors they need by raw id; the source block
    turns those ids into positions in its own (ascending) id array once, here.
    """
    requests = dst_in_blocks.flatMap(lambda kv: [(s, (kv[0], ids)) for s, ids in kv[1].src_ids.items()])
    by_src = one_record_per_partition(requests, num_src, dict)

    def localise(record):
        block, (asked, src_block) = record
        return block, {dst: np.searchsorted(src_block.ids, ids).astype(np.int32) for dst, ids in asked.items()}

    return _one_record_batches(zip_blocks(by_src, src_in_blocks).map(localise, preservesPartitioning=True))


def assemble_in_block(
    dst_ids: np.ndarray, src_block: np.ndarray, src_ids: np.ndarray, ratings: np.ndarray, num_src: int
) -> InBlock:
    """Arrays of one destination block's ratings -> its InBlock.

    Entities are numbered by ascending id. Received factors are stacked in source-block
    order, each source block's by ascending id, so `cols` is that block's offset plus the
    rank of the source id among those it sends. Ratings are ordered by (entity, source
    block, source id), so the block does not depend on the order the ratings arrived in.
    """
    ids, dst_local = np.unique(dst_ids, return_inverse=True)
    order = _entity_major_order(dst_local, src_block, src_ids)
    dst_local, src_block, src_ids = dst_local[order], src_block[order], src_ids[order]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(dst_local, minlength=len(ids)))]).astype(np.int64)
    cols = np.empty(len(order), dtype=np.int32)
    src_counts = np.zeros(num_src, dtype=np.int64)
    needed_ids: dict[int, np.ndarray] = {}
    offset = 0
    for s in range(num_src):
        rows = np.flatnonzero(src_block == s)
        needed, position = np.unique(src_ids[rows], return_inverse=True)
        cols[rows] = offset + position
        if len(needed):
            needed_ids[s] = needed.astype(np.int64)
        src_counts[s] = len(needed)
        offset += len(needed)
    return InBlock(ids.astype(np.int64), indptr, cols, np.asarray(ratings, dtype=np.float32)[order], src_counts,
                   needed_ids)


def _entity_major_order(dst_local: np.ndarray, src_block: np.ndarray, src_ids: np.ndarray) -> np.ndarray:
    """Stable order by (entity, source block, source id): one int64 key sort when the parts fit, else lexsort."""
    if len(dst_local) and dst_local.max() < 2**23 and src_block.max() < 2**8 and src_ids.min() >= 0 \
            and src_ids.max() < 2**32:
        key = (dst_local.astype(np.int64) << 40) | (src_block.astype(np.int64) << 32) | src_ids.astype(np.int64)
        return np.argsort(key, kind="stable")
    return np.lexsort((src_ids, src_block, dst_local))


def empty_in_block(num_src: int) -> InBlock:
    return InBlock(np.zeros(0, np.int64), np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32),
                   np.zeros(num_src, np.int64), {})


def one_record_per_partition(pairs: RDD, num_blocks: int, combine) -> RDD:
    """Shuffle (block, value) pairs so partition b holds exactly one record (b, combine(values)).

    Every block gets its record, even one that received nothing (combine of an empty list).
    """

    def gather(index: int, records):
        return [(index, combine([value for _, value in records]))]

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

    return one_record_per_partition(zip_blocks(src_factors, src.out_blocks).flatMap(messages), num_dst, dict)


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


