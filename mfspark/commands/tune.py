"""`mfspark tune`: choose ALS's rank, reg, bias fit, bias reg and rated weight (--implicit-weights) on a validation
split carved from training; the chosen point is scored once on the test split.

Writes `OUT/tune` (Parquet, one row per grid point: `mfspark.evaluation.tuning.POINT_COLUMNS`),
`OUT/tune.md` (the table, best first, and the test line), `OUT/metrics.json` and `OUT/params.json`: the
chosen parameters, which `mfspark train --params` and `mfspark pipeline --params` take.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, replace

from pyspark.sql import SparkSession

import mfspark.commands.args as shared
from mfspark.errors import ConfigError
from mfspark.evaluation import tuning
from mfspark.models.ease import EASEParams
from mfspark.models.lists_model import IMPLICIT_LISTS
from mfspark.runtime.commit import atomic_output, write_json
from mfspark.runtime.fs import HadoopFileSystem

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    shared.add_split_arguments(parser)
    shared.add_als_arguments(parser)
    defaults = tuning.Grid()
    group = parser.add_argument_group("grid (every combination is fitted; defaults in brackets)")
    group.add_argument("--ranks", type=shared.comma_list(int), default=defaults.ranks, help=f"{list(defaults.ranks)}")
    group.add_argument("--regs", type=shared.comma_list(float), default=defaults.regs, help=f"{list(defaults.regs)}")
    group.add_argument("--bias-fits", type=shared.comma_list(str), default=defaults.bias_fits,
                       help=f"baseline and/or learned {list(defaults.bias_fits)}")
    group.add_argument("--bias-regs", type=shared.comma_list(float), default=defaults.bias_regs,
                       help=f"user and movie bias reg (one value for both) {list(defaults.bias_regs)}")
    group.add_argument("--implicit-weights", type=shared.comma_list(float), default=defaults.implicit_weights,
                       help=f"0 = off; > 0 with learned biases only {list(defaults.implicit_weights)}")
    lists = tuning.ListsGrid()
    group = parser.add_argument_group("--lists: tune the lists model instead (chosen by validation NDCG@10)")
    group.add_argument("--lists", action="store_true",
                       help="search the model of the top-N lists (implicit ALS and/or EASE on the ratings >= 4) and "
                            "write its choice to params.json for `pipeline --params`")
    for option, name, kind in (("--lists-models", "kinds", str), ("--lists-ranks", "ranks", int),
                               ("--lists-regs", "regs", float), ("--lists-alphas", "alphas", float),
                               ("--lists-iterations", "max_iters", int), ("--ease-regs", "ease_regs", float),
                               ("--ease-min-ratings", "ease_min_ratings", float)):
        group.add_argument(option, type=shared.comma_list(kind), default=getattr(lists, name),
                           help=f"{list(getattr(lists, name))}")
    group = parser.add_argument_group("validation split")
    group.add_argument("--validation-fraction", type=float, default=0.2, help="of the training ratings [0.2]")
    group.add_argument("--validation-seed", type=int, default=7)
    parser.add_argument("--out", required=True, help="output directory (replaced atomically)")


def run(args: argparse.Namespace, spark: SparkSession) -> dict:
    if not 0 < args.validation_fraction < 1:
        raise ConfigError(f"--validation-fraction must be between 0 and 1, got {args.validation_fraction}")
    if args.lists:
        return run_lists(args, spark)
    grid = tuning.Grid(args.ranks, args.regs, args.bias_fits, args.bias_regs, args.implicit_weights)
    base = shared.als_params(args, spark)
    grid.points(base)  # refuse a bad grid before reading anything
    split = shared.load_split(spark, args)
    result = tuning.tune(split, base, grid, args.validation_fraction, args.validation_seed)
    table = tuning.markdown_table(result)
    with atomic_output(spark, args.out) as staging:
        tuning.points_frame(spark, result.points).coalesce(1).write.parquet(f"{staging}/tune")
        HadoopFileSystem(spark).write_text(f"{staging}/tune.md", table)
        write_json(spark, f"{staging}/metrics.json", {
            **shared.run_info(spark, args, split), "grid": asdict(grid),
            "validation_fraction": args.validation_fraction, "validation_seed": args.validation_seed,
            "points": result.points, "best": asdict(result.best), "cold_start": result.cold_start,
            "test": result.test, "test_rmse_seen": result.test_seen_rmse, "test_fit_s": result.test_fit_s})
        write_json(spark, f"{staging}/params.json", shared.params_document(
            {"command": "mfspark tune", "validation_rmse": min(p["validation_rmse"] for p in result.points),
             "test_rmse": result.test["rmse"]}, cold_start=result.cold_start, als=result.best))
    print(table, end="")
    print(f"chosen parameters: {args.out.rstrip('/')}/params.json (mfspark train/pipeline --params FILE)")
    best = result.best
    return {"points": len(result.points), "best": {"rank": best.rank, "reg": best.reg, "bias_fit": best.bias_fit,
                                                   "bias_reg": best.bias_reg_user,
                                                   "implicit_weight": best.rated_weight,
                                                   "cold_start": result.cold_start},
            "test_rmse": round(result.test["rmse"], 4)}


def run_lists(args: argparse.Namespace, spark: SparkSession) -> dict:
    """`tune --lists`: the lists model chosen by validation NDCG@10; OUT/lists (Parquet), lists.md, metrics.json,
    params.json (`lists_model` and its section: `lists` for implicit ALS, `ease`)."""
    grid = tuning.ListsGrid(args.lists_models, args.lists_ranks, args.lists_regs, args.lists_alphas,
                            args.lists_iterations, args.ease_regs, args.ease_min_ratings)
    points = grid.points(replace(IMPLICIT_LISTS, seed=args.seed), EASEParams())  # a bad grid fails before any read
    split = shared.load_split(spark, args)
    result = tuning.tune_lists(split, points, args.validation_fraction, args.validation_seed)
    table = tuning.lists_markdown_table(result)
    section = {"ease" if result.best_kind == "ease" else "lists": result.best}
    with atomic_output(spark, args.out) as staging:
        tuning.list_points_frame(spark, result.points).coalesce(1).write.parquet(f"{staging}/lists")
        HadoopFileSystem(spark).write_text(f"{staging}/lists.md", table)
        write_json(spark, f"{staging}/metrics.json", {
            **shared.run_info(spark, args, split), "grid": asdict(grid),
            "validation_fraction": args.validation_fraction, "validation_seed": args.validation_seed,
            "points": result.points, "best": {"model": result.best_kind, **asdict(result.best)}, "test": result.test})
        write_json(spark, f"{staging}/params.json", shared.params_document(
            {"command": "mfspark tune --lists", "validation_ndcg@10": max(p["validation_ndcg"] for p in result.points),
             "test_ndcg@10": result.test["ndcg@10"]}, lists_model=result.best_kind, **section))
    print(table, end="")
    print(f"chosen parameters: {args.out.rstrip('/')}/params.json (mfspark pipeline --params FILE)")
    return {"points": len(result.points), "best": {"model": result.best_kind, **asdict(result.best)},
            "test_ndcg@10": round(result.test["ndcg@10"], 4),
            "test_precision@10": round(result.test["precision@10"], 4)}
