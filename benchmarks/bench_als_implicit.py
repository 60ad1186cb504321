"""Benchmark: fit time of learned biases and of the implicit model against biased ALS, at the same rank.

    .venv/bin/python benchmarks/bench_als_implicit.py --input /tmp/synth10m_ingest --rank 50 \
        --out benchmarks/results/als_implicit.md

One Spark session; after a warm-up fit (kernel compilation in the workers) each model is fitted
--repeats times on the same seeded 80/20 training part, the models taking turns so machine
load drifts hit all alike; the table keeps each model's fastest fit. Biased ALS (the reference,
today's `--biases`) fits the bias baseline first (a few Spark jobs) and then plain ALS-WR on its
residuals; learned biases route one more column; the implicit model also routes the rank
implicit factors to the users and a rank x rank Gram per message, and solves them on the item side.
The last row is the model `mfspark tune` chose on ml-latest-small (implicit information on both
sides, constant reg --constant-reg): each side's rows carry [factors, bias, implicit factors] and
its messages two Grams. The cost goal of issue 18 is its fit time against the reference's.
"""

from __future__ import annotations

import argparse
import logging
import platform
import shlex
import sys
import time
from pathlib import Path

from pyspark.sql import functions as F

from mfspark.data.ingest import read_ratings
from mfspark.evaluation.metrics import rating_metrics
from mfspark.evaluation.split import random_split
from mfspark.models.als.estimator import ALS
from mfspark.runtime.session import build_session, load_profile

log = logging.getLogger("bench_als_implicit")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, metavar="INGEST_OUT", help="`mfspark ingest` output directory")
    parser.add_argument("--out", required=True, help="markdown file for the results table")
    parser.add_argument("--rank", type=int, default=50)
    parser.add_argument("--reg", type=float, default=0.15)
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--implicit-weight", type=float, default=0.1)
    parser.add_argument("--constant-reg", type=float, default=10.0,
                        help="reg of the last model (implicit on both sides, constant reg: reg * |f|^2)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--profile", default="local")
    parser.add_argument("--work", default="out/bench_als_implicit", help="Spark scratch and checkpoint root")
    return parser.parse_args(argv)


def models(args: argparse.Namespace) -> dict[str, dict]:
    common = {"rank": args.rank, "reg": args.reg, "max_iter": args.max_iter, "seed": args.seed, "biases": True}
    return {
        "biased ALS (pre-fitted baseline, reference)": common,
        "learned biases": {**common, "bias_fit": "learned"},
        f"implicit (learned biases, weight {args.implicit_weight:g})":
            {**common, "bias_fit": "learned", "rated_weight": args.implicit_weight},
        f"implicit on both sides, constant reg {args.constant_reg:g} (weight {args.implicit_weight:g})":
            {**common, "bias_fit": "learned", "rated_weight": args.implicit_weight, "rated_sides": "both",
             "scale_reg": False, "reg": args.constant_reg},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", "benchmarks/bench_als_implicit.py", *given])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spark = build_session(load_profile(args.profile, str(Path(args.work).resolve())), "bench-als-implicit")
    split = random_split(read_ratings(spark, args.input).select("user_id", "movie_id", "rating"), 0.2, args.seed)
    train, test = split.train.cache(), split.test.cache()
    counts = (train.count(), test.count())
    warm_up = train.where(F.col("user_id") % 50 == 0)  # kernels compiled in the workers before any timed fit
    ALS(rank=2, max_iter=1, biases=True, bias_fit="learned", rated_weight=0.1, rated_sides="both").fit(warm_up)
    configs = models(args)
    results: dict[str, list[dict]] = {name: [] for name in configs}
    for repeat in range(args.repeats):
        order = list(configs) if repeat % 2 == 0 else list(reversed(configs))
        for name in order:
            started = time.perf_counter()
            model = ALS(**configs[name]).fit(train)
            fit_s = time.perf_counter() - started
            iterations_s = sum(it.seconds for it in model.history.iterations)
            rmse = rating_metrics(model.predict(test))["rmse"]
            results[name].append({"fit_s": fit_s, "iterations_s": iterations_s, "rmse": rmse})
            log.info("%s: fit %.1f s (iterations %.1f s), test RMSE %.4f", name, fit_s, iterations_s, rmse)
    spark_version = spark.version
    spark.stop()
    reference = min(r["fit_s"] for r in results[next(iter(configs))])
    reference_iterations = min(r["iterations_s"] for r in results[next(iter(configs))])
    lines = [
        f"# Fit time of learned biases and the implicit model against biased ALS (rank {args.rank})",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).",
        f"Input: `{args.input}`, random 80/20 split (seed {args.seed}): {counts[0]:,} train / {counts[1]:,} test "
        f"ratings. reg {args.reg:g} (unless listed), {args.max_iter} iterations, bias reg 5; fastest of "
        f"{args.repeats} fits each, "
        f"models taking turns. Spark {spark_version}, Python {platform.python_version()}, profile `{args.profile}`; "
        "2 shared cores (timings are noisy). Fit s includes the layout (and the reference's bias baseline fit); "
        "iterations s is the sum of the ALS iterations alone.",
        "",
        "| model | fit s | ratio | iterations s | ratio | test RMSE |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, runs in results.items():
        fit_s, iterations_s = min(r["fit_s"] for r in runs), min(r["iterations_s"] for r in runs)
        lines.append(f"| {name} | {fit_s:.1f} | {fit_s / reference:.2f} | {iterations_s:.1f} | "
                     f"{iterations_s / reference_iterations:.2f} | {runs[-1]['rmse']:.4f} |")
    write_table(Path(args.out), lines)
    return 0


def write_table(path: Path, lines: list[str]) -> None:
    """The markdown table to `path` and stdout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    sys.exit(main())
