"""Benchmark `mfspark ingest` on an ml-25m-shaped release against pyarrow's CSV reader, in one run.

    .venv/bin/python benchmarks/bench_ingest.py [--input DIR | --synth-dir DIR] [--profile local]

Without --input, the synthetic release is generated first (`mfspark synth --shape ml-25m --seed 1`) unless
--synth-dir already holds it. The reference is `pyarrow.csv.read_csv` of the same ratings.csv with explicit
column types (read into memory only: no validation, no output), timed in the same process run. A copy of
ratings.csv with --bad-lines spoilt lines is ingested too, to time the rejects path. Results go to
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
    parser.add_argument("--bad-lines", type=int, default=100,
                        help="also ingest a copy of ratings.csv with this many lines spoilt, to time the rejects "
                             "path (second pass, line numbers); 0 to skip")
    return parser.parse_args()


def synthesize(directory: Path) -> float | None:
    if (directory / "ratings.csv").is_file():
        return None
    started = time.perf_counter()
    command = [sys.executable, "-m", "mfspark.commands.main", "synth", "--shape", "ml-25m", "--seed", "1",
               "--out", str(directory)]
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def jvm_cpu_seconds() -> float:
    """CPU time used so far by this process's Java child (the Spark driver JVM in local mode)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            is_java = b"java" in (stat.parent / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and is_java:
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return float("nan")


def pyarrow_reference(ratings_csv: Path) -> tuple[float, float, int]:
    """(wall s, CPU s, rows) of pyarrow's multithreaded CSV reader."""
    import pyarrow as pa
    from pyarrow import csv

    types = {"userId": pa.int32(), "movieId": pa.int32(), "rating": pa.float32(), "timestamp": pa.int64()}
    started, cpu_started = time.perf_counter(), time.process_time()
    table = csv.read_csv(ratings_csv, convert_options=csv.ConvertOptions(column_types=types))
    return time.perf_counter() - started, time.process_time() - cpu_started, table.num_rows


def spoil_copy(source: Path, target: Path, bad_lines: int) -> Path:
    """`target`: the release with `bad_lines` ratings lines, evenly spread, replaced by unparsable text."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.csv"):
        if path.name != "ratings.csv" and not (target / path.name).exists():
            (target / path.name).symlink_to(path.resolve())
    total = sum(1 for _ in (source / "ratings.csv").open("rb"))
    every = max(2, total // (bad_lines + 1))
    with (source / "ratings.csv").open("rb") as lines, (target / "ratings.csv").open("wb") as out:
        for number, line in enumerate(lines, start=1):
            spoilt = number % every == 0 and number // every <= bad_lines
            out.write(b"spoilt,line,x,y\r\n" if spoilt else line)
    return target


def mfspark_ingests(runs: list[tuple[Path, Path, float]], release: str, profile: str) -> list[tuple[float, dict]]:
    """Ingest each (source, out, max_reject_fraction) in one Spark session: [(wall s, JVM CPU s, manifest)]."""
    from mfspark.data.ingest import ingest_release
    from mfspark.runtime.session import build_session, load_profile

    root = runs[0][1].parent / "spark-root"
    spark = build_session(load_profile(profile, root, conf_dir=REPO / "conf"), "bench-ingest")
    results = []
    try:
        for source, out, max_reject_fraction in runs:
            started, cpu_started = time.perf_counter(), jvm_cpu_seconds()
            manifest = ingest_release(spark, source, str(out), release, max_reject_fraction)
            results.append((time.perf_counter() - started, jvm_cpu_seconds() - cpu_started, manifest))
    finally:
        spark.stop()
    return results


def report(args: argparse.Namespace, source: Path, synth_s: float | None, arrow: tuple[float, float, int],
           ours: list[tuple[float, float, dict]], load: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    arrow_s, arrow_cpu, arrow_rows = arrow
    total_s, total_cpu, manifest = ours[0]
    ratings_s = manifest["timings_s"]["ratings"]
    rows = manifest["tables"]["ratings"]["rows"]
    size_mb = manifest["inputs"]["ratings.csv"]["bytes"] / 1e6
    command = shlex.join(["python", "benchmarks/bench_ingest.py", *sys.argv[1:]])
    lines = [
        "# Ingest benchmark: ml-25m-shaped ratings.csv",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        f"Input: `{source}` ({manifest['release']}), ratings.csv {size_mb:,.0f} MB, {rows:,} ratings"
        + (f" (synthesised in {synth_s:.0f} s by `mfspark synth --shape ml-25m --seed 1`)." if synth_s else "."),
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, Spark {manifest['versions']['spark']}, "
        f"profile `{args.profile}`; load average before / after: {load[0][0]:.1f} / {load[1][0]:.1f} "
        "(the machine is shared: wall times are noisy; CPU seconds, of the pyarrow process and of Spark's JVM, "
        "move less with the load).",
        "",
        "| step | wall time (s) | rows | rows/s | wall vs pyarrow | CPU (s) | CPU vs pyarrow |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| pyarrow `csv.read_csv` of ratings.csv (reference: parse into memory, no checks, no output) "
        f"| {arrow_s:.1f} | {arrow_rows:,} | {arrow_rows / arrow_s:,.0f} | 1.0x | {arrow_cpu:.1f} | 1.0x |",
        f"| mfspark ingest, ratings.csv only (parse, validate, dedup, write Parquet) "
        f"| {ratings_s:.1f} | {rows:,} | {rows / ratings_s:,.0f} | {ratings_s / arrow_s:.1f}x | | |",
        f"| mfspark ingest, whole release (md5 of inputs, 4 tables, manifest) "
        f"| {total_s:.1f} | {rows:,} | {rows / total_s:,.0f} | {total_s / arrow_s:.1f}x "
        f"| {total_cpu:.0f} | {total_cpu / arrow_cpu:.1f}x |",
        *(spoilt_row(run, arrow_s, arrow_cpu) for run in ours[1:]),
        "",
        "Ingest timings from the manifest (s): "
        + ", ".join(f"{name} {seconds:.1f}" for name, seconds in manifest["timings_s"].items())
        + f". Rejects: {manifest['rejects']['rows']:,}.",
        "",
    ]
    return "\n".join(lines)


def spoilt_row(run: tuple[float, float, dict], arrow_s: float, arrow_cpu: float) -> str:
    total_s, total_cpu, manifest = run
    rows, rejected = manifest["tables"]["ratings"]["rows"], manifest["rejects"]["by_file"]["ratings.csv"]
    return (f"| mfspark ingest, whole release, ratings.csv with {sum(rejected.values())} spoilt lines (adds the "
            f"rejects pass: re-parse, line numbers, rejects table; ratings.csv alone "
            f"{manifest['timings_s']['ratings']:.1f} s) | {total_s:.1f} | {rows:,} | {rows / total_s:,.0f} "
            f"| {total_s / arrow_s:.1f}x | {total_cpu:.0f} | {total_cpu / arrow_cpu:.1f}x |")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    args = parse_args()
    source = args.input or args.synth_dir
    synth_s = None if args.input else synthesize(source)
    load_before = os.getloadavg()
    arrow = pyarrow_reference(source / "ratings.csv")
    logging.info("pyarrow read_csv: %d rows in %.1f s", arrow[2], arrow[0])
    runs = [(source, args.out, 0.001)]
    if args.bad_lines:
        spoilt = spoil_copy(source, args.out.parent / f"{source.name}-spoilt", args.bad_lines)
        runs.append((spoilt, args.out.parent / f"{args.out.name}-spoilt", 1.0))
    ours = mfspark_ingests(runs, args.release, args.profile)
    text = report(args, source, synth_s, arrow, ours, (load_before, os.getloadavg()))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
