"""Spark plumbing of blockwise top-N: query blocks x candidate blocks, scored by `kernels`.

Queries (users; or movies, for audiences and similar movies) and candidates are factor
DataFrames `(id int, features array<float>)`. Each side is cut into blocks by a fixed hash
of the id (`models.als.inblock.block_of`), about `block_size` ids each; a query block also
carries, CSR-like, the candidate ids its queries must never get (seen movies). Factor rows
and excluded pairs are packed into numpy arrays per destination block where they are read
(`_blocks`: Arrow batches, never rows in Python; excluded pairs that are plain columns of a
Parquet table are read by pyarrow in the tasks, `_exclusion_chunks`), shuffled as a few
pickled chunks per input partition (excluded pairs run-length and delta encoded, zstd: about
2 bytes per pair, `encode_pairs`) to one partition per block,
and gathered there into one row `(block, chunks)` by the JVM. The pairing moves those
rows, never factor rows:

    query blocks  x  candidate blocks   (a Spark cartesian product: one task per pair; each
                                          task reads its two rows from the shuffle that built
                                          them, so with one candidate block every task gets
                                          the whole catalogue, like a broadcast)
    task (q, c):  assemble block q (and c), then its running top-N is updated by block c
                  (kernels.update_top_n): one Python worker per task does both
    merge:        with more than one candidate block, the per-pair lists of each query are
                  merged by score (ties: smaller candidate id) in a window limited to N

No users x movies matrix, cross join of rows, broadcast, or collect to the driver happens.

Grouped lists (genre rows): queries may carry `list_groups array<int>` (one list per group
0..63) and candidates `group_mask long` (their groups as bits); each list then holds the
best N candidates of its group, all from one scoring pass, and the result has a `group`
column.

Memory per task (independent of the number of users and movies): the query block
(b_q x (rank + 1) float32 factors plus its queries' excluded ids, 4 bytes each; about 40
bytes per excluded pair at the peak of the block's assembly, which now happens in the
scoring task), the candidate block (b_c x (rank + 1) x 4 bytes plus the same again while it
is reordered), the running lists (b_q x N x 12 bytes, times the lists per query) and one
score tile (kernels.TILE floats). With the defaults (b_q 4,096, b_c 65,536, rank 10, N 10):
under 10 MB plus the excluded ids (ml-25m: about 150 per user, 2.5 MB per block, 25 MB at
the assembly's peak). A packing task holds one Arrow batch of its input (at most
`READ_BATCH` pairs when it reads Parquet itself) plus about 24 bytes per pair.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from mfspark.recommend.kernels import Lists, TopN, exclusion_csr, group_by_block, update_top_n
from mfspark.runtime import spark_internals

RESULT_SCHEMA = "query_id int, rank int, candidate_id int, score float"
GROUPED_RESULT_SCHEMA = "query_id int, group int, rank int, candidate_id int, score float"
# Optional columns: the groups of a query's lists; a candidate's groups as bits (kernels.Lists).
LIST_GROUPS, GROUP_MASK = "list_groups", "group_mask"
_CHUNK_SCHEMA = "block int, payload binary"
# Excluded pairs per Arrow batch when the tasks read Parquet themselves (8 MB of ids, ~24 MB while packed).
READ_BATCH = 1 << 20


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
    the smaller candidate id. With `list_groups` on the queries (and `group_mask` on the
    candidates) a query gets one such list per group, `(query_id, group, rank, ...)`.
    Counts both inputs now (to size the blocks); the rest is lazy.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    sizes = sizes or BlockSizes()
    grouped = LIST_GROUPS in queries.columns
    (num_queries, query_ranks), (num_candidates, candidate_ranks) = _shape(queries), _shape(candidates)
    if len(query_ranks | candidate_ranks) > 1:
        raise ValueError(f"the queries' factors have rank {_ranks(query_ranks)} and the candidates' "
                         f"{_ranks(candidate_ranks)}: scores need one rank")
    num_candidate_blocks = block_count(num_candidates, sizes.candidates)
    query_blocks = _blocks(queries, block_count(num_queries, sizes.queries), LIST_GROUPS if grouped else None,
                           exclude)
    candidate_blocks = _blocks(candidates, num_candidate_blocks,
                               GROUP_MASK if GROUP_MASK in candidates.columns else None)
    # shuffle_replicate_nl: a cartesian product, never a broadcast (which would collect a side to the driver)
    pairs = query_blocks.select(F.col("block").alias("q_block"), F.col("chunks").alias("q_chunks")) \
        .hint("shuffle_replicate_nl") \
        .crossJoin(candidate_blocks.select(F.col("block").alias("c_block"), F.col("chunks").alias("c_chunks")))
    lists = pairs.mapInArrow(lambda batches: _score_pairs(batches, n, grouped),
                             GROUPED_RESULT_SCHEMA if grouped else RESULT_SCHEMA)
    return lists if num_candidate_blocks == 1 else _merge_lists(lists, n, grouped)


def block_count(rows: int, block_size: int) -> int:
    """Blocks of about `block_size` ids for `rows` ids (at least one): a query or candidate side's partitions."""
    return max(1, math.ceil(rows / block_size))


def _shape(factors: DataFrame) -> tuple[int, set[int]]:
    """(rows, the set of feature lengths) of a factor frame, in one job (the blocks are sized by the rows)."""
    length = F.size("features")
    row = factors.agg(F.count(F.lit(1)), F.min(length), F.max(length)).first()
    return row[0], {n for n in row[1:] if n is not None}


def _ranks(ranks: set[int]) -> str:
    return " to ".join(str(n) for n in sorted(ranks)) or "(none: no rows)"


def _blocks(factors: DataFrame, num_blocks: int, extra: str | None, exclude: DataFrame | None = None) -> DataFrame:
    """(block, chunks): one row per block holding its packed chunks (factor rows, excluded pairs).

    Both inputs reach Python as Arrow batches and are packed into numpy arrays per block where
    they are read, so the one shuffle moves a few large chunks per partition, never rows; the
    JVM gathers each block's chunks into its row, and the scoring task assembles the block.
    `extra`: the optional column carried along (LIST_GROUPS or GROUP_MASK).
    """
    keys = spark_internals.hash_partition_keys(num_blocks)
    columns = [F.col("id").cast("int"), F.col("features")] + ([F.col(extra)] if extra else [])
    chunks = factors.select(*columns).mapInArrow(
        lambda batches: _chunk_batches(_pack_factors(batches, num_blocks), keys), _CHUNK_SCHEMA)
    if exclude is not None:
        chunks = chunks.union(_exclusion_chunks(exclude, num_blocks, keys))
    return chunks.repartition(num_blocks, "block").groupBy("block").agg(F.collect_list("payload").alias("chunks"))


def _exclusion_chunks(exclude: DataFrame, num_blocks: int, keys: list[int]) -> DataFrame:
    """Chunks of (query id, excluded id) pairs by block of the query id.

    When the pairs are two int columns of a local Parquet table as read (the seen movies of
    an ingest output), the tasks read those columns with pyarrow: 10M pairs take 0.2 s
    there against seconds for the JVM's scan and row-by-row Arrow conversion. Else the
    frame's Arrow batches are packed.
    """
    pairs = _int_pairs(exclude)
    source = _local_parquet_source(pairs)
    if source is None:
        return pairs.mapInArrow(lambda batches: _chunk_batches(_pack_exclusions(batches, num_blocks), keys),
                                _CHUNK_SCHEMA)
    paths = [unquote(urlparse(path).path) for path in source[0]]
    tasks = max(1, len(paths))
    return pairs.sparkSession.range(tasks, numPartitions=tasks).mapInArrow(
        lambda batches: _chunk_batches(_read_and_pack(batches, paths, source[1], num_blocks), keys), _CHUNK_SCHEMA)


def reads_exclusions_directly(exclude: DataFrame) -> bool:
    """Whether `top_n`'s tasks read these (query_id, candidate_id) pairs from their local Parquet files
    themselves. Pairs of queries not given are dropped when the blocks are assembled, so a caller restricting
    such a table to its queries with a join would only turn that read into a JVM conversion of the pairs left."""
    return _local_parquet_source(_int_pairs(exclude)) is not None


def _int_pairs(exclude: DataFrame) -> DataFrame:
    return exclude.select(F.col("query_id").cast("int"), F.col("candidate_id").cast("int"))


def _local_parquet_source(pairs: DataFrame) -> tuple[list[str], list[str]] | None:
    source = spark_internals.parquet_columns(pairs)
    return source if source is not None and all(path.startswith("file:") for path in source[0]) else None


def _read_and_pack(batches, paths: list[str], columns: list[str], num_blocks: int):
    """For each task number in `batches`, its Parquet file's two columns, READ_BATCH pairs at a time, packed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for batch in batches:
        for task in batch.column(0).to_pylist():
            for part in pq.ParquetFile(paths[task]).iter_batches(READ_BATCH, columns=columns, use_threads=False):
                pairs = [part.column(name) for name in columns]
                if any(column.type != pa.int32() for column in pairs):
                    raise ValueError(f"{paths[task]}: excluded pairs {columns} must be int32, got "
                                     f"{[str(column.type) for column in pairs]}")
                yield from _pack_exclusions(iter([pa.RecordBatch.from_arrays(pairs, names=columns)]), num_blocks)


def _chunk_batches(chunks, keys: list[int]):
    """(block, payload) pairs -> one-row Arrow batches (block's partition key, payload)."""
    import pyarrow as pa

    for block, payload in chunks:
        yield pa.RecordBatch.from_arrays([pa.array([keys[block]], pa.int32()), pa.array([payload], pa.binary())],
                                         names=["block", "payload"])


# Kinds of chunk a block is assembled from.
_FACTORS, _EXCLUSIONS = 0, 1


def _pack_factors(batches, num_blocks: int):
    """Arrow batches of (id, features[, extra]) -> (block, pickled (FACTORS, arrays)) per block present."""
    for batch in batches:
        ids, factors = factor_arrays(batch.column(0), batch.column(1))
        extra = _extra_arrays(batch)
        for block, rows in _rows_by_block(ids, num_blocks):
            arrays = {"ids": ids[rows], "factors": factors[rows]} | {k: take(rows) for k, take in extra.items()}
            yield block, pickle.dumps((_FACTORS, arrays), protocol=5)


def _extra_arrays(batch) -> dict:
    """The optional column of a factor batch as {name: rows -> its values for those rows}."""
    names = batch.schema.names
    if GROUP_MASK in names:
        masks = _non_null(batch.column(names.index(GROUP_MASK)), GROUP_MASK).astype(np.int64)
        return {GROUP_MASK: lambda rows: masks[rows]}
    if LIST_GROUPS in names:
        column = batch.column(names.index(LIST_GROUPS))
        if column.null_count:
            raise ValueError(f"{column.null_count} queries with null {LIST_GROUPS}")
        offsets = column.offsets.to_numpy().astype(np.int64)
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        return {LIST_GROUPS: lambda rows: ragged_take(offsets, values, rows)}
    return {}


def ragged_take(offsets: np.ndarray, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, values) of rows `rows` of the ragged array (offsets, values), in that order."""
    lengths = (offsets[1:] - offsets[:-1])[rows]
    starts = np.repeat(offsets[:-1][rows] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return lengths, values[starts + np.arange(len(starts))]


def _pack_exclusions(batches, num_blocks: int):
    """Arrow batches of (query_id, candidate_id) -> (block, pickled (EXCLUSIONS, `encode_pairs` bytes)).

    One chunk per block and partition. Encoded, a pair costs the shuffle about 2 bytes instead of 8 (seen
    movies arrive grouped by user, movie ids ascending): every later step moves these bytes (Arrow into the
    JVM, the shuffle, the gathering into one row per block, Arrow back into the scoring task).
    """
    parts = [(_non_null(batch.column(0), "query_id"), _non_null(batch.column(1), "candidate_id"))
             for batch in batches]
    if not parts:
        return
    query_ids, candidate_ids = (np.concatenate(column).astype(np.int32, copy=False) for column in zip(*parts))
    for block, rows in _rows_by_block(query_ids, num_blocks):
        yield block, pickle.dumps((_EXCLUSIONS, encode_pairs(query_ids[rows], candidate_ids[rows])), protocol=5)


def encode_pairs(query_ids: np.ndarray, candidate_ids: np.ndarray) -> bytes:
    """int32 pairs, losslessly and compactly: runs of equal query ids as (id, length), each candidate id as its
    difference to the previous one of its run (small and repetitive when a run is sorted), zstd-compressed.
    Any order of the pairs round-trips through `decode_pairs`; sorted runs make it small."""
    import pyarrow as pa

    starts = np.flatnonzero(np.r_[True, query_ids[1:] != query_ids[:-1]]) if len(query_ids) else np.zeros(0, int)
    lengths = np.diff(np.r_[starts, len(query_ids)])
    deltas = candidate_ids.astype(np.int64)
    deltas[1:] -= candidate_ids[:-1]
    deltas[starts] = candidate_ids[starts]
    header = np.array([len(starts), len(query_ids)], np.int64)
    body = np.concatenate([query_ids[starts].astype(np.int64), lengths, deltas]).astype(np.int64)
    return header.tobytes() + pa.compress(body.tobytes(), codec="zstd", asbytes=True)


def decode_pairs(payload: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(query ids, candidate ids), int32, from `encode_pairs` bytes."""
    import pyarrow as pa

    runs, pairs = np.frombuffer(payload[:16], np.int64)
    body = np.frombuffer(pa.decompress(payload[16:], (2 * runs + pairs) * 8, codec="zstd", asbytes=True), np.int64)
    run_ids, lengths, deltas = body[:runs], body[runs:2 * runs], body[2 * runs:]
    starts = np.cumsum(lengths) - lengths
    running = np.cumsum(deltas)
    candidates = running - np.repeat(running[starts] - deltas[starts], lengths)
    return np.repeat(run_ids, lengths).astype(np.int32), candidates.astype(np.int32)


def _non_null(column, name: str) -> np.ndarray:
    if column.null_count:
        raise ValueError(f"{column.null_count} excluded pairs with a null {name}")
    return column.to_numpy()


def _rows_by_block(ids: np.ndarray, num_blocks: int):
    """(block, row indices) for each block present among `ids` (`models.als.inblock.block_of`), rows in input order."""
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


@dataclass(frozen=True)
class FactorBlock:
    """A block's ids (ascending), their factors, per row the ids it must not get (CSR, ascending per
    row), the lists each row keeps (queries) and its groups as bits (candidates with GROUP_MASK)."""

    ids: np.ndarray
    factors: np.ndarray
    exclude_indptr: np.ndarray
    exclude_ids: np.ndarray
    lists: Lists
    group_mask: np.ndarray | None = None


def assemble_chunks(payloads: list[bytes]) -> FactorBlock | None:
    """A block from its pickled chunks; None when no factor rows arrived (only excluded pairs of
    queries without factors)."""
    parts = {_FACTORS: [], _EXCLUSIONS: []}
    for payload in payloads:
        kind, arrays = pickle.loads(payload)
        parts[kind].append(decode_pairs(arrays) if kind == _EXCLUSIONS else arrays)
    return assemble_block(parts[_FACTORS], parts[_EXCLUSIONS]) if parts[_FACTORS] else None


def assemble_block(factor_chunks: list[dict], exclusion_chunks: list) -> FactorBlock:
    """One block from its factor chunks ({ids, factors[, LIST_GROUPS | GROUP_MASK]}) and (query ids,
    excluded ids) chunks.

    Excluded pairs of ids without factors here are dropped (a query outside the requested
    subset, or a user the model has no factors for).
    """
    ids = np.concatenate([chunk["ids"] for chunk in factor_chunks])
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if len(ids) > 1 and np.any(ids[1:] == ids[:-1]):
        raise ValueError(f"duplicate factor id {ids[1:][ids[1:] == ids[:-1]][0]}")
    factors = np.vstack([chunk["factors"] for chunk in factor_chunks])[order]
    owners = np.concatenate([np.zeros(0, np.int32)] + [chunk[0] for chunk in exclusion_chunks])
    excluded = np.concatenate([np.zeros(0, np.int32)] + [chunk[1] for chunk in exclusion_chunks])
    rows = np.searchsorted(ids, owners)
    known = rows < len(ids)
    known[known] = ids[rows[known]] == owners[known]
    indptr, exclude_ids = exclusion_csr(rows[known], excluded[known], len(ids))
    lists, group_mask = Lists.one_each(len(ids)), None
    if LIST_GROUPS in factor_chunks[0]:
        lengths = np.concatenate([chunk[LIST_GROUPS][0] for chunk in factor_chunks])
        values = np.concatenate([chunk[LIST_GROUPS][1] for chunk in factor_chunks])
        lengths, groups = ragged_take(np.concatenate([[0], np.cumsum(lengths)]), values, order)
        lists = Lists(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), groups)
    if GROUP_MASK in factor_chunks[0]:
        group_mask = np.concatenate([chunk[GROUP_MASK] for chunk in factor_chunks])[order]
    return FactorBlock(ids, factors, indptr, exclude_ids, lists, group_mask)


def _score_pairs(batches, n: int, grouped: bool):
    """(query block, candidate block) rows -> the query blocks' lists, one Arrow batch per run of one query block.

    Consecutive rows of the same query block share its assembled block and running lists, so
    a task handed several candidate blocks of one query block merges them as it goes; the
    last candidate block is kept assembled for the next query block.
    """
    current, top, candidates = None, None, (None, None)
    for batch in batches:
        q_blocks, c_blocks = batch.column("q_block").to_pylist(), batch.column("c_block").to_pylist()
        q_chunks, c_chunks = batch.column("q_chunks"), batch.column("c_chunks")
        for row, (q_block, c_block) in enumerate(zip(q_blocks, c_blocks)):
            if current is None or q_block != current[0]:
                if current is not None and current[1] is not None:
                    yield _lists_batch(current[1], top, grouped)
                current = (q_block, assemble_chunks(q_chunks[row].as_py()))
                top = TopN.empty(len(current[1].lists.groups), n) if current[1] is not None else None
            if current[1] is None:
                continue
            if c_block != candidates[0]:
                candidates = (c_block, assemble_chunks(c_chunks[row].as_py()))
            queries, block = current[1], candidates[1]
            update_top_n(top, queries.factors, block.ids, block.factors, queries.exclude_indptr, queries.exclude_ids,
                         queries.lists, block.group_mask)
    if current is not None and current[1] is not None:
        yield _lists_batch(current[1], top, grouped)


def _lists_batch(queries: FactorBlock, top: TopN, grouped: bool):
    import pyarrow as pa

    rows, ranks, ids, scores = top.flat()
    owners = queries.lists.owners()[rows]
    columns = [pa.array(queries.ids[owners].astype(np.int32))]
    columns += [pa.array(queries.lists.groups[rows].astype(np.int32))] if grouped else []
    columns += [pa.array(ranks), pa.array(ids.astype(np.int32)), pa.array(scores.astype(np.float32))]
    names = ["query_id"] + (["group"] if grouped else []) + ["rank", "candidate_id", "score"]
    return pa.RecordBatch.from_arrays(columns, names=names)


def _merge_lists(lists: DataFrame, n: int, grouped: bool) -> DataFrame:
    """Per query (and group), the N best of its per-candidate-block lists (Spark limits each window group to N
    rows early)."""
    keys = ["query_id", "group"] if grouped else ["query_id"]
    order = Window.partitionBy(*keys).orderBy(F.col("score").desc(), F.col("candidate_id"))
    return (lists.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= n)
            .select(*keys, "rank", "candidate_id", "score"))
