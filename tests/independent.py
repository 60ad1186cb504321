"""Metrics recomputed with pandas/numpy from what a job wrote (factors, bias tables, lists) and the ratings: the
tests compare a job's metrics.json with these, never with another copy of the job's own numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq


def factor_table(path: Path) -> dict[int, np.ndarray]:
    """id -> factor vector of a written factor table (users or items)."""
    return {row["id"]: np.asarray(row["features"], np.float64) for row in pq.read_table(path).to_pylist()}


def predicted_ratings(model: Path, pairs: pd.DataFrame, scale: tuple[float, float]) -> np.ndarray:
    """Each (user_id, movie_id) pair's rating from the model written under MODEL: x_u . y_i, plus mu + b_u + b_i
    when it has a baseline/ (unknown biases 0); mu + b_u + b_i alone when the user or the movie has no factors
    (the default cold start, "baseline"); clipped to SCALE."""
    users, items = factor_table(model / "users"), factor_table(model / "items")
    mu, user_bias, movie_bias = 0.0, {}, {}
    if (model / "baseline").is_dir():
        mu = json.loads((model / "baseline" / "model.json").read_text())["mu"]
        user_bias = {r["user_id"]: r["bias"] for r in pq.read_table(model / "baseline" / "users").to_pylist()}
        movie_bias = {r["movie_id"]: r["bias"] for r in pq.read_table(model / "baseline" / "movies").to_pylist()}
    values = []
    for user, movie in zip(pairs["user_id"], pairs["movie_id"], strict=True):
        value = mu + user_bias.get(user, 0.0) + movie_bias.get(movie, 0.0)
        if user in users and movie in items:
            value += float(users[user] @ items[movie])
        values.append(value)
    return np.clip(np.array(values), *scale)


def rmse(predicted: np.ndarray, actual: pd.Series) -> float:
    return float(np.sqrt(np.mean((predicted - actual.to_numpy(np.float64)) ** 2)))


def precision_at_k(model: Path, train: pd.DataFrame, test: pd.DataFrame, k: int, threshold: float = 4.0) -> float:
    """precision@k of the implicit-feedback model under MODEL: each user's k unrated-in-train movies of highest
    x_u . y_i (ties: lower movie id first), hits among their test ratings >= THRESHOLD, averaged over the users with
    such a rating (a user without factors has no list: 0)."""
    users, items = factor_table(model / "users"), factor_table(model / "items")
    item_ids = np.array(sorted(items))
    matrix = np.array([items[i] for i in item_ids], np.float32)
    relevant = test[test.rating >= threshold].groupby("user_id").movie_id.apply(set)
    rated = train.groupby("user_id").movie_id.apply(set)
    scores = []
    for user, liked in relevant.items():
        if user not in users:
            scores.append(0.0)
            continue
        unseen = ~np.isin(item_ids, list(rated.get(user, set())))
        candidates, values = item_ids[unseen], matrix[unseen] @ users[user].astype(np.float32)
        best = candidates[np.lexsort((candidates, -values))[:k]]
        scores.append(len(set(best.tolist()) & liked) / k)
    return float(np.mean(scores))


def temporal_split(ratings: pd.DataFrame, test_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each user's latest round(test_fraction * n_u) ratings (half up; later: newer rated_at, then higher movie id)
    as test, the rest as train."""
    newest_first = ratings.sort_values(["user_id", "rated_at", "movie_id"], ascending=[True, False, False])
    position = newest_first.groupby("user_id").cumcount()
    n_test = np.floor(newest_first.groupby("user_id").user_id.transform("size") * test_fraction + 0.5)
    in_test = position < n_test
    return newest_first[~in_test], newest_first[in_test]
