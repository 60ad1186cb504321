"""`mfspark ingest`: a MovieLens release directory -> validated Parquet tables, rejects and a manifest.

Each input file is read with `spark.read.text` and parsed with built-in column functions.
Every line keeps its position (file split start, `monotonically_increasing_id`): rows of a
split are contiguous and in file order, so the physical line number of a rejected row is
the number of lines in earlier splits plus its offset in its own split. That costs one extra
scan of a file only when the file has rejects. Rows that fail a check go to `rejects`; above
`--max-reject-fraction` of one file the run fails and commits nothing (`atomic_output`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F

from mfspark.data.movielens import (
    BLANK_LINE,
    DUPLICATE,
    LATEST_BY,
    TABLE_KEYS,
    TABLE_SCHEMAS,
    Release,
    SourceFile,
    detect_release,
    parse_lines,
    read_genre_names,
    release_named,
)
from mfspark.errors import ConfigError, InputError, RejectThresholdError
from mfspark.runtime.commit import atomic_output, check_disjoint, check_parquet_table, write_json
from mfspark.runtime.fs import HadoopPath
from mfspark.runtime.provenance import file_md5, versions

log = logging.getLogger(__name__)

DEFAULT_MAX_REJECT_FRACTION = 0.001
ECHOED_LINE_CHARS = 200  # an error message quotes at most this much of an offending line
TABLE_COLUMNS = {table: [column.split()[0] for column in schema.split(", ")] for table, schema in TABLE_SCHEMAS.items()}


@dataclass(frozen=True)
class FileResult:
    source: SourceFile
    path: Path
    rows: int
    rejected: dict[str, int]
    blank_lines: int
    seconds: float


def ingest_release(
    spark: SparkSession,
    source_dir: str | Path,
    out_dir: str,
    release: str | None = None,
    max_reject_fraction: float = DEFAULT_MAX_REJECT_FRACTION,
    commit: bool = True,
) -> dict:
    """Ingest one release directory into `out_dir` and return the manifest (also written there).

    With `commit` the output is published in one atomic step (`atomic_output`); without, it is written straight
    into `out_dir`, for a caller that publishes it itself (the pipeline's run directory).
    """
    if not 0 <= max_reject_fraction <= 1:
        raise ConfigError(f"--max-reject-fraction must be between 0 and 1, got {max_reject_fraction}")
    started = time.perf_counter()
    # The release is told by the name the caller gave (a synth output is a link to a versioned directory).
    named = source_dir if isinstance(source_dir, HadoopPath) else Path(os.path.abspath(source_dir))
    source_dir = named.resolve()
    check_disjoint(source_dir, out_dir)
    chosen = release_named(release) if release else detect_release(named)
    files = input_files(source_dir, chosen)
    log.info("ingesting %s from %s: %s", chosen.name, source_dir, ", ".join(p.name for _, p in files))
    checksum_started = time.perf_counter()
    inputs = {path.name: describe_input(path) for _, path in files}
    timings = {"checksums": time.perf_counter() - checksum_started}
    genre_names = read_genre_names(source_dir / "u.genre")
    with atomic_output(spark, out_dir) if commit else contextlib.nullcontext(out_dir) as staging:
        empty_table(spark, "rejects").write.parquet(f"{staging}/rejects")
        results = [ingest_file(spark, source, path, chosen, genre_names, staging, max_reject_fraction)
                   for source, path in files]
        timings.update({r.source.table: r.seconds for r in results})
        timings["total"] = time.perf_counter() - started
        manifest = build_manifest(spark, chosen, source_dir, out_dir, inputs, results, max_reject_fraction, timings)
        write_json(spark, f"{staging}/manifest.json", manifest)
    return manifest


def input_files(source_dir: Path, release: Release) -> list[tuple[SourceFile, Path]]:
    """The release's files present in `source_dir`, smallest first (a bad small file fails fast)."""
    if not source_dir.is_dir():
        raise InputError(f"input directory {source_dir} does not exist (expected a MovieLens {release.name} release)")
    found = []
    for source in release.files:
        path = source_dir / source.name
        if not path.is_file():
            if source.required:
                raise InputError(f"{source_dir}: missing {source.name}, required for a {release.name} release "
                                 f"(expected {', '.join(s.name for s in release.files if s.required)})")
            log.warning("%s: no %s, so no %s table", source_dir, source.name, source.table)
            continue
        if path.stat().st_size == 0:
            raise InputError(f"{path} is empty")
        if source.header:
            check_header(path, source)
        found.append((source, path))
    return sorted(found, key=lambda item: item[1].stat().st_size)


def check_header(path: Path, source: SourceFile) -> None:
    """The first line must be the release's header. Shown quoted with escapes: a raw CR would send the terminal
    back to the line's start, and a file whose lines end in CR alone would print as if its header were right."""
    with path.open("rb") as stream:
        first = stream.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")
    if tuple(first.split(",")) != source.header:
        hint = " (its lines end in CR alone: convert them to LF or CRLF)" if "\r" in first else ""
        raise InputError(f"{path}: unrecognised header {first[:200]!r}{hint}, expected '{','.join(source.header)}'")


def describe_input(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path), "bytes": stat.st_size, "md5": _input_md5(path, stat.st_size, stat.st_mtime)}


@functools.lru_cache(maxsize=64)
def _input_md5(path: Path, size: int, mtime: float) -> str:
    """`file_md5`, once per version (size, modification time) of an input in this process: the pipeline's plan
    (its stage keys) and the ingest manifest both describe the inputs, and a 32M-rating release is 0.9 GB a pass."""
    return file_md5(path)


def read_lines(spark: SparkSession, path: Path | HadoopPath) -> DataFrame:
    """Lines of one file with their position: (split start byte, id increasing within a split)."""
    # A local file as a file:// URI: Spark reads it from this disk even when its default filesystem is HDFS.
    return spark.read.text(str(path) if isinstance(path, HadoopPath) else path.absolute().as_uri()).select(
        "value",
        F.col("_metadata.file_block_start").alias("block_start"),
        F.monotonically_increasing_id().alias("row_id"),
    )


def ingest_file(
    spark: SparkSession,
    source: SourceFile,
    path: Path,
    release: Release,
    genre_names: tuple[str, ...],
    staging: str,
    max_reject_fraction: float,
) -> FileResult:
    """Write the file's valid rows and count lines in one pass; a second pass only when rows were rejected."""
    started = time.perf_counter()
    checked = check_file(spark, source, path, release, genre_names, with_raw_lines=False)
    reason = F.col("reason")
    counts = Observation(f"{path.name} counts")
    checked.observe(
        counts,
        F.count(F.lit(1)).alias("lines"),
        F.count_if(reason.isNull()).alias("rows"),
        F.count_if(reason == BLANK_LINE).alias("blank_lines"),
    ).filter(reason.isNull()).select(*TABLE_COLUMNS[source.table]).write.parquet(f"{staging}/{source.table}")
    lines, rows, blank_lines = (counts.get[name] for name in ("lines", "rows", "blank_lines"))
    rejected = lines - rows - blank_lines
    if rows + rejected == 0:
        raise InputError(f"{path} has no data rows")
    by_reason = write_rejects(spark, source, path, release, genre_names, staging, max_reject_fraction, rows) \
        if rejected else {}
    seconds = time.perf_counter() - started
    log.info("%s: %d rows -> %s, %d rejected %s, %d blank lines (%.1f s)", path.name, rows, source.table,
             rejected, by_reason, blank_lines, seconds)
    return FileResult(source, path, rows, by_reason, blank_lines, seconds)


def write_rejects(spark: SparkSession, source: SourceFile, path: Path, release: Release,
                  genre_names: tuple[str, ...], staging: str, max_reject_fraction: float, rows: int) -> dict[str, int]:
    """Append the file's rejected rows to `rejects` and return their counts by reason.

    Raises RejectThresholdError (naming the first offending line) above the allowed fraction.
    """
    checked = check_file(spark, source, path, release, genre_names, with_raw_lines=True)
    reason = F.col("reason")
    rejects = with_line_numbers(spark, checked.filter(reason.isNotNull() & (reason != BLANK_LINE)), source, path)
    rejects = rejects.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        by_reason = {row["reason"]: row["count"] for row in rejects.groupBy("reason").count().collect()}
        rejected = sum(by_reason.values())
        if rejected > max_reject_fraction * (rows + rejected):
            raise threshold_error(path, rows, rejected, max_reject_fraction, rejects)
        rejects.write.mode("append").parquet(f"{staging}/rejects")
    finally:
        rejects.unpersist()
    return dict(sorted(by_reason.items()))


def check_file(spark: SparkSession, source: SourceFile, path: Path, release: Release,
               genre_names: tuple[str, ...], with_raw_lines: bool) -> DataFrame:
    """Every line of the file (blank ones included) with its typed columns, `reason` and position.

    The text of each line (`raw_line`) is only carried when asked for: it would double what the
    duplicate check shuffles.
    """
    lines = read_lines(spark, path)
    if source.header:
        lines = lines.filter((F.col("block_start") != 0) | (F.col("row_id") != 0))
    if source.multiline:
        lines = join_quoted_lines(lines)
    parsed = parse_lines(lines, source, release, genre_names)
    kept = [*TABLE_COLUMNS[source.table], "reason", "block_start", "row_id", *(["raw_line"] if with_raw_lines else [])]
    return mark_duplicates(parsed.select(*kept), source.table)


def join_quoted_lines(lines: DataFrame) -> DataFrame:
    """Lines of one CSV record as one: a line read while a quoted field is open (an odd number of quotes so far,
    `""` counting twice) is joined, after a newline, to the line that opened it, so a quoted title holding a line
    break is one row. The record keeps its first line's position, so a rejected record is reported at the line
    where it starts; an unclosed quote makes the rest of the split one (rejected) record.

    Within a file split: Hadoop splits files by line, so a record across a split boundary (128 MB in) stays two.
    """
    order = Window.partitionBy("block_start").orderBy("row_id")
    odd = ((F.size(F.split("value", '"', -1)) - 1) % 2).cast("int")
    opened_before = F.coalesce(F.sum(odd).over(order.rowsBetween(Window.unboundedPreceding, -1)), F.lit(0)) % 2
    starts = lines.withColumn("_starts", (opened_before == 0).cast("int"))
    records = starts.withColumn("_record", F.sum("_starts").over(order.rowsBetween(Window.unboundedPreceding, 0)))
    parts = F.array_sort(F.collect_list(F.struct("row_id", "value")))
    return records.groupBy("block_start", "_record").agg(
        F.concat_ws("\n", F.transform(parts, lambda part: part["value"])).alias("value"),
        F.min("row_id").alias("row_id"),
    ).select("value", "block_start", "row_id")


def mark_duplicates(parsed: DataFrame, table: str) -> DataFrame:
    """Among valid rows sharing a key, keep one and mark the others `duplicate`.

    Ratings keep the latest timestamp and, on equal timestamps, the later line; other tables
    keep the first line. Positions make the choice deterministic.
    """
    keys = TABLE_KEYS.get(table)
    if not keys:
        return parsed
    position = [F.col("block_start"), F.col("row_id")]
    latest = LATEST_BY.get(table)
    order = [F.col(latest).desc(), *(c.desc() for c in position)] if latest else position
    # Keys first: the sort behind the window then has a useful prefix (reason is null on most rows).
    rank = F.row_number().over(Window.partitionBy(*keys, "reason").orderBy(*order))
    reason = F.when(F.col("reason").isNull() & (rank > 1), F.lit(DUPLICATE)).otherwise(F.col("reason"))
    return parsed.withColumn("reason", reason)


def with_line_numbers(spark: SparkSession, rejected: DataFrame, source: SourceFile, path: Path) -> DataFrame:
    """Rejected rows in the `rejects` schema, with 1-based physical line numbers (header = line 1)."""
    per_split = read_lines(spark, path).groupBy("block_start").agg(
        F.min("row_id").alias("first_row_id"), F.count(F.lit(1)).alias("lines"))
    # Lines before a split = the lines of all earlier splits. A join of this tiny table (a row per split) with
    # itself, not a running sum over an unpartitioned window, which makes Spark warn "No Partition Defined".
    earlier = per_split.select(F.col("block_start").alias("earlier_start"), F.col("lines").alias("earlier_lines"))
    offsets = (per_split.join(F.broadcast(earlier), F.col("earlier_start") < F.col("block_start"), "left")
               .groupBy("block_start", "first_row_id")
               .agg(F.coalesce(F.sum("earlier_lines"), F.lit(0)).alias("lines_before")))
    line_number = F.col("lines_before") + F.col("row_id") - F.col("first_row_id") + 1
    return rejected.join(F.broadcast(offsets), "block_start").select(
        F.lit(path.name).alias("source_file"),
        line_number.alias("line_number"),
        "raw_line",
        "reason",
        F.lit(source.table).alias("table"),
    )


def threshold_error(path: Path, rows: int, rejected: int, limit: float, rejects: DataFrame) -> RejectThresholdError:
    first = rejects.orderBy("line_number").select(
        "line_number", "reason", F.length("raw_line").alias("length"),
        F.substring("raw_line", 1, ECHOED_LINE_CHARS).alias("start")).first()
    shown = repr(first["start"]) + (f" (first {ECHOED_LINE_CHARS} of {first['length']:,} characters)"
                                     if first["length"] > ECHOED_LINE_CHARS else "")
    return RejectThresholdError(
        f"{path}: {rejected:,} of {rows + rejected:,} rows rejected ({rejected / (rows + rejected):.3%}, "
        f"more than --max-reject-fraction {limit:g}); first at line {first['line_number']}: {first['reason']} "
        f"in {shown}. Nothing was written."
    )


def empty_table(spark: SparkSession, table: str) -> DataFrame:
    return spark.createDataFrame([], TABLE_SCHEMAS[table])


def build_manifest(
    spark: SparkSession,
    release: Release,
    source_dir: Path,
    out_dir: str,
    inputs: dict[str, dict],
    results: list[FileResult],
    max_reject_fraction: float,
    timings: dict[str, float],
) -> dict:
    by_reason: dict[str, int] = {}
    for result in results:
        inputs[result.path.name].update(table=result.source.table, rows=result.rows,
                                        rejected=sum(result.rejected.values()), blank_lines=result.blank_lines)
        for reason, count in result.rejected.items():
            by_reason[reason] = by_reason.get(reason, 0) + count
    return {
        "release": release.name,
        "layout": release.layout,
        "source_dir": str(source_dir),
        "output_dir": str(out_dir),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
        "tables": {r.source.table: {"rows": r.rows, "path": r.source.table} for r in results},
        "rejects": {
            "rows": sum(by_reason.values()),
            "path": "rejects",
            "by_reason": dict(sorted(by_reason.items())),
            "by_file": {r.path.name: r.rejected for r in results},
        },
        "max_reject_fraction": max_reject_fraction,
        "versions": versions(spark),
        "timings_s": {name: round(seconds, 3) for name, seconds in timings.items()},
    }


def read_ratings(spark: SparkSession, ingest_out: str) -> DataFrame:
    """The (user_id, movie_id, rating, rated_at) table of an ingest output; anything else is refused in one line."""
    path = f"{ingest_out.rstrip('/')}/ratings"
    check_parquet_table(spark, path, "--input must be an `mfspark ingest` output directory")
    return spark.read.parquet(path).select("user_id", "movie_id", "rating", "rated_at")
