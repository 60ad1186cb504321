"""Assemble the report: read the inputs, compute each section on Spark, draw, write the page.

Output (a local directory, replaced whole): `index.html` (self-contained), `figures/NAME.png` (every
figure) and `report.json` (every number on the page).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from mfspark.errors import ConfigError, InputError
from mfspark.evaluation import split as splits
from mfspark.models.als.estimator import ALSModel
from mfspark.models.ease import EASEModel
from mfspark.models.lists_model import load_model
from mfspark.report import analysis, figures
from mfspark.report import sweep as sweeps
from mfspark.report.inputs import ReportInputs
from mfspark.report.page import page
from mfspark.runtime.commit import atomic_output, read_json
from mfspark.runtime.fs import HadoopFileSystem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportOptions:
    user_id: int | None = None  # default: a typical active user
    top_n: int = 10
    genre_rows: int = 3  # the user's favourite genres shown as rows
    svd_rank: int = 10
    compare: bool = True  # fit the other ALS variant and MLlib ALS for the accuracy table
    heldout_iterations: tuple[int, ...] = (1, 2, 3, 5)
    map_movies: int = 800
    map_labels: int = 16
    heatmap_genres: tuple[str, ...] = ("Animation", "Horror", "Sci-Fi", "Romance", "Crime", "Action")
    heatmap_per_genre: int = 5
    neighbours: int = 5
    neighbour_min_count: int = 20
    quality_movies: int = 200  # similar movies' numbers: the neighbours of this many most-watched movies
    quality_neighbours: int = 10
    pca_users: int = 1000
    pca_movies: int = 300
    pca_ends: int = 6


def load_split(spark: SparkSession, ratings: DataFrame, split_info: dict) -> splits.Split:
    """The train/test split the model was evaluated on, rebuilt from its metrics.json (split kind,
    test fraction, seed: splits are deterministic functions of these)."""
    kind = split_info.get("kind")
    if kind == "random":
        split = splits.random_split(ratings, split_info["test_fraction"], split_info["seed"])
    elif kind == "temporal":
        split = splits.temporal_split(ratings, test_fraction=split_info["test_fraction"])
    else:
        raise InputError(f"metrics.json: split kind '{kind}' cannot be rebuilt (random or temporal)")
    return splits.Split(split.name, split.train.cache(), split.test.cache())


class Timer:
    """Seconds per section, logged as each ends."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()
        self.last = self.started

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self.last, 2)
        self.last = now
        log.info("report: %s done in %.1f s", name, self.seconds[name])

    def total(self) -> float:
        return time.perf_counter() - self.started


def accuracy_section(split: splits.Split, model: ALSModel, metrics: dict, options: ReportOptions):
    rows = [analysis.global_mean_row(split)]
    bias_row, biases = analysis.bias_row(split, model)
    rows += [bias_row, analysis.svd_row(split, biases, options.svd_rank)]
    trained = analysis.trained_row(metrics, model, split)
    als_rows = [trained]
    if options.compare:
        als_rows.append(analysis.other_als_row(split, model.params))
        als_rows.sort(key=lambda r: r["model"])  # plain before biased
        als_rows.append(analysis.mllib_row(split, model.params, biases))
    rows += als_rows
    ranking_keys = [k for k in analysis.RANKING_KEYS if any(k in r for r in rows)]
    unseen = metrics.get("split", {}).get("test_unseen_any")
    note = (f"{metrics['split'].get('kind', '?')} split, {metrics['split'].get('test', '?')} test ratings"
            + (f" ({unseen} with a user or movie unseen in training: every model scores those with the biases)"
               if unseen is not None else "")
            + f". The trained model's RMSE/MAE are its metrics.json; the others are fitted here on the same split. "
            f"Ranking columns: each test user's top 10 with their training movies excluded (relevant: a test "
            f"rating >= 4), coverage over the training catalogue; from metrics.json when it has them. "
            f"SVD: rank-{options.svd_rank} truncated SVD of the users x movies matrix of training bias residuals "
            "(unrated cells 0), added to the biases.")
    return {"rows": rows, "ranking_keys": ranking_keys, "note": note}, biases


def convergence_section(split: splits.Split, model: ALSModel, metrics: dict, options: ReportOptions) -> dict:
    history = [asdict(it) for it in model.history.iterations]
    n = model.params.max_iter
    refits = [i for i in options.heldout_iterations if 0 < i < n]
    heldout = analysis.heldout_by_iteration(split, model.params, refits) if refits else []
    heldout.append({"iteration": n, "heldout_rmse": metrics["rmse"],
                    "train_rmse": history[-1]["train_rmse"] if history else None})
    note = (f"Objective and train RMSE per iteration come from the fit's own history (metadata.json). Held-out "
            f"RMSE needs the factors after each iteration, which a fit does not keep: it is measured at iterations "
            f"{', '.join(map(str, refits + [n]))} by refitting with max_iter = i on one shared layout (ALS is "
            f"deterministic for a seed, so that is iteration i of the same run; the last point is metrics.json). "
            f"Train RMSE of a biased model is on the bias residuals, unclipped.")
    return {"history": history, "heldout": heldout, "note": note}


def similarity_section(models: dict[str, ALSModel | EASEModel], movies: DataFrame, watched: DataFrame,
                       options: ReportOptions) -> dict:
    """The heatmap of the rating model's factors, and each model's (`models`: name -> model) neighbours of the
    picked movies with the numbers of `similar_movie_quality` (the neighbours of the most-watched movies)."""
    picked = analysis.popular_by_genre(movies, options.heatmap_per_genre, options.heatmap_genres)
    ids = [m["movie_id"] for m in picked]
    matrix = analysis.cosine_matrix(models["rating model"], ids)
    neighbours = {name: analysis.nearest_neighbours(model, movies, ids, options.neighbours,
                                                    options.neighbour_min_count) for name, model in models.items()}
    quality = {name: analysis.similar_movie_quality(model, watched, movies, options.quality_movies,
                                                    options.quality_neighbours, options.neighbour_min_count)
               for name, model in models.items()}
    note = (f"The {options.heatmap_per_genre} most-rated movies of each genre (a movie's genre: the first of "
            f"{', '.join(analysis.DISPLAY_GENRES)} it has). Neighbours: the {options.neighbours} most similar "
            f"movies among movies with at least {options.neighbour_min_count} training ratings, by each model: the "
            "rating model (ALS on rating values) by cosine of its item factors; the lists model (the run's "
            "train_lists: EASE by its item-item weight B_ij, what liking the movie adds to the other's score; "
            "implicit ALS by cosine of its item factors). Numbers: over the "
            f"{options.quality_neighbours} neighbours of each of the {options.quality_movies} most-watched training "
            "movies, genre agreement = share of neighbours sharing at least one genre with the movie, co-watch lift "
            "= P(both) / (P(movie) P(neighbour)) over the training users, averaged over the pairs.")
    return {"movies": picked, "matrix": matrix.tolist(), "neighbours": neighbours, "quality": quality, "note": note}


def residual_section(residuals: DataFrame, movies: DataFrame, options: ReportOptions) -> dict:
    famous = analysis.famous_movies(movies, fallback=6)
    corr, counts = analysis.residual_correlations(residuals, [m["movie_id"] for m in famous])
    components = analysis.residual_components(residuals, movies, options.pca_users, options.pca_movies,
                                              options.pca_ends)
    note = ("Residual = rating - (mu + b_u + b_i) of the damped bias model on the training ratings: what the "
            "biases cannot explain, i.e. taste. Correlations are over the users who rated both movies. The principal "
            f"components are those of the residual matrix of the {components['users']} most active users x the "
            f"{components['movies']} most-rated movies (unrated cells 0), computed with Spark's "
            "RowMatrix.computePrincipalComponents.")
    correlation = [[None if np.isnan(v) else v for v in row] for row in corr.tolist()]  # JSON has no NaN
    return {"famous": famous, "correlation": correlation, "counts": counts.tolist(), "components": components,
            "note": note}


def user_section(spark: SparkSession, model: ALSModel, ratings: DataFrame, movies: DataFrame, recs_dir: str | None,
                 options: ReportOptions) -> dict:
    user_id = options.user_id if options.user_id is not None else analysis.typical_active_user(ratings)
    mine = ratings.where(F.col("user_id") == user_id)
    stats = mine.agg(F.count(F.lit(1)).alias("n"), F.avg("rating").alias("mean")).first()
    if not stats.n:
        raise InputError(f"--user {user_id}: this user has no ratings in the ingest output")
    profile = analysis.genre_profile(ratings, movies, user_id)
    favourites = [p["genre"] for p in profile if p["genre"] != "(no genres listed)"][: options.genre_rows]
    if recs_dir:
        top_n = analysis.recommendations_for(spark.read.parquet(f"{recs_dir}/recommendations"), movies, user_id,
                                             options.top_n)
        genre_path = f"{recs_dir}/genre_rows"
        rows = (analysis.genre_rows_from_output(spark.read.parquet(genre_path), movies, user_id, options.genre_rows)
                if HadoopFileSystem(spark).exists(genre_path) else [])
        source = f"from the recommend output {recs_dir}"
    else:
        top_n, rows = analysis.user_lists(model, ratings, movies, user_id, options.top_n, favourites, 5)
        source = "computed here from the factors (no --recs given)"
    who = "given by --user" if options.user_id is not None else \
        "a typical active user: median activity among the top quarter of users by rating count"
    note = (f"User {user_id} ({who}) rated {stats.n} movies, mean {stats.mean:.2f} stars. Top-N and genre rows "
            f"{source}; movies the user has rated are excluded.")
    return {"user_id": user_id, "ratings": stats.n, "mean_rating": stats.mean, "profile": profile,
            "top_n": top_n, "genre_rows": rows, "note": note}


def build_report(spark: SparkSession, inputs: ReportInputs, out: str, options: ReportOptions) -> dict:
    """Compute, draw and write the report; returns report.json's content."""
    timer = Timer()
    metrics = read_json(spark, inputs.metrics_json)
    model = ALSModel.load(spark, f"{inputs.model}/factors")
    ratings = spark.read.parquet(f"{inputs.ingest}/ratings").select("user_id", "movie_id", "rating", "rated_at")
    split = load_split(spark, ratings, metrics.get("split", {}))
    movies = analysis.movie_table(spark.read.parquet(f"{inputs.ingest}/movies"), split.train).cache()
    timer.lap("inputs")
    data: dict = {"inputs": ", ".join(f"{k} {v}" for k, v in asdict(inputs).items() if v)}
    data["accuracy"], biases = accuracy_section(split, model, metrics, options)
    if metrics.get("lists_candidates"):  # a pipeline run with --lists auto
        data["lists_candidates"], data["lists_test"] = metrics["lists_candidates"], metrics.get("lists", {})
    timer.lap("accuracy")
    data["convergence"] = convergence_section(split, model, metrics, options)
    timer.lap("convergence")
    if inputs.sweep:
        points = sweeps.read_points(spark, f"{inputs.sweep}/sweep")
        data["sweep"] = {"points": points, "note": "From `mfspark sweep` " + inputs.sweep + "."}
    points, explained = analysis.item_map(model, movies, options.map_movies)
    data["item_map"] = {"points": points, "explained": explained}
    models = {"rating model": model} | ({"lists model": load_model(spark, inputs.lists)} if inputs.lists else {})
    data["similarity"] = similarity_section(models, movies, split.train.select("user_id", "movie_id"), options)
    timer.lap("latent space")
    residuals = biases.residuals(split.train.select("user_id", "movie_id", "rating")).cache()
    data["residuals"] = residual_section(residuals, movies, options)
    residuals.unpersist()
    timer.lap("residuals")
    data["user"] = user_section(spark, model, ratings, movies, inputs.recs, options)
    timer.lap("user")
    best = min(data["accuracy"]["rows"], key=lambda r: r["rmse"])
    data["summary"] = (f"{metrics.get('model', 'ALS')} rank {model.params.rank}, lambda {model.params.reg:g}: "
                       f"held-out RMSE {metrics['rmse']:.4f}. Best in the comparison: {best['model']} "
                       f"({best['rmse']:.4f}).")
    drawn = draw(data, options)
    timer.lap("figures")
    data["seconds"] = round(timer.total(), 1)
    data["timings"] = timer.seconds
    write(spark, out, data, drawn)
    for frame in (movies, split.train, split.test):
        frame.unpersist()
    return data


def draw(data: dict, options: ReportOptions) -> dict[str, figures.Drawn]:
    acc, conv, sim, res, user = (data[k] for k in ("accuracy", "convergence", "similarity", "residuals", "user"))
    drawn = [
        figures.accuracy(acc["rows"]),
        figures.convergence(conv["history"], conv["heldout"]),
        figures.item_map(data["item_map"]["points"], data["item_map"]["explained"], options.map_labels),
        figures.similarity_heatmap(np.array(sim["matrix"]), [m["title"] for m in sim["movies"]],
                                   [m["genre"] for m in sim["movies"]]),
        figures.residual_correlation(np.array(res["correlation"], dtype=float), np.array(res["counts"]),
                                     [m["title"] for m in res["famous"]]),
        figures.residual_components(res["components"]),
        figures.user_profile(user["profile"], user["user_id"], user["mean_rating"]),
    ]
    if data.get("sweep"):
        drawn.append(figures.sweep(data["sweep"]["points"]))
    return {d.name: d for d in drawn}


def write(spark: SparkSession, out: str, data: dict, drawn: dict[str, figures.Drawn]) -> None:
    """index.html, figures/*.png and report.json, committed as one directory."""
    if "://" in out.removeprefix("file://"):
        raise ConfigError(f"--out {out}: the report is written to a local directory (it is read in a browser)")
    with atomic_output(spark, out) as staging:
        root = Path(staging.removeprefix("file:"))
        (root / "figures").mkdir(parents=True, exist_ok=True)
        for item in drawn.values():
            (root / "figures" / f"{item.name}.png").write_bytes(item.png)
        (root / "index.html").write_text(page(data, drawn), encoding="utf-8")
        (root / "report.json").write_text(json.dumps(data, indent=1, default=str, allow_nan=False), encoding="utf-8")
