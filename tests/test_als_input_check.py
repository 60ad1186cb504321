"""ALS checks int-id ratings in its layout's own pass; flagged ratings still get the full check and its error."""

import numpy as np
import pyarrow as pa
import pytest
from pyspark import StorageLevel

from mfspark.errors import InputError
from mfspark.models.als import estimator
from mfspark.models.als.blocks import build_layout, flagged_ratings
from mfspark.models.als.estimator import ALS
from mfspark.models.inputs import checkable_while_packing
from tests.test_model_contract import BAD_INPUTS, INDEXED_IDS, RATINGS, SCHEMA


def test_flagged_ratings_are_nulls_non_finite_ratings_and_ids_below_one():
    users = pa.array([1, None, 0, 4, 5, 6, 7], pa.int32())
    items = pa.array([10, 11, 12, -1, 13, 14, 15], pa.int32())
    ratings = pa.array([4.0, 3.0, 2.0, 1.0, float("nan"), float("-inf"), None], pa.float32())
    assert flagged_ratings(users, items, ratings) == 6  # every row but the first
    assert flagged_ratings(users[:1], items[:1], ratings[:1]) == 0
    assert flagged_ratings(*(pa.array([], pa.int32()),) * 2, pa.array([], pa.float32())) == 0


@pytest.mark.parametrize(("schema", "checkable"), [
    ("user_id int, movie_id int, rating float", True),
    ("user_id int, movie_id int, rating double", True),
    ("user_id int, movie_id int, rating int", True),
    ("user_id long, movie_id int, rating float", False),  # a long beyond 2^31 would wrap in the cast to int
    ("user_id int, movie_id double, rating float", False),  # 1.5 would become 1
    ("user_id string, movie_id int, rating float", False),
    ("user_id int, movie_id int, rating string", False),
    ("user_id int, rating float", False),  # the full check names the missing column
])
def test_only_int_ids_and_numeric_ratings_are_checked_while_packing(spark, schema, checkable):
    assert checkable_while_packing(spark.createDataFrame([], schema)) is checkable


def test_layout_counts_its_ratings_and_the_flagged_ones(spark):
    rows = [(1, 10, 4.0), (2, 10, float("nan")), (0, 11, 3.0), (3, 11, 5.0), (None, 12, 1.0)]
    layout = build_layout(spark.createDataFrame(rows, "user_id int, movie_id int, rating double"), 2, 2,
                          StorageLevel.MEMORY_ONLY)
    try:
        assert (layout.num_ratings, layout.flagged) == (5, 3)
    finally:
        layout.release()


@pytest.fixture
def full_checks(monkeypatch) -> list:
    """The `check_ratings` calls of fits from here on (the checks still run)."""
    calls = []

    def counted(ratings, any_ids=False):
        calls.append(ratings)
        return check(ratings, any_ids)

    check = estimator.check_ratings
    monkeypatch.setattr(estimator, "check_ratings", counted)
    return calls


def factors(frame) -> dict:
    return {row.id: np.array(row.features) for row in frame.collect()}


@pytest.mark.parametrize("implicit", [False, True])
def test_clean_int_ids_need_no_separate_check_and_fit_the_same_factors(spark, full_checks, monkeypatch, implicit):
    ratings = spark.createDataFrame(RATINGS, SCHEMA)
    one_pass = ALS(rank=2, max_iter=3, seed=3, implicit=implicit).fit(ratings)
    assert full_checks == []
    monkeypatch.setattr(estimator, "checkable_while_packing", lambda df: False)  # the check first, as before
    checked_first = ALS(rank=2, max_iter=3, seed=3, implicit=implicit).fit(ratings)
    assert len(full_checks) == 1
    for mine, reference in ((one_pass.user_factors, checked_first.user_factors),
                            (one_pass.item_factors, checked_first.item_factors)):
        a, b = factors(mine), factors(reference)
        assert a.keys() == b.keys() and len(a) > 0
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_int_ids_below_one_flagged_by_the_layout_are_indexed_as_before(spark, full_checks):
    """User ids 0..5: the layout flags user 0, the full check names user_id for an index (1..6, by
    ascending id), and the model equals one fitted on those numbers, with the ids given back."""
    shifted = [(u - 1, m, r) for u, m, r in RATINGS]
    model = ALS(rank=2, max_iter=3, seed=3, implicit=True).fit(spark.createDataFrame(shifted, SCHEMA))
    assert len(full_checks) == 1
    numbered = ALS(rank=2, max_iter=3, seed=3, implicit=True).fit(spark.createDataFrame(RATINGS, SCHEMA))
    mine, reference = factors(model.user_factors), factors(numbered.user_factors)
    assert sorted(mine) == [0, 1, 2, 3, 4, 5]
    for user in mine:
        np.testing.assert_array_equal(mine[user], reference[user + 1])
    assert model.indexes.user is not None and model.indexes.movie is None


REFUSED = [kind for kind in BAD_INPUTS if kind not in INDEXED_IDS]


@pytest.mark.parametrize("kind", REFUSED)
def test_implicit_fit_refuses_bad_input_with_the_full_checks_one_line_error(spark, kind):
    """(Explicit fits: test_model_contract.py.)"""
    schema, rows, message = BAD_INPUTS[kind]
    with pytest.raises(InputError, match=message):
        ALS(rank=2, max_iter=1, implicit=True).fit(spark.createDataFrame(rows, schema))


def test_a_dense_input_behind_a_random_filter_stops_the_fit(spark):
    """Each read of a random filter keeps other rows, but in a dense input every block pair still exchanges the
    same ids, so the id fingerprints agreed and the fit went on with the users solved on one read's ratings and
    the movies on another's. The layout's two reads are now compared whole (count and fingerprint)."""
    import random

    from pyspark.sql import functions as F

    dense = spark.createDataFrame([(u, m, float((u * m) % 5 + 1)) for u in range(1, 41) for m in range(1, 21)],
                                  "user_id int, movie_id int, rating float")
    # SystemRandom: workers forked from one daemon share the `random` module's state, so two reads could agree.
    keep = F.udf(lambda: random.SystemRandom().random() < 0.9, "boolean").asNondeterministic()
    with pytest.raises(InputError, match="two reads of the ratings disagreed .* nondeterministic"):
        ALS(rank=2, max_iter=1, num_user_blocks=2, num_item_blocks=2).fit(dense.where(keep()))
