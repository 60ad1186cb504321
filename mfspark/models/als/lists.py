"""An ALS model's top-N lists as the `recommend` command and the pipeline's recommend stage write them: the
model's lists for the users it knows well enough, damped-popularity lists (`recommend.lists.fallback_lists`)
for the others."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mfspark.models.bias import BiasModel, BiasParams
from mfspark.recommend.lists import (
    DEFAULT_MIN_RATINGS,
    Candidates,
    UserPlan,
    fallback_lists,
    plan_users,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from mfspark.models.als.estimator import ALSModel
    from mfspark.models.ease import EASEModel
    from mfspark.recommend.topn import BlockSizes


def write_top_n(model: ALSModel | EASEModel, ratings: DataFrame, out_dir: str, n: int,
                min_ratings: int = DEFAULT_MIN_RATINGS,
                users: DataFrame | None = None, candidates: Candidates | None = None,
                sizes: BlockSizes | None = None) -> UserPlan:
    """Write `out_dir/recommendations` (model lists, then the cold-start users' damped-popularity lists) and
    `out_dir/fallback_users`; every movie in `ratings` a user rated is excluded. One function for the
    `recommend` command and the pipeline's recommend stage, so both write the same lists; the model's lists are
    `ALSModel.recommend_for_users`' (its id index included), the lists every evaluation scores."""
    seen = ratings.select("user_id", "movie_id")
    fallback_model = model.baseline or BiasModel.fit(ratings, BiasParams())
    plan = plan_users(model.user_factors, ratings, users, min_ratings)
    model.recommend_for_users(plan.model_users, n, seen, candidates=candidates, sizes=sizes) \
        .write.parquet(f"{out_dir}/recommendations")
    fallback_lists(plan.fallback.select("user_id"), fallback_model.movie_biases, fallback_model.mu, seen, n,
                   fallback_model.user_biases, candidates, sizes).write.mode("append").parquet(
        f"{out_dir}/recommendations")
    plan.fallback.write.parquet(f"{out_dir}/fallback_users")
    return plan
