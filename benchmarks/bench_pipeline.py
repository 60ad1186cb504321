"""The whole nightly pipeline against the same six stages written with MLlib alone, per stage, in one sitting.

    .venv/bin/python benchmarks/bench_pipeline.py --inputs RELEASE [RELEASE ...] --work DIR [--out FILE]

Each RELEASE (e.g. `mfspark synth --shape ml-10m --seed 1 --out DIR`) goes through two fresh processes in turn:
ours (`mfspark pipeline`, profile local: local[*], driver 8g, every stage run) and the plain-MLlib job
(`benchmarks/mllib_pipeline.py`, local[*], driver 8g). Stage seconds: our run's manifest and the MLlib job's own
clocks; whole process: wall seconds from start to exit, JVM start included; peak memory: the largest sum of the
resident memory of the process and its descendants (driver JVM, Python workers), sampled every 0.5 s. Both jobs'
quality is in the table (test RMSE of the explicit model, precision@10 and NDCG@10 of the lists), so speed is
never bought with quality.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from result_table import publish

REPO = Path(__file__).resolve().parents[1]
STAGES = ("ingest", "baseline", "train", "train_lists", "evaluate", "recommend")
RUN_ID = "bench"
PAGE = os.sysconf("SC_PAGE_SIZE")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=Path, nargs="+", required=True, help="release directories")
    parser.add_argument("--work", type=Path, required=True, help="scratch directory for both jobs' outputs")
    parser.add_argument("--out", type=Path, help="write the markdown table here too")
    parser.add_argument("--profile", default="local", help="our pipeline's profile")
    return parser.parse_args()


def tree_rss(root: int) -> int:
    """Resident bytes of `root` and its descendants (one pass over /proc)."""
    parents, rss = {}, {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            parents[int(entry.name)], rss[int(entry.name)] = int(fields[1]), int(fields[21]) * PAGE
        except (OSError, ValueError):
            continue  # a process that ended while we read
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    return sum(rss.get(pid, 0) for pid in tree)


def run(command: list[str], log: Path) -> tuple[float, int, str]:
    """(wall seconds, peak tree RSS bytes, stdout) of COMMAND; exits with the log's tail when it fails."""
    started = time.perf_counter()
    with open(log, "w") as err:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True,
                                   env={**os.environ, "PYTHONPATH": str(REPO)})
        peak = [0]

        def sample() -> None:
            while process.poll() is None:
                peak[0] = max(peak[0], tree_rss(process.pid))
                time.sleep(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out = process.stdout.read()
        status = process.wait()
        sampler.join()
    if status != 0:
        sys.exit(f"{' '.join(command)} exited {status}:\n" + "\n".join(log.read_text().splitlines()[-30:]))
    return time.perf_counter() - started, peak[0], out


def ours(release: Path, work: Path, profile: str) -> dict:
    out = work / "ours"
    command = [sys.executable, "-m", "mfspark.commands.main", "pipeline", "--input", str(release), "--out", str(out),
               "--run-id", RUN_ID, "--force", "--profile", profile, "--log-level", "INFO"]
    wall, peak, _ = run(command, work / "ours.log")
    manifest = json.loads((out / "runs" / RUN_ID / "manifest.json").read_text())
    metrics = manifest["metrics"]
    return {"seconds": manifest["seconds"], "wall": wall, "peak": peak, "command": command,
            "rmse": metrics["als"]["rmse"], "precision@10": metrics["lists"]["precision@10"],
            "ndcg@10": metrics["lists"]["ndcg@10"]}


def mllib(release: Path, work: Path) -> dict:
    command = [sys.executable, str(REPO / "benchmarks" / "mllib_pipeline.py"), "--input", str(release),
               "--out", str(work / "mllib")]
    wall, peak, out = run(command, work / "mllib.log")
    result = json.loads(out.strip().splitlines()[-1])
    return {"seconds": result["seconds"], "wall": wall, "peak": peak, "command": command, **result["metrics"]}


def table(release: Path, a: dict, b: dict) -> list[str]:
    rows = [f"### {release.name}", "", "| stage | ours s | MLlib s | ratio |", "| --- | ---: | ---: | ---: |"]
    for stage in STAGES:
        x, y = a["seconds"].get(stage), b["seconds"].get(stage)
        rows.append(f"| {stage} | {x:.1f} | {y:.1f} | {x / y:.2f} |" if x is not None and y else
                    f"| {stage} | {x} | {y} | |")
    rows += [f"| **whole process** | **{a['wall']:.1f}** | **{b['wall']:.1f}** | **{a['wall'] / b['wall']:.2f}** |",
             f"| peak resident memory of the process tree, GiB | {a['peak'] / 2**30:.1f} | {b['peak'] / 2**30:.1f} | |",
             f"| test RMSE (explicit ALS) | {a['rmse']:.4f} | {b['rmse']:.4f} | |",
             f"| lists precision@10 | {a['precision@10']:.4f} | {b['precision@10']:.4f} | |",
             f"| lists NDCG@10 | {a['ndcg@10']:.4f} | {b['ndcg@10']:.4f} | |", ""]
    return rows


def main() -> None:
    args = parse_args()
    lines = [f"Load average before: {os.getloadavg()[0]:.2f}. Commands (each a fresh process, ours first):", ""]
    for release in args.inputs:
        work = args.work / release.name
        work.mkdir(parents=True, exist_ok=True)
        a, b = ours(release, work, args.profile), mllib(release, work)
        lines += [f"    {' '.join(a['command'])}", f"    {' '.join(b['command'])}", "", *table(release, a, b)]
    lines.append(f"Load average after: {os.getloadavg()[0]:.2f}.")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
