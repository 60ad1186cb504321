"""Warm start: how many iterations a fit started from yesterday's model needs to match a cold fit.

A temporal slice of the ratings stands for the nightly situation: held-out test = every rating
after the cutoff T (the `--test-fraction` latest ratings); today's training set = every rating up
to T; yesterday's = every rating up to T minus `--new-days` days. Yesterday's model is a cold
`--cold-iterations` fit on yesterday's set. Today's data is then fitted cold and warm (started
from yesterday's model: new users/movies seeded, vanished ones dropped) for 1..N iterations,
each variant on one shared layout (`ALS.fit_each`); each row reports the test RMSE (pairs whose
user and movie were both seen: the factors' own accuracy) and the fit seconds of that variant
(layout + baseline + its iterations). The goal: the warm start reaches the cold N-iteration RMSE
in at most a third of the iterations.

Wall time saved: after the curves (which warm the JVM, the Python workers and numba's caches
up), the cold N-iteration fit and the warm fit with the iterations it needed are timed as whole
`ALS.fit` calls (layout, baseline, the previous factors' shuffle, iterations), alternately,
`--repeats` times each, in this process; the saving is the difference of their medians.

    python benchmarks/bench_warm_start.py --input <ingest of ml-latest-small> --out benchmarks/results/warm_start.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from result_table import publish

REPO = Path(__file__).resolve().parents[1]
DAY_SECONDS = 86_400


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="an `mfspark ingest` output (ratings with rated_at)")
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--new-days", type=float, default=1.0, help="days of ratings yesterday's model has not seen")
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--reg", type=float, default=0.1)
    parser.add_argument("--cold-iterations", type=int, default=10)
    parser.add_argument("--biases", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed fits of each kind (cold, warm)")
    parser.add_argument("--out", type=Path, help="write the markdown table here")
    args = parser.parse_args()
    load_at_start = " ".join(f"{v:.2f}" for v in os.getloadavg())
    from pyspark.sql import functions as F

    from mfspark.evaluation.metrics import rating_metrics
    from mfspark.models.als.estimator import ALS, ALSParams
    from mfspark.runtime.session import build_session, load_profile

    spark = build_session(load_profile("local", Path("/tmp"), conf_dir=REPO / "conf"), "bench-warm-start")
    ratings = spark.read.parquet(f"{args.input}/ratings").select(
        "user_id", "movie_id", "rating", F.unix_timestamp("rated_at").alias("t")).cache()
    cutoff = ratings.approxQuantile("t", [1 - args.test_fraction], 0.0)[0]
    yesterday_cutoff = cutoff - args.new_days * DAY_SECONDS
    test = ratings.where(F.col("t") > cutoff).cache()
    today = ratings.where(F.col("t") <= cutoff).cache()
    yesterday = ratings.where(F.col("t") <= yesterday_cutoff).cache()
    counts = {name: frame.count() for name, frame in (("test", test), ("today", today), ("yesterday", yesterday))}
    new_users = today.select("user_id").distinct().subtract(yesterday.select("user_id").distinct()).count()
    new_movies = today.select("movie_id").distinct().subtract(yesterday.select("movie_id").distinct()).count()
    base = ALSParams(rank=args.rank, reg=args.reg, max_iter=args.cold_iterations, seed=args.seed,
                     biases=args.biases)
    previous = ALS(**vars(base)).fit(yesterday)
    iterations = range(1, args.cold_iterations + 1)
    curves = {}
    for name, initial in (("cold", None), ("warm", previous)):
        curves[name] = []
        estimator = ALS(**vars(base))
        for model in estimator.fit_each(today, [replace(base, max_iter=k) for k in iterations], initial):
            rmse = rating_metrics(model.predict(test, "drop"))["rmse"]
            curves[name].append((rmse, model.history.fit_seconds))
            print(name, model.params.max_iter, f"RMSE {rmse:.4f}", f"{model.history.fit_seconds:.1f} s", flush=True)
    target = curves["cold"][-1][0]
    reached = next((k for k, (rmse, _) in zip(iterations, curves["warm"]) if rmse <= target), None)
    timed = None if reached is None else timed_fits(ALS, today, base, previous, reached, args.repeats)
    spark.stop()
    lines = [f"Command: `python benchmarks/bench_warm_start.py {' '.join(sys.argv[1:])}` "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {load_at_start} at the "
             f"start, {' '.join(f'{v:.2f}' for v in os.getloadavg())} at the end, 2 cores)", "",
             f"Ratings: test (after the cutoff) {counts['test']:,}; today {counts['today']:,}; yesterday "
             f"{counts['yesterday']:,} ({counts['today'] - counts['yesterday']:,} new ratings in {args.new_days:g} "
             f"day(s), {new_users} new users, {new_movies} new movies). Rank {args.rank}, reg {args.reg}"
             f"{', biases' if args.biases else ''}; RMSE over test pairs whose user and movie are known.", "",
             "| iterations | cold RMSE | cold fit s | warm RMSE | warm fit s |", "| ---: | ---: | ---: | ---: | ---: |"]
    for k, (cold, warm) in zip(iterations, zip(curves["cold"], curves["warm"])):
        lines.append(f"| {k} | {cold[0]:.4f} | {cold[1]:.1f} | {warm[0]:.4f} | {warm[1]:.1f} |")
    if reached is None:
        lines += ["", f"The warm start did not reach the cold {args.cold_iterations}-iteration RMSE {target:.4f}."]
    else:
        cold_seconds, warm_seconds = (statistics.median(timed[name]) for name in ("cold", "warm"))
        lines += ["", f"The warm start reaches the cold {args.cold_iterations}-iteration RMSE ({target:.4f}) after "
                      f"{reached} iteration(s) ({reached / args.cold_iterations:.2f} of the iterations). The curves' "
                      "fit seconds share one layout per curve and are not the wall time of a fit; timed as whole "
                      f"`ALS.fit` calls after the curves, alternately, {args.repeats} each:", "",
                  "| fit | iterations | wall s (each run) | median s |", "| --- | ---: | --- | ---: |",
                  f"| cold | {args.cold_iterations} | {', '.join(f'{t:.1f}' for t in timed['cold'])} | "
                  f"{cold_seconds:.1f} |",
                  f"| warm | {reached} | {', '.join(f'{t:.1f}' for t in timed['warm'])} | {warm_seconds:.1f} |", "",
                  f"Wall time saved: {cold_seconds - warm_seconds:.1f} s of {cold_seconds:.1f} s "
                  f"({(cold_seconds - warm_seconds) / cold_seconds:.0%})."]
    publish(lines, args.out)


def timed_fits(als, today, base, previous, warm_iterations: int, repeats: int) -> dict[str, list[float]]:
    """Wall seconds of whole fits on today's ratings: cold with `base.max_iter` iterations and warm
    (from `previous`) with `warm_iterations`, alternately so a load change hits both alike."""
    seconds = {"cold": [], "warm": []}
    for _ in range(repeats):
        for name, max_iter, initial in (("cold", base.max_iter, None), ("warm", warm_iterations, previous)):
            started = time.perf_counter()
            model = als(**vars(replace(base, max_iter=max_iter))).fit(today, initial_model=initial)
            seconds[name].append(time.perf_counter() - started)
            print(name, max_iter, f"{seconds[name][-1]:.1f} s", flush=True)
            del model
    return seconds


if __name__ == "__main__":
    main()
