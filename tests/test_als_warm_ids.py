"""ALS warm start from a previous model, and user/movie ids of any type."""

import numpy as np
import pytest

from mfspark.errors import ConfigError
from mfspark.models.als.estimator import ALS, ALSModel
from mfspark.models.als.kernels import initial_factors

RATINGS_SCHEMA = "user_id int, movie_id int, rating float"
YESTERDAY = [(1, 10, 4.0), (1, 20, 3.0), (2, 10, 5.0), (2, 30, 2.0), (3, 20, 4.5), (3, 30, 1.0)]
# today: user 3 and movie 30 are gone, user 4 and movie 40 are new
TODAY = [(1, 10, 4.0), (1, 20, 3.0), (2, 10, 5.0), (2, 40, 2.0), (4, 20, 4.5), (4, 40, 1.0)]


def factors_by_id(frame):
    return {row.id: np.array(row.features) for row in frame.collect()}


def test_warm_start_begins_at_the_previous_factors_and_seeds_new_ids(spark):
    previous = ALS(rank=3, max_iter=3, seed=4).fit(spark.createDataFrame(YESTERDAY, RATINGS_SCHEMA))
    # zero iterations: the model is the starting point itself
    start = ALS(rank=3, max_iter=0, seed=8, num_user_blocks=2, num_item_blocks=3).fit(
        spark.createDataFrame(TODAY, RATINGS_SCHEMA), initial_model=previous)
    old_users, old_items = factors_by_id(previous.user_factors), factors_by_id(previous.item_factors)
    users, items = factors_by_id(start.user_factors), factors_by_id(start.item_factors)
    assert sorted(users) == [1, 2, 4] and sorted(items) == [10, 20, 40]  # vanished ones dropped
    for u in (1, 2):
        np.testing.assert_array_equal(users[u], old_users[u])
    for i in (10, 20):
        np.testing.assert_array_equal(items[i], old_items[i])
    np.testing.assert_allclose(users[4], initial_factors(np.array([4]), 3, 8)[0], rtol=1e-6)
    np.testing.assert_allclose(items[40], initial_factors(np.array([40]), 3, 9)[0], rtol=1e-6)


def test_warm_start_from_a_converged_model_stays_converged(spark):
    rng = np.random.default_rng(0)
    rows = [(int(u), int(i), float(rng.integers(1, 11) / 2)) for u in range(1, 30) for i in range(1, 20)
            if rng.random() < 0.4]
    ratings = spark.createDataFrame(rows, RATINGS_SCHEMA)
    converged = ALS(rank=3, reg=0.1, max_iter=30, seed=1).fit(ratings)
    warm = ALS(rank=3, reg=0.1, max_iter=1, seed=2).fit(ratings, initial_model=converged)
    cold = ALS(rank=3, reg=0.1, max_iter=1, seed=2).fit(ratings)
    final = converged.history.iterations[-1].objective
    assert 0.99 * final < warm.history.iterations[0].objective <= final
    assert cold.history.iterations[0].objective > 1.05 * final


def test_warm_start_needs_the_same_rank(spark):
    previous = ALS(rank=3, max_iter=1).fit(spark.createDataFrame(YESTERDAY, RATINGS_SCHEMA))
    with pytest.raises(ConfigError, match="rank 3"):
        ALS(rank=4, max_iter=1).fit(spark.createDataFrame(TODAY, RATINGS_SCHEMA), initial_model=previous)


STRING_RATINGS = [("ann", "m-alien", 5.0), ("ann", "m-brazil", 4.0), ("bob", "m-alien", 4.5),
                  ("bob", "m-casablanca", 1.0), ("cy", "m-brazil", 2.0), ("cy", "m-casablanca", 5.0),
                  ("cy", "m-dune", 3.5), ("dee", "m-dune", 4.0), ("dee", "m-alien", 3.0)]


def test_string_ids_fit_predict_and_recommend_as_their_int_numbering(spark):
    """String ids give the model of the same ratings under ints (ids numbered in ascending order), mapped back."""
    users = {u: n + 1 for n, u in enumerate(sorted({r[0] for r in STRING_RATINGS}))}
    movies = {m: n + 1 for n, m in enumerate(sorted({r[1] for r in STRING_RATINGS}))}
    strings = spark.createDataFrame(STRING_RATINGS, "user_id string, movie_id string, rating double")
    ints = spark.createDataFrame([(users[u], movies[m], r) for u, m, r in STRING_RATINGS], RATINGS_SCHEMA)
    params = dict(rank=2, reg=0.1, max_iter=3, seed=3, biases=True)
    model, reference = ALS(**params).fit(strings), ALS(**params).fit(ints)
    got, expected = factors_by_id(model.user_factors), factors_by_id(reference.user_factors)
    assert sorted(got) == sorted(users)
    for name, number in users.items():
        np.testing.assert_allclose(got[name], expected[number], rtol=1e-6)
    pairs = spark.createDataFrame([("ann", "m-dune"), ("zed", "m-dune")], "user_id string, movie_id string")
    predicted = {r.user_id: r.prediction for r in model.predict(pairs).collect()}
    int_pairs = spark.createDataFrame([(users["ann"], movies["m-dune"])], "user_id int, movie_id int")
    assert predicted["ann"] == pytest.approx(reference.predict(int_pairs).first().prediction, rel=1e-6)
    assert predicted["zed"] == pytest.approx(model.baseline.mu + model.baseline.movie_biases.where(
        "movie_id = 'm-dune'").first().bias, rel=1e-6)  # unknown user: the baseline, ids as strings
    seen = strings.select("user_id", "movie_id")
    lists = model.recommend_for_users(None, 2, seen).orderBy("user_id", "rank").collect()
    names = {v: k for k, v in movies.items()}
    expected_lists = reference.recommend_for_users(None, 2, ints.select("user_id", "movie_id")).collect()
    by_user = {name: [(r.rank, names[r.movie_id], pytest.approx(r.score, rel=1e-5))
                      for r in expected_lists if r.user_id == number] for name, number in users.items()}
    assert {u: [(r.rank, r.movie_id, r.score) for r in lists if r.user_id == u] for u in users} == by_user


def test_long_ids_beyond_int_range_are_indexed_and_small_longs_are_not(spark, tmp_path):
    big = 2**40
    rows = [(big + 1, 7, 4.0), (big + 1, 9, 2.0), (big + 2, 7, 5.0), (3, 9, 3.0), (3, 7, 1.0)]
    ratings = spark.createDataFrame(rows, "user_id long, movie_id long, rating float")
    model = ALS(rank=2, max_iter=2, seed=1).fit(ratings)
    assert model.indexes.user is not None and model.indexes.movie is None  # movie ids fit in an int
    assert sorted(factors_by_id(model.user_factors)) == [3, big + 1, big + 2]
    model.save(str(tmp_path / "model"))
    loaded = ALSModel.load(spark, str(tmp_path / "model"))
    pairs = spark.createDataFrame([(big + 2, 9)], "user_id long, movie_id long")
    assert loaded.predict(pairs).first().prediction == pytest.approx(model.predict(pairs).first().prediction)
    lists = loaded.recommend_for_users(spark.createDataFrame([(big + 2,)], "user_id long"), 1,
                                       ratings.select("user_id", "movie_id")).collect()
    assert [(r.user_id, r.movie_id) for r in lists] == [(big + 2, 9)]  # the one movie it has not rated


def test_warm_start_with_string_ids(spark):
    strings = spark.createDataFrame(STRING_RATINGS, "user_id string, movie_id string, rating double")
    previous = ALS(rank=2, max_iter=2, seed=3).fit(strings)
    today = spark.createDataFrame(STRING_RATINGS[1:] + [("eve", "m-alien", 4.0)],
                                  "user_id string, movie_id string, rating double")
    start = ALS(rank=2, max_iter=0, seed=3).fit(today, initial_model=previous)
    old, new = factors_by_id(previous.user_factors), factors_by_id(start.user_factors)
    assert sorted(new) == ["ann", "bob", "cy", "dee", "eve"]
    for name in ("ann", "bob", "cy", "dee"):
        np.testing.assert_array_equal(new[name], old[name])


def test_written_lists_of_an_indexed_model_are_its_recommend_for_users_lists(spark, tmp_path):
    """write_top_n (the recommend command's and the pipeline's lists) goes through ALSModel.recommend_for_users:
    user ids beyond int come back as they went in (the raw factor tables used before overflowed the engine's ints)."""
    from mfspark.models.als.lists import write_top_n

    big = 2**40
    rows = [(big + u, m, float((u * m) % 5 + 1)) for u in range(1, 7) for m in range(1, 9) if (u + m) % 3]
    ratings = spark.createDataFrame(rows, "user_id long, movie_id int, rating float")
    model = ALS(rank=2, max_iter=2, seed=1, biases=True).fit(ratings)
    assert model.indexes.user is not None and model.indexes.movie is None
    counts = write_top_n(model, ratings, str(tmp_path / "lists"), 3, min_ratings=0)
    assert counts.fallback_users == 0 and counts.users == 6 and counts.first_user == big + 1
    expected = model.recommend_for_users(None, 3, ratings.select("user_id", "movie_id"))
    # the schema given: the model's lists keep the long ids
    written = spark.read.schema(expected.schema).parquet(str(tmp_path / "lists" / "recommendations"))
    got = sorted((r.user_id, r.rank, r.movie_id, r.score) for r in written.collect())
    want = sorted((r.user_id, r.rank, r.movie_id, r.score) for r in expected.collect())
    assert [g[:3] for g in got] == [w[:3] for w in want] and {g[0] for g in got} == {big + u for u in range(1, 7)}
    assert [g[3] for g in got] == pytest.approx([w[3] for w in want], rel=1e-6)


def test_a_block_list_of_movie_ids_beyond_int_goes_through_the_index(spark):
    """ALSModel.recommend_for_users(candidates=...): a block-list of movie ids beyond int is mapped through the fit's
    index, so each list is the unblocked one without that movie."""
    from mfspark.recommend.lists import Candidates

    big = 2**40
    rows = [(u, big + m, float((u * m) % 5 + 1)) for u in range(1, 7) for m in range(1, 9) if (u + m) % 3]
    ratings = spark.createDataFrame(rows, "user_id int, movie_id long, rating float")
    model = ALS(rank=2, max_iter=2, seed=1).fit(ratings)
    assert model.indexes.movie is not None
    seen = ratings.select("user_id", "movie_id")
    blocked = lists_by_user(model.recommend_for_users(None, 2, seen, candidates=Candidates(
        block=spark.createDataFrame([(big + 2,)], "movie_id long"))))
    full = lists_by_user(model.recommend_for_users(None, 3, seen))
    assert sorted(blocked) == sorted(full) == list(range(1, 7))
    for user, movies in blocked.items():
        assert movies == [m for m in full[user] if m != big + 2][:2] and len(movies) > 0


def lists_by_user(lists) -> dict:
    """{user_id: [movie_id by rank]} of a (user_id, rank, movie_id, ...) frame, in one collect."""
    by_user: dict = {}
    for row in sorted(lists.collect(), key=lambda r: (r.user_id, r["rank"])):
        by_user.setdefault(row.user_id, []).append(row.movie_id)
    return by_user
