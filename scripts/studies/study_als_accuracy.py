"""Single-node study of the ALS objectives: the Spark fit's own kernels, alternated in one process.

    .venv/bin/python scripts/studies/study_als_accuracy.py --ratings DIR/ratings.csv --out study.md \
        --grid '[{"bias_fit": "baseline", "bias_reg": 5}, {"bias_reg": 1, "implicit_weight": 0.3}]'

The ratings (ratings.csv with a header, ratings.dat `::`, or ml-100k's tab-separated u.data) are split
as `mfspark.evaluation.split.random_split` does (--test-fraction, --seed; the same ratings as the Spark jobs)
and a validation part is carved from training as `mfspark tune` does (--validation-seed).
Every grid point is fitted on the rest of training and scored on validation; the best is refitted on
all of training and scored once on test. Each half-step is the Spark fit's own (`mfspark.models.als.solvers`)
on the whole side (one block), so a point costs seconds: it is for checking objective variants (bias fit, bias
reg, implicit weight, implicit sides) before spending Spark fits on them. Unseen users or movies are scored
with the model's biases (unknown 0).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from study_report import split_line, write_report

from mfspark.evaluation.draws import split_masks
from mfspark.models.als import kernels as K
from mfspark.models.als.inblock import InBlock
from mfspark.models.als.solvers import half_steps


@dataclass(frozen=True)
class Point:
    rank: int = 50
    reg: float = 0.15
    max_iter: int = 15
    bias_fit: str = "learned"  # or "baseline": the damped baseline (2 sweeps), factors on its residuals
    bias_reg: float = 1.0
    implicit_weight: float = 0.0
    implicit_sides: str = "users"  # or "both": items also fit the rated-indicator column with implicit user factors
    scale_reg: bool = True  # False: constant reg on the factors (learned biases), as cmfrec's default
    seed: int = 0
    init: str = "index"  # starting user factors seeded by dense index, or "id": by the user's id, as the Spark fit
    float32: bool = False  # round the rows each half-step receives (and the model) to float32, as Spark ships them


def read_ratings(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        frame = pd.read_csv(path).rename(columns={"userId": "user", "movieId": "movie"})
    else:
        frame = pd.read_csv(path, sep="::" if path.suffix == ".dat" else "\t", engine="python", header=None,
                            names=["user", "movie", "rating", "time"])
    return frame[["user", "movie", "rating"]]


class Problem:
    """Ratings as CSR matrices (users x movies and transposed) over a fixed id space."""

    def __init__(self, users: np.ndarray, movies: np.ndarray, ratings: np.ndarray, shape: tuple[int, int],
                 user_ids: np.ndarray):
        self.user_ids = user_ids  # raw id of each user index
        self.by_user = sp.csr_matrix((ratings, (users, movies)), shape=shape)
        self.by_user.sort_indices()
        self.by_movie = self.by_user.T.tocsr()
        self.by_movie.sort_indices()
        self.user_counts, self.movie_counts = np.diff(self.by_user.indptr), np.diff(self.by_movie.indptr)

    @staticmethod
    def csr(matrix: sp.csr_matrix):
        return matrix.indptr.astype(np.int64), matrix.indices.astype(np.int32), matrix.data.astype(np.float32)

    @staticmethod
    def in_block(matrix: sp.csr_matrix) -> InBlock:
        """The matrix's rows as one in-block whose sources (its columns) all come from one source block."""
        indptr, cols, ratings = Problem.csr(matrix)
        return InBlock(np.arange(matrix.shape[0]), indptr, cols, ratings, np.array([matrix.shape[1]]),
                       np.zeros(1, np.uint64))

    def damped_biases(self, damping: float, sweeps: int = 2):
        """mu and the damped baseline's biases (as `mfspark.models.bias`: b = sum / (n + lambda))."""
        m = self.by_user
        mu, rows = m.data.mean(), np.repeat(np.arange(m.shape[0]), self.user_counts)
        user_bias = np.zeros(m.shape[0])
        for _ in range(sweeps):
            movie_sums = np.bincount(m.indices, m.data - mu - user_bias[rows], m.shape[1])
            movie_bias = movie_sums / (self.movie_counts + damping)
            user_sums = np.bincount(rows, m.data - mu - movie_bias[m.indices], m.shape[0])
            user_bias = user_sums / (self.user_counts + damping)
        return mu, user_bias, movie_bias


def shipped(rows: np.ndarray, p: Point) -> np.ndarray:
    """Rows as the other side receives them: float32 on Spark (`Point.float32`), else as computed."""
    return rows.astype(np.float32).astype(np.float64) if p.float32 else rows


def fit(problem: Problem, p: Point):
    """(mu, user biases, movie biases, user factors, movie factors) after p.max_iter iterations, items first."""
    n_users, n_movies = problem.by_user.shape
    x = K.initial_factors(problem.user_ids if p.init == "id" else np.arange(n_users), p.rank, p.seed)
    if p.bias_fit == "baseline":
        mu, user_bias, movie_bias = problem.damped_biases(p.bias_reg)
        residual = problem.by_user.copy()
        residual.data = residual.data - mu - user_bias[np.repeat(np.arange(n_users), problem.user_counts)] \
            - movie_bias[residual.indices]
        by_movie = residual.T.tocsr()
        by_movie.sort_indices()
        for _ in range(p.max_iter):
            y = shipped(K.solve_block(*Problem.csr(by_movie), x, p.reg, False).factors, p)
            x = shipped(K.solve_block(*Problem.csr(residual), y, p.reg, False).factors, p)
        return mu, user_bias, movie_bias, x, y
    mu = problem.by_user.data.mean()
    # The Spark fit's half-steps, each on one block holding the whole side (`mfspark.models.als.solvers`).
    user_step, item_step = half_steps(p.rank, p.reg, False, True, mu, p.bias_reg, p.bias_reg, p.implicit_weight,
                                      None, p.implicit_sides, p.scale_reg)
    by_user, by_movie = problem.in_block(problem.by_user), problem.in_block(problem.by_movie)
    x, user_gram = user_step.initial(x)
    for _ in range(p.max_iter):
        y, _, item_gram, _, _ = item_step.solve(by_movie, shipped(x, p), user_gram)
        x, _, user_gram, _, _ = user_step.solve(by_user, shipped(y, p), item_gram)
    x, y = shipped(x, p), shipped(y, p)
    return mu, x[:, p.rank], y[:, p.rank], x[:, :p.rank], y[:, :p.rank]


def rmse(problem: Problem, model, users: np.ndarray, movies: np.ndarray, ratings: np.ndarray,
         cold_biases=None) -> tuple[float, float]:
    """(RMSE of every pair, RMSE of the pairs whose user and movie were both seen). Unseen ones get mu and the
    biases known, the model's own or `cold_biases` (mu, user, movie: the Spark model's pre-fitted baseline)."""
    mu, user_bias, movie_bias, x, y = model
    seen_user, seen_movie = problem.user_counts[users] > 0, problem.movie_counts[movies] > 0
    known = mu + user_bias[users] + movie_bias[movies] + np.einsum("ij,ij->i", x[users], y[movies])
    cold_mu, cold_user, cold_movie = cold_biases or (mu, user_bias, movie_bias)
    cold = cold_mu + np.where(seen_user, cold_user[users], 0.0) + np.where(seen_movie, cold_movie[movies], 0.0)
    seen = seen_user & seen_movie
    squared = (np.clip(np.where(seen, known, cold), 0.5, 5.0) - ratings) ** 2
    return float(np.sqrt(squared.mean())), float(np.sqrt(squared[seen].mean()))


def scored(problem: Problem, p: Point, users: np.ndarray, movies: np.ndarray, ratings: np.ndarray) -> dict:
    """RMSE of point p fitted on `problem`: "model" and "baseline" (unseen pairs scored by the model's biases, or by
    the damped baseline as the Spark model does) and "seen" (user and movie seen)."""
    model = fit(problem, p)
    by_model, seen = rmse(problem, model, users, movies, ratings)
    by_baseline, _ = rmse(problem, model, users, movies, ratings, problem.damped_biases(p.bias_reg))
    return {"model": by_model, "baseline": by_baseline, "seen": seen}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="markdown table")
    parser.add_argument("--grid", required=True, help="JSON list of objects with Point fields (the others default)")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--validation-seed", type=int, default=7)
    parser.add_argument("--cold-start", choices=("model", "baseline"), default="model",
                        help="unseen users/movies: the model's biases, or the damped baseline (as the Spark model)")
    parser.add_argument("--test-every-point", action="store_true",
                        help="also refit every point on all of training and score it on test (a diagnostic, e.g. "
                             "the spread over seeds; the choice stays the validation one)")
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", "scripts/studies/study_als_accuracy.py", *given])
    points = [Point(**fields) for fields in json.loads(args.grid)]
    frame = read_ratings(args.ratings)
    users, movies = (frame[c].astype("category").cat.codes.to_numpy() for c in ("user", "movie"))
    ratings, shape = frame["rating"].to_numpy(np.float64), (users.max() + 1, movies.max() + 1)
    test, validation = split_masks(frame["user"].to_numpy(), frame["movie"].to_numpy(), args.test_fraction,
                                   args.seed, args.validation_seed)
    user_ids = frame["user"].astype("category").cat.categories.to_numpy()
    fit_part, train = (Problem(users[keep], movies[keep], ratings[keep], shape, user_ids)
                       for keep in (~test & ~validation, ~test))
    other = {"model": "baseline", "baseline": "model"}[args.cold_start]
    test_header = f" test RMSE | test RMSE seen | test RMSE, unseen by {other} |" if args.test_every_point else ""
    lines = ["| rank | reg | scaled | iters | bias fit | bias reg | implicit w | sides | init, seed | float32 "
             f"| val RMSE | val RMSE seen | val RMSE, unseen by {other} | fit s |{test_header}",
             "| ---: | ---: | --- | ---: | --- | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | ---: |"
             + " ---: | ---: | ---: |" * args.test_every_point]
    scores, tests = [], []
    for point in points:
        started = time.perf_counter()
        scores.append(scored(fit_part, point, users[validation], movies[validation], ratings[validation]))
        fit_s = time.perf_counter() - started
        row = (f"| {point.rank} | {point.reg:g} | {point.scale_reg} | {point.max_iter} | {point.bias_fit} | "
               f"{point.bias_reg:g} | {point.implicit_weight:g} | {point.implicit_sides} | "
               f"{point.init}, {point.seed} | {point.float32} | {scores[-1][args.cold_start]:.4f} | "
               f"{scores[-1]['seen']:.4f} | {scores[-1][other]:.4f} | {fit_s:.1f} |")
        if args.test_every_point:
            tests.append(scored(train, point, users[test], movies[test], ratings[test]))
            row += f" {tests[-1][args.cold_start]:.4f} | {tests[-1]['seen']:.4f} | {tests[-1][other]:.4f} |"
        lines.append(row)
        print(lines[-1], flush=True)
    chosen = int(np.argmin([score[args.cold_start] for score in scores]))
    best = points[chosen]
    on_test = tests[chosen] if tests else scored(train, best, users[test], movies[test], ratings[test])
    return write_report(args.out, command, [
        split_line(len(frame), test, args.seed, validation, args.validation_seed)
        + f" Unseen users/movies scored by: the {args.cold_start}'s biases.", "", *lines, "",
        f"Best on validation: {best}; refitted on all training ratings: **test RMSE {on_test[args.cold_start]:.4f}** "
        f"(seen {on_test['seen']:.4f})."])


if __name__ == "__main__":
    sys.exit(main())
