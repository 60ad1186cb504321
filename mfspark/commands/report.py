"""`mfspark report`: one self-contained HTML page (plus a PNG per figure) about a trained model.

Reads a pipeline run (`--run ROOT` or `--run ROOT/runs/<id>`) or explicit outputs (`--ingest`, `--model`,
optional `--recs`, `--sweep` and `--lists`); writes `OUT/index.html`, `OUT/figures/*.png` and `OUT/report.json`.
"""

from __future__ import annotations

import argparse

from pyspark.sql import SparkSession

from mfspark.report.build import ReportOptions, build_report
from mfspark.report.inputs import report_inputs
from mfspark.runtime.fs import filesystem


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_argument_group("what to report on")
    source.add_argument("--run", help="a pipeline root (its latest complete run) or one run directory")
    source.add_argument("--ingest", help="an `mfspark ingest` output (ratings, movies)")
    source.add_argument("--model", help="an `mfspark train` output (factors/, metrics.json)")
    source.add_argument("--recs", help="an `mfspark recommend` output (optional: else the user's list is computed)")
    source.add_argument("--sweep", help="an `mfspark sweep` output (optional: adds the rank x lambda figure)")
    source.add_argument("--lists", help="a pipeline run's train_lists stage directory (optional; a --run's own by "
                                        "default): the lists model's similar movies beside the rating model's")
    defaults = ReportOptions()
    content = parser.add_argument_group("content")
    content.add_argument("--user", type=int, help="target user id (default: a typical active user)")
    content.add_argument("--top-n", type=int, default=defaults.top_n)
    content.add_argument("--svd-rank", type=int, default=defaults.svd_rank,
                         help="rank of the truncated SVD of the bias residuals in the accuracy table")
    content.add_argument("--no-compare", action="store_true",
                         help="skip fitting the other ALS variant and MLlib ALS for the accuracy table")
    content.add_argument("--map-movies", type=int, default=defaults.map_movies,
                         help="most-rated movies drawn in the latent-space map")
    content.add_argument("--neighbour-min-count", type=int, default=defaults.neighbour_min_count,
                         help="training ratings a movie needs to be listed as a neighbour")
    content.add_argument("--pca-users", type=int, default=defaults.pca_users)
    content.add_argument("--pca-movies", type=int, default=defaults.pca_movies)
    parser.add_argument("--out", required=True, help="report directory (local; replaced whole)")


def run(args: argparse.Namespace, spark: SparkSession) -> dict:
    fs = filesystem(args.run or args.model or args.ingest or ".", spark)
    inputs = report_inputs(fs, args.run, args.ingest, args.model, args.recs, args.sweep, args.lists)
    options = ReportOptions(user_id=args.user, top_n=args.top_n, svd_rank=args.svd_rank, compare=not args.no_compare,
                            map_movies=args.map_movies, neighbour_min_count=args.neighbour_min_count,
                            pca_users=args.pca_users, pca_movies=args.pca_movies)
    data = build_report(spark, inputs, args.out, options)
    return {"out": args.out, "user": data["user"]["user_id"], "seconds": data["seconds"],
            "models": {r["model"]: round(r["rmse"], 4) for r in data["accuracy"]["rows"]}}
