"""An ALS model's top-N lists as the `recommend` command and the pipeline's recommend stage write them: the
model's lists for the users it knows well enough, damped-popularity lists (`recommend.lists.fallback_lists`)
for the others."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import Observation
from pyspark.sql import functions as F

from mfspark.models.bias import BiasModel, BiasParams
from mfspark.recommend.lists import (
    DEFAULT_MIN_RATINGS,
    Candidates,
    cold_start_users,
    fallback_lists,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from mfspark.models.als.estimator import ALSModel
    from mfspark.models.ease import EASEModel
    from mfspark.recommend.topn import BlockSizes


@dataclass(frozen=True)
class WrittenLists:
    """What `write_top_n` wrote, counted by the writes themselves (no second read of the output)."""

    rows: int
    users: int  # users with a list
    fallback_users: int
    first_user: int | None  # the smallest user id with a list


def write_top_n(model: ALSModel | EASEModel, ratings: DataFrame, out_dir: str, n: int,
                min_ratings: int = DEFAULT_MIN_RATINGS,
                users: DataFrame | None = None, candidates: Candidates | None = None,
                sizes: BlockSizes | None = None) -> WrittenLists:
    """Write `out_dir/recommendations` (model lists, the cold-start users' damped-popularity lists instead of
    theirs) and `out_dir/fallback_users`; every movie in `ratings` a user rated is excluded. One function for
    the `recommend` command and the pipeline's recommend stage, so both write the same lists; the model's lists
    are `ALSModel.recommend_for_users`' (its id index included), the lists every evaluation scores.

    Cold-start users are written first (a small table) and read back: without any, which is the usual night,
    the model's lists are written as they come, with the seen pairs still a plain Parquet projection (the
    engine's tasks then read them with pyarrow), and no fallback model is fitted or scored."""
    seen = ratings.select("user_id", "movie_id")
    fallback_path = f"{out_dir}/fallback_users"
    fallback_count = _write_observed(cold_start_users(model.user_factors, ratings, users, min_ratings),
                                     fallback_path, F.count(F.lit(1)).alias("rows"))["rows"]
    lists = model.recommend_for_users(users, n, seen, candidates=candidates, sizes=sizes)
    if fallback_count:
        fallback = ratings.sparkSession.read.parquet(fallback_path).select("user_id")
        lists = lists.join(fallback, "user_id", "left_anti").unionByName(
            _fallback_lists(model, ratings, fallback, seen, n, candidates, sizes))
    written = _write_observed(lists, f"{out_dir}/recommendations", F.count(F.lit(1)).alias("rows"),
                              F.count(F.when(F.col("rank") == 1, True)).alias("users"),
                              F.min("user_id").alias("first_user"))
    return WrittenLists(written["rows"], written["users"], fallback_count, written["first_user"])


def _fallback_lists(model: ALSModel | EASEModel, ratings: DataFrame, users: DataFrame, seen: DataFrame, n: int,
                    candidates: Candidates | None, sizes: BlockSizes | None) -> DataFrame:
    """The cold-start users' lists from the model's bias tables (or a bias model fitted on `ratings`)."""
    fallback_model = model.baseline or BiasModel.fit(ratings, BiasParams())
    return fallback_lists(users, fallback_model.movie_biases, fallback_model.mu, seen, n,
                          fallback_model.user_biases, candidates, sizes)


def _write_observed(frame: DataFrame, path: str, *metrics) -> dict:
    """Write `frame` as Parquet at `path`, returning `metrics` (aggregates over the rows) computed by the write."""
    observation = Observation()
    frame.observe(observation, *metrics).write.parquet(path)
    return observation.get
