"""Bias baseline against numpy references: damped means, sweeps, least squares, cold start, tuning."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from chispa import assert_df_equality

from mfspark.errors import InputError
from mfspark.models.bias import BiasModel, BiasParams, tune

SCHEMA = "user_id int, movie_id int, rating float"
# 5 users x 4 movies, uneven counts so damping matters.
RATINGS = [
    (1, 10, 4.0), (1, 11, 3.5), (1, 12, 5.0), (1, 13, 1.0),
    (2, 10, 5.0), (2, 11, 4.5),
    (3, 10, 2.0), (3, 12, 3.0), (3, 13, 0.5),
    (4, 11, 4.0),
    (5, 10, 3.0), (5, 12, 4.5), (5, 13, 2.5),
]


@pytest.fixture(scope="module")
def ratings(spark):
    return spark.createDataFrame(RATINGS, SCHEMA)


def frame() -> pd.DataFrame:
    return pd.DataFrame(RATINGS, columns=["user_id", "movie_id", "rating"])


def alternating_reference(lambda_u: float, lambda_i: float, sweeps: int) -> tuple[float, dict, dict]:
    """The same movie-then-user damped-mean sweeps with pandas groupby."""
    df = frame()
    mu = df["rating"].mean()
    df["r"] = df["rating"] - mu
    b_u = pd.Series(0.0, index=sorted(df["user_id"].unique()))
    for _ in range(sweeps):
        movie = (df["r"] - df["user_id"].map(b_u)).groupby(df["movie_id"]).agg(["sum", "count"])
        b_i = movie["sum"] / (movie["count"] + lambda_i)
        user = (df["r"] - df["movie_id"].map(b_i)).groupby(df["user_id"]).agg(["sum", "count"])
        b_u = user["sum"] / (user["count"] + lambda_u)
    return mu, b_u.to_dict(), b_i.to_dict()


def least_squares_reference(lambda_u: float, lambda_i: float) -> tuple[dict, dict]:
    """Solve the regularised normal equations densely: (X'X + diag(lambda)) b = X'(r - mu)."""
    df = frame()
    users, movies = sorted(df["user_id"].unique()), sorted(df["movie_id"].unique())
    x = np.zeros((len(df), len(users) + len(movies)))
    x[np.arange(len(df)), df["user_id"].map({u: j for j, u in enumerate(users)})] = 1.0
    x[np.arange(len(df)), len(users) + df["movie_id"].map({m: j for j, m in enumerate(movies)})] = 1.0
    penalty = np.diag([lambda_u] * len(users) + [lambda_i] * len(movies))
    b = np.linalg.solve(x.T @ x + penalty, x.T @ (df["rating"].to_numpy() - df["rating"].mean()))
    return dict(zip(users, b[: len(users)], strict=True)), dict(zip(movies, b[len(users):], strict=True))


def as_dict(biases, id_col: str) -> dict:
    return {row[id_col]: row["bias"] for row in biases.collect()}


def assert_close(actual: dict, expected: dict, tol: float) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=tol), key


def test_one_sweep_gives_damped_means(ratings):
    model = BiasModel.fit(ratings, BiasParams(lambda_u=3.0, lambda_i=2.0, sweeps=1))
    mu, b_u, b_i = alternating_reference(3.0, 2.0, 1)
    assert model.mu == pytest.approx(mu, abs=1e-12)
    assert_close(as_dict(model.user_biases, "user_id"), b_u, 1e-9)
    assert_close(as_dict(model.movie_biases, "movie_id"), b_i, 1e-9)
    counts = {row["movie_id"]: row["count"] for row in model.movie_biases.collect()}
    assert counts == {10: 4, 11: 3, 12: 3, 13: 3}


def test_sweeps_match_reference_and_converge_to_least_squares(ratings):
    model = BiasModel.fit(ratings, BiasParams(lambda_u=2.0, lambda_i=4.0, sweeps=12))
    _, b_u, b_i = alternating_reference(2.0, 4.0, 12)
    assert_close(as_dict(model.user_biases, "user_id"), b_u, 1e-9)
    ls_u, ls_i = least_squares_reference(2.0, 4.0)
    assert_close(as_dict(model.user_biases, "user_id"), ls_u, 1e-6)
    assert_close(as_dict(model.movie_biases, "movie_id"), ls_i, 1e-6)
    # One sweep is measurably further from the optimum: the extra sweeps do the work.
    _, one_u, _ = alternating_reference(2.0, 4.0, 1)
    assert max(abs(one_u[u] - ls_u[u]) for u in ls_u) > 1e-3


def test_lineage_does_not_grow_with_sweeps(ratings):
    def plan_shape(sweeps: int) -> str:
        model = BiasModel.fit(ratings, BiasParams(sweeps=sweeps))
        # Expression and RDD ids differ between fits (and in digit count): compare the plan without them.
        return re.sub(r"[#\[]\d+|\d+\]", "", model.user_biases._jdf.queryExecution().logical().toString())

    assert plan_shape(6) == plan_shape(2)


def test_predict_cold_start_and_clipping(spark, ratings):
    model = BiasModel.fit(ratings, BiasParams(lambda_u=0.0, lambda_i=0.0, sweeps=1, min_rating=1.0, max_rating=5.0))
    mu, b_u, b_i = alternating_reference(0.0, 0.0, 1)
    pairs = spark.createDataFrame([("a", 1, 10), ("b", 99, 12), ("c", 2, 99), ("d", 99, 98), ("e", 3, 13)],
                                  "tag string, user_id int, movie_id int")
    got = {row["tag"]: row["prediction"] for row in model.predict(pairs).collect()}
    assert model.predict(pairs).columns == ["tag", "user_id", "movie_id", "prediction"]
    assert got["a"] == pytest.approx(min(5.0, max(1.0, mu + b_u[1] + b_i[10])), abs=1e-9)
    assert got["b"] == pytest.approx(mu + b_i[12], abs=1e-9)  # unknown user: b_u = 0
    assert got["c"] == pytest.approx(min(5.0, mu + b_u[2]), abs=1e-9)  # unknown movie: b_i = 0
    assert got["d"] == pytest.approx(mu, abs=1e-9)
    assert mu + b_u[3] + b_i[13] < 1.0 and got["e"] == 1.0  # clipped to the scale


def test_residuals_are_rating_minus_unclipped_baseline(spark, ratings):
    model = BiasModel.fit(ratings, BiasParams(lambda_u=1.0, lambda_i=1.0, sweeps=3))
    mu, b_u, b_i = alternating_reference(1.0, 1.0, 3)
    got = model.residuals(ratings, residual_col="res").collect()
    assert len(got) == len(RATINGS)
    for row in got:
        assert row["res"] == pytest.approx(row["rating"] - mu - b_u[row["user_id"]] - b_i[row["movie_id"]], abs=1e-9)


def test_save_and_load_round_trip(spark, ratings, tmp_path):
    model = BiasModel.fit(ratings, BiasParams(lambda_u=1.5, lambda_i=2.5, sweeps=2))
    model.save(str(tmp_path / "biases"))
    loaded = BiasModel.load(spark, str(tmp_path / "biases"))
    assert loaded.mu == model.mu and loaded.params == model.params
    assert loaded.user_biases.columns == ["user_id", "bias", "count"]
    assert_df_equality(loaded.movie_biases, model.movie_biases.select("movie_id", "bias", "count"),
                       ignore_row_order=True, ignore_nullable=True)


def test_empty_ratings_is_an_input_error(spark):
    with pytest.raises(InputError, match="empty"):
        BiasModel.fit(spark.createDataFrame([], SCHEMA))


def test_tune_scores_each_grid_point_like_a_separate_fit(spark, ratings):
    validation = spark.createDataFrame([(1, 11, 3.0), (2, 12, 5.0), (3, 11, 1.5), (6, 10, 4.0)], SCHEMA)
    base = BiasParams(sweeps=1)
    chosen, table = tune(ratings, validation, [0.0, 5.0], [1.0, 20.0], base)
    assert len(table) == 4 and table == sorted(table, key=lambda t: t["rmse"])
    for point in table:
        params = BiasParams(point["lambda_u"], point["lambda_i"], sweeps=1)
        predictions = BiasModel.fit(ratings, params).predict(validation).toPandas()
        rmse = np.sqrt(((predictions["prediction"] - predictions["rating"]) ** 2).mean())
        assert point["rmse"] == pytest.approx(rmse, abs=1e-9)
    assert (chosen.lambda_u, chosen.lambda_i) == (table[0]["lambda_u"], table[0]["lambda_i"])
    assert chosen.sweeps == 1


@pytest.mark.parametrize(("params", "said"), [
    (BiasParams(lambda_u=-1.0), r"lambda_u \(--lambda-u\) must be 0 or more, got -1.0"),
    (BiasParams(lambda_i=float("nan")), r"lambda_i \(--lambda-i\) must be 0 or more, got nan"),
    (BiasParams(sweeps=0), r"sweeps \(--sweeps\) must be 1 or more, got 0"),
    (BiasParams(min_rating=5.0, max_rating=1.0), "min_rating 5.0 is above max_rating 1.0"),
])
def test_bias_params_that_would_give_infinite_or_no_biases_are_refused(ratings, params, said):
    """lambda_u = -1 cancels a one-rating user's count (b_u = sum / 0: inf or NaN); zero sweeps fit nothing."""
    from mfspark.errors import ConfigError

    with pytest.raises(ConfigError, match=said):
        BiasModel.fit(ratings, params)
    with pytest.raises(ConfigError, match=said):
        tune(ratings, ratings, [params.lambda_u], [params.lambda_i], params)


def test_baseline_command_refuses_a_negative_damping_before_reading_anything(cli_with_test_session, tmp_path, capsys):
    status = cli_with_test_session(["baseline", "--input", str(tmp_path / "missing"), "--out", str(tmp_path / "out"),
                                    "--lambda-u", "-2"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert "lambda_u (--lambda-u) must be 0 or more, got -2.0" in err


def test_recommend_for_users_ranks_unseen_movies_by_bias_as_a_pandas_sort(spark):
    """The bias model's lists (the top-N engine's, `recommend.lists.fallback_lists` by b_i) against a pandas sort:
    unseen movies by float32 b_i descending, equal b_i by the smaller movie id; score mu + b_u + b_i."""
    rng = np.random.default_rng(7)
    # 30 users x 25 movies, random half-star ratings
    rows = [(int(u), int(m), float(rng.integers(1, 11)) / 2) for u in range(1, 31) for m in range(1, 26)
            if rng.random() < 0.4]
    # movies 26 and 27: the same three five-star ratings, so the same b_i, the largest of all: a tie at the top
    rows += [(u, m, 5.0) for u in (31, 32, 33) for m in (26, 27)]
    ratings = spark.createDataFrame(rows, SCHEMA)
    model = BiasModel.fit(ratings, BiasParams(lambda_u=2.0, lambda_i=3.0, sweeps=2))
    users = spark.createDataFrame([(1,), (2,), (31,), (99,)], "user_id int")
    exclude = ratings.select("user_id", "movie_id")
    got = model.recommend_for_users(users, 5, exclude).toPandas().sort_values(["user_id", "rank"])

    b_i = model.movie_biases.toPandas().set_index("movie_id")["bias"]
    b_u = model.user_biases.toPandas().set_index("user_id")["bias"]
    seen = pd.DataFrame(rows, columns=["user_id", "movie_id", "rating"]).groupby("user_id")["movie_id"].apply(set)
    assert b_i[26] == b_i[27]
    expected = []
    for user in (1, 2, 31, 99):
        unseen = b_i[~b_i.index.isin(seen.get(user, set()))]
        order = pd.DataFrame({"movie_id": unseen.index, "key": unseen.to_numpy().astype(np.float32)}) \
            .sort_values(["key", "movie_id"], ascending=[False, True]).head(5)
        expected += [(user, rank, movie, model.mu + b_u.get(user, 0.0) + b_i[movie])
                     for rank, movie in enumerate(order["movie_id"], start=1)]
    assert [e[2] for e in expected if e[0] == 99][:2] == [26, 27]  # the tie is at the top, smaller id first
    assert [(r.user_id, r.rank, r.movie_id) for r in got.itertuples()] == [e[:3] for e in expected]
    assert got["score"].to_numpy() == pytest.approx([e[3] for e in expected], rel=1e-6)
