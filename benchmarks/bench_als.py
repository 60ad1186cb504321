"""Benchmark: our block-partitioned ALS against Spark MLlib ALS on synthetic MovieLens shapes.

For each shape: generate the synthetic release once (cached under --work), ingest it once,
then fit ours and MLlib on the same seeded 80/20 split, each in its own fresh Spark process
(local mode), alternating which goes first. Reports fit seconds, seconds per iteration, test
RMSE and the peak resident memory of the whole process tree (driver JVM + Python workers),
plus the ours/MLlib ratios, as a markdown table.

    python benchmarks/bench_als.py --shapes ml-1m ml-10m ml-25m ml-32m --out benchmarks/results/als.md

`--implicit --alpha A` benchmarks implicit-feedback ALS against MLlib's `implicitPrefs=True`; both
are then scored by the implicit objective of their factors on the training ratings
(`mllib_reference.implicit_objective`, the same function for both) instead of test RMSE.
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

REPO = Path(__file__).resolve().parents[1]


def tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_measured(cmd: list[str]) -> tuple[dict, int]:
    """Run one fit in a subprocess; return its JSON result and the peak RSS of its process tree."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    peak = 0

    def sample():
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, tree_rss_bytes(proc.pid))
            time.sleep(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"fit failed ({proc.returncode}): {' '.join(cmd)}")
    return json.loads(out.strip().splitlines()[-1]), peak


def prepare(shape: str, work: Path, seed: int, scale: float = 1.0) -> Path:
    """Synthetic release + ingest output for a shape (times `scale`), reused when already there."""
    name = shape if scale == 1.0 else f"{shape}-x{scale:g}"
    ingested = work / f"{name}-ingest"
    if (ingested / "manifest.json").exists():
        return ingested
    from mfspark.data.ingest import ingest_release
    from mfspark.data.synth import generate
    from mfspark.runtime.session import build_session, load_profile

    source = work / f"{name}-synth"
    if not (source / "synth.json").exists():
        generate(shape, source, seed=seed, scale=scale)
    spark = build_session(load_profile("local", work), "bench-als-ingest")
    try:
        ingest_release(spark, source, str(ingested))
    finally:
        spark.stop()
    return ingested


def fit_once(args: argparse.Namespace) -> None:
    """Worker mode: one fit of one implementation in this fresh process; prints a JSON line."""

    from mfspark.evaluation.metrics import rating_metrics
    from mfspark.evaluation.mllib_reference import fit_mllib, implicit_objective
    from mfspark.evaluation.split import random_split
    from mfspark.models.als.estimator import ALS, ALSParams
    from mfspark.runtime.session import build_session, load_profile

    spark = build_session(load_profile("local", args.work), f"bench-als-{args.impl}")
    ratings = spark.read.parquet(f"{args.input}/ratings").select("user_id", "movie_id", "rating")
    split = random_split(ratings, 0.2, args.seed)
    train, test = split.train.cache(), split.test.cache()
    num_train = train.count()
    test.count()
    params = ALSParams(rank=args.rank, reg=args.reg, max_iter=args.iterations, seed=args.seed,
                       implicit=args.implicit, alpha=args.alpha)

    def fit(data, fit_params):
        """(model, its (user, item) factor tables, fit seconds)."""
        started = time.perf_counter()
        if args.impl == "ours":
            model = ALS(**vars(fit_params)).fit(data)
            return model, (model.user_factors, model.item_factors), time.perf_counter() - started
        model, seconds = fit_mllib(data, fit_params, spark.sparkContext.defaultParallelism)
        return model, (model.userFactors, model.itemFactors), seconds

    # Warm-up on a 1% sample: JVM JIT and Python worker start-up are paid here, not in the timed fit.
    *_, warmup_s = fit(train.sample(fraction=0.01, seed=1), ALSParams(**{**vars(params), "max_iter": 1}))
    model, factors, fit_s = fit(train, params)
    if args.implicit:
        quality = implicit_objective(train, *factors, args.reg, args.alpha)
    else:  # NaN predictions (MLlib cold start) are excluded
        quality = rating_metrics(model.predict(test, "drop") if args.impl == "ours" else model.transform(test))["rmse"]
    print(json.dumps({"fit_s": fit_s, "warmup_s": warmup_s, "rmse": quality, "train": num_train}))
    spark.stop()


def markdown(rows: list[dict], command: str, blas: str, implicit: bool = False) -> str:
    quality = "objective" if implicit else "RMSE"
    lines = [
        f"# {'Implicit-feedback ' if implicit else ''}ALS benchmark: ours vs Spark MLlib ALS",
        "",
        f"Command: `{command}`",
        "",
        f"local mode (profile `local`, local[*] on {os.cpu_count()} cores), rank {rows[0]['rank']}, "
        f"{rows[0]['iterations']} iterations, reg {rows[0]['reg']}, seeded random 80/20 split, each fit in a fresh "
        f"process. MLlib BLAS: {blas}. Peak memory = resident memory of the whole process tree "
        "(driver JVM + Python workers). Ratios are ours / MLlib. Each process first fits a 1% sample for one "
        "iteration (warm-up: JVM JIT, Python worker start-up); its time is the `warm-up s` column."
        + (" Implicit feedback (implicitPrefs): the quality column is the implicit objective of each fit's "
           "factors on the training ratings, computed by the same function for both." if implicit else ""),
        "",
        "| shape | train ratings | ours fit s | MLlib fit s | fit ratio | ours s/iter | MLlib s/iter "
        f"| ours {quality} | MLlib {quality} | {quality} diff | ours peak GiB | MLlib peak GiB "
        "| ours / MLlib warm-up s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        o, m = r["ours"], r["mllib"]
        lines.append(
            f"| {r['shape']} | {o['train']:,} | {o['fit_s']:.1f} | {m['fit_s']:.1f} | {o['fit_s'] / m['fit_s']:.2f} "
            f"| {o['fit_s'] / r['iterations']:.2f} | {m['fit_s'] / r['iterations']:.2f} | {o['rmse']:.6g} "
            f"| {m['rmse']:.6g} | {100 * (o['rmse'] - m['rmse']) / m['rmse']:+.2f}% "
            f"| {o['peak'] / 2**30:.2f} | {m['peak'] / 2**30:.2f} | {o['warmup_s']:.1f} / {m['warmup_s']:.1f} |")
    return "\n".join(lines) + "\n"


def mllib_blas() -> str:
    found = any(Path(d, "libblas.so.3").exists() for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"))
    return "native (libblas.so.3 present)" if found else "Java fallback (no libblas.so.3)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["ml-1m", "ml-10m", "ml-25m", "ml-32m"])
    parser.add_argument("--work", default=str(REPO / "out" / "bench"), help="cache for synthetic data and ingests")
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--reg", type=float, default=0.05)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="of the synthetic releases (a smoke run: 0.004)")
    parser.add_argument("--implicit", action="store_true", help="implicit feedback against MLlib's implicitPrefs")
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--out", help="write the markdown table here")
    parser.add_argument("--impl", choices=("ours", "mllib"), help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.impl:
        fit_once(args)
        return
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, shape in enumerate(args.shapes):
        ingested = prepare(shape, work, args.seed, args.scale)
        row = {"shape": shape, "rank": args.rank, "iterations": args.iterations, "reg": args.reg}
        order = ("ours", "mllib") if n % 2 == 0 else ("mllib", "ours")
        for impl in order:
            cmd = [sys.executable, __file__, "--impl", impl, "--input", str(ingested), "--work", str(work),
                   "--rank", str(args.rank), "--reg", str(args.reg), "--iterations", str(args.iterations),
                   "--seed", str(args.seed), "--alpha", str(args.alpha)] + (["--implicit"] if args.implicit else [])
            result, peak = run_measured(cmd)
            row[impl] = {**result, "peak": peak}
            print(f"{shape} {impl}: fit {result['fit_s']:.1f} s, quality {result['rmse']:.6g}, "
                  f"peak {peak / 2**30:.2f} GiB", flush=True)
        rows.append(row)
    command = "python benchmarks/bench_als.py " + " ".join(sys.argv[1:])
    table = markdown(rows, command, mllib_blas(), args.implicit)
    print(table)
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
