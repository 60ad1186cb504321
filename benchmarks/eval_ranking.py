"""Ranking quality of the recommendation lists: popularity, bias baseline, plain ALS, biased ALS.

For each split (per-user temporal: each user's latest 20%; random 80/20, seed 42) every model
is fitted on the training part and recommends 10 movies per user with that user's training
movies excluded (evaluation excludes only the training part); precision@10, recall@10,
NDCG@10, MAP@10 (relevant: test rating >= 4) and catalog coverage come from
`mfspark.evaluation.metrics.ranking_metrics`.

Light users: ml-latest-small has no user with fewer than 20 ratings, so light users are made:
a random 20% of users (seed 7) keep only their earliest K training ratings (temporal split),
for each K of `--light-keep`. The models are refitted on that training set and, over those
users, the model's list is compared with the damped-popularity fallback (the bias model's
b_i) and plain popularity, which picks `recommend --min-ratings`.

    python benchmarks/eval_ranking.py --input out/ml-latest-small --out benchmarks/results/ranking.md
    python benchmarks/eval_ranking.py --input out/ml-latest-small --sections light --light-keep 3,5,10,20

Implicit feedback: `--sections full --splits temporal --models popularity "plain ALS" "biased ALS"
"implicit ALS" --alpha 1 10 40` adds implicit-feedback ALS (`ALS(implicit=True)`) fitted on the
training ratings >= 4 only (the positives, their rating as the strength, confidence
1 + alpha * rating), once per alpha; lists and metrics as for the others.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pyspark.sql import Window
from pyspark.sql import functions as F
from result_table import publish

REPO = Path(__file__).resolve().parents[1]
LIGHT_SHARE = 0.2
POSITIVE = 4.0  # implicit ALS: training ratings at least this are the observed positives
MODELS = ["popularity", "bias baseline", "plain ALS", "biased ALS"]


def lists_for(model_name: str, train, n: int, rank: int, reg: float, alpha: float | None = None):
    """One model's lists for the users of `train`, their training movies excluded."""
    from mfspark.models.als.estimator import ALS
    from mfspark.models.bias import BiasModel
    from mfspark.recommend.lists import Baseline, fallback_lists, recommend_for_users

    seen = train.select("user_id", "movie_id")
    users = train.select("user_id").distinct()
    if model_name == "popularity":
        bias = BiasModel.fit(train)
        return fallback_lists(users, bias.movie_biases, bias.mu, seen, n, bias.user_biases, order="popularity")
    if model_name == "bias baseline":
        bias = BiasModel.fit(train)
        return fallback_lists(users, bias.movie_biases, bias.mu, seen, n, bias.user_biases, order="bias")
    if model_name == "implicit ALS":
        positives = train.where(F.col("rating") >= POSITIVE)
        model = ALS(rank=rank, reg=reg, max_iter=10, implicit=True, alpha=alpha, seed=1).fit(positives)
        return model.recommend_for_users(users, n, seen)
    biased = model_name == "biased ALS"
    model = ALS(rank=rank, reg=reg, max_iter=10, biases=biased, seed=1).fit(train)
    return recommend_for_users(model.user_factors, model.item_factors, seen, n,
                               Baseline.of(model.baseline) if biased else None)


def evaluate(lists, test, n: int, catalog: int, users=None) -> dict:
    from mfspark.evaluation.metrics import ranking_metrics

    lists = lists.cache()
    if users is not None:
        lists, test = (frame.join(users, "user_id", "left_semi") for frame in (lists, test))
    metrics = ranking_metrics(lists, test, n, catalog_size=catalog)
    lists.unpersist()
    return metrics


def make_light(train, keep: int, seed: int = 7):
    """A random LIGHT_SHARE of users keep only their earliest `keep` training ratings; returns (train, users)."""
    users = train.select("user_id").distinct().where(F.rand(seed) < LIGHT_SHARE).cache()
    first = Window.partitionBy("user_id").orderBy("rated_at", "movie_id")
    numbered = train.withColumn("_i", F.row_number().over(first)).join(
        users.withColumn("_light", F.lit(True)), "user_id", "left")
    kept = numbered.where(F.col("_light").isNull() | (F.col("_i") <= keep)).drop("_i", "_light")
    return kept.cache(), users


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="`mfspark ingest` output of ml-latest-small")
    parser.add_argument("--rank", type=int, default=10)
    parser.add_argument("--reg", type=float, default=0.1)
    parser.add_argument("--top-n", type=int, default=10)
    parser.add_argument("--sections", default="full,light", help="full (both splits, all users), light, or both")
    parser.add_argument("--light-keep", default="3", help="training ratings kept per light user, comma-separated")
    parser.add_argument("--out", type=Path, help="write the markdown table here")
    parser.add_argument("--models", nargs="+", default=MODELS, choices=[*MODELS, "implicit ALS"],
                        help="models of the full section")
    parser.add_argument("--splits", nargs="+", default=["temporal", "random"], choices=["temporal", "random"],
                        help="splits of the full section")
    parser.add_argument("--alpha", type=float, nargs="+", default=[1.0], help="implicit ALS: confidence weights")
    args = parser.parse_args()
    from mfspark.evaluation import split as splits
    from mfspark.runtime.session import build_session, load_profile

    spark = build_session(load_profile("local", Path("/tmp"), conf_dir=REPO / "conf"), "eval-ranking")
    ratings = spark.read.parquet(f"{args.input}/ratings").cache()
    catalog = ratings.select("movie_id").distinct().count()
    runs = [(name, alpha) for name in args.models for alpha in (args.alpha if name == "implicit ALS" else [None])]
    chosen = {"temporal": lambda: splits.temporal_split(ratings, 0.2),
              "random": lambda: splits.random_split(ratings, 0.2, 42)}
    rows, started = [], time.perf_counter()
    sections = args.sections.split(",")
    for split in (chosen[name]() for name in args.splits):
        if "full" not in sections:
            break
        train, test = split.train.cache(), split.test.cache()
        for name, alpha in runs:
            lists = lists_for(name, train, args.top_n, args.rank, args.reg, alpha)
            label = name if alpha is None else f"{name} (ratings >= {POSITIVE:g}, alpha {alpha:g})"
            metrics = evaluate(lists, test, args.top_n, catalog)
            rows.append((split.name, label, metrics))
            print(split.name, label, metrics, flush=True)
    temporal = splits.temporal_split(ratings, 0.2)
    test = temporal.test.cache()
    for keep in [int(k) for k in args.light_keep.split(",")] if "light" in sections else []:
        light_train, light_users = make_light(temporal.train.cache(), keep)
        for name in ("popularity", "bias baseline", "plain ALS", "biased ALS"):
            metrics = evaluate(lists_for(name, light_train, args.top_n, args.rank, args.reg), test, args.top_n,
                               catalog, light_users)
            rows.append((f"temporal, light users ({keep} training ratings)", name, metrics))
            print("light", keep, name, metrics, flush=True)
    spark.stop()
    k = args.top_n
    lines = [f"Command: `python benchmarks/eval_ranking.py {' '.join(sys.argv[1:])}` "
             f"({time.perf_counter() - started:.0f} s)", "",
             f"| split | model | precision@{k} | recall@{k} | NDCG@{k} | MAP@{k} | coverage@{k} | users |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for split_name, name, m in rows:
        lines.append(f"| {split_name} | {name} | {m[f'precision@{k}']:.4f} | {m[f'recall@{k}']:.4f} | "
                     f"{m[f'ndcg@{k}']:.4f} | {m[f'map@{k}']:.4f} | {m[f'coverage@{k}']:.4f} | {m['users']} |")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
