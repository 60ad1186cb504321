"""Tune our ALS (rank, reg, biases, bias damping, iterations) on a validation split; report test RMSE once.

    .venv/bin/python scripts/tune_als.py --input /tmp/mf/ingest --out benchmarks/results/als_accuracy.md

The ratings are split 80/20 with `random_split(seed)` (the project's default split). Hyper-parameters
are chosen on a validation split carved from the training part (`random_split(train, val_fraction,
val_seed)`), never on the test part. The search is coarse to fine, every config scored once:

1. reg: every --regs at --pivot-rank, biases on, the middle --bias-regs, the first --max-iters;
2. rank: every other --ranks at the best reg so far;
3. reg again: the best rank's untried neighbours of the best reg in --regs;
4. bias damping: every other --bias-regs (lambda_u = lambda_i) at the best so far;
5. iterations: every other --max-iters at the best so far;
6. ablation: the best rank/reg/iterations without biases.

The best validation RMSE is refitted on the whole training part and scored on the test part, beside
plain ALS (rank 10, reg 0.1, no biases), MLlib ALS (rank 10, reg 0.1) and MLlib at the chosen
rank/reg/iterations on the chosen bias baseline's residuals. RMSE "all" scores every held-out rating
(unseen users/movies get the bias baseline); "seen" only those whose user and movie are in training
(MLlib's coldStartStrategy="drop"; MLlib is scored on that subset only).
"""

from __future__ import annotations

import argparse
import logging
import platform
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from pyspark.sql import DataFrame

from mfspark.data.ingest import read_ratings
from mfspark.evaluation.metrics import rating_metrics
from mfspark.evaluation.mllib_reference import fit_mllib, mllib_predictions
from mfspark.evaluation.split import random_split
from mfspark.models.als.estimator import ALS, ALSParams
from mfspark.runtime.session import build_session, load_profile

log = logging.getLogger("tune_als")


@dataclass(frozen=True)
class Config:
    rank: int
    reg: float
    biases: bool
    bias_reg: float
    max_iter: int

    def params(self, seed: int, bias_sweeps: int) -> ALSParams:
        return ALSParams(rank=self.rank, reg=self.reg, max_iter=self.max_iter, seed=seed, biases=self.biases,
                         bias_reg_user=self.bias_reg, bias_reg_item=self.bias_reg, bias_sweeps=bias_sweeps)


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, metavar="INGEST_OUT", help="`mfspark ingest` output directory")
    parser.add_argument("--out", required=True, help="markdown file for the results table")
    parser.add_argument("--seed", type=int, default=42, help="seed of the train/test split and of ALS")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--val-seed", type=int, default=7, help="seed of the validation split of the train part")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--ranks", type=ints, default=[10, 25, 50, 100])
    parser.add_argument("--regs", type=floats, default=[0.05, 0.1, 0.15, 0.2, 0.3])
    parser.add_argument("--bias-regs", type=floats, default=[2.0, 5.0, 10.0])
    parser.add_argument("--max-iters", type=ints, default=[10, 20], help="the first is used until stage 5")
    parser.add_argument("--bias-sweeps", type=int, default=ALSParams.bias_sweeps,
                        help="alternating sweeps of the bias baseline (each costs a few Spark jobs)")
    parser.add_argument("--pivot-rank", type=int, default=50, help="rank of the stage-1 reg sweep")
    parser.add_argument("--profile", default="local")
    parser.add_argument("--work", default="out/tune_als", help="Spark scratch and checkpoint root")
    return parser.parse_args(argv)


class Tuner:
    """Scores configs on the validation split, each at most once, and remembers every score."""

    def __init__(self, fit_part: DataFrame, validation: DataFrame, seed: int, bias_sweeps: int):
        self.fit_part, self.validation, self.seed, self.bias_sweeps = fit_part, validation, seed, bias_sweeps
        self.rows: list[dict] = []
        self.scores: dict[Config, float] = {}

    def score(self, stage: str, config: Config) -> float:
        if config not in self.scores:
            model, seconds = fit_ours(self.fit_part, config.params(self.seed, self.bias_sweeps))
            rmse_all = rating_metrics(model.predict(self.validation, "baseline"))["rmse"]
            rmse_seen = rating_metrics(model.predict(self.validation, "drop"))["rmse"]
            self.scores[config] = rmse_all
            self.rows.append({"stage": stage, "config": config, "rmse_all": rmse_all, "rmse_seen": rmse_seen,
                              "fit_s": seconds, **convergence(model)})
            log.info("[%s] %s: validation RMSE %.4f (seen %.4f), fit %.1f s", stage, config, rmse_all, rmse_seen,
                     seconds)
        return self.scores[config]

    def best(self) -> Config:
        return min(self.scores, key=self.scores.get)


def fit_ours(train: DataFrame, params: ALSParams):
    started = time.perf_counter()
    model = ALS(**vars(params)).fit(train)
    return model, time.perf_counter() - started


def convergence(model) -> dict:
    """Seconds per ALS iteration, last train RMSE (on the residuals when biased) and last objective change."""
    its = model.history.iterations
    change = (its[-2].objective - its[-1].objective) / its[-2].objective if len(its) > 1 else float("nan")
    return {"s_per_iter": sum(i.seconds for i in its) / max(len(its), 1), "train_rmse": its[-1].train_rmse,
            "last_obj_change": change}


def neighbours(values: list[float], value: float) -> list[float]:
    ordered = sorted(values)
    at = ordered.index(value)
    return ordered[max(at - 1, 0):at + 2]


def search(tuner: Tuner, args: argparse.Namespace) -> Config:
    """The coarse-to-fine stages of the module docstring; returns the best config seen."""
    middle_bias_reg = sorted(args.bias_regs)[len(args.bias_regs) // 2]
    start = Config(args.pivot_rank, args.regs[0], True, middle_bias_reg, args.max_iters[0])
    for reg in args.regs:
        tuner.score("1 reg", replace(start, reg=reg))
    for rank in args.ranks:
        tuner.score("2 rank", replace(tuner.best(), rank=rank))
    best = tuner.best()
    for reg in neighbours(args.regs, best.reg):
        tuner.score("3 reg", replace(best, reg=reg))
    for bias_reg in args.bias_regs:
        tuner.score("4 bias reg", replace(tuner.best(), bias_reg=bias_reg))
    for max_iter in args.max_iters:
        tuner.score("5 iters", replace(tuner.best(), max_iter=max_iter))
    tuner.score("6 no biases", replace(tuner.best(), biases=False))
    return tuner.best()


def final_scores(train: DataFrame, test: DataFrame, chosen: Config, seed: int, bias_sweeps: int) -> list[dict]:
    """Test RMSEs of the chosen config, plain ALS rank 10 reg 0.1, and MLlib (plain and on the residuals)."""
    parallelism = train.sparkSession.sparkContext.defaultParallelism
    plain = Config(10, 0.1, False, chosen.bias_reg, chosen.max_iter)
    rows = []
    best_model = None
    for label, config in ((f"ours, chosen ({describe(chosen)})", chosen), (f"ours, plain ({describe(plain)})", plain)):
        model, seconds = fit_ours(train, config.params(seed, bias_sweeps))
        best_model = best_model or model
        rows.append({"model": label, "rmse_all": rating_metrics(model.predict(test, "baseline"))["rmse"],
                     **{f"{k}_seen": v for k, v in rating_metrics(model.predict(test, "drop")).items()},
                     "fit_s": seconds})
        log.info("test: %s", rows[-1])
    baseline = best_model.baseline
    residuals = baseline.residual_ratings(train)
    for label, config, data, base in (
            (f"MLlib ({describe(plain)})", plain, train, None),
            (f"MLlib on our chosen baseline's residuals ({describe(chosen)})", chosen, residuals, baseline)):
        model, seconds = fit_mllib(data, config.params(seed, bias_sweeps), parallelism)
        metrics = rating_metrics(mllib_predictions(model, test, base))
        rows.append({"model": label, "rmse_all": None, "rmse_seen": metrics["rmse"], "count_seen": metrics["count"],
                     "fit_s": seconds})
        log.info("test: %s", rows[-1])
    return rows


def describe(config: Config) -> str:
    biases = f"biases, bias reg {config.bias_reg:g}" if config.biases else "no biases"
    return f"rank {config.rank}, reg {config.reg:g}, {config.max_iter} iters, {biases}"


def markdown(args: argparse.Namespace, command: str, counts: dict, tuner: Tuner, chosen: Config,
             finals: list[dict], spark_version: str, total_s: float) -> str:
    lines = [
        "# ALS accuracy on ml-latest-small: tuned on a validation split, scored once on the test split",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {total_s / 60:.1f} min).",
        f"Split: random_split(ratings, {args.test_fraction}, seed={args.seed}) -> {counts['train']:,} train / "
        f"{counts['test']:,} test; validation: random_split(train, {args.val_fraction}, seed={args.val_seed}) -> "
        f"{counts['fit']:,} fit / {counts['validation']:,} validation ratings.",
        f"Machine: 2 shared cores (timings are noisy), Spark {spark_version}, Python {platform.python_version()}, "
        f"profile `{args.profile}`. ALS seed {args.seed}; bias baseline: {args.bias_sweeps} sweeps, "
        "lambda_u = lambda_i = bias reg; fit s includes the baseline fit and the block layout.",
        "RMSE all: every held-out rating (unseen user/movie -> bias baseline); seen: user and movie seen in training.",
        "",
        "## Validation search (coarse to fine)",
        "",
        "| stage | rank | reg | biases | bias reg | iters | val RMSE all | val RMSE seen | fit s | s/iter "
        "| last train RMSE | last obj. change |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in tuner.rows:
        c = r["config"]
        mark = " **(chosen)**" if c == chosen else ""
        lines.append(f"| {r['stage']}{mark} | {c.rank} | {c.reg:g} | {'yes' if c.biases else 'no'} | "
                     f"{c.bias_reg:g} | {c.max_iter} | {r['rmse_all']:.4f} | {r['rmse_seen']:.4f} | {r['fit_s']:.1f} | "
                     f"{r['s_per_iter']:.2f} | {r['train_rmse']:.4f} | {r['last_obj_change']:.2e} |")
    lines += [
        "",
        f"Chosen: {describe(chosen)} (validation RMSE {tuner.scores[chosen]:.4f}).",
        "",
        "## Test split (each model fitted once on the whole training part)",
        "",
        "| model | test RMSE all | test RMSE seen | MAE seen | ratings seen | fit s |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in finals:
        rmse_all = f"{r['rmse_all']:.4f}" if r["rmse_all"] is not None else "-"
        mae = f"{r['mae_seen']:.4f}" if "mae_seen" in r else "-"
        lines.append(f"| {r['model']} | {rmse_all} | {r['rmse_seen']:.4f} | {mae} | {r['count_seen']:,} | "
                     f"{r['fit_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join([".venv/bin/python", "scripts/tune_als.py", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    spark = build_session(load_profile(args.profile, str(Path(args.work).resolve())), "tune-als")
    ratings = read_ratings(spark, args.input).select("user_id", "movie_id", "rating")
    outer = random_split(ratings, args.test_fraction, args.seed)
    train, test = outer.train.cache(), outer.test.cache()
    inner = random_split(train, args.val_fraction, args.val_seed)
    fit_part, validation = inner.train.cache(), inner.test.cache()
    counts = {"train": train.count(), "test": test.count(), "fit": fit_part.count(), "validation": validation.count()}
    log.info("split sizes: %s", counts)
    tuner = Tuner(fit_part, validation, args.seed, args.bias_sweeps)
    chosen = search(tuner, args)
    log.info("chosen: %s (validation RMSE %.4f)", chosen, tuner.scores[chosen])
    finals = final_scores(train, test, chosen, args.seed, args.bias_sweeps)
    report = markdown(args, command, counts, tuner, chosen, finals, spark.version, time.perf_counter() - started)
    spark.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
