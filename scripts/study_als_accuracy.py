"""Single-node study of the ALS objectives: the Spark fit's own kernels, alternated in one process.

    .venv/bin/python scripts/study_als_accuracy.py --ratings DIR/ratings.csv --out study.md \
        --grid '[{"bias_fit": "baseline", "bias_reg": 5}, {"bias_reg": 1, "implicit_weight": 0.3}]'

The ratings (ratings.csv with a header, ratings.dat `::`, or ml-100k's tab-separated u.data) are split
as `mfspark.evaluation.split.random_split` does (--test-fraction, --seed; the same ratings as the Spark jobs)
and a validation part is carved from training as `mfspark tune` does (--validation-seed).
Every grid point is fitted on the rest of training and scored on validation; the best is refitted on
all of training and scored once on test. Each half-step is `mfspark.models.als.kernels` on the whole
side (one block), so a point costs seconds: it is for checking objective variants (bias fit, bias
reg, implicit weight, SVD++'s |N(u)|^-a normalisation of the indicator row, `implicit_power`) before
spending Spark fits on them. Unseen users or movies are scored with the model's biases (unknown 0).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from study_report import split_line, write_report

from mfspark.evaluation.draws import split_masks
from mfspark.models.als import kernels as K


@dataclass(frozen=True)
class Point:
    rank: int = 50
    reg: float = 0.15
    max_iter: int = 15
    bias_fit: str = "learned"  # or "baseline": the damped baseline (2 sweeps), factors on its residuals
    bias_reg: float = 1.0
    implicit_weight: float = 0.0
    implicit_power: float = 0.0
    implicit_sides: str = "users"  # or "both": items also fit the rated-indicator column with implicit user factors
    scale_reg: bool = True  # False: constant reg on the factors (learned biases), as cmfrec's default
    seed: int = 0


def read_ratings(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        frame = pd.read_csv(path).rename(columns={"userId": "user", "movieId": "movie"})
    else:
        frame = pd.read_csv(path, sep="::" if path.suffix == ".dat" else "\t", engine="python", header=None,
                            names=["user", "movie", "rating", "time"])
    return frame[["user", "movie", "rating"]]


class Problem:
    """Ratings as CSR matrices (users x movies and transposed) over a fixed id space."""

    def __init__(self, users: np.ndarray, movies: np.ndarray, ratings: np.ndarray, shape: tuple[int, int]):
        self.by_user = sp.csr_matrix((ratings, (users, movies)), shape=shape)
        self.by_user.sort_indices()
        self.by_movie = self.by_user.T.tocsr()
        self.by_movie.sort_indices()
        self.user_counts, self.movie_counts = np.diff(self.by_user.indptr), np.diff(self.by_movie.indptr)

    @staticmethod
    def csr(matrix: sp.csr_matrix):
        return matrix.indptr.astype(np.int64), matrix.indices.astype(np.int32), matrix.data.astype(np.float32)

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


def fit(problem: Problem, p: Point):
    """(mu, user biases, movie biases, user factors, movie factors) after p.max_iter iterations, items first."""
    n_users, n_movies = problem.by_user.shape
    x = K.initial_factors(np.arange(n_users), p.rank, p.seed)
    if p.bias_fit == "baseline":
        mu, user_bias, movie_bias = problem.damped_biases(p.bias_reg)
        residual = problem.by_user.copy()
        residual.data = residual.data - mu - user_bias[np.repeat(np.arange(n_users), problem.user_counts)] \
            - movie_bias[residual.indices]
        by_movie = residual.T.tocsr()
        by_movie.sort_indices()
        for _ in range(p.max_iter):
            y = K.solve_block(*Problem.csr(by_movie), x, p.reg, False).factors
            x = K.solve_block(*Problem.csr(residual), y, p.reg, False).factors
        return mu, user_bias, movie_bias, x, y
    mu = problem.by_user.data.mean()
    x = np.hstack([x, np.zeros((n_users, 1))])
    rated = (problem.by_movie != 0).astype(np.float64)
    scale = np.where(problem.user_counts > 0, np.maximum(problem.user_counts, 1) ** -p.implicit_power, 0.0)
    user_implicit = np.zeros((n_users, p.rank))  # implicit user factors (implicit_sides "both"), 0 before the first
    both = p.implicit_weight > 0 and p.implicit_sides == "both"
    for _ in range(p.max_iter):
        y = K.solve_biased_block(*Problem.csr(problem.by_movie), np.hstack([x, user_implicit]) if both else x, p.rank,
                                 mu, p.reg, p.bias_reg, p.implicit_weight, user_implicit.T @ user_implicit if both else
                                 None, scale_reg=p.scale_reg).factors
        sources, gram = y, None
        if p.implicit_weight > 0:
            factors = x[:, :p.rank]
            z, _ = K.solve_implicit_factors(rated @ (scale[:, None] * factors), problem.movie_counts,
                                            factors.T @ factors, p.implicit_weight, p.reg, p.scale_reg)
            sources, gram = np.hstack([y, z]), z.T @ z
        if both:
            item_factors = y[:, :p.rank]
            user_implicit, _ = K.solve_implicit_factors(rated.T @ item_factors, problem.user_counts,
                                                        item_factors.T @ item_factors, p.implicit_weight, p.reg,
                                                        p.scale_reg)
        x = K.solve_biased_block(*Problem.csr(problem.by_user), sources, p.rank, mu, p.reg, p.bias_reg,
                                 p.implicit_weight, gram, p.implicit_power, p.scale_reg).factors
    return mu, x[:, p.rank], y[:, p.rank], x[:, :p.rank], y[:, :p.rank]


def rmse(problem: Problem, model, users: np.ndarray, movies: np.ndarray, ratings: np.ndarray) -> float:
    mu, user_bias, movie_bias, x, y = model
    seen_user, seen_movie = problem.user_counts[users] > 0, problem.movie_counts[movies] > 0
    known = mu + user_bias[users] + movie_bias[movies] + np.einsum("ij,ij->i", x[users], y[movies])
    cold = mu + np.where(seen_user, user_bias[users], 0.0) + np.where(seen_movie, movie_bias[movies], 0.0)
    predicted = np.clip(np.where(seen_user & seen_movie, known, cold), 0.5, 5.0)
    return float(np.sqrt(np.mean((predicted - ratings) ** 2)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="markdown table")
    parser.add_argument("--grid", required=True, help="JSON list of objects with Point fields (the others default)")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--validation-seed", type=int, default=7)
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", "scripts/study_als_accuracy.py", *given])
    points = [Point(**fields) for fields in json.loads(args.grid)]
    frame = read_ratings(args.ratings)
    users, movies = (frame[c].astype("category").cat.codes.to_numpy() for c in ("user", "movie"))
    ratings, shape = frame["rating"].to_numpy(np.float64), (users.max() + 1, movies.max() + 1)
    test, validation = split_masks(frame["user"].to_numpy(), frame["movie"].to_numpy(), args.test_fraction,
                                   args.seed, args.validation_seed)
    fit_part = Problem(users[~test & ~validation], movies[~test & ~validation], ratings[~test & ~validation], shape)
    lines = ["| rank | reg | scaled | iters | bias fit | bias reg | implicit w | power | sides | val RMSE | fit s |",
             "| ---: | ---: | --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: |"]
    scores = []
    for point in points:
        started = time.perf_counter()
        model = fit(fit_part, point)
        scores.append(rmse(fit_part, model, users[validation], movies[validation], ratings[validation]))
        lines.append(f"| {point.rank} | {point.reg:g} | {point.scale_reg} | {point.max_iter} | {point.bias_fit} | "
                     f"{point.bias_reg:g} | {point.implicit_weight:g} | {point.implicit_power:g} | "
                     f"{point.implicit_sides} | {scores[-1]:.4f} | {time.perf_counter() - started:.1f} |")
        print(lines[-1], flush=True)
    best = points[int(np.argmin(scores))]
    train = Problem(users[~test], movies[~test], ratings[~test], shape)
    test_rmse = rmse(train, fit(train, replace(best)), users[test], movies[test], ratings[test])
    return write_report(args.out, command, [
        split_line(len(frame), test, args.seed, validation, args.validation_seed), "", *lines, "",
        f"Best on validation: {best}; refitted on all training ratings: **test RMSE {test_rmse:.4f}**."])


if __name__ == "__main__":
    sys.exit(main())
