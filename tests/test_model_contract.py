"""The contract of `mfspark.models.base`, one battery run against every model.

A new model joins by adding a `Case`: how to fit it and how numpy predicts a known pair from
the model's own tables; every test below then runs against it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from mfspark.errors import InputError
from mfspark.models.als.estimator import ALS
from mfspark.models.base import COLD_START_STRATEGIES, Model
from mfspark.models.bias import BiasModel, BiasParams

SCHEMA = "user_id int, movie_id int, rating float"
# 6 users x 5 movies, uneven counts, ratings at both ends of the 0.5..5 scale.
RATINGS = [
    (1, 10, 5.0), (1, 11, 4.5), (1, 12, 5.0), (1, 14, 4.0),
    (2, 10, 1.0), (2, 11, 0.5), (2, 13, 2.0),
    (3, 10, 4.0), (3, 12, 3.5), (3, 13, 3.0), (3, 14, 4.5),
    (4, 11, 2.5), (4, 12, 3.0),
    (5, 10, 5.0), (5, 13, 4.0), (5, 14, 5.0),
    (6, 12, 0.5), (6, 14, 1.5),
]
UNKNOWN_USER, UNKNOWN_MOVIE = 99, 98


def table(frame, id_col: str, value_col: str) -> dict:
    return {row[id_col]: row[value_col] for row in frame.collect()}


def bias_tables(biases: BiasModel) -> tuple[float, dict, dict]:
    return biases.mu, table(biases.user_biases, "user_id", "bias"), table(biases.movie_biases, "movie_id", "bias")


def clip(value: float, model) -> float:
    return float(np.clip(value, model.params.min_rating, model.params.max_rating))


def bias_reference(model: BiasModel) -> Callable[[int, int], float]:
    mu, b_u, b_i = bias_tables(model)
    return lambda u, m: clip(mu + b_u[u] + b_i[m], model)


def als_reference(model) -> Callable[[int, int], float]:
    """x_u . y_i (+ mu + b_u + b_i when biased: the learned biases, else the baseline's) in float64 numpy,
    from the model's factor frames."""
    x = {row.id: np.array(row.features, dtype=np.float64) for row in model.user_factors.collect()}
    y = {row.id: np.array(row.features, dtype=np.float64) for row in model.item_factors.collect()}
    mu, b_u, b_i = bias_tables(model.learned_biases if model.params.learned_biases else model.baseline)
    if model.params.biases:
        return lambda u, m: clip(mu + b_u[u] + b_i[m] + float(x[u] @ y[m]), model)
    return lambda u, m: clip(float(x[u] @ y[m]), model)


@dataclass(frozen=True)
class Case:
    name: str
    fit: Callable  # ratings DataFrame -> fitted model
    reference: Callable  # model -> (user, movie) -> expected prediction of a known pair
    biases: Callable  # model -> the BiasModel behind its "baseline" cold start
    any_ids: bool = False  # takes string and out-of-int-range ids (through a dense index)
    learned: Callable | None = None  # model -> the BiasModel behind "learned" (None: the same as "baseline")


CASES = [
    Case("bias", lambda r: BiasModel.fit(r, BiasParams(lambda_u=1.0, lambda_i=2.0, sweeps=2)), bias_reference,
         lambda model: model),
    Case("als", lambda r: ALS(rank=2, max_iter=4, seed=3).fit(r), als_reference, lambda model: model.baseline,
         any_ids=True),
    Case("als-biased", lambda r: ALS(rank=2, max_iter=4, seed=3, biases=True).fit(r), als_reference,
         lambda model: model.baseline, any_ids=True),
    Case("als-learned-biases", lambda r: ALS(rank=2, max_iter=4, seed=3, biases=True, bias_fit="learned",
                                              bias_reg_user=1.0, bias_reg_item=2.0).fit(r),
         als_reference, lambda model: model.baseline, any_ids=True, learned=lambda model: model.learned_biases),
    Case("als-implicit", lambda r: ALS(rank=2, max_iter=4, seed=3, biases=True, bias_fit="learned",
                                        rated_weight=0.5).fit(r),
         als_reference, lambda model: model.baseline, any_ids=True, learned=lambda model: model.learned_biases),
]


@pytest.fixture(scope="module", params=CASES, ids=[case.name for case in CASES])
def fitted(request, spark) -> tuple[Case, Model]:
    case = request.param
    return case, case.fit(spark.createDataFrame(RATINGS, SCHEMA))


@pytest.fixture(scope="module")
def pairs(spark):
    """Every training pair, plus an unknown user, an unknown movie and both unknown."""
    rows = [(u, m) for u, m, _ in RATINGS] + [(UNKNOWN_USER, 12), (3, UNKNOWN_MOVIE), (UNKNOWN_USER, UNKNOWN_MOVIE)]
    return spark.createDataFrame(rows, "user_id int, movie_id int")


def predictions(model: Model, pairs, cold_start: str) -> dict:
    return {(r.user_id, r.movie_id): r.prediction for r in model.predict(pairs, cold_start).collect()}


def is_known(pair) -> bool:
    return UNKNOWN_USER not in pair and UNKNOWN_MOVIE not in pair


def test_is_a_model(fitted):
    _, model = fitted
    assert isinstance(model, Model)


def test_known_pairs_equal_a_numpy_reference(fitted, pairs):
    case, model = fitted
    expected = case.reference(model)
    got = predictions(model, pairs, "baseline")
    for pair in filter(is_known, got):
        assert got[pair] == pytest.approx(expected(*pair), abs=1e-6), pair
    assert max(got.values()) <= 5.0 and min(got.values()) >= 0.5  # clipped to the scale


def test_known_pairs_do_not_depend_on_the_cold_start_strategy(fitted, pairs):
    _, model = fitted
    by_strategy = [{pair: value for pair, value in predictions(model, pairs, strategy).items() if is_known(pair)}
                   for strategy in COLD_START_STRATEGIES]
    assert len(by_strategy[0]) == len(RATINGS)
    assert all(known == by_strategy[0] for known in by_strategy[1:])


def test_unknown_pairs_follow_the_cold_start_rule(fitted, pairs):
    case, model = fitted
    unknown = [(UNKNOWN_USER, 12), (3, UNKNOWN_MOVIE), (UNKNOWN_USER, UNKNOWN_MOVIE)]
    nan = predictions(model, pairs, "nan")
    assert all(math.isnan(nan[pair]) for pair in unknown)
    dropped = predictions(model, pairs, "drop")
    assert sorted(dropped) == sorted((u, m) for u, m, _ in RATINGS)
    for strategy, biases in (("baseline", case.biases), ("learned", case.learned or case.biases)):
        mu, b_u, b_i = bias_tables(biases(model))
        got = predictions(model, pairs, strategy)
        assert got[(UNKNOWN_USER, 12)] == pytest.approx(clip(mu + b_i[12], model), abs=1e-9), strategy
        assert got[(3, UNKNOWN_MOVIE)] == pytest.approx(clip(mu + b_u[3], model), abs=1e-9), strategy
        assert got[(UNKNOWN_USER, UNKNOWN_MOVIE)] == pytest.approx(mu, abs=1e-9), strategy


def test_learned_biases_give_unknown_pairs_other_values_than_the_baseline(fitted, pairs):
    case, model = fitted
    if case.learned is None:
        pytest.skip("no learned biases: 'learned' is 'baseline'")
    baseline, learned = (predictions(model, pairs, strategy) for strategy in ("baseline", "learned"))
    assert abs(baseline[(3, UNKNOWN_MOVIE)] - learned[(3, UNKNOWN_MOVIE)]) > 1e-3


def test_save_and_load_predict_the_same_numbers(fitted, pairs, spark, tmp_path):
    _, model = fitted
    model.save(str(tmp_path / "model"))
    loaded = type(model).load(spark, str(tmp_path / "model"))
    for strategy in ("baseline", "learned", "drop"):
        assert predictions(loaded, pairs, strategy) == predictions(model, pairs, strategy)


def test_an_unknown_cold_start_strategy_is_refused(fitted, pairs):
    from mfspark.errors import ConfigError

    _, model = fitted
    with pytest.raises(ConfigError, match="cold_start must be one of"):
        model.predict(pairs, "zero")


BAD_INPUTS = {  # kind: (schema, rows, the error it must give)
    "empty": (SCHEMA, [], r"the ratings are empty"),
    "null rating": (SCHEMA, [(1, 10, 4.0), (2, 10, None)],
                    r"column 'rating': 1 row with a null rating, e\.g\. \(user_id=2, movie_id=10, rating=null\)"),
    "NaN rating": ("user_id int, movie_id int, rating double", [(1, 10, 4.0), (2, 10, float("nan"))],
                   r"column 'rating': 1 row with a NaN or infinite rating, e\.g\. \(.*rating=NaN\)"),
    "infinite rating": ("user_id int, movie_id int, rating float", [(1, 10, float("inf")), (2, 10, float("-inf"))],
                        r"column 'rating': 2 rows with a NaN or infinite rating, e\.g\. \(.*rating=-?Infinity\)"),
    "fractional id": ("user_id double, movie_id int, rating float", [(1.0, 10, 4.0), (1.5, 10, 3.0)],
                      r"column 'user_id': 1 row with an id that is not a whole number in 1\.\.2147483647, "
                      r"e\.g\. \(user_id=1\.5, movie_id=10, rating=3\.0\)"),
    "long id 2^31": ("user_id int, movie_id long, rating float", [(1, 2**31, 4.0), (1, 10, 3.0)],
                     r"column 'movie_id': 1 row with an id .* e\.g\. \(user_id=1, movie_id=2147483648,"),
    "negative id": (SCHEMA, [(-3, 10, 4.0), (1, 10, 3.0)], r"column 'user_id': 1 row with an id .*user_id=-3,"),
    "zero id": (SCHEMA, [(1, 0, 4.0), (1, 10, 3.0)], r"column 'movie_id': 1 row with an id .*movie_id=0,"),
    "double id 3e9": ("user_id double, movie_id int, rating float", [(3e9, 10, 4.0)],
                      r"column 'user_id': 1 row with an id .*user_id=3\.0E9,"),
    "null id": (SCHEMA, [(None, 10, 4.0)], r"column 'user_id': 1 row with a null id, e\.g\. \(user_id=null,"),
    "string id": ("user_id string, movie_id int, rating float", [("u1", 10, 4.0)],
                  r"column 'user_id' must be numeric, got string \(e\.g\. 'u1'\)"),
}


# Ids a model with `any_ids` indexes instead of refusing (tests/test_als_warm_ids.py).
INDEXED_IDS = {"long id 2^31", "negative id", "zero id", "string id"}
REFUSALS = [(case, kind) for case in CASES for kind in BAD_INPUTS if not (case.any_ids and kind in INDEXED_IDS)]


@pytest.mark.parametrize(("case", "kind"), REFUSALS, ids=[f"{case.name}-{kind}" for case, kind in REFUSALS])
def test_fit_refuses_input_that_would_corrupt_the_model(spark, case, kind):
    schema, rows, message = BAD_INPUTS[kind]
    with pytest.raises(InputError, match=message):
        case.fit(spark.createDataFrame(rows, schema))


# ---------------------------------------------------------------- rating scales that are not MovieLens' (ALSSuite)

def planted(scale: float, offset: float, seed: int = 7, users: int = 30, movies: int = 20, rank: int = 2):
    """Ratings of an exact rank-2 model, mapped to [offset - scale, offset + scale]: every rating is known."""
    rng = np.random.default_rng(seed)
    truth = rng.standard_normal((users, rank)) @ rng.standard_normal((rank, movies))
    truth = offset + scale * truth / np.abs(truth).max()
    return [(u + 1, m + 1, float(truth[u, m])) for u in range(users) for m in range(movies)], truth


def rmse_of(model, spark, rows) -> float:
    scored = model.predict(spark.createDataFrame(rows, SCHEMA)).toPandas()
    return float(np.sqrt(np.mean((scored["prediction"] - scored["rating"]) ** 2)))


@pytest.mark.parametrize("scale, offset", [(2.0, 0.0), (4.5, 5.5)])  # ratings in [-2, 2]; a 1-10 scale
def test_predictions_are_clipped_to_the_training_ratings_observed_range_by_default(spark, scale, offset):
    """The 0.5-5 default cut ratings in [-2, 2] (test RMSE 0.547 where unclipped gave 0.0004) and a 1-10 scale at 5.
    Now a model clips to the range its training ratings span, and keeps it in its params (saved with it)."""
    rows, truth = planted(scale, offset)
    ratings = spark.createDataFrame(rows, SCHEMA)
    model = ALS(rank=3, reg=1e-4, max_iter=8, seed=1).fit(ratings)  # rank 3: the offset needs one more
    unclipped = ALS(rank=3, reg=1e-4, max_iter=8, seed=1, min_rating=None, max_rating=None).fit(ratings)
    low, high = float(np.float32(truth.min())), float(np.float32(truth.max()))
    assert (model.params.min_rating, model.params.max_rating) == pytest.approx((low, high))
    assert rmse_of(unclipped, spark, rows) < 0.01
    assert rmse_of(model, spark, rows) <= rmse_of(unclipped, spark, rows) + 1e-6
    predicted = model.predict(ratings).toPandas()["prediction"]
    assert predicted.min() >= low - 1e-6 and predicted.max() <= high + 1e-6
    assert predicted.min() < 0.5 or predicted.max() > 5.0  # what the old default would have cut
    biases = BiasModel.fit(ratings, BiasParams(sweeps=1))
    assert (biases.params.min_rating, biases.params.max_rating) == pytest.approx((truth.min(), truth.max()))


def test_the_observed_scale_is_saved_and_a_model_saved_before_keeps_its_own(spark, tmp_path):
    import json

    from mfspark.models.als.estimator import ALSModel

    rows, truth = planted(2.0, 0.0)
    model = ALS(rank=2, max_iter=1, seed=1, biases=True, bias_sweeps=1).fit(spark.createDataFrame(rows, SCHEMA))
    model.save(str(tmp_path / "model"))
    loaded = ALSModel.load(spark, str(tmp_path / "model"))
    assert (loaded.params.min_rating, loaded.params.max_rating) == pytest.approx((truth.min(), truth.max()))
    # An older model's metadata holds the 0.5-5 default it was fitted with: loaded, it clips as it did.
    meta_path = tmp_path / "model" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["params"] |= {"min_rating": 0.5, "max_rating": 5.0}
    meta_path.write_text(json.dumps(meta))
    (tmp_path / "model" / ".metadata.json.crc").unlink(missing_ok=True)  # Hadoop's checksum of the old text
    old = ALSModel.load(spark, str(tmp_path / "model"))
    assert old.predict(spark.createDataFrame(rows, SCHEMA)).toPandas()["prediction"].min() == 0.5
