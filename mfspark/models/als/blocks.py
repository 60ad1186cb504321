"""Spark plumbing of block-partitioned ALS: rating blocks, in-blocks, out-blocks, routing.

Layout (in the spirit of MLlib's ALS.scala). Users are hashed into `num_user_blocks`
blocks and items into `num_item_blocks`; within a block entities are numbered by sorted id.
For each *destination* block (the side being solved) an in-block holds, CSR-like, every
rating of its entities with the row of the source factor it needs; for each *source* block
an out-block lists, per destination block, which of its local factors that block needs.
A half-step then moves only those factors across the shuffle, once per (source block,
destination block) pair, however many ratings use them.

Both sides stay resident, persisted, for the whole fit: partition b holds block b as one
record per peer block (`BlockRecord`). PySpark's `join`/`cogroup` is a union plus
`groupByKey` that would reshuffle the in-blocks every time, even co-partitioned ones
(measured: NOTES.md), so routed factors are paired with the resident records by a
partition-wise JVM `zip` instead: destination b receives exactly one message from each peer
block, the same count as its resident records. A half-step is then one stage and one
Python task per block (read messages, solve, route the new factors onward), and all the
iterations between two checkpoints are one Spark job.
"""

from __future__ import annotations

import gc
import logging
import pickle
import time
from dataclasses import dataclass

import numpy as np
from pyspark import RDD, Accumulator, AccumulatorParam, StorageLevel, TaskContext
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from mfspark.errors import InputError
from mfspark.models.als.implicit_kernels import gram_matrix
from mfspark.models.als.inblock import (
    InBlock,
    assemble_in_block,
    block_of,
    compact_ratings,
    empty_in_block,
    id_checksum,
    out_block,
)
from mfspark.models.als.kernels import initial_factors, ratings_fingerprint
from mfspark.models.als.solvers import HalfStep
from mfspark.recommend.kernels import group_by_block
from mfspark.runtime import spark_internals

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class BlockRecord:
    """One record of a side's resident partition b; partition b holds one per peer block.

    `send` lists the local indices (in b) of the factors peer block `peer` needs, in the
    order its in-block stacks them; the in-block of b rides on the record of peer 0. One
    record per peer is what lets a half-step pair this partition with the routed factors by
    a plain zip: destination b always receives exactly one message from every peer block.
    """

    peer: int
    send: np.ndarray
    in_block: InBlock | None = None


@dataclass(frozen=True)
class SolvedBlock:
    """New factors of one block (float32, as shipped), with what routing them needs."""

    ids: np.ndarray
    factors: np.ndarray
    sends: dict[int, np.ndarray]  # peer block -> local indices of the factors it needs
    counts: np.ndarray | None = None  # ratings per entity (learned biases: the bias tables' count)
    gram: np.ndarray | None = None  # implicit model: the block's part of X^T X (users) or Z^T Z (items);
    # implicit on both sides: its parts of [F^T F, W^T W] stacked (2, rank, rank), F its factors, W its implicit ones


@dataclass(frozen=True)
class Side:
    """One side (users or items) of the block layout, resident for the whole fit."""

    blocks: RDD  # (block, BlockRecord): `num_peers` records in partition `block`, one pickled record per batch
    num_blocks: int
    num_peers: int


class TermsAccumulator(AccumulatorParam):
    """Objective terms per (half-step, block): {(step, block): (squared_error, penalty, finished_at)}.

    Keyed, and merged by overwriting, so a retried or recomputed task replaces its entry
    instead of counting twice; the merge builds a new dict so the driver can read the value
    while updates arrive.
    """

    def zero(self, value: dict) -> dict:
        return {}

    def addInPlace(self, value1: dict, value2: dict) -> dict:
        return {**value1, **value2}


# Block ids travel as uint16 in the packed ratings.
MAX_BLOCKS = 2**16


@dataclass(frozen=True)
class Layout:
    """Both resident sides of a fit, the rating count, and how many ratings the full input check must judge."""

    users: Side
    items: Side
    num_ratings: int
    flagged: int  # ratings with a null, a NaN or infinite rating, or an id below 1 (`flagged_ratings`)
    rating_range: tuple[float, float] | None = None  # the lowest and highest finite rating (None: there is none)

    def release(self) -> None:
        for side in (self.users, self.items):
            side.blocks.unpersist()


def build_layout(ratings: DataFrame, num_user_blocks: int, num_item_blocks: int, storage_level: StorageLevel
                 ) -> Layout:
    """The persisted, materialised user and item sides from (user_id, movie_id, rating), and their counts.

    The ratings cross from the JVM to Python once, as Arrow batches, packed into numpy
    arrays per (side, destination block) and shuffled once per side; each block then builds
    its in-block and out-block from its own ratings. Every block is a function of the set of
    ratings alone, so a retried task rebuilds exactly the same block.

    The users' packing also counts the ratings a model must not be fitted as they are
    (`Layout.flagged`; nulls enter the blocks as 0), so a caller whose ratings no other pass
    has checked learns from this same pass whether the full input check has anything to judge.
    """
    spark_internals.check_classic(ratings.sparkSession)
    sc = ratings.sparkSession.sparkContext
    triples = ratings.select(F.col("user_id").cast("int"), F.col("movie_id").cast("int"),
                             F.col("rating").cast("float"))
    # Keyed {block or input partition: count}, so a retried task overwrites its entry instead of adding twice.
    user_counts, flagged = sc.accumulator({}, TermsAccumulator()), sc.accumulator({}, TermsAccumulator())
    # {(side, input partition): (ratings, fingerprint, lowest rating, highest rating)}
    reads = sc.accumulator({}, TermsAccumulator())
    # Each side reads the ratings itself: the Arrow transfer is cheaper than persisting the packed
    # chunks and reading them back twice (20M ratings: layout 15 s -> 11 s here).
    users = _resident_side(_packed_ratings(triples, 0, num_user_blocks, num_item_blocks, reads, flagged),
                           num_user_blocks, num_item_blocks, storage_level, user_counts)
    items = _resident_side(_packed_ratings(triples, 1, num_user_blocks, num_item_blocks, reads), num_item_blocks,
                           num_user_blocks, storage_level)
    materialise(users.blocks, items.blocks)
    ranges = [(low, high) for (side, _), (_, _, low, high) in reads.value.items() if side == 0 and low <= high]
    rating_range = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None
    layout = Layout(users, items, sum(user_counts.value.values()), sum(flagged.value.values()), rating_range)
    check_reads_agree(reads.value, layout)
    return layout


def check_reads_agree(reads: dict, layout: Layout) -> None:
    """Both sides must have read the same ratings (count and fingerprint), else the layout is released and the fit
    refused: a dense input behind a random filter exchanges the same ids between blocks whichever rows a read
    keeps, so the per-message id fingerprints (`solve_half_step`) cannot tell."""
    sides = [(sum(read[0] for (side, _), read in reads.items() if side == s),
              sum(int(read[1]) for (side, _), read in reads.items() if side == s) % 2**64) for s in (0, 1)]
    if sides[0] != sides[1]:
        layout.release()
        raise InputError(f"the two reads of the ratings disagreed ({sides[0][0]:,} and {sides[1][0]:,} ratings"
                         f"{', different ones' if sides[0][0] == sides[1][0] else ''}): the input DataFrame is "
                         "nondeterministic (e.g. a filter on rand() or sample() after a shuffle); cache, checkpoint "
                         "or write it before fit")


def materialise(*rdds: RDD) -> None:
    """Compute the given (persisted or checkpoint-marked) RDDs in one job.

    The job counts in the JVM: a Python count would pipe every record through a second
    Python worker per task. Their union is not marked itself, so a marked RDD among them is
    checkpointed by this job.
    """
    spark_internals.count_in_jvm(rdds[0].context.union(list(rdds)))


def _resident_side(packed: RDD, num_blocks: int, num_peers: int, storage_level: StorageLevel,
                   rating_counts: Accumulator | None = None) -> Side:
    """One side's persisted BlockRecords, from its (block, packed chunk) pairs in a single shuffle.

    A block's out-block needs no exchange with its peers: peer p needs exactly the
    entities of this block that have a rating from p, which this block's own ratings say.
    Each block reports its rating count to `rating_counts` under its block id, if given.
    """

    def records(block: int, chunks) -> list:
        arrays = [pickle.loads(payload) for _, payload in chunks]
        in_block = assemble_in_block(*(np.concatenate(column) for column in zip(*arrays)), num_peers) \
            if arrays else empty_in_block(num_peers)
        if rating_counts is not None:
            rating_counts.add({block: in_block.num_ratings})
        sends = out_block(in_block)
        return [(block, BlockRecord(peer, sends[peer], in_block if peer == 0 else None)) for peer in range(num_peers)]

    resident = packed.partitionBy(num_blocks, _block_partition).mapPartitionsWithIndex(records, True)
    return Side(_one_record_batches(resident).persist(storage_level), num_blocks, num_peers)


# Ratings per packed chunk: keeps each pickled payload far below 2 GB.
PACK_CHUNK_RATINGS = 4_000_000
def _packed_ratings(triples: DataFrame, side: int, num_user_blocks: int, num_item_blocks: int,
                    reads: Accumulator | None = None, flagged: Accumulator | None = None) -> RDD:
    """(block, pickled arrays) chunks of one side's ratings, packed where the rows arrive."""
    return spark_internals.pack_partitions(
        triples, lambda batches: _pack_by_block(batches, side, num_user_blocks, num_item_blocks, flagged, reads))


def _pack_by_block(batches, side: int, num_user_blocks: int, num_item_blocks: int,
                   flagged: Accumulator | None = None, reads: Accumulator | None = None):
    """Arrow batches of (user, item, rating) -> (block, payload) chunks of packed numpy arrays.

    Side 0 packs (user id, item block, item id, rating) by user block, side 1 the mirror
    image by item block; the payload is a pickled tuple of those arrays. Nulls are packed as
    0; `flagged`, if given, gets {input partition: its count of `flagged_ratings`}, `reads`
    {(side, input partition): (ratings, `ratings_fingerprint`, lowest and highest finite rating)}.
    """
    parts = [[b.column(j) for j in range(3)] for b in batches]
    partition = TaskContext.get().partitionId()
    if flagged is not None:
        flagged.add({partition: sum(flagged_ratings(*columns) for columns in parts)})
    if not parts:
        return
    user_ids, item_ids, ratings = (np.concatenate([_values(c) for c in column]) for column in zip(*parts))
    if reads is not None:
        bits = np.ascontiguousarray(ratings, dtype=np.float32).view(np.uint32)
        finite = ratings[np.isfinite(ratings)]
        low, high = (float(finite.min()), float(finite.max())) if len(finite) else (np.inf, -np.inf)
        reads.add({(side, partition): (len(ratings), ratings_fingerprint(user_ids, item_ids, bits), low, high)})
    ratings = compact_ratings(ratings)  # the packed chunks are shuffled: keep them small
    dst_ids, num_dst, src_ids, num_src = (user_ids, num_user_blocks, item_ids, num_item_blocks) if side == 0 \
        else (item_ids, num_item_blocks, user_ids, num_user_blocks)
    src_block = block_of(src_ids, num_src)
    order, bounds = group_by_block(dst_ids, num_dst)  # the top-N engine's compiled grouping: the same blocks
    for block in range(num_dst):
        for lo in range(bounds[block], bounds[block + 1], PACK_CHUNK_RATINGS):
            chunk = order[lo:min(lo + PACK_CHUNK_RATINGS, bounds[block + 1])]
            arrays = (dst_ids[chunk], src_block[chunk].astype(np.uint16), src_ids[chunk], ratings[chunk])
            yield block, pickle.dumps(arrays, protocol=5)


def flagged_ratings(user_ids, item_ids, ratings) -> int:
    """How many of these ratings (Arrow arrays) have a null, a NaN or infinite rating, or an id below 1.

    Exactly what the full input check refuses, or (ids below 1) numbers through an index, once
    the layout's casts have lost nothing (int ids): with none flagged it passes the ratings as they are.
    """
    flagged = np.zeros(len(ratings), dtype=bool)
    for column in (user_ids, item_ids, ratings):
        if column.null_count:
            flagged |= column.is_null().to_numpy(zero_copy_only=False)
    users, items, values = (_values(c) for c in (user_ids, item_ids, ratings))
    return int(np.count_nonzero(flagged | (users < 1) | (items < 1) | ~np.isfinite(values)))


def _values(column) -> np.ndarray:
    """An Arrow array's values as numpy, nulls as 0."""
    return column.fill_null(0).to_numpy() if column.null_count else column.to_numpy()


def initial_solved_blocks(side: Side, half_step: HalfStep, seed: int) -> RDD:
    """Starting factors for a side as (block, SolvedBlock); they depend on seed and ids only."""

    def initial(records):
        block, in_block, sends = _gather_resident(records)
        factors, gram = half_step.initial(initial_factors(in_block.ids, half_step.rank, seed, half_step.nonnegative))
        return [(block, SolvedBlock(in_block.ids, factors.astype(np.float32), sends, np.diff(in_block.indptr), gram))]

    return side.blocks.mapPartitions(initial, preservesPartitioning=True)


def warm_solved_blocks(seeded: RDD, previous: RDD, num_blocks: int, half_step: HalfStep) -> RDD:
    """`seeded` (block, SolvedBlock) with the factors of the ids in `previous` (id, features) replaced by those.

    A warm start: entities of the previous model start from its factors, new ones keep their
    seeded vectors, and ids the previous model has but this layout lacks are dropped (other
    columns of the rows, e.g. learned biases, keep their start). One shuffle of the previous
    factors and of the (small) seeded blocks, once per fit.
    """
    rank = half_step.rank

    def by_block(rows):
        rows = list(rows)
        if not rows:
            return
        ids = np.array([row[0] for row in rows], dtype=np.int64)
        factors = np.array([row[1] for row in rows], dtype=np.float32).reshape(len(rows), rank)
        owner = block_of(ids, num_blocks)
        for b in np.unique(owner):
            yield int(b), (ids[owner == b], factors[owner == b])

    def merge(block: int, records):
        solved, chunks = None, []
        for _, value in records:
            if isinstance(value, SolvedBlock):
                solved = value
            else:
                chunks.append(value)
        factors = solved.factors.copy()
        for ids, rows in chunks:  # solved.ids ascending: each previous id's row, if this layout has it
            position = np.minimum(np.searchsorted(solved.ids, ids), max(len(solved.ids) - 1, 0))
            found = solved.ids[position] == ids if len(solved.ids) else np.zeros(len(ids), dtype=bool)
            factors[position[found], :rank] = rows[found]
        _, block_gram = half_step.initial(factors[:, :rank])
        return [(block, SolvedBlock(solved.ids, factors, solved.sends, solved.counts, block_gram))]

    return seeded.union(previous.mapPartitions(by_block)).partitionBy(num_blocks, _block_partition) \
        .mapPartitionsWithIndex(merge, preservesPartitioning=True)


def route_factors(solved: RDD, num_peers: int) -> RDD:
    """Send each peer block exactly the factors its in-block refers to: one message per (block, peer) pair.

    Every pair gets its message, an empty one included, so partition p of the result holds
    exactly one record per source block, the count the zip in `solve_half_step` relies on.
    """

    def messages(kv):
        block, solved_block = kv
        ids, factors, gram = solved_block.ids, solved_block.factors, solved_block.gram
        return [(peer, (block, factors[idx], id_checksum(ids[idx]), gram)) for peer, idx in solved_block.sends.items()]

    return solved.flatMap(messages).partitionBy(num_peers, _block_partition)


def solve_half_step(dst: Side, messages: RDD, half_step: HalfStep, source_width: int, terms: Accumulator,
                    step: int, previous: RDD | None = None) -> RDD:
    """New (block, SolvedBlock) of every destination block from its resident records and the routed factors.

    Resident partition b and message partition b both hold one record per peer block, so
    a JVM zip pairs them without reshuffling the in-blocks; the solve, and the routing that
    follows unless the result is persisted, run in the same Python task. The block's
    objective terms (squared error, weighted penalty) go to `terms` under (step, block).

    `previous`: the side's (block, SolvedBlock) before this half-step, for a solver that starts
    from them (`HalfStep.warm`: implicit "cg"). It is partitioned as the resident records and the
    messages (`partitionBy` by block, then partition-preserving maps only), so partition b of all
    three is read by one narrow JVM union (`spark_internals.co_partitioned_union`), no shuffle;
    the union keeps that partitioner, so this half-step's result can be the next one's `previous`.
    It is read twice (routed to the other side and here), so the caller persists it.
    """
    num_peers = dst.num_peers

    def solve(elements):
        records, received, start = [], {}, None
        for key, value in elements:
            if isinstance(value, BlockRecord):
                records.append((key, value))
            elif isinstance(value, SolvedBlock):
                start = key, value
            else:
                received[value[0]] = key, value[1:]
        block, in_block, sends = _gather_resident(records)
        for dst_block, _ in [*received.values(), *([start] if start else [])]:
            if dst_block != block:
                raise ValueError(f"block mismatch in half-step {step}: factors for {dst_block} met block {block}")
        if sorted(received) != list(range(num_peers)):
            raise ValueError(f"block {block}, half-step {step}: messages from {sorted(received)}, "
                             f"expected one from each of {num_peers} blocks")
        for s, (_, (_, checksum, _)) in received.items():
            if checksum != in_block.src_checksums[s]:
                raise ValueError(
                    f"half-step {step}, block {block}: the factors block {s} sent are not the ones this block's "
                    "ratings refer to. The two sides read different rows from the input DataFrame (a "
                    "nondeterministic input, e.g. sample() after a shuffle): cache or checkpoint it before fit.")
        stack = np.vstack([received[s][1][0].reshape(-1, source_width) for s in range(num_peers)])
        if stack.shape[0] != int(in_block.src_counts.sum()):
            raise ValueError(f"block {block}: received {stack.shape[0]} factors, "
                             f"expected {int(in_block.src_counts.sum())}")
        if half_step.warm and (start is None or not np.array_equal(start[1].ids, in_block.ids)):
            raise ValueError(f"block {block}, half-step {step}: the solver starts from this block's previous "
                             "factors, which did not arrive")
        grams = [gram for _, (_, _, gram) in received.values() if gram is not None]
        factors, counts, gram, squared_error, penalty = half_step.solve(
            in_block, stack, sum(grams) if grams else None, start[1].factors if start else None)
        _freeze_worker_heap_once()
        terms.add({(step, block): (squared_error, penalty, time.time())})
        return [(block, SolvedBlock(in_block.ids, factors.astype(np.float32), sends, counts, gram))]

    if previous is None:
        elements = _zip_resident(dst.blocks, messages).flatMap(lambda pair: pair)
    else:
        elements = spark_internals.co_partitioned_union(dst.blocks, messages, previous)
    return elements.mapPartitions(solve, preservesPartitioning=True)


_worker_heap_frozen = False


def _freeze_worker_heap_once() -> None:
    """In a Spark Python worker, move everything loaded so far out of the cyclic GC's reach (once).

    A reused pyspark worker runs a full `gc.collect()` after every task (pyspark/daemon.py).
    With numba, pyarrow and pandas loaded that walks ~160k long-lived objects, ~60 ms here,
    and the next half-step's task waits for it; after `gc.freeze()` it takes microseconds.
    Garbage cycles are collected first (so none is frozen), and objects freed by reference
    counting are still freed. Never done outside a task.
    """
    global _worker_heap_frozen
    if not _worker_heap_frozen and TaskContext.get() is not None:
        gc.collect()
        gc.freeze()
        _worker_heap_frozen = True


def _gather_resident(records) -> tuple[int, InBlock, dict[int, np.ndarray]]:
    """(block, in-block, sends by peer) from the BlockRecords of one resident partition."""
    records = list(records)
    block = records[0][0] if records else None
    sends = {record.peer: record.send for _, record in records}
    in_block = next((record.in_block for _, record in records if record.in_block is not None), None)
    if in_block is None:
        raise ValueError(f"resident partition of block {block} has no in-block")
    return block, in_block, sends


def _zip_resident(resident: RDD, messages: RDD) -> RDD:
    """Partition-wise pairing of resident records with routed messages (a narrow JVM zip).

    pyspark's `RDD.zip` would re-pickle both sides in an extra Python pass because their
    batch sizes differ; here each JVM element on both sides is one pickled record (resident:
    batches of one; messages: one per (source, destination) pair), so the elements pair up
    directly and the zip costs no Python work.
    """
    return spark_internals.zip_partitions(resident, messages)


def _block_partition(block: int) -> int:
    return block


def factor_rows(solved: RDD, start: int = 0, stop: int | None = None) -> RDD:
    """(id, [floats]) rows of columns start:stop of a side's solved blocks, for a DataFrame."""
    return solved.flatMap(lambda kv: zip(kv[1].ids.tolist(), kv[1].factors[:, start:stop].tolist()))


def bias_rows(solved: RDD, column: int) -> RDD:
    """(id, bias, count) rows of a side's learned biases (factor column `column`), for a bias table."""
    return solved.flatMap(lambda kv: zip(kv[1].ids.tolist(), kv[1].factors[:, column].astype(float).tolist(),
                                         kv[1].counts.tolist()))


def summed_gram(solved: RDD) -> np.ndarray:
    """The sum of a side's per-block Grams (implicit model: Z^T Z of every item), by one small job."""
    return solved.map(lambda kv: kv[1].gram).reduce(np.add)


def factor_gram(factors: DataFrame) -> np.ndarray:
    """X^T X (float64) of a factor table (id, features), by one small job: each partition's Gram is
    formed on its executor (`gram_matrix`, as a fit's blocks form theirs) and only rank x rank
    matrices reach the driver."""

    def partition_gram(rows):
        features = [row[0] for row in rows]
        if features:
            yield gram_matrix(np.asarray(features, dtype=np.float32))

    return factors.select("features").rdd.mapPartitions(partition_gram).reduce(np.add)


def _one_record_batches(rdd: RDD) -> RDD:
    # pyspark's zip re-pickles both sides through an extra Python pass unless their batch
    # sizes already agree; fixing batches of one record keeps zip a pure JVM pairing.
    return spark_internals.one_record_per_batch(rdd)


