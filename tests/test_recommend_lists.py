"""`mfspark recommend` and the list functions: exclusions, list lengths, biased scores, fold-in, cold start."""

import argparse

import numpy as np
import pytest

from mfspark.commands import recommend as recommend_job
from mfspark.commands.recommend import parse_id_lines, read_ratings_file
from mfspark.errors import InputError
from mfspark.models.als.estimator import ALS, ALSModel
from mfspark.models.als.foldin import fold_in
from mfspark.models.bias import BiasModel, BiasParams
from mfspark.recommend.lists import Baseline, Candidates, fallback_lists, genre_rows, recommend_for_users
from mfspark.recommend.topn import BlockSizes

NUM_USERS, NUM_MOVIES = 12, 9


@pytest.fixture(scope="module")
def ratings_rows():
    rng = np.random.default_rng(5)
    rows = []
    for user in range(1, NUM_USERS + 1):
        for movie in rng.choice(np.arange(1, NUM_MOVIES + 1) * 10, rng.integers(2, 7), replace=False):
            rows.append((user, int(movie), float(rng.integers(1, 11) / 2)))
    return rows


@pytest.fixture(scope="module")
def workspace(spark, ratings_rows, tmp_path_factory):
    """An ingest-like input (ratings, movies) and a `train`-like output with a biased model."""
    root = tmp_path_factory.mktemp("recommend")
    ratings = spark.createDataFrame([(u, m, r, None) for u, m, r in ratings_rows],
                                    "user_id int, movie_id int, rating float, rated_at timestamp")
    ratings.write.parquet(str(root / "ingest" / "ratings"))
    movies = [(m * 10, f"Movie {m}", 1990 + m, ["Drama"] if m % 2 else ["Comedy", "Drama"])
              for m in range(1, NUM_MOVIES + 1)]
    spark.createDataFrame(movies, "movie_id int, title string, year int, genres array<string>") \
        .write.parquet(str(root / "ingest" / "movies"))
    model = ALS(rank=3, max_iter=3, reg=0.1, biases=True, seed=1, num_user_blocks=2, num_item_blocks=2).fit(ratings)
    model.save(str(root / "model" / "factors"))
    return root, ALSModel.load(spark, str(root / "model" / "factors"))


def run_recommend(spark, argv):
    parser = argparse.ArgumentParser()
    recommend_job.add_arguments(parser)
    return recommend_job.run(parser.parse_args(argv), spark)


def model_scores(model):
    """Full biased scores mu + b_u + b_i + x.y as {user: {movie: score}} (tiny model)."""
    users = {r["id"]: np.array(r["features"]) for r in model.user_factors.collect()}
    items = {r["id"]: np.array(r["features"]) for r in model.item_factors.collect()}
    b_u = {r["user_id"]: r["bias"] for r in model.baseline.user_biases.collect()}
    b_i = {r["movie_id"]: r["bias"] for r in model.baseline.movie_biases.collect()}
    return {u: {m: model.baseline.mu + b_u[u] + b_i[m] + float(x @ y) for m, y in items.items()}
            for u, x in users.items()}


def test_cli_lists_exclude_every_rated_movie_and_hold_min_n_candidates(spark, workspace, ratings_rows, capsys):
    root, model = workspace
    out = root / "out"
    result = run_recommend(spark, ["--model", str(root / "model"), "--input", str(root / "ingest"), "--out", str(out),
                                   "--top-n", "4", "--users", "1,2,3,3,999", "--similar", "2", "--audiences",
                                   "--genre-rows", "--user-block-size", "2", "--item-block-size", "3",
                                   "--min-ratings", "1"])
    assert result["users"] == 4 and result["fallback_users"] == 1
    printed = capsys.readouterr().out
    assert "Top 4 for user 1:" in printed and "Movie " in printed and "[" in printed
    recs = spark.read.parquet(str(out / "recommendations")).collect()
    rated = {(u, m) for u, m, _ in ratings_rows}
    assert not {(r["user_id"], r["movie_id"]) for r in recs} & rated
    scores = model_scores(model)
    for user in (1, 2, 3):
        unseen = [m for m in scores[user] if (user, m) not in rated]
        expected = sorted(unseen, key=lambda m: (-scores[user][m], m))[:4]
        got = sorted((r for r in recs if r["user_id"] == user), key=lambda r: r["rank"])
        assert [r["movie_id"] for r in got] == expected
        assert [r["rank"] for r in got] == list(range(1, len(expected) + 1))
        assert [r["score"] for r in got] == pytest.approx([scores[user][m] for m in expected], abs=1e-4)
    assert len([r for r in recs if r["user_id"] == 999]) == 4  # unknown: cold-start list
    fallback = [tuple(r) for r in spark.read.parquet(str(out / "fallback_users")).collect()]
    assert fallback == [(999, "unknown", 0)]
    similar = spark.read.parquet(str(out / "similar_movies")).collect()
    assert all(r["movie_id"] != r["similar_movie_id"] for r in similar)
    assert len(similar) == 2 * NUM_MOVIES
    audiences = spark.read.parquet(str(out / "audiences")).collect()
    assert audiences and not {(r["user_id"], r["movie_id"]) for r in audiences} & rated
    rows = spark.read.parquet(str(out / "genre_rows")).collect()
    assert rows and all(r["movie_id"] % 20 == 0 for r in rows if r["genre"] == "Comedy")


def test_allow_list_block_list_and_user_subset(spark, workspace, ratings_rows):
    _, model = workspace
    seen = spark.createDataFrame([(u, m) for u, m, _ in ratings_rows], "user_id int, movie_id int")
    allow = spark.createDataFrame([(m,) for m in (10, 20, 30, 40)], "movie_id int")
    block = spark.createDataFrame([(20,)], "movie_id int")
    users = spark.createDataFrame([(4,), (4,), (5,)], "user_id int")
    rows = recommend_for_users(model.user_factors, model.item_factors, seen, 10, Baseline.of(model.baseline), users,
                               Candidates(allow, block)).collect()
    rated = {(u, m) for u, m, _ in ratings_rows}
    assert {r["user_id"] for r in rows} == {4, 5}
    for user in (4, 5):
        assert sorted(r["movie_id"] for r in rows if r["user_id"] == user) == \
            [m for m in (10, 30, 40) if (user, m) not in rated]


def test_fold_in_equals_the_users_last_half_step(spark, workspace, ratings_rows):
    """Training's last half-step solved every user against the final item factors, so folding
    an existing user's ratings in must give back that user's factors and bias."""
    _, model = workspace
    user = 3
    folded = fold_in(model.item_factors, [(m, r) for u, m, r in ratings_rows if u == user], model.params.reg,
                     Baseline.of(model.baseline))
    trained = np.array(model.user_factors.where(f"id = {user}").first()["features"])
    np.testing.assert_allclose(folded.factors, trained, atol=1e-5)
    assert folded.bias == pytest.approx(model.baseline.user_biases.where(f"user_id = {user}").first()["bias"])


def test_users_with_fewer_than_min_ratings_get_the_popularity_list_and_are_recorded(spark, workspace,
                                                                                      ratings_rows):
    root, model = workspace
    out = root / "light"
    counts = {u: sum(1 for v, _, _ in ratings_rows if v == u) for u in (1, 2, 3)}
    run_recommend(spark, ["--model", str(root / "model"), "--input", str(root / "ingest"), "--out", str(out),
                          "--top-n", "3", "--users", "1,2,3", "--min-ratings", "4"])
    fallback = {r["user_id"]: (r["reason"], r["ratings"]) for r in spark.read.parquet(str(out / "fallback_users"))
                .collect()}
    assert fallback == {u: ("few_ratings", n) for u, n in counts.items() if n < 4}
    popularity = {m: n for m, n in ((r["movie_id"], r["count"]) for r in model.baseline.movie_biases.collect())}
    recs = spark.read.parquet(str(out / "recommendations")).collect()
    for user in fallback:
        unseen = [m for m in popularity if (user, m) not in {(u, m) for u, m, _ in ratings_rows}]
        expected = sorted(unseen, key=lambda m: (-popularity[m], m))[:3]
        assert [r["movie_id"] for r in sorted((r for r in recs if r["user_id"] == user), key=lambda r: r["rank"])] \
            == expected


def test_fallback_is_damped_so_two_five_star_ratings_do_not_top_the_list(spark):
    rows = [(u, 1, 5.0) for u in (1, 2)]  # movie 1: two five-star ratings
    rows += [(u, 2, 4.5) for u in range(1, 41)]  # movie 2: forty ratings of 4.5
    rows += [(u, 3, 2.0) for u in range(1, 41)]
    ratings = spark.createDataFrame(rows, "user_id int, movie_id int, rating float")
    bias = BiasModel.fit(ratings, BiasParams(lambda_u=5, lambda_i=5))
    users = spark.createDataFrame([(100,)], "user_id int")
    seen = spark.createDataFrame([], "user_id int, movie_id int")
    lists = fallback_lists(users, bias.movie_biases, bias.mu, seen, 3, order="bias")
    ranked = [r["movie_id"] for r in lists.orderBy("rank").collect()]
    assert ranked == [2, 1, 3]


def test_fallback_by_popularity_ranks_by_rating_count_and_reports_the_baseline_prediction(spark):
    rows = [(u, 1, 5.0) for u in (1, 2)] + [(u, 2, 2.0) for u in range(1, 31)] + [(u, 3, 4.0) for u in range(1, 11)]
    ratings = spark.createDataFrame(rows, "user_id int, movie_id int, rating float")
    bias = BiasModel.fit(ratings, BiasParams(lambda_u=5, lambda_i=5))
    users = spark.createDataFrame([(1,), (100,)], "user_id int")
    lists = fallback_lists(users, bias.movie_biases, bias.mu, ratings.where("movie_id = 3"), 3, bias.user_biases)
    got = {(r["user_id"], r["rank"]): (r["movie_id"], r["score"]) for r in lists.collect()}
    b_i = {r["movie_id"]: r["bias"] for r in bias.movie_biases.collect()}
    b_1 = bias.user_biases.where("user_id = 1").first()["bias"]
    assert [got[(100, k)][0] for k in (1, 2, 3)] == [2, 3, 1]  # 30, 10, 2 ratings
    assert [got[(1, k)][0] for k in (1, 2)] == [2, 1] and (1, 3) not in got  # user 1 rated movie 3
    assert got[(100, 1)][1] == pytest.approx(bias.mu + b_i[2], rel=1e-6)  # unknown user: b_u = 0
    assert got[(1, 2)][1] == pytest.approx(bias.mu + b_1 + b_i[1], rel=1e-6)


def test_ratings_file_folds_in_a_new_user_and_prints_titles(spark, workspace, tmp_path, capsys):
    root, _ = workspace
    ratings = tmp_path / "me.csv"
    ratings.write_text("movie_id,rating\n10,5\n30,4.5\n999999,3\n")
    result = run_recommend(spark, ["--model", str(root / "model"), "--input", str(root / "ingest"),
                                   "--ratings-file", str(ratings), "--top-n", "3"])
    assert result["folded_ratings"] == 2
    printed = capsys.readouterr().out
    assert "Top 3 for new user (2 of 3 rated movies used):" in printed
    assert "Movie 1 (1991)" not in printed and "Movie 3 (1993)" not in printed  # rated: excluded


def test_ratings_file_folds_a_new_user_into_an_implicit_model(spark, workspace, ratings_rows, tmp_path, capsys):
    """An implicit-feedback model folds the file's ratings in as observations (confidence 1 + alpha |r|)
    and prints the unrated movies by preference score x . y, best first."""
    root, _ = workspace
    ratings = spark.createDataFrame(ratings_rows, "user_id int, movie_id int, rating float")
    model = ALS(rank=3, max_iter=3, reg=0.1, implicit=True, alpha=2.0, seed=1, num_user_blocks=2,
                num_item_blocks=2).fit(ratings)
    model.save(str(tmp_path / "implicit" / "factors"))
    (tmp_path / "me.csv").write_text("movie_id,rating\n10,5\n30,4.5\n")
    result = run_recommend(spark, ["--model", str(tmp_path / "implicit"), "--input", str(root / "ingest"),
                                   "--ratings-file", str(tmp_path / "me.csv"), "--top-n", "3"])
    assert result == {"folded_ratings": 2, "bias": 0.0}
    x = model.fold_in([(10, 5.0), (30, 4.5)])
    scores = {r["id"]: float(np.dot(x, r["features"])) for r in model.item_factors.collect() if r["id"] not in (10, 30)}
    best = sorted(scores, key=lambda m: (-scores[m], m))[:3]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "Top 3 for new user (2 of 2 rated movies used):"
    assert [line.split(". ", 1)[1].split(" (")[0] for line in printed[1:4]] == [f"Movie {m // 10}" for m in best]
    assert printed[1].endswith(f"score {scores[best[0]]:.3f}")


def test_bad_id_and_ratings_lines_name_file_line_and_value():
    with pytest.raises(InputError, match=r"--users ids.txt:2: expected an id .* got 'x7'"):
        parse_id_lines("5\nx7\n", "ids.txt", "--users")
    with pytest.raises(InputError, match=r"me.csv:3: expected movie_id,rating, got '10,five'"):
        read_ratings_file("movie_id,rating\n1,4\n10,five\n", "me.csv")


def test_similar_movies_share_the_planted_genres_far_above_chance(spark, tmp_path):
    """Planted movie factors are 60% genre centroid (synth.Planted.genre_share): two movies of one
    genre have expected cosine ~0.6, of unrelated genres ~0 +- 0.3 at rank 10. So most of the 5
    nearest movies must share a listed genre; measured 0.82 against 0.33 for random pairs (seed
    3): the test asks for a share above 0.7 and above twice chance."""
    import pyarrow.parquet as pq

    from mfspark.data.synth import generate
    from mfspark.recommend.lists import similar_movies

    generate("ml-1m", tmp_path / "synth", seed=3, scale=0.1, write_truth=True)
    truth = pq.read_table(tmp_path / "synth" / "truth" / "movies.parquet")
    factors = spark.createDataFrame(
        [(int(m), [float(v) for v in f]) for m, f in zip(truth.column("movieId").to_pylist(),
                                                          truth.column("factors").to_pylist())],
        "id int, features array<float>")
    genres = {}
    for line in (tmp_path / "synth" / "movies.dat").read_text(encoding="latin-1").splitlines():
        movie, _, labels = line.split("::")
        genres[int(movie)] = set(labels.split("|"))
    rows = similar_movies(factors, 5).collect()
    assert len(rows) == 5 * len(genres) and all(r["movie_id"] != r["similar_movie_id"] for r in rows)
    share = np.mean([bool(genres[r["movie_id"]] & genres[r["similar_movie_id"]]) for r in rows])
    ids = sorted(genres)
    chance = np.mean([bool(genres[a] & genres[b]) for i, a in enumerate(ids) for b in ids[i + 1:]])
    assert share > 0.7 and share > 2 * chance


@pytest.mark.parametrize("sizes", [BlockSizes(), BlockSizes(queries=4, candidates=7)])
def test_genre_rows_equal_brute_force_top_n_within_each_favourite_genre(spark, sizes):
    """Random small problem: integer factors (real ties), biases in halves (exact in float32), 5 genres,
    a movie in 0-3 of them, users with 0-3 favourite genres (one with fewer than N unseen movies in
    it, one without factors). Each row must be numpy's top N of that genre's unseen movies by
    mu + b_u + b_i + x.y, ties by the smaller id; all rows come from one engine pass."""
    rng = np.random.default_rng(8)
    genres = ["Action", "Comedy", "Drama", "Horror", "Noir"]
    users, movies = np.arange(1, 16), np.arange(1, 41) * 3
    x = rng.integers(-2, 3, (len(users), 3)).astype(float)
    y = rng.integers(-2, 3, (len(movies), 3)).astype(float)
    b_u, b_i = rng.integers(-2, 3, len(users)) / 2, rng.integers(-2, 3, len(movies)) / 2
    movie_genres = [sorted(rng.choice(genres[:4], rng.integers(0, 4), replace=False).tolist()) for _ in movies]
    movie_genres[0] = ["Noir"]  # the only Noir movie
    seen = {(int(u), int(m)) for u in users for m in movies if rng.random() < 0.3}
    favourites = {int(u): rng.choice(genres[:4], rng.integers(0, 4), replace=False).tolist() for u in users}
    favourites[2] = ["Noir", "Drama"]
    favourites[99] = ["Drama"]  # no factors: no rows
    frame = spark.createDataFrame
    user_factors = frame([(int(u), row.tolist()) for u, row in zip(users, x)], "id int, features array<float>")
    item_factors = frame([(int(m), row.tolist()) for m, row in zip(movies, y)], "id int, features array<float>")
    baseline = Baseline(0.25, frame([(int(u), float(b)) for u, b in zip(users, b_u)], "user_id int, bias double"),
                        frame([(int(m), float(b)) for m, b in zip(movies, b_i)], "movie_id int, bias double"))
    movie_frame = frame([(int(m), g) for m, g in zip(movies, movie_genres)], "movie_id int, genres array<string>")
    favourite_frame = frame([(u, g, k + 1) for u, gs in favourites.items() for k, g in enumerate(gs)],
                            "user_id int, genre string, genre_rank int")
    got = genre_rows(user_factors, item_factors, frame(sorted(seen), "user_id int, movie_id int"), movie_frame,
                     favourite_frame, 3, baseline, sizes).collect()
    expected = []
    for u, row, bu in zip(users, x, b_u):
        scores = 0.25 + bu + b_i + y @ row
        for k, genre in enumerate(favourites[int(u)]):
            pool = [j for j, m in enumerate(movies) if genre in movie_genres[j] and (int(u), int(m)) not in seen]
            best = sorted(pool, key=lambda j: (-scores[j], movies[j]))[:3]
            expected += [(int(u), genre, k + 1, rank + 1, int(movies[j]), float(scores[j]))
                         for rank, j in enumerate(best)]
    assert sorted(tuple(r) for r in got) == sorted(expected)
    assert {r["genre"] for r in got if r["user_id"] == 2} >= {"Noir"} and len(expected) > 60


def test_report_user_lists_are_the_engines_lists_by_unclipped_score(spark, workspace, ratings_rows):
    """The report's target-user lists (no --recs) rank the user's unseen movies by mu + b_u + b_i + x.y as the
    engine does (unclipped, ties by smaller id), genre rows within each genre in the order given, with titles."""
    from mfspark.report.analysis import movie_table, user_lists

    root, model = workspace
    ratings = spark.read.parquet(str(root / "ingest" / "ratings"))
    movies = movie_table(spark.read.parquet(str(root / "ingest" / "movies")), ratings)
    user = 2
    top_n, rows = user_lists(model, ratings, movies, user, 4, ["Drama", "Comedy"], 2)
    rated = {m for u, m, _ in ratings_rows if u == user}
    scores = model_scores(model)[user]
    unseen = sorted((m for m in scores if m not in rated), key=lambda m: (-scores[m], m))
    assert [item["movie_id"] for item in top_n] == unseen[:4]
    assert [item["rank"] for item in top_n] == list(range(1, len(top_n) + 1))
    assert [item["score"] for item in top_n] == pytest.approx([scores[m] for m in unseen[:4]], rel=1e-5)
    number = unseen[0] // 10
    assert top_n[0]["title"] == f"Movie {number} ({1990 + number})" and top_n[0]["genres"]
    comedies = [m for m in unseen if (m // 10) % 2 == 0]  # even movie numbers are comedies too
    assert [(r["genre"], r["movie_id"]) for r in rows] == \
        [("Drama", m) for m in unseen[:2]] + [("Comedy", m) for m in comedies[:2]]
