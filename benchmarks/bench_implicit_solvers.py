"""Benchmark: the pipeline's implicit lists model fitted with each implicit solver (cholesky, cg), per iteration.

    flock /work/bench.lock .venv/bin/python benchmarks/bench_implicit_solvers.py --input /tmp/ing10m \
        --out benchmarks/results/implicit_solvers.md

Exactly what the train_lists stage fits by default (`LISTS_ALS`: rank 64, reg 0.3, alpha 0.5, 10
iterations; --rank changes the rank only) on what it fits it on: the liked ratings (>= 4) of the
pipeline's default split (random 80/20, seed 42). One Spark session; after a warm-up fit (kernel
compilation in the workers) each solver fits --repeats times, taking turns so machine load drifts hit
both alike. The table keeps each solver's fastest fit: the layout, the median and total of the
per-iteration seconds the fit logs (`FitHistory`), and the final objective (sum c (p - x.y)^2 +
reg * penalty, of the factors returned).
"""

from __future__ import annotations

import argparse
import logging
import platform
import shlex
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from pyspark.sql import functions as F

from mfspark.data.ingest import read_ratings
from mfspark.evaluation.split import random_split
from mfspark.models.als.estimator import ALS
from mfspark.models.als.implicit_kernels import IMPLICIT_SOLVERS
from mfspark.models.lists_model import liked
from mfspark.pipeline.stages import LISTS_ALS, SplitParams
from mfspark.runtime.session import build_session, load_profile

log = logging.getLogger("bench_implicit_solvers")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, metavar="INGEST_OUT", help="`mfspark ingest` output directory")
    parser.add_argument("--out", required=True, help="markdown file for the results table")
    parser.add_argument("--cg-steps", type=int, nargs="+", default=[LISTS_ALS.cg_steps],
                        help="cg variants to fit (steps per entity and half-step)")
    parser.add_argument("--rank", type=int, default=LISTS_ALS.rank)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--profile", default="local")
    parser.add_argument("--work", default="out/bench_implicit_solvers", help="Spark scratch and checkpoint root")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", "benchmarks/bench_implicit_solvers.py", *given])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spark = build_session(load_profile(args.profile, str(Path(args.work).resolve())), "bench-implicit-solvers")
    split = SplitParams()
    ratings = read_ratings(spark, args.input).select("user_id", "movie_id", "rating")
    train = liked(random_split(ratings, split.test_fraction, split.seed).train).cache()
    positives = train.count()
    p = replace(LISTS_ALS, rank=args.rank)
    configs = {"cholesky": replace(p, implicit_solver="cholesky")}
    configs |= {f"cg, {steps} steps": replace(p, implicit_solver="cg", cg_steps=steps) for steps in args.cg_steps}
    warm_up = train.where(F.col("user_id") % 50 == 0)  # kernels compiled in the workers before any timed fit
    for solver in IMPLICIT_SOLVERS:
        ALS(**asdict(replace(p, max_iter=1, implicit_solver=solver))).fit(warm_up)
    results: dict[str, list[dict]] = {name: [] for name in configs}
    for repeat in range(args.repeats):
        for name in configs if repeat % 2 == 0 else reversed(configs):
            started = time.perf_counter()
            history = ALS(**asdict(configs[name])).fit(train).history
            seconds = [it.seconds for it in history.iterations]
            run = {"fit_s": time.perf_counter() - started, "layout_s": history.build_seconds,
                   "median_s": statistics.median(seconds), "iterations_s": sum(seconds),
                   "objective": history.iterations[-1].objective}
            results[name].append(run)
            log.info("%s: fit %.1f s, iterations %s, objective %.1f", name, run["fit_s"],
                     " ".join(f"{s:.2f}" for s in seconds), run["objective"])
    spark_version = spark.version
    spark.stop()
    lines = [
        f"# The lists model's implicit ALS by solver (rank {p.rank}, reg {p.reg:g}, alpha {p.alpha:g}, "
        f"{p.max_iter} iterations)",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        f"Input: `{args.input}`, liked ratings (>= 4) of the default random 80/20 split (seed {split.seed}): "
        f"{positives:,} positives. Fastest of {args.repeats} fits each, solvers taking turns. Spark {spark_version}, "
        f"Python {platform.python_version()}, profile `{args.profile}`; 2 shared cores (timings are noisy).",
        "",
        "| solver | fit s | layout s | median iteration s | iterations s | final objective |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in results.items():
        best = min(runs, key=lambda run: run["fit_s"])
        lines.append(f"| {name} | {best['fit_s']:.1f} | {best['layout_s']:.1f} | {best['median_s']:.2f} | "
                     f"{best['iterations_s']:.1f} | {best['objective']:,.0f} |")
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
