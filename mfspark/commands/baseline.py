"""`mfspark baseline`: split an ingested ratings table, fit the bias baseline, evaluate it, write it.

Writes OUT/biases/{users,movies,model.json} and OUT/metrics.json in one atomic commit. For
k-fold the metrics cover every fold and the written biases are fitted on all ratings; for the
other splits they are the model evaluated (fitted on the training part).
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mfspark.commands.args import add_model_options, add_split_arguments, comma_list, given_params
from mfspark.data.ingest import read_ratings
from mfspark.errors import ConfigError
from mfspark.evaluation.baseline import evaluate_split, tune_params
from mfspark.evaluation.metrics import DEFAULT_THRESHOLD
from mfspark.evaluation.split import SPLIT_KINDS, make_splits
from mfspark.models.base import OBSERVED
from mfspark.models.bias import BiasModel, BiasParams
from mfspark.runtime.commit import atomic_output, read_json, write_json
from mfspark.runtime.fs import HadoopFileSystem
from mfspark.runtime.provenance import versions

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

DEFAULTS = BiasParams()
DEFAULT_GRID = "0,1,2,5,10,15,25,50"


def scale_bound(text: str) -> float | str | None:
    """argparse type of a rating-scale bound: a number, 'none' (no clipping) or OBSERVED."""
    if text.strip().lower() in ("none", OBSERVED):
        return None if text.strip().lower() == "none" else OBSERVED
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, 'none' or '{OBSERVED}', got '{text}'") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory (replaced atomically)")
    add_split_arguments(parser, SPLIT_KINDS)
    add_model_options(parser, BiasParams)
    for bound in ("min", "max"):
        parser.add_argument(f"--{bound}-rating", type=scale_bound, default=getattr(DEFAULTS, f"{bound}_rating"),
                            help=f"predictions are clipped to this {bound}imum: a number, 'none' or '{OBSERVED}' "
                                 f"(default: the training ratings' {'lowest' if bound == 'min' else 'highest'})")
    parser.add_argument("--tune", action="store_true",
                        help="pick lambda_u, lambda_i on a validation split carved from training")
    parser.add_argument("--grid-lambda-u", type=comma_list(float), default=comma_list(float)(DEFAULT_GRID))
    parser.add_argument("--grid-lambda-i", type=comma_list(float), default=comma_list(float)(DEFAULT_GRID))
    parser.add_argument("--validation-fraction", type=float, default=0.2,
                        help="share of training carved off for --tune (default 0.2)")
    parser.add_argument("--top-k", type=int, default=10, help="top-N list length for ranking metrics (0: skip)")
    # Kept so command lines written for the old pool of 200 movies still run: the lists now come from the top-N
    # engine over every movie (BiasModel.recommend_for_users), which needs no pool.
    parser.add_argument("--candidates", type=int, default=None,
                        help="ignored (the top-N lists rank every movie); accepted for old command lines")
    parser.add_argument("--relevance-threshold", type=float, default=DEFAULT_THRESHOLD)


def load_ratings(spark: SparkSession, input_dir: str) -> tuple[DataFrame, str]:
    """The ingested ratings table and the dataset name from the manifest (else the directory name)."""
    ratings = read_ratings(spark, input_dir)
    manifest = f"{input_dir}/manifest.json"
    dataset = read_json(spark, manifest).get("release") if HadoopFileSystem(spark).exists(manifest) else None
    return ratings, dataset or Path(input_dir).name


def mean_of(results: list[dict], key: str) -> float:
    return sum(r[key] for r in results) / len(results)


def run(args: argparse.Namespace, spark: SparkSession) -> dict:
    started = time.perf_counter()
    if args.split != "predefined" and not args.input:
        raise ConfigError("--input (an ingest output directory) is required unless --split predefined")
    if args.tune and args.split == "kfold":  # a carve of fold 1's training holds folds 2..k's test ratings
        raise ConfigError("--tune cannot be combined with --split kfold (it would tune on other folds' test "
                          "ratings): tune with --split random or temporal, then pass --lambda-u/--lambda-i")
    params = replace(BiasParams(**given_params(args, BiasParams)), min_rating=args.min_rating,
                     max_rating=args.max_rating)
    params.validate()
    if args.candidates is not None:
        log.warning("--candidates is ignored: the top-N lists rank every movie")
    ratings, dataset = load_ratings(spark, args.input) if args.input else (None, "ml-100k")
    if ratings is not None:
        ratings = ratings.select("user_id", "movie_id", "rating", "rated_at").persist()
    splits = make_splits(ratings, args.split, test_fraction=args.test_fraction, seed=args.seed, folds=args.folds,
                         predefined_dir=args.predefined_dir, predefined_name=args.predefined_name, spark=spark)
    tuning = None
    if args.tune:
        params, tuning = tune_params(splits[0], params, args.split, args.validation_fraction, args.seed,
                                     args.grid_lambda_u, args.grid_lambda_i)
    evaluated = [evaluate_split(split, params, args.top_k, args.relevance_threshold)
                 for split in splits]
    results = [result for _, result in evaluated]
    model = BiasModel.fit(ratings, params) if args.split == "kfold" else evaluated[0][0]
    metrics = {
        "dataset": dataset,
        "input": args.input,
        "split": {"kind": args.split, "test_fraction": args.test_fraction, "seed": args.seed,
                  "folds": args.folds if args.split == "kfold" else None,
                  "predefined": args.predefined_name if args.split == "predefined" else None},
        "parameters": {"lambda_u": params.lambda_u, "lambda_i": params.lambda_i, "sweeps": params.sweeps,
                       "min_rating": model.params.min_rating, "max_rating": model.params.max_rating,
                       "top_k": args.top_k,
                       "relevance_threshold": args.relevance_threshold,
                       "candidates": None},  # every movie is ranked; the key of the old pool size stays
        "biases_fitted_on": "all ratings" if args.split == "kfold" else "training part",
        "mu": model.mu,
        "rmse": mean_of(results, "rmse"),
        "mae": mean_of(results, "mae"),
        "global_mean_rmse": mean_of(results, "global_mean_rmse"),
        "counts": results[0]["counts"] if len(results) == 1 else [r["counts"] for r in results],
        "splits": results,
        "tuning": tuning,
        "versions": versions(spark),
    }
    with atomic_output(spark, args.out) as staging:
        model.save(f"{staging}/biases")
        metrics["timings_s"] = {"total": round(time.perf_counter() - started, 3)}
        write_json(spark, f"{staging}/metrics.json", metrics)
    return {"dataset": dataset, "split": args.split, "rmse": metrics["rmse"], "mae": metrics["mae"],
            "global_mean_rmse": metrics["global_mean_rmse"], "lambda_u": params.lambda_u,
            "lambda_i": params.lambda_i, "mu": model.mu, "out": args.out, "seconds": metrics["timings_s"]["total"]}
