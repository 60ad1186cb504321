"""Rating-prediction and top-N metrics computed with DataFrame aggregations and windows.

Top-N metrics take recommendations (user_id, movie_id, rank; rank 1 is the best) and the
held-out test ratings; a test rating >= `threshold` is relevant. They average over the users
with at least one relevant test rating (a user without recommendations scores 0 there):

- precision@k = hits in the top k / k (also when fewer than k items were recommended)
- recall@k    = hits in the top k / number of relevant items
- NDCG@k      = sum over hits of 1/log2(rank + 1), divided by the same sum over ranks
                1..min(k, number of relevant items) (binary relevance)
- MAP@k       = sum over hits of (hits up to that rank / rank), divided by min(k, number relevant)
- hit rate@k  = share of users with at least one hit in the top k

These are the definitions of Spark's `RankingMetrics` (`RankingEvaluator`'s precisionAtK,
recallAtK, ndcgAtK, meanAveragePrecisionAtK) when it is given one row per user with at least
one relevant item; Spark averages over whatever rows it gets, scoring users with no relevant
item as 0. Catalog coverage = distinct recommended movies in the top k / catalog size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

    from mfspark.evaluation.split import Split

# recommend(users, n, exclude) -> (user_id, rank, movie_id, score): `Model.recommend_for_users`, or the same over
# any factor tables (see mfspark.recommend.lists.recommend_for_users).
Recommender = Callable[["DataFrame", int, "DataFrame"], "DataFrame"]

DEFAULT_THRESHOLD = 4.0


def rating_metrics(predictions: DataFrame, label_col: str = "rating",
                   prediction_col: str = "prediction") -> dict[str, float]:
    """RMSE, MAE and count over rows with a prediction and a label (one aggregation).

    Rows whose prediction is NaN or null (a cold-start "nan" model's unknown pairs) are left out,
    so one of them cannot turn the whole RMSE into NaN; `excluded` says how many.
    """
    prediction = F.col(prediction_col).cast("double")
    usable = prediction.isNotNull() & ~F.isnan(prediction)
    error = F.when(usable, prediction) - F.col(label_col).cast("double")
    row = predictions.agg(
        F.sqrt(F.avg(error * error)).alias("rmse"), F.avg(F.abs(error)).alias("mae"), F.count(error).alias("count"),
        F.count_if(~usable).alias("excluded"),
    ).first()
    return {"rmse": row["rmse"], "mae": row["mae"], "count": int(row["count"]), "excluded": int(row["excluded"])}


def _ideal_dcg(n_ideal: str) -> Column:
    """sum_{i=1..n} 1/log2(i + 1) for the column n (built-in higher-order functions, no UDF)."""
    ranks = F.sequence(F.lit(1), F.col(n_ideal))
    return F.aggregate(ranks, F.lit(0.0), lambda acc, i: acc + F.lit(1.0) / F.log2(i + 1))


def _sum(values: Column) -> Column:
    return F.aggregate(values, F.lit(0.0), lambda acc, x: acc + x)


def ranking_metrics(recommendations: DataFrame, test: DataFrame, k: int, threshold: float = DEFAULT_THRESHOLD,
                    catalog_size: int | None = None) -> dict[str, float]:
    """precision@k, recall@k, ndcg@k, map@k, hit_rate@k over users with a relevant test rating.

    Adds `coverage@k` when `catalog_size` is given, and `users` (how many users were averaged).

    Each side becomes one row per user (the relevant movies as a set, the top k as a (rank, movie_id)-sorted
    array) and the per-user sums are array functions: two shuffles by user_id that the join reuses, and one
    tiny one for the averages. A join of the pairs, a window and three aggregations cost eight shuffles, each
    its own Spark job, which on a test-sized split was most of the evaluate stage's time.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    relevant = (test.where(F.col("rating") >= threshold).groupBy("user_id")
                .agg(F.collect_set("movie_id").alias("relevant")))
    top = (recommendations.where(F.col("rank") <= k).groupBy("user_id")
           .agg(F.array_sort(F.collect_list(F.struct("rank", "movie_id"))).alias("top")))
    hits = F.filter(F.coalesce("top", F.array()), lambda r: F.array_contains("relevant", r["movie_id"]))
    hit_ranks = F.transform(hits, lambda r: r["rank"].cast("double"))
    per_user = (relevant.join(top, "user_id", "left")
                .select(F.size("relevant").alias("n_relevant"), hit_ranks.alias("hit_ranks"))
                .select("n_relevant", F.size("hit_ranks").alias("hits"),
                        _sum(F.transform("hit_ranks", lambda r: F.lit(1.0) / F.log2(r + 1))).alias("dcg"),
                        # the i-th hit (0-based) at rank r adds (i + 1) / r: the precision at that rank
                        _sum(F.transform("hit_ranks", lambda r, i: (i + 1) / r)).alias("precision_sum"),
                        F.least("n_relevant", F.lit(k)).alias("n_ideal")))
    row = per_user.agg(
        F.count(F.lit(1)).alias("users"),
        F.avg(F.col("hits") / k).alias("precision"),
        F.avg(F.col("hits") / F.col("n_relevant")).alias("recall"),
        F.avg(F.col("dcg") / _ideal_dcg("n_ideal")).alias("ndcg"),
        F.avg(F.col("precision_sum") / F.col("n_ideal")).alias("map"),
        F.avg((F.col("hits") > 0).cast("double")).alias("hit_rate"),
    ).first()
    metrics = {f"{name}@{k}": row[name] for name in ("precision", "recall", "ndcg", "map", "hit_rate")}
    metrics["users"] = int(row["users"])
    if catalog_size is not None:
        metrics[f"coverage@{k}"] = catalog_coverage(recommendations, k, catalog_size)
    return metrics


def catalog_coverage(recommendations: DataFrame, k: int, catalog_size: int) -> float:
    """Distinct movies recommended in anyone's top k / catalog size."""
    if catalog_size < 1:
        raise ValueError("catalog_size must be >= 1")
    distinct = recommendations.where(F.col("rank") <= k).select("movie_id").distinct().count()
    return distinct / catalog_size


def held_out_ranking(recommend: Recommender, split: Split, k: int, threshold: float = DEFAULT_THRESHOLD,
                     catalog: int | None = None, seen: DataFrame | None = None) -> dict:
    """`ranking_metrics` of every test user's top k, that user's training movies excluded; coverage over
    the training catalogue. Callers scoring several models on one split may give what is the same for all:
    `catalog`, its size (`training_catalog(split)`), and `seen`, the training (user_id, movie_id) pairs, e.g.
    written once to Parquet, which the top-N engine then reads in its tasks (see `topn.reads_exclusions_directly`).

    >>> held_out_ranking(model.recommend_for_users, split, 10)["ndcg@10"]  # doctest: +SKIP
    """
    users = split.test.select("user_id").distinct()
    catalog = training_catalog(split) if catalog is None else catalog
    seen = split.train.select("user_id", "movie_id") if seen is None else seen
    lists = recommend(users, k, seen).cache()
    metrics = ranking_metrics(lists, split.test, k, threshold, catalog_size=catalog)
    lists.unpersist()
    return metrics


def training_catalog(split: Split) -> int:
    """How many distinct movies the training part of `split` has: the catalogue coverage is measured against."""
    return split.train.select("movie_id").distinct().count()
