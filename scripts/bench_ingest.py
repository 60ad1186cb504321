"""Benchmark `mfspark ingest` on an ml-25m-shaped release against pyarrow's CSV reader, in one run.

    .venv/bin/python scripts/bench_ingest.py [--input DIR | --synth-dir DIR] [--profile local]

Without --input, the synthetic release is generated first (`mfspark synth --shape ml-25m --seed 1`) unless
--synth-dir already holds it. The reference is `pyarrow.csv.read_csv` of the same ratings.csv with explicit
column types (read into memory only: no validation, no output), timed in the same process run. Results go to
benchmarks/results/ingest.md with the command that produced them.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, help="release directory to ingest (default: the synthetic ml-25m)")
    parser.add_argument("--release", default="ml-25m", help="release format of --input (default ml-25m)")
    parser.add_argument("--synth-dir", type=Path, default=REPO / "out" / "bench" / "synth-ml-25m")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "bench" / "ingest-ml-25m")
    parser.add_argument("--profile", default="local")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "ingest.md")
    return parser.parse_args()


def synthesize(directory: Path) -> float | None:
    if (directory / "ratings.csv").is_file():
        return None
    started = time.perf_counter()
    command = [sys.executable, "-m", "mfspark.cli", "synth", "--shape", "ml-25m", "--seed", "1",
               "--out", str(directory)]
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def pyarrow_reference(ratings_csv: Path) -> tuple[float, int]:
    import pyarrow as pa
    from pyarrow import csv

    types = {"userId": pa.int32(), "movieId": pa.int32(), "rating": pa.float32(), "timestamp": pa.int64()}
    started = time.perf_counter()
    table = csv.read_csv(ratings_csv, convert_options=csv.ConvertOptions(column_types=types))
    return time.perf_counter() - started, table.num_rows


def mfspark_ingest(source: Path, release: str, out: Path, profile: str) -> tuple[float, dict]:
    from mfspark.ingest import ingest_release
    from mfspark.session import build_session, load_profile

    spark = build_session(load_profile(profile, out.parent / "spark-root", conf_dir=REPO / "conf"), "bench-ingest")
    try:
        started = time.perf_counter()
        manifest = ingest_release(spark, source, str(out), release=release)
        return time.perf_counter() - started, manifest
    finally:
        spark.stop()


def report(args: argparse.Namespace, source: Path, synth_s: float | None, arrow: tuple[float, int],
           ours: tuple[float, dict], load: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    arrow_s, arrow_rows = arrow
    total_s, manifest = ours
    ratings_s = manifest["timings_s"]["ratings"]
    rows = manifest["tables"]["ratings"]["rows"]
    size_mb = manifest["inputs"]["ratings.csv"]["bytes"] / 1e6
    command = shlex.join(["python", "scripts/bench_ingest.py", *sys.argv[1:]])
    lines = [
        "# Ingest benchmark: ml-25m-shaped ratings.csv",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        f"Input: `{source}` ({manifest['release']}), ratings.csv {size_mb:,.0f} MB, {rows:,} ratings"
        + (f" (synthesised in {synth_s:.0f} s by `mfspark synth --shape ml-25m --seed 1`)." if synth_s else "."),
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, Spark {manifest['versions']['spark']}, "
        f"profile `{args.profile}`; load average before / after: {load[0][0]:.1f} / {load[1][0]:.1f} "
        "(the machine is shared: absolute times are noisy, the ratio within this run is what to compare).",
        "",
        "| step | wall time (s) | rows | rows/s | vs pyarrow read_csv |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| pyarrow `csv.read_csv` of ratings.csv (reference: parse into memory, no checks, no output) "
        f"| {arrow_s:.1f} | {arrow_rows:,} | {arrow_rows / arrow_s:,.0f} | 1.0x |",
        f"| mfspark ingest, ratings.csv only (parse, validate, dedup, write Parquet) "
        f"| {ratings_s:.1f} | {rows:,} | {rows / ratings_s:,.0f} | {ratings_s / arrow_s:.1f}x |",
        f"| mfspark ingest, whole release (md5 of inputs, 4 tables, manifest) "
        f"| {total_s:.1f} | {rows:,} | {rows / total_s:,.0f} | {total_s / arrow_s:.1f}x |",
        "",
        "Ingest timings from the manifest (s): "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in manifest["timings_s"].items())
        + f". Rejects: {manifest['rejects']['rows']:,}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    args = parse_args()
    source = args.input or args.synth_dir
    synth_s = None if args.input else synthesize(source)
    load_before = os.getloadavg()
    arrow = pyarrow_reference(source / "ratings.csv")
    logging.info("pyarrow read_csv: %d rows in %.1f s", arrow[1], arrow[0])
    ours = mfspark_ingest(source, args.release, args.out, args.profile)
    text = report(args, source, synth_s, arrow, ours, (load_before, os.getloadavg()))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
