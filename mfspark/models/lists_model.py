"""The lists model: what ranks the top-N lists users receive, fitted on who liked what.

Two kinds: "implicit" (implicit-feedback ALS on the training ratings >= LIKED_MIN_RATING, the ratings as
confidences) and "ease" (`mfspark.models.ease`, on the ratings >= its `min_rating`). One place to fit and load
either, for the pipeline's train_lists stage and for `mfspark tune --lists`, so a tuned choice is the model the
pipeline fits.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from mfspark.models.als.estimator import ALS, ALSModel, ALSParams
from mfspark.models.ease import EASE, EASEModel, EASEParams
from mfspark.runtime.fs import HadoopFileSystem, join

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

LIKED_MIN_RATING = 4.0
LISTS_KINDS = ("implicit", "ease")
# The implicit lists model's defaults: rank 64, reg 0.3, 10 iterations, alpha 0.5. The best on validation (the
# pipeline's split of ml-latest-small, tune's validation carve: NDCG@10 0.194 against 0.179 for the earlier rank 10,
# reg 0.1, alpha 1) of a numpy study of our implicit kernel: docs/accuracy.md, "Ranking quality". Solved by 3
# warm-started conjugate-gradient steps per entity (docs/als.md, "Implicit solvers"): at rank 64 the fit takes less
# than half the exact solver's time (ml-10m shape: 1.12 s against 2.47 s an iteration) for the same lists
# (ml-latest-small, test NDCG@10 0.2994 against 0.2993) and an objective 0.06% higher.
IMPLICIT_LISTS = ALSParams(rank=64, reg=0.3, max_iter=10, implicit=True, alpha=0.5, implicit_solver="cg")


def liked(ratings: DataFrame, min_rating: float = LIKED_MIN_RATING) -> DataFrame:
    """The ratings that count as liked (>= min_rating)."""
    return ratings.where(F.col("rating") >= min_rating)


def fit_lists_model(kind: str, params: ALSParams | EASEParams, ratings: DataFrame) -> ALSModel | EASEModel:
    """The lists model of `kind` fitted on the liked part of `ratings` (user_id, movie_id, rating)."""
    if kind == "ease":
        return EASE(params).fit(liked(ratings, params.min_rating).select("user_id", "movie_id"))
    return ALS(**asdict(params)).fit(liked(ratings))


def save_lists_model(model: ALSModel | EASEModel, stage_dir: str) -> None:
    model.save(join(stage_dir, "ease" if isinstance(model, EASEModel) else "factors"))


def load_model(spark: SparkSession, stage_dir: str) -> ALSModel | EASEModel:
    """The model a pipeline stage wrote in `stage_dir`: EASE (`ease/`) or ALS factors (`factors/`)."""
    ease = join(stage_dir, "ease")  # EASEModel.load checks the format of the metadata it reads
    return EASEModel.load(spark, ease) if HadoopFileSystem(spark).exists(join(ease, "metadata.json")) else \
        ALSModel.load(spark, join(stage_dir, "factors"))
