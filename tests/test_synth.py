"""`mfspark synth`: counts, formats, determinism and the planted model of small synthetic releases."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from mfspark.commands.main import main
from mfspark.data.synth import SHAPES, _user_activity, generate, planted_signal, sample_movies, scaled_counts
from mfspark.errors import ConfigError

# Small scales that keep each release under 1M ratings (a few seconds each).
SCALES = {"ml-1m": 0.1, "ml-10m": 0.05, "ml-25m": 0.02, "ml-32m": 0.03}


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    for shape, scale in SCALES.items():
        generate(shape, root / shape, seed=7, scale=scale, write_truth=True)
    return {shape: root / shape for shape in SCALES}


def read_ratings(directory: Path) -> pd.DataFrame:
    """Ratings as (userId, movieId, rating, timestamp), from either release format."""
    if (directory / "ratings.csv").exists():
        return pd.read_csv(directory / "ratings.csv", dtype={"rating": str})
    frame = pd.read_csv(directory / "ratings.dat", sep=":", header=None, dtype={4: str})
    assert frame[[1, 3, 5]].isna().all().all(), "fields must be separated by '::'"
    return frame[[0, 2, 4, 6]].set_axis(["userId", "movieId", "rating", "timestamp"], axis=1)


def read_movies(directory: Path) -> pd.DataFrame:
    if (directory / "movies.csv").exists():
        return pd.read_csv(directory / "movies.csv", keep_default_na=False)
    text = (directory / "movies.dat").read_text(encoding=SHAPES[directory.name].encoding)
    rows = [line.split("::") for line in text.splitlines()]
    return pd.DataFrame(rows, columns=["movieId", "title", "genres"]).astype({"movieId": int})


@pytest.mark.parametrize("shape", SCALES)
def test_counts_are_the_scaled_release_counts(releases, shape):
    ratings, movies = read_ratings(releases[shape]), read_movies(releases[shape])
    spec, scale = SHAPES[shape], SCALES[shape]
    assert len(ratings) == round(spec.ratings * scale)
    assert ratings.userId.nunique() == round(spec.users * scale)
    assert sorted(ratings.userId.unique()) == list(range(1, round(spec.users * scale) + 1))
    assert len(movies) == round(spec.movies * scale)
    assert set(ratings.movieId) == set(movies.movieId)  # every listed movie is rated
    summary = json.loads((releases[shape] / "synth.json").read_text())
    assert summary["counts"]["ratings"] == len(ratings)


@pytest.mark.parametrize("shape", SCALES)
def test_users_have_20_ratings_and_no_pair_repeats(releases, shape):
    ratings = read_ratings(releases[shape])
    assert ratings.groupby("userId").size().min() >= 20
    assert not ratings.duplicated(["userId", "movieId"]).any()


@pytest.mark.parametrize(("shape", "allowed"), [
    ("ml-1m", {"1", "2", "3", "4", "5"}),
    ("ml-10m", {"0.5", "1", "1.5", "2", "2.5", "3", "3.5", "4", "4.5", "5"}),
    ("ml-25m", {f"{v / 2:.1f}" for v in range(1, 11)}),
])
def test_ratings_are_written_on_the_release_scale(releases, shape, allowed):
    assert set(read_ratings(releases[shape]).rating) == allowed


@pytest.mark.parametrize("shape", SCALES)
def test_rating_distribution_looks_like_movielens(releases, shape):
    values = read_ratings(releases[shape]).rating.astype(float)
    assert 3.35 < values.mean() < 3.7
    assert 0.85 < values.std() < 1.2


def test_csv_releases_have_grouplens_headers_crlf_and_quoting(releases):
    directory = releases["ml-25m"]
    headers = {"ratings.csv": "userId,movieId,rating,timestamp", "movies.csv": "movieId,title,genres",
               "tags.csv": "userId,movieId,tag,timestamp", "links.csv": "movieId,imdbId,tmdbId"}
    for name, header in headers.items():
        data = (directory / name).read_bytes()
        assert data.startswith(header.encode() + b"\r\n")
        assert data.count(b"\n") == data.count(b"\r\n") > 1
    rows = list(csv.reader(io.StringIO((directory / "movies.csv").read_text(encoding="utf-8"), newline="")))
    assert {len(row) for row in rows} == {3}
    assert any("," in title for _, title, _ in rows), "some titles hold commas (quoted)"
    assert any('"' in title for _, title, _ in rows), "some titles hold quotes (doubled)"
    links = pd.read_csv(directory / "links.csv", dtype=str)
    assert links.imdbId.str.fullmatch(r"\d{7}").all()
    tags = pd.read_csv(directory / "tags.csv")
    assert len(tags) > 0 and tags.userId.nunique() < tags.userId.max()


def test_dat_releases_use_double_colon_fields(releases):
    ml1m, ml10m = releases["ml-1m"], releases["ml-10m"]
    for path, fields in [(ml1m / "ratings.dat", 4), (ml1m / "movies.dat", 3), (ml1m / "users.dat", 5),
                         (ml10m / "ratings.dat", 4), (ml10m / "movies.dat", 3), (ml10m / "tags.dat", 4)]:
        data = path.read_bytes()
        assert b"\r" not in data
        assert {len(line.split(b"::")) for line in data.splitlines()} == {fields}, path
    movies = (ml1m / "movies.dat").read_bytes()
    assert b"Children's" in movies and any(b > 127 for b in movies), "ml-1m genres and latin-1 titles"
    (ml10m / "movies.dat").read_bytes().decode("ascii")
    users = pd.read_csv(ml1m / "users.dat", sep="::", engine="python", header=None, dtype=str)
    assert set(users[1]) == {"F", "M"} and set(users[2].astype(int)) <= {1, 18, 25, 35, 45, 50, 56}


def test_movie_popularity_is_long_tailed(releases):
    counts = read_ratings(releases["ml-32m"]).movieId.value_counts().to_numpy()
    top_decile = counts[: int(np.ceil(0.1 * len(counts)))].sum()
    assert top_decile / counts.sum() > 0.4


def test_noise_floor_matches_a_recomputation_from_the_truth(releases):
    directory = releases["ml-25m"]
    summary = json.loads((directory / "synth.json").read_text())
    users = pq.read_table(directory / "truth" / "users.parquet").to_pandas().set_index("userId")
    movies = pq.read_table(directory / "truth" / "movies.parquet").to_pandas().set_index("movieId")
    ratings = read_ratings(directory)
    p = np.stack(users.factors.loc[ratings.userId].to_numpy())
    q = np.stack(movies.factors.loc[ratings.movieId].to_numpy())
    signal = (summary["mu"] + users.bias.loc[ratings.userId].to_numpy() + movies.bias.loc[ratings.movieId].to_numpy()
              + np.einsum("ij,ij->i", p, q))
    rmse = np.sqrt(np.mean((signal - ratings.rating.astype(float).to_numpy()) ** 2))
    assert summary["noise_floor_rmse"] == pytest.approx(rmse, rel=1e-9)
    assert summary["noise_floor_rmse"] < summary["noise_sd"] + 0.05
    assert p.shape[1] == summary["rank"] == 10


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path):
    runs = {name: tmp_path / name for name in ("a", "b", "c")}
    for name, seed in [("a", 3), ("b", 3), ("c", 4)]:
        generate("ml-25m", runs[name], seed=seed, scale=0.005)
    names = sorted(p.name for p in runs["a"].iterdir())
    assert names == ["links.csv", "movies.csv", "ratings.csv", "synth.json", "tags.csv"]
    for name in names:
        assert (runs["a"] / name).read_bytes() == (runs["b"] / name).read_bytes(), name
    assert (runs["a"] / "ratings.csv").read_bytes() != (runs["c"] / "ratings.csv").read_bytes()


def test_cli_writes_a_release_and_rejects_an_impossible_scale(tmp_path, capsys):
    assert main(["synth", "--shape", "ml-1m", "--scale", "0.05", "--seed", "1", "--out", str(tmp_path / "x")]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["users"] == 302
    assert main(["synth", "--shape", "ml-1m", "--scale", "0.01", "--out", str(tmp_path / "y")]) == 2
    assert "too small for ml-1m" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    with pytest.raises(ConfigError):
        scaled_counts("ml-25m", 0.0)


def test_user_activity_sums_exactly_within_bounds():
    activity = _user_activity(np.random.default_rng(0), 500, 40_000, cap=300, sigma=1.3)
    assert activity.sum() == 40_000
    assert activity.min() >= 20 and activity.max() <= 300
    assert np.median(activity) < activity.mean(), "right-skewed like real user activity"


def test_sample_movies_draws_distinct_movies_by_weight_and_keeps_seeded_pairs():
    rng = np.random.default_rng(1)
    weights = np.array([8.0, 4.0, 2.0, 1.0] + [0.05] * 36)
    need = np.array([1] * 20_000 + [30, 2])  # light users, one heavy (dense path), one with a seeded movie
    users, movies = sample_movies(rng, need, np.array([20_001]), np.array([39]), weights)
    assert np.array_equal(np.bincount(users), need)
    assert len(np.unique(users * 40 + movies)) == len(users)
    assert 39 in movies[users == 20_001]
    single = np.bincount(movies[users < 20_000], minlength=40) / 20_000
    assert single[:4] == pytest.approx(weights[:4] / weights.sum(), abs=0.01)
    heavy = movies[users == 20_000]
    assert set(range(4)) <= set(heavy.tolist())


def test_planted_signal_is_the_biased_dot_product():
    p, q = np.array([[1.0, 2.0], [0.5, 0.0]]), np.array([[3.0, -1.0], [1.0, 1.0], [0.0, 2.0]])
    got = planted_signal(3.5, np.array([0.1, -0.2]), p, np.array([0.0, 0.3, -0.1]), q,
                         np.array([0, 1, 0]), np.array([2, 0, 1]))
    assert got == pytest.approx([3.5 + 0.1 - 0.1 + 4.0, 3.5 - 0.2 + 0.0 + 1.5, 3.5 + 0.1 + 0.3 + 3.0])


@pytest.mark.parametrize(("shape", "scale"), [("ml-1m", 0.05), ("ml-25m", 0.005)])
def test_ingest_reads_synthetic_releases_without_rejects(spark, shape, scale, tmp_path):
    from mfspark.data.ingest import ingest_release

    counts = generate(shape, tmp_path / shape, seed=5, scale=scale)["counts"]  # ingest tells the release by name
    manifest = ingest_release(spark, tmp_path / shape, str(tmp_path / "ingested"))
    assert manifest["release"] == shape
    assert manifest["rejects"]["rows"] == 0, manifest["rejects"]
    assert manifest["tables"]["ratings"]["rows"] == counts["ratings"]
    assert manifest["tables"]["movies"]["rows"] == counts["movies"]
