"""Ranking quality of the field on the pipeline's split of ml-latest-small, beside the pipeline's own lists.

The field: popularity, the `implicit` library's ALS, BPR and item-kNN (cosine), and EASE in numpy. The split is
the pipeline's default (random 80/20, seed 42, by `mfspark.evaluation.draws`, equal to the Spark split), the
metrics `ranking_metrics`' definitions (`mfspark.evaluation.ranking_numpy`): top 10 of every test user with all
of that user's training movies excluded, relevant = a test rating >= 4, averaged over the users with one.

Each model's parameters are chosen on validation only: fitted on the training ratings minus the validation part
`mfspark tune` carves from them (seed 7), scored by NDCG@10 of the validation users' lists (the fitted movies
excluded); the chosen point is refitted on all the training ratings and scored once on test. Every model is run
on two kinds of interactions, a 1 for each training rating >= 4 ("liked", the pipeline's lists models) or for
each training rating ("all"); which one wins on validation is reported, not mixed into the test numbers.

    python benchmarks/bench_ranking.py --out benchmarks/results/ranking_field.md
    python benchmarks/bench_ranking.py --ours ROOT_OR_RUN [...] --out benchmarks/results/ranking_field.md

`--ours` takes pipeline runs (a root: its latest complete run; a run directory; or an evaluate/metrics.json) and
adds a row per run from its `evaluate/metrics.json` `lists` entry, labelled by the run's lists parameters.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy
import scipy.sparse as sp
from result_table import publish

from mfspark.errors import InputError
from mfspark.evaluation.draws import split_masks
from mfspark.evaluation.ranking_numpy import NO_ITEM, ranking_metrics

REPO = Path(__file__).resolve().parents[1]
K = 10
TEST_FRACTION, SPLIT_SEED, VALIDATION_SEED = 0.2, 42, 7  # the pipeline's default split and tune's validation seed
LIKED = 4.0  # relevant test ratings, and the "liked" interactions
INTERACTIONS = {"liked": LIKED, "all": -np.inf}  # name -> the smallest training rating that is an interaction
SEED = 42
THREADS = 2  # the machine's cores
ALS_ITERATIONS = 15  # `implicit`'s default

# name -> grid of parameter dicts (searched on validation for each kind of interaction).
GRIDS: dict[str, list[dict]] = {
    "popularity": [{}],
    "implicit ALS": [{"factors": f, "regularization": r, "alpha": a}
                     for f in (64, 128) for r in (1.0, 3.0, 10.0, 30.0, 100.0) for a in (1.0, 5.0, 20.0)],
    "implicit BPR": [{"factors": 64, "learning_rate": lr, "regularization": r, "iterations": it}
                     for lr in (0.003, 0.01, 0.03) for r in (0.01, 0.1) for it in (50, 100, 200)],
    "implicit item-kNN cosine": [{"K": k} for k in (20, 50, 100, 200, 400)],
    "EASE (numpy)": [{"reg": r} for r in (20.0, 50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 2000.0, 5000.0)],
}

Scorer = Callable[[np.ndarray], np.ndarray]  # user rows -> dense scores over the matrix's movies


# ------------------------------------------------------------------------------------------------ the models
def fit_popularity(x: sp.csr_matrix) -> Scorer:
    counts = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
    return lambda rows: np.broadcast_to(counts, (len(rows), len(counts)))


def fit_ease(x: sp.csr_matrix, reg: float) -> Scorer:
    """EASE's scores (B of `mfspark.models.ease.ease_weights`: P = (X^T X + reg I)^-1, B = I - P / diag(P) with
    diag(B) = 0), with P by the Woodbury identity: P = (I - X^T M X) / reg, M = (X X^T + reg I)^-1. Exact, and on
    ml-latest-small (610 users, up to 9,000 movies) it inverts a 610 x 610 matrix instead of a movies x movies one,
    which keeps a lambda grid to seconds where the direct inverse takes minutes on this machine. reg cancels in
    X_u P / diag(P), so both are kept times reg."""
    users_gram = (x @ x.T).toarray().astype(np.float64)
    m = np.linalg.inv(users_gram + reg * np.eye(len(users_gram)))
    mx = np.asarray(x.T @ m).T  # M X (M is symmetric)
    diag = 1.0 - np.asarray(x.multiply(mx).sum(axis=0)).ravel()  # reg * diag(P)

    def scores(rows: np.ndarray) -> np.ndarray:
        xu = x[rows]
        dense = xu.toarray().astype(np.float64)
        xu_p = dense - (xu @ x.T).toarray() @ mx  # reg * X_u P
        return dense - xu_p / diag  # X_u B: X_u (I - P / diag(P)), then + X_u for B's zero diagonal
    return scores


def fit_implicit_als(x: sp.csr_matrix, factors: int, regularization: float, alpha: float) -> Scorer:
    from implicit.cpu.als import AlternatingLeastSquares

    model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                    iterations=ALS_ITERATIONS, num_threads=THREADS, random_state=SEED)
    model.fit(x, show_progress=False)
    return lambda rows: model.user_factors[rows] @ model.item_factors.T


def fit_implicit_bpr(x: sp.csr_matrix, factors: int, learning_rate: float, regularization: float,
                     iterations: int) -> Scorer:
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    # One thread: BPR's threads update the factors without locks (Hogwild), so two threads are not repeatable.
    model = BayesianPersonalizedRanking(factors=factors, learning_rate=learning_rate, regularization=regularization,
                                        iterations=iterations, num_threads=1, random_state=SEED)
    model.fit(x, show_progress=False)
    return lambda rows: model.user_factors[rows] @ model.item_factors.T


def fit_item_knn(x: sp.csr_matrix, K: int) -> Scorer:  # K: implicit's name for the neighbours kept
    from implicit.nearest_neighbours import CosineRecommender
    from implicit.utils import ParameterWarning

    model = CosineRecommender(K=K, num_threads=THREADS)
    with warnings.catch_warnings():  # its own normalisation hands its next step a COO matrix and warns about it
        warnings.simplefilter("ignore", ParameterWarning)
        model.fit(x, show_progress=False)
    return lambda rows: (x[rows] @ model.similarity).toarray()


FITS: dict[str, Callable[..., Scorer]] = {
    "popularity": fit_popularity, "implicit ALS": fit_implicit_als, "implicit BPR": fit_implicit_bpr,
    "implicit item-kNN cosine": fit_item_knn, "EASE (numpy)": fit_ease,
}


# ------------------------------------------------------------------------------------------------ data and lists
def load_ratings(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{path}: no such ratings file (ml-latest-small's ratings.csv)")
    return pd.read_csv(path, dtype={"userId": np.int32, "movieId": np.int32, "rating": np.float64,
                                    "timestamp": np.int64})


class Task:
    """Fit on `fit`, recommend to the users of `held_out` (their `fit` movies excluded), score on `held_out`."""

    def __init__(self, fit: pd.DataFrame, held_out: pd.DataFrame):
        self.fit, self.held_out = fit, held_out
        self.users = np.unique(np.concatenate([fit.userId.to_numpy(), held_out.userId.to_numpy()]))
        self.movies = np.unique(fit.movieId.to_numpy())
        self.seen = self.matrix(-np.inf)

    def matrix(self, min_rating: float) -> sp.csr_matrix:
        """users x fitted movies, a 1 for each fitted rating >= min_rating."""
        kept = self.fit[self.fit.rating >= min_rating]
        rows = np.searchsorted(self.users, kept.userId.to_numpy())
        cols = np.searchsorted(self.movies, kept.movieId.to_numpy())
        return sp.csr_matrix((np.ones(len(kept), dtype=np.float32), (rows, cols)),
                             shape=(len(self.users), len(self.movies)))

    def score(self, scorer: Scorer, x: sp.csr_matrix) -> dict[str, float]:
        """The metrics of the top K of each held-out user: movies seen in `fit` and movies without an interaction
        in `x` (the models know nothing of them, as ours never list them) are never listed."""
        list_users = np.unique(self.held_out.userId.to_numpy())
        rows = np.searchsorted(self.users, list_users)
        scores = np.array(scorer(rows), dtype=np.float64)
        scores[:, np.asarray(x.getnnz(axis=0)) == 0] = -np.inf
        seen = self.seen[rows].tocoo()
        scores[seen.row, seen.col] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :K]  # ties: the smaller movie id first
        lists = np.where(np.isfinite(np.take_along_axis(scores, top, axis=1)), self.movies[top], NO_ITEM)
        h = self.held_out
        return ranking_metrics(list_users, lists, h.userId.to_numpy(), h.movieId.to_numpy(), h.rating.to_numpy(),
                               K, threshold=LIKED)


@dataclass
class Result:
    model: str
    interactions: str
    params: dict
    validation_ndcg: float
    test: dict[str, float]
    fit_s: float


def fit_timed(model: str, x: sp.csr_matrix, params: dict) -> tuple[Scorer, float]:
    started = time.perf_counter()
    scorer = FITS[model](x, **params)
    return scorer, time.perf_counter() - started


def search(model: str, interactions: str, validation: Task, test: Task,
           grid_rows: list[tuple]) -> Result:
    """The grid point with the best validation NDCG@K, refitted on all the training ratings and scored on test."""
    x = validation.matrix(INTERACTIONS[interactions])
    best = None
    for params in GRIDS[model]:
        scorer, fit_s = fit_timed(model, x, params)
        metrics = validation.score(scorer, x)
        grid_rows.append((model, interactions, params, metrics[f"ndcg@{K}"], metrics[f"precision@{K}"], fit_s))
        print(f"validation {model} {interactions} {params}: NDCG@{K} {metrics[f'ndcg@{K}']:.4f} ({fit_s:.1f} s)",
              flush=True)
        if best is None or metrics[f"ndcg@{K}"] > best[1]:
            best = (params, metrics[f"ndcg@{K}"])
    x = test.matrix(INTERACTIONS[interactions])
    scorer, fit_s = fit_timed(model, x, best[0])
    result = Result(model, interactions, best[0], best[1], test.score(scorer, x), fit_s)
    print(f"test {model} {interactions} {best[0]}: {result.test}", flush=True)
    return result


# ------------------------------------------------------------------------------------------------ our runs
def ours(path: str) -> dict:
    """A pipeline run's lists metrics and its label (lists model, parameters, split)."""
    from mfspark.pipeline.layout import MANIFEST, resolve_run, stage_location
    from mfspark.runtime.fs import LocalFileSystem

    fs, given = LocalFileSystem(), Path(path)
    if given.is_file():
        metrics_file, run = given, given.parent.parent
    else:
        run = Path(resolve_run(fs, path))
        metrics_file = Path(stage_location(fs, str(run), "evaluate")) / "metrics.json"
    if not metrics_file.is_file():
        raise InputError(f"{path}: no evaluate/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    if metrics.get("lists") is None:
        raise InputError(f"{metrics_file}: no lists entry")
    manifest_file = run / MANIFEST
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    parameters = manifest.get("parameters", {})
    label, min_rating = lists_label(parameters.get("train_lists", {}), metrics)
    if label is None:
        label = f"ours: {metrics_file} (no manifest: parameters unknown)"
    split = parameters.get("evaluate", {}).get("split", {})
    if split and (split.get("kind"), split.get("test_fraction"), split.get("seed")) != (
            "random", TEST_FRACTION, SPLIT_SEED):
        label += f" (**another split**: {split})"
    stage = manifest.get("stages", {}).get("train_lists", {})
    fit_s = stage.get("seconds") if stage.get("action") == "run" else None
    interactions = "?" if min_rating is None else "liked" if min_rating == LIKED else f"ratings >= {min_rating:g}"
    return {"label": label, "interactions": interactions, "run": str(run), "metrics": metrics["lists"],
            "fit_s": fit_s}


def lists_label(lists_params: dict, metrics: dict) -> tuple[str | None, float | None]:
    """(label, liked threshold) of a run's lists model from its train_lists parameters; with `--lists auto` the
    candidate it chose (evaluate's `lists_candidates`)."""
    kind, how = lists_params.get("model"), ""
    if kind == "auto":
        params = metrics["lists_candidates"]["chosen"]
        kind, how = params["model"], "--lists auto chose "
    else:
        params = lists_params.get("ease" if kind == "ease" else "als")
    if kind == "ease":
        return (f"ours: {how}EASE, reg {params['reg']:g}, liked >= {params['min_rating']:g}, max_items "
                f"{params['max_items']}", params["min_rating"])
    if kind is None:
        return None, None
    return (f"ours: {how}implicit ALS, rank {params['rank']}, reg {params['reg']:g}, alpha {params['alpha']:g}, "
            f"{params['max_iter']} iterations", lists_params.get("min_rating", LIKED))


# ------------------------------------------------------------------------------------------------ the table
def fmt_params(params: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in params.items()) or "-"


def table(results: list[Result], our_runs: list[dict]) -> list[str]:
    best_kind = {}
    for r in results:
        if r.model not in best_kind or r.validation_ndcg > best_kind[r.model][1]:
            best_kind[r.model] = (r.interactions, r.validation_ndcg)
    lines = [f"| model | interactions | parameters (chosen on validation) | validation NDCG@{K} | precision@{K} | "
             f"recall@{K} | NDCG@{K} | MAP@{K} | users | fit s |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        kind = f"**{r.interactions}**" if best_kind[r.model][0] == r.interactions else r.interactions
        m = r.test
        lines.append(f"| {r.model} | {kind} | {fmt_params(r.params)} | {r.validation_ndcg:.4f} | "
                     f"{m[f'precision@{K}']:.4f} | {m[f'recall@{K}']:.4f} | {m[f'ndcg@{K}']:.4f} | "
                     f"{m[f'map@{K}']:.4f} | {m['users']} | {r.fit_s:.1f} |")
    for run in our_runs:
        m = run["metrics"]
        fit = f"{run['fit_s']:.1f} (stage)" if run["fit_s"] is not None else "-"
        lines.append(f"| {run['label']} | {run['interactions']} | run `{run['run']}` | - | {m[f'precision@{K}']:.4f} | "
                     f"{m[f'recall@{K}']:.4f} | {m[f'ndcg@{K}']:.4f} | {m[f'map@{K}']:.4f} | {m['users']} | {fit} |")
    return lines


def grid_table(grid_rows: list[tuple]) -> list[str]:
    lines = [f"| model | interactions | parameters | validation NDCG@{K} | validation precision@{K} | fit s |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {model} | {kind} | {fmt_params(params)} | {ndcg:.4f} | {precision:.4f} | {fit_s:.1f} |"
              for model, kind, params, ndcg, precision, fit_s in grid_rows]
    return lines


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    data_dir = Path(os.environ.get("MFSPARK_DATA_DIR", "data/movielens"))
    parser.add_argument("--ratings", type=Path, default=data_dir / "ml-latest-small" / "ratings.csv",
                        help="ml-latest-small's ratings.csv (default: $MFSPARK_DATA_DIR/ml-latest-small/)")
    parser.add_argument("--models", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    parser.add_argument("--interactions", nargs="+", default=list(INTERACTIONS), choices=list(INTERACTIONS))
    parser.add_argument("--ours", nargs="+", default=[], metavar="RUN",
                        help="pipeline roots, run directories or evaluate/metrics.json files: a row each")
    parser.add_argument("--out", type=Path, help="write the markdown here")
    args = parser.parse_args()
    try:
        our_runs = [ours(path) for path in args.ours]  # checked before the field's minutes of fitting
        ratings = load_ratings(args.ratings)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    import implicit
    from threadpoolctl import threadpool_limits

    started, load_before = time.perf_counter(), os.getloadavg()
    test_mask, validation_mask = split_masks(ratings.userId.to_numpy(), ratings.movieId.to_numpy(), TEST_FRACTION,
                                             seed=SPLIT_SEED, validation_seed=VALIDATION_SEED)
    train = ratings[~test_mask]
    validation = Task(train[~validation_mask[~test_mask]], ratings[validation_mask])
    test = Task(train, ratings[test_mask])
    results, grid_rows = [], []
    # implicit runs its own threads and asks for a single-threaded BLAS; EASE's inverse uses BLAS's two.
    for model in args.models:
        for kind in args.interactions:
            with threadpool_limits(1 if model.startswith("implicit") else THREADS, user_api="blas"):
                results.append(search(model, kind, validation, test, grid_rows))
    seconds, load_after = time.perf_counter() - started, os.getloadavg()
    command = "python benchmarks/bench_ranking.py " + " ".join(sys.argv[1:])
    lines = [
        "# Ranking quality on ml-latest-small: the pipeline's lists against the field", "",
        f"Command: `{command}` ({seconds:.0f} s, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, commit {commit()}, "
        f"load average {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end; `implicit` "
        f"{implicit.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, {THREADS} threads).", "",
        f"Split: the pipeline's default, random {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} by "
        f"`xxhash64({SPLIT_SEED}, user, movie)` ({len(train):,} training, {int(test_mask.sum()):,} test ratings); "
        f"validation carved from training as `mfspark tune` does (seed {VALIDATION_SEED}, "
        f"{len(validation.fit):,} fitted, {len(validation.held_out):,} held out). Lists: top {K} of every test "
        f"user, every training movie excluded; relevant = a test rating >= {LIKED:g}; metrics averaged over the "
        f"users with a relevant test rating, by `mfspark.evaluation.ranking_numpy` (the definitions of the "
        f"pipeline's `ranking_metrics`). Interactions: a 1 for each training rating >= {LIKED:g} (liked) or for "
        f"each training rating (all); in bold the kind with the better validation NDCG@{K}. Each row's parameters "
        f"are the best of its grid on validation NDCG@{K}, refitted on all training ratings and scored once on "
        f"test; fit s = that refit. `implicit` ALS: {ALS_ITERATIONS} iterations, confidence alpha x 1; BPR on one "
        f"thread (repeatable); seed {SEED}. EASE: exact, its inverse by the Woodbury identity through the users' "
        f"Gram matrix (`fit_ease`), so its fit s is not the movie-side inverse ours does. Our rows come from the "
        f"runs' `evaluate/metrics.json` (`lists`); fit s there is the train_lists stage (Spark, with its writes).",
        "",
        *table(results, our_runs), "",
        "## The validation grid", "",
        *grid_table(grid_rows),
    ]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
