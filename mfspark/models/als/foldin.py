"""Fold-in: factors for a user the model was not trained with, from a few (movie, rating) pairs.

Training's last half-step solves every user against the final item factors; fold-in runs
that same half-step for one more user, with the training kernel
(`models.als.kernels.solve_block`: (Y^T Y + reg * n_u * I) x = Y^T r, ALS-WR). With a bias
baseline the user's bias comes first, as the baseline's own user update does
(b_u = sum(r - mu - b_i) / (n_u + lambda_u)), and the factors fit what the baseline leaves.
With biases learned inside ALS the user's [x_u, b_u] are solved jointly by the learned-bias
kernel (`solve_biased_block`), and for the rated-indicator model also against the rated movies'
rated factors and the model's Z^T Z: exactly one more user of the fit's last half-step.
An implicit-feedback model's user solves against Y^T Y of every item as well
(`implicit_kernels.solve_implicit_block`: (Y^T Y + Y^T (C_u - I) Y + reg * n+_u * I) x_u =
Y^T C_u p_u); the model does not keep Y^T Y, so one small job sums it on the executors.
Only the rated movies' factor rows (and that rank x rank Gram) reach the driver.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from mfspark.errors import InputError
from mfspark.models.als.blocks import factor_gram
from mfspark.models.als.implicit_kernels import solve_implicit_block
from mfspark.models.als.kernels import solve_biased_block, solve_block
from mfspark.recommend.lists import Baseline


@dataclass(frozen=True)
class FoldedUser:
    factors: np.ndarray  # (rank,) float32
    bias: float  # b_u (0 without a baseline)
    used: int  # ratings of movies the model knows (the others are ignored)


@dataclass(frozen=True)
class LearnedItems:
    """What a new user's joint [x_u, b_u] solve needs from a model whose biases were learned inside ALS."""

    bias_reg: float  # the user-bias regularisation of the fit
    rated_factors: DataFrame | None = None  # (id, features): the rated-indicator model's z
    rated_gram: np.ndarray | None = None  # Z^T Z over every item
    rated_weight: float = 0.0
    scale_reg: bool = True  # the fit's reg scaling (False: constant reg)


def fold_in(item_factors: DataFrame, ratings: list[tuple[int, float]], reg: float, baseline: Baseline | None = None,
            nonnegative: bool = False, learned: LearnedItems | None = None,
            implicit_alpha: float | None = None) -> FoldedUser:
    """The user's factors (and bias) from `ratings` [(movie_id, rating)], item factors fixed.

    `learned` (with `baseline` = the learned biases): solve factors and bias jointly, as the fit did.
    `implicit_alpha` (an implicit-feedback model, no biases): the ratings are observations of
    strength |r| (confidence 1 + alpha |r|, preference r > 0), solved as the fit's user half-step.
    """
    if not ratings:
        raise InputError("fold-in needs at least one (movie_id, rating)")
    by_movie = dict(ratings)  # a movie rated twice: the last rating counts
    ids = sorted(by_movie)
    known = _rows(item_factors, ids)
    movie_ids = [m for m in ids if m in known]
    if not movie_ids:
        raise InputError(f"none of the {len(ids)} rated movies is known to the model (e.g. movie_id {ids[0]})")
    factors = np.vstack([known[m] for m in movie_ids])
    values = np.array([by_movie[m] for m in movie_ids], np.float64)
    movie_bias = np.zeros(len(movie_ids))
    if baseline is not None:
        biases = {row["movie_id"]: row["bias"] for row in
                  baseline.movie_biases.where(F.col("movie_id").isin(movie_ids)).select("movie_id", "bias").collect()}
        movie_bias = np.array([biases.get(m, 0.0) for m in movie_ids])
    entity = np.array([0, len(movie_ids)]), np.arange(len(movie_ids), dtype=np.int32)
    if learned is not None:
        return _fold_in_learned(entity, factors, values, movie_ids, movie_bias, reg, baseline.mu, learned)
    if implicit_alpha is not None:
        solution = solve_implicit_block(*entity, values.astype(np.float32), factors, factor_gram(item_factors), reg,
                                        implicit_alpha, nonnegative)
        return FoldedUser(solution.factors[0].astype(np.float32), 0.0, len(movie_ids))
    bias = 0.0
    if baseline is not None:
        bias = float(np.sum(values - baseline.mu - movie_bias) / (len(values) + baseline.lambda_u))
        values = values - baseline.mu - bias - movie_bias
    solution = solve_block(*entity, values.astype(np.float32), factors, reg, nonnegative)
    return FoldedUser(solution.factors[0].astype(np.float32), bias, len(movie_ids))


def _rows(frame: DataFrame, ids: list[int]) -> dict[int, np.ndarray]:
    """{id: features} of the rows of an (id, features) frame whose id is in `ids`."""
    rows = frame.where(F.col("id").isin(ids)).select("id", "features").collect()
    return {row["id"]: np.asarray(row["features"], np.float32) for row in rows}


def _fold_in_learned(entity, factors: np.ndarray, values: np.ndarray, movie_ids: list[int], movie_bias: np.ndarray,
                     reg: float, mu: float, learned: LearnedItems) -> FoldedUser:
    """One user of the learned-bias kernel: source rows [y_i, b_i (, z_i)] of the rated movies."""
    rank = factors.shape[1]
    sources = np.hstack([factors, movie_bias[:, None]])
    if learned.rated_factors is not None:
        rated = _rows(learned.rated_factors, movie_ids)
        sources = np.hstack([sources, np.vstack([rated[m] for m in movie_ids])])
    solution = solve_biased_block(*entity, values.astype(np.float32), sources, rank, mu, reg, learned.bias_reg,
                                  learned.rated_weight, learned.rated_gram, scale_reg=learned.scale_reg)
    x = solution.factors[0]
    return FoldedUser(x[:rank].astype(np.float32), float(x[rank]), len(movie_ids))


def rating_pairs(ratings) -> list[tuple[int, float]]:
    """[(movie_id, rating)] from pairs, a pandas DataFrame or a (small) Spark DataFrame with those columns."""
    if isinstance(ratings, list):
        return [(int(m), float(r)) for m, r in ratings]
    if hasattr(ratings, "sparkSession"):
        return [(int(row[0]), float(row[1])) for row in ratings.select("movie_id", "rating").collect()]
    return [(int(m), float(r)) for m, r in zip(ratings["movie_id"], ratings["rating"])]


def folded_frames(spark, user_id: int, folded: FoldedUser, ratings: list[tuple[int, float]],
                  baseline: Baseline | None) -> tuple[DataFrame, DataFrame, Baseline | None]:
    """(user factors, seen pairs, baseline) frames for the folded user, to score with `recommend_for_users`."""
    users = spark.createDataFrame([(user_id, folded.factors.tolist())], "id int, features array<float>")
    seen = spark.createDataFrame([(user_id, int(m)) for m, _ in ratings], "user_id int, movie_id int")
    if baseline is not None:
        user_bias = spark.createDataFrame([(user_id, folded.bias)], "user_id int, bias double")
        baseline = Baseline(baseline.mu, user_bias, baseline.movie_biases, baseline.lambda_u)
    return users, seen, baseline
