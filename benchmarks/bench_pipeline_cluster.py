"""The whole pipeline on the 2-worker standalone cluster against local mode, per stage, in one run.

    .venv/bin/python benchmarks/bench_pipeline_cluster.py --input DIR --work DIR [--results FILE]

DIR is a release (e.g. `mfspark synth --shape ml-10m --seed 1 --out DIR`). The same pipeline command
(same seed, run id `bench`, every stage run) goes twice into fresh output roots under --work:
local mode (`mfspark pipeline`, profile local: local[*]) and the cluster (`scripts/local_cluster.sh`
start: a master and two 1-core workers; `spark-submit --py-files mfspark.zip jobs/pipeline.py`,
profile cluster). The per-stage seconds are each run's manifest (`runs/bench/manifest.json`); the
table, the commands and the machine's load go to --results.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyspark

from mfspark.pipeline.stages import PipelineConfig, build_stages

REPO = Path(__file__).resolve().parents[1]
RUN_ID = "bench"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="release directory (its name picks the format)")
    parser.add_argument("--work", type=Path, required=True, help="scratch directory: outputs, logs, the cluster")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "pipeline_cluster.md")
    parser.add_argument("--worker-memory", default="4g", help="per worker (local_cluster.sh WORKER_MEMORY)")
    parser.add_argument("--executor-memory", default="3g")
    parser.add_argument("--port", type=int, default=7277, help="master port (UI: port + 11000)")
    parser.add_argument("--note", default="", help="a line added under the table (e.g. why this shape)")
    return parser.parse_args()


def pipeline_args(input_dir: Path, out: Path) -> list[str]:
    return ["--input", str(input_dir), "--out", str(out), "--run-id", RUN_ID, "--log-level", "INFO"]


def timed(command: list[str], log: Path, env: dict) -> float:
    """Run COMMAND with its output in LOG; its wall seconds. Fails with the log's tail."""
    started = time.perf_counter()
    with open(log, "w") as out:
        status = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if status != 0:
        sys.exit(f"{shlex.join(command)} exited {status}:\n" + "\n".join(log.read_text().splitlines()[-30:]))
    return time.perf_counter() - started


def manifest(out: Path) -> dict:
    return json.loads((out / "runs" / RUN_ID / "manifest.json").read_text())


def run_local(args: argparse.Namespace) -> tuple[list[str], float, dict]:
    out = args.work / "local"
    command = [sys.executable, "-m", "mfspark.commands.main", "pipeline", *pipeline_args(args.input, out),
               "--profile", "local"]
    wall = timed(command, args.work / "local.log", {**os.environ, "PYTHONPATH": str(REPO)})
    return command, wall, manifest(out)


def run_cluster(args: argparse.Namespace) -> tuple[list[str], float, dict]:
    out = args.work / "cluster-out"
    zip_path = args.work / "mfspark.zip"
    subprocess.run([str(REPO / "scripts" / "build_pyfiles.sh"), str(zip_path)], check=True,
                   env={**os.environ, "PYTHON": sys.executable})
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "MFSPARK_CLUSTER_DIR": str(args.work / "cluster"), "MASTER_PORT": str(args.port),
        "MASTER_UI_PORT": str(args.port + 11000), "WORKER_MEMORY": args.worker_memory, "PYTHON": sys.executable,
        "PYSPARK_PYTHON": sys.executable}
    control = str(REPO / "scripts" / "local_cluster.sh")
    subprocess.run([control, "start"], env=env, check=True)
    try:
        command = [str(Path(pyspark.__file__).parent / "bin" / "spark-submit"),
                   "--master", f"spark://127.0.0.1:{args.port}", "--py-files", str(zip_path),
                   "--driver-memory", "2g", "--executor-memory", args.executor_memory,
                   "--conf", f"spark.pyspark.python={sys.executable}",
                   str(REPO / "jobs" / "pipeline.py"), *pipeline_args(args.input, out), "--profile", "cluster"]
        wall = timed(command, args.work / "cluster.log", env)
    finally:
        subprocess.run([control, "stop"], env=env, check=True)
    return command, wall, manifest(out)


def run_order(input_dir: Path) -> list[str]:
    """The pipeline's stages for this input in the order they run (the manifest keys them by name)."""
    return [stage.name for stage in build_stages(PipelineConfig(root="", source_dir=input_dir))]


def table(local: dict, cluster: dict, walls: tuple[float, float], order: list[str]) -> list[str]:
    rows = ["| stage | local[*] s | cluster s | cluster / local |", "| --- | ---: | ---: | ---: |"]
    for stage in order:
        a, b = local["seconds"][stage], cluster["seconds"][stage]
        rows.append(f"| {stage} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
    a, b = (sum(m["seconds"].values()) for m in (local, cluster))
    rows.append(f"| **stages total** | **{a:.1f}** | **{b:.1f}** | **{b / a:.2f}** |")
    rows.append(f"| whole command, wall (with JVM start, planning, commit) | {walls[0]:.1f} | {walls[1]:.1f} | "
                f"{walls[1] / walls[0]:.2f} |")
    return rows


def main() -> None:
    # SIGTERM (e.g. `timeout`) unwinds: the running command is killed and the cluster stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    local_command, local_wall, local = run_local(args)
    cluster_command, cluster_wall, cluster = run_cluster(args)
    load_end = os.getloadavg()[0]
    rows = local["rows"]
    metrics = {name: m["metrics"]["als"]["rmse"] for name, m in (("local", local), ("cluster", cluster))}
    lines = [
        "# The pipeline on the standalone cluster vs local mode",
        "",
        f"Command: `flock /tmp/mfspark-heavy.lock .venv/bin/python benchmarks/bench_pipeline_cluster.py "
        f"{shlex.join(sys.argv[1:])}`",
        "",
        f"Input `{args.input.name}`: {rows['ingest']['ratings']:,} ratings, {rows['ingest']['movies']:,} movies; "
        f"split {rows['split']['train']:,} train / {rows['split']['test']:,} test; "
        f"{rows.get('recommendations', 0):,} recommendation rows. Defaults of `conf/local.toml`'s [pipeline] "
        f"(rank 10, 10 iterations, top 10). Test RMSE of ALS: local {metrics['local']:.4f}, "
        f"cluster {metrics['cluster']:.4f}. Load average {load_start:.1f} at the start, {load_end:.1f} at the end "
        f"(2 cores, shared).",
        "",
        *table(local, cluster, (local_wall, cluster_wall), run_order(args.input)),
        "",
        f"- local: `{shlex.join(local_command)}` (one JVM, `local[*]` = 2 cores, driver 8g)",
        f"- cluster: `{shlex.join(cluster_command)}` (master and two workers from `scripts/local_cluster.sh`, "
        f"1 core and {args.worker_memory} each; executors {args.executor_memory})",
    ]
    if args.note:
        lines += ["", args.note]
    args.results.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
