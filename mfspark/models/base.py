"""The model protocol: what every fitted rating model offers, as `implicit`'s `RecommenderBase` and
LensKit's scorer components write theirs down.

A model is made by fitting: `BiasModel.fit(ratings, params)` or an estimator, `ALS(**params).fit(ratings)`,
on a ratings DataFrame (user_id, movie_id, rating) checked by `mfspark.models.inputs.validate_ratings`.
Every fitted model then offers:

- `predict(pairs, cold_start=...)`: (user_id, movie_id, ...) rows plus `prediction`;
- `save(path)` / `Model.load(spark, path)`: a round trip that predicts the same numbers;
- `recommend_for_users(users, n, exclude)`: top-N lists, (user_id, rank, movie_id, score), scored by the
  engine over factor tables (`mfspark.recommend`); `BiasModel` and `ALSModel` offer it;
- `similar_items(n)`, (movie_id, rank, similar_movie_id, similarity), and `fold_in(ratings)`, a new user's
  factors: models with item factors (`ALSModel`); the others raise NotImplementedError saying so.

The prediction rule every model follows:

- A *known* pair (the model saw both its user and its movie at fit time) gets the model's score,
  clipped to the model's rating scale (`min_rating`..`max_rating`, fit parameters; None = no clipping).
  By default (`OBSERVED`) each bound is the lowest or highest training rating, found at fit time and
  saved with the model, so ratings in [-2, 2] or on a 1-10 scale are not cut to MovieLens' 0.5-5
  (models saved before keep the bounds they were saved with). The cold-start strategy never changes it.
- An *unknown* pair follows `cold_start`, chosen at prediction time: "nan" (NaN, as MLlib), "drop"
  (the row is removed), "baseline" (mu + the biases of the pre-fitted baseline, unknown ones 0, clipped)
  or "learned" (the same with the biases a model learned inside ALS; a model without them: as
  "baseline"). The bias tables behind "baseline" are fitted with every model and saved with it.
  Which of the two bias tables scores unknown pairs better depends on the model (e.g. on
  ml-latest-small "learned" is better with a constant reg, worse with ALS-WR's), so `mfspark tune`
  chooses it on validation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from mfspark.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from pyspark.sql import Column, DataFrame, SparkSession

    from mfspark.recommend.lists import Candidates

COLD_START_STRATEGIES = ("nan", "drop", "baseline", "learned")
# The API's and the CLI's default (`train --cold-start`, `predict(pairs)`): every test rating gets a number.
DEFAULT_COLD_START = "baseline"


def check_cold_start(strategy: str) -> str:
    if strategy not in COLD_START_STRATEGIES:
        raise ConfigError(f"cold_start must be one of {COLD_START_STRATEGIES}, got '{strategy}'")
    return strategy


# A rating-scale bound that `fit` replaces by the lowest (min_rating) or highest (max_rating) training rating.
OBSERVED = "observed"


def check_scale(min_rating: float | str | None, max_rating: float | str | None) -> None:
    for name, bound in (("min_rating", min_rating), ("max_rating", max_rating)):
        if not (bound is None or bound == OBSERVED or isinstance(bound, (int, float))):
            raise ConfigError(f"{name} must be a number, '{OBSERVED}' or None (no clipping), got {bound!r}")
    if all(isinstance(b, (int, float)) for b in (min_rating, max_rating)) and min_rating > max_rating:
        raise ConfigError(f"min_rating {min_rating} is above max_rating {max_rating}")


def resolve_scale(min_rating: float | str | None, max_rating: float | str | None,
                  observed: tuple[float, float] | None) -> tuple[float | None, float | None]:
    """The bounds with OBSERVED replaced by the observed (lowest, highest) training rating."""
    low, high = observed if observed is not None else (None, None)
    return (low if min_rating == OBSERVED else min_rating), (high if max_rating == OBSERVED else max_rating)


def clip_to_scale(value: Column, min_rating: float | None, max_rating: float | None) -> Column:
    """value clipped to [min_rating, max_rating]; a None bound does not clip."""
    if OBSERVED in (min_rating, max_rating):
        raise ValueError(f"the rating scale ({min_rating}, {max_rating}) is resolved by fit: predict with a fitted "
                         "model's parameters")
    if min_rating is not None:
        value = F.greatest(value, F.lit(float(min_rating)))
    if max_rating is not None:
        value = F.least(value, F.lit(float(max_rating)))
    return value


def with_cold_start(scored: DataFrame, known: Column, score: Column, fallback: Column | None, strategy: str,
                    prediction_col: str = "prediction") -> DataFrame:
    """Add `prediction_col`: `score` for known pairs, the cold-start strategy's value for the others.

    `fallback` is the value of the model's "baseline" or "learned" biases (the model picks them). `score` and
    `fallback` come clipped: NaN sorts above every number in Spark, so clipping after the NaN is in would turn
    it into max_rating.
    """
    check_cold_start(strategy)
    if strategy == "drop":
        scored, prediction = scored.where(known), score
    elif strategy == "nan":
        prediction = F.when(known, score).otherwise(F.lit(float("nan")))
    else:
        if fallback is None:
            raise ConfigError("this model has no bias tables (saved by an older mfspark): "
                              "predict with cold_start='nan' or 'drop', or refit it")
        prediction = F.when(known, score).otherwise(fallback)
    return scored.withColumn(prediction_col, prediction.cast("double"))


class Model(ABC):
    """A fitted rating model: predict, save/load, top-N lists, and (models with item factors) similar items and
    fold-in."""

    @abstractmethod
    def predict(self, pairs: DataFrame, cold_start: str = DEFAULT_COLD_START) -> DataFrame:
        """pairs' columns plus `prediction` (see the module docstring for known and unknown pairs)."""

    @abstractmethod
    def save(self, path: str) -> None:
        """Write the model under `path` (overwritten); `load` reads it back."""

    @classmethod
    @abstractmethod
    def load(cls, spark: SparkSession, path: str) -> Model:
        """The model `save` wrote under `path`."""

    def recommend_for_users(self, users: DataFrame | None, n: int, exclude: DataFrame | None = None) -> DataFrame:
        """Each user's (all known users when None) n best movies: (user_id, rank, movie_id, score),
        leaving out the (user_id, movie_id) pairs in `exclude` (e.g. what they already rated)."""
        raise self._not_offered("recommend_for_users")

    def similar_items(self, n: int, movies: DataFrame | None = None,
                      candidates: Candidates | None = None) -> DataFrame:
        """Each movie's n most similar movies: (movie_id, rank, similar_movie_id, similarity); `movies` (movie_id):
        only these movies' neighbours; `candidates` (`recommend.lists.Candidates`): who may be a neighbour."""
        raise self._not_offered("similar_items")

    def fold_in(self, ratings: pd.DataFrame | DataFrame) -> np.ndarray:
        """The user vector a new user's (movie_id, rating) rows give, without refitting the model."""
        raise self._not_offered("fold_in")

    def _not_offered(self, slot: str) -> NotImplementedError:
        return NotImplementedError(f"{type(self).__name__} does not offer {slot}: it needs a model with item "
                                   "factors (e.g. ALSModel)")
