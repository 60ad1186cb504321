"""The similar-movie measures (genre agreement, co-watch lift) against pandas on tiny data, and the models'
similar_items restricted to some movies and some candidates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mfspark.evaluation.neighbours import most_watched, neighbour_quality
from mfspark.models.ease import EASE, ease_weights
from mfspark.recommend.lists import Candidates

WATCHED = [(1, 10), (1, 20), (1, 30), (2, 10), (2, 20), (3, 10), (3, 40), (4, 30), (4, 40), (5, 10), (5, 20),
           (5, 20)]  # user 5 watched 20 twice: counts once
GENRES = {10: ["Comedy", "Drama"], 20: ["Comedy"], 30: ["Horror"], 40: ["Drama", "Horror"], 50: []}
PAIRS = [(10, 20), (10, 30), (20, 40), (30, 40), (10, 50)]


def expected_quality(pairs, watched, genres) -> dict:
    """The definitions, written out: P(both) / (P(a) P(b)) per pair over the users, and shared genres."""
    frame = pd.DataFrame(watched, columns=["user_id", "movie_id"]).drop_duplicates()
    users = frame.user_id.nunique()
    by_movie = frame.groupby("movie_id").user_id.apply(set).to_dict()
    lifts, agree = [], []
    for a, b in pairs:
        who_a, who_b = by_movie.get(a, set()), by_movie.get(b, set())
        p_a, p_b, p_ab = len(who_a) / users, len(who_b) / users, len(who_a & who_b) / users
        lifts.append(p_ab / (p_a * p_b) if p_a and p_b else 0.0)
        agree.append(bool(set(genres.get(a, [])) & set(genres.get(b, []))))
    return {"genre_agreement": float(np.mean(agree)), "lift": float(np.mean(lifts)), "pairs": len(pairs)}


def test_genre_agreement_and_lift_equal_their_definitions(spark):
    pairs = spark.createDataFrame(PAIRS, "movie_id int, similar_movie_id int")
    genres = spark.createDataFrame(list(GENRES.items()), "movie_id int, genres array<string>")
    watched = spark.createDataFrame(WATCHED, "user_id int, movie_id int")
    got = neighbour_quality(pairs, genres, watched)
    assert got == pytest.approx(expected_quality(PAIRS, WATCHED, GENRES))
    # by hand: 10-20 lift 5*3/(4*3) = 1.25, 10-30 5*1/(4*2) = 0.625, 20-40 0, 30-40 5*1/(2*2) = 1.25, 10-50
    # (nobody watched 50) 0; a genre shared by 10-20 (Comedy) and 30-40 (Horror) only
    assert got["lift"] == pytest.approx(3.125 / 5) and got["genre_agreement"] == pytest.approx(2 / 5)


def test_most_watched_counts_distinct_users_ties_by_id(spark):
    watched = spark.createDataFrame(WATCHED, "user_id int, movie_id int")
    assert [r.movie_id for r in most_watched(watched, 3).collect()] == [10, 20, 30]  # 30 and 40 tie at 2 users


def test_similar_items_of_some_movies_among_candidates_equal_numpy(spark):
    """EASE's neighbours of movie i are the largest B_ij; ALS's the largest cosines; both restricted the same way."""
    rng = np.random.default_rng(4)
    x = (rng.random((15, 6)) < 0.5).astype(np.float64)
    x[0] = 1.0
    ids = np.array([3, 4, 7, 8, 12, 15])
    liked = spark.createDataFrame([(int(u), int(ids[i])) for u, i in zip(*np.nonzero(x))], "user_id int, movie_id int")
    model = EASE(reg=2.0).fit(liked)
    weights = ease_weights(x.T @ x, 2.0)
    queries = spark.createDataFrame([(4,), (12,)], "movie_id int")
    allowed = Candidates(allow=spark.createDataFrame([(3,), (7,), (12,), (15,)], "movie_id int"))
    got = {(r.movie_id, r["rank"]): (r.similar_movie_id, r.similarity)
           for r in model.similar_items(2, queries, allowed).collect()}
    assert {movie for movie, _ in got} == {4, 12}
    for movie in (4, 12):
        i = int(np.flatnonzero(ids == movie)[0])
        allowed_columns = [j for j in range(6) if ids[j] in (3, 7, 12, 15) and j != i]
        best = sorted(allowed_columns, key=lambda j: (-weights[i, j], ids[j]))[:2]
        assert [got[(movie, rank)][0] for rank in (1, 2)] == list(ids[best])
        assert [got[(movie, rank)][1] for rank in (1, 2)] == pytest.approx(weights[i, best], abs=1e-5)
