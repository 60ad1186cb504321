"""`ranking_metrics` of `mfspark.evaluation.metrics` in numpy, without Spark: single-node benchmarks (other
libraries' models, scored in one process) measure their lists by the same definitions as the pipeline's.

Same definitions (see that module): averaged over the users with at least one relevant test rating (>= threshold;
duplicate pairs count once); a user without a list scores 0; precision = hits in the top k / k, recall = hits /
relevant, NDCG = DCG over the hits / the ideal DCG of min(k, relevant) hits, MAP = sum over hits of (hits so far /
rank) / min(k, relevant), hit rate = share of users with a hit.
"""

from __future__ import annotations

import numpy as np

NO_ITEM = -1  # pads a list shorter than k


def _pair_keys(users: np.ndarray, movies: np.ndarray) -> np.ndarray:
    """One int64 per (user, movie) of int32 ids (user in the high half)."""
    return (users.astype(np.int64) << 32) | (movies.astype(np.int64) & 0xFFFFFFFF)


def ranking_metrics(list_users: np.ndarray, lists: np.ndarray, test_users: np.ndarray, test_movies: np.ndarray,
                    test_ratings: np.ndarray, k: int, threshold: float = 4.0) -> dict[str, float]:
    """precision@k, recall@k, ndcg@k, map@k, hit_rate@k and `users` (how many were averaged).

    `lists[i]` is the ranked movie ids of user `list_users[i]` (best first, padded with NO_ITEM; columns beyond k
    are ignored); the test ratings are three parallel arrays.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    relevant = test_ratings >= threshold
    relevant_keys = np.unique(_pair_keys(test_users[relevant], test_movies[relevant]))
    users, n_relevant = np.unique(relevant_keys >> 32, return_counts=True)
    top = np.full((len(users), k), NO_ITEM, dtype=np.int64)
    order = np.argsort(list_users, kind="stable")
    found = np.searchsorted(list_users[order], users)
    has_list = found < len(list_users)
    has_list[has_list] = list_users[order[found[has_list]]] == users[has_list]
    width = min(k, lists.shape[1])
    top[has_list, :width] = lists[order[found[has_list]], :width]
    hits = (top != NO_ITEM) & np.isin(_pair_keys(np.repeat(users, k).reshape(-1, k), top), relevant_keys)
    ranks = np.arange(1, k + 1)
    discount = 1.0 / np.log2(ranks + 1)
    n_ideal = np.minimum(n_relevant, k)
    per_user_hits = hits.sum(axis=1)
    dcg = (hits * discount).sum(axis=1)
    precision_sum = (np.cumsum(hits, axis=1) * hits / ranks).sum(axis=1)
    return {f"precision@{k}": float(np.mean(per_user_hits / k)),
            f"recall@{k}": float(np.mean(per_user_hits / n_relevant)),
            f"ndcg@{k}": float(np.mean(dcg / np.cumsum(discount)[n_ideal - 1])),
            f"map@{k}": float(np.mean(precision_sum / n_ideal)),
            f"hit_rate@{k}": float(np.mean(per_user_hits > 0)),
            "users": len(users)}
