"""`mfspark synth`: MovieLens-shaped synthetic releases drawn from a planted low-rank model.

The files are written in the real release formats (ml-1m and ml-10m `::`-separated `.dat`,
ml-25m and ml-32m CSV with GroupLens headers and CRLF), so ingest reads them exactly like
real data. Ratings come from

    r = mu + b_user + b_movie + p_user . q_movie + N(0, noise_sd^2)

rounded to the release's scale and clipped. Movie factors are correlated with planted
genres (the genre labels of the movies file); movie popularity is lognormal and capped,
user activity a shifted lognormal with at least 20 ratings. `synth.json` records the
planted parameters and the noise floor: the RMSE of the noiseless signal against the
written ratings, the best any model can do on average.

Users are generated and written in chunks of `CHUNK_USERS`, so memory stays bounded at
the ml-32m shape; every chunk has its own seeded random stream, so the output is a
function of (shape, scale, seed) alone: byte-identical across runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mfspark.errors import ConfigError
from mfspark.runtime.commit import replace_local_dir

log = logging.getLogger(__name__)

CHUNK_USERS = 20_000
MIN_RATINGS_PER_USER = 20
# Users needing more than this share of all movies are sampled with one dense key row each.
DENSE_SHARE = 1 / 8
MAX_REJECTION_ROUNDS = 12
# Popularity is capped so that no movie's expected ratings exceed this share of users
# (the most rated real movies reach about half of all users).
MAX_MOVIE_USER_SHARE = 0.5
DENSE_BATCH_ELEMENTS = 8_000_000
# Rating text by half-star index: CSV releases write "4.0", the .dat releases "4" and "3.5".
HALF_STAR_TEXT = [f"{v / 2:.1f}" for v in range(11)]
SHORT_TEXT = [f"{v / 2:g}" for v in range(11)]


@dataclass(frozen=True)
class Shape:
    """Counts and format of one GroupLens release."""

    name: str
    users: int
    movies: int
    ratings: int
    tags: int
    max_movie_id: int
    half_stars: bool
    csv: bool
    encoding: str
    first_timestamp: int
    last_timestamp: int
    popularity_sigma: float


SHAPES: dict[str, Shape] = {shape.name: shape for shape in [
    # name, users, movies, ratings, tags, max movieId, half stars, CSV, encoding, first/last timestamp, popularity
    Shape("ml-1m", 6_040, 3_706, 1_000_209, 0, 3_952, False, False, "latin-1",
          956_703_932, 1_046_454_590, 1.6),
    Shape("ml-10m", 69_878, 10_677, 10_000_054, 95_580, 65_133, True, False, "ascii",
          789_652_009, 1_231_131_736, 2.0),
    Shape("ml-25m", 162_541, 59_047, 25_000_095, 1_093_360, 209_171, True, True, "utf-8",
          789_652_009, 1_574_327_703, 2.6),
    Shape("ml-32m", 200_948, 87_585, 32_000_204, 2_000_072, 292_757, True, True, "utf-8",
          789_652_009, 1_697_164_147, 2.7),
]}


@dataclass(frozen=True)
class Planted:
    """Parameters of the rating model (chosen so ratings look like MovieLens: mean ~3.5, sd ~1.0)."""

    mu: float = 3.57
    rank: int = 10
    user_bias_sd: float = 0.45
    movie_bias_sd: float = 0.45
    movie_bias_popularity_corr: float = 0.3  # popular movies are rated higher, as in the real data
    factor_sd: float = 0.36  # per component, users and movies: p.q has sd ~ rank**0.5 * 0.36**2 = 0.41
    genre_share: float = 0.6  # share of a movie factor's variance explained by its genres
    noise_sd: float = 0.78
    activity_sigma: float = 1.3
    tagger_share: float = 0.08


# (label in ml-1m, label from ml-10m on, weight ~ how often real movies carry the genre)
GENRES: list[tuple[str, str, float]] = [
    ("Action", "Action", 7348), ("Adventure", "Adventure", 4145), ("Animation", "Animation", 2929),
    ("Children's", "Children", 2935), ("Comedy", "Comedy", 16870), ("Crime", "Crime", 5319),
    ("Documentary", "Documentary", 5605), ("Drama", "Drama", 25606), ("Fantasy", "Fantasy", 2731),
    ("Film-Noir", "Film-Noir", 353), ("Horror", "Horror", 5989), ("Musical", "Musical", 1054),
    ("Mystery", "Mystery", 2925), ("Romance", "Romance", 7719), ("Sci-Fi", "Sci-Fi", 3595),
    ("Thriller", "Thriller", 8654), ("War", "War", 1874), ("Western", "Western", 1399),
]
GENRES_PER_MOVIE_P = [0.40, 0.35, 0.18, 0.07]
IMAX_P = 0.004  # extra label from ml-10m on; not a planted genre
NO_GENRES_P = 0.01  # ml-25m on: "(no genres listed)" hides the planted genres
TITLE_ADJECTIVES = ["Silent", "Last", "Dark", "Golden", "Broken", "Hidden", "Lost", "Wild", "Crimson", "Electric",
                    "Midnight", "Frozen", "Little", "Great", "Secret", "Final", "Distant", "Burning", "Quiet", "Lucky"]
TITLE_NOUNS = ["Harbor", "Road", "Garden", "Kingdom", "Summer", "River", "Machine", "Stranger", "Island", "City",
               "Mirror", "Letter", "Dragon", "Detective", "Horizon", "Promise", "Circus", "Voyage", "Empire", "Winter"]
ACCENTED_NOUNS = ["Café", "Niño", "Château", "Mädchen", "Señor"]  # latin-1 encodable, like real titles
TAGS = ["atmospheric", "twist ending", "funny", "dark comedy", "based on a book", "visually appealing",
        "thought-provoking", "Highly quotable", "sci-fi", "classic", "great soundtrack", "overrated", "BD-R",
        "dystopia", "time travel", "psychology", "quirky", "violence", "romance", "Oscar (Best Picture)",
        "cinematography", "slow", "predictable", "surreal", "true story", "nonlinear", "stylized", "satire",
        "dark, gritty", "so bad it's good", "Criterion", "space", "heist", "revenge", "coming of age"]
# Real tag vocabularies are large: add adjective-noun tags so few (user, movie, tag) repeats get dropped.
TAG_VOCABULARY = TAGS + [f"{a} {n}".lower() for a in TITLE_ADJECTIVES for n in TITLE_NOUNS]
AGE_CODES = [1, 18, 25, 35, 45, 50, 56]
AGE_P = [0.037, 0.183, 0.347, 0.197, 0.091, 0.082, 0.063]


@dataclass(frozen=True)
class Counts:
    users: int
    movies: int
    ratings: int
    tags: int
    max_movie_id: int


@dataclass
class Movies:
    ids: np.ndarray  # sorted, sparse like real movie ids
    weights: np.ndarray  # popularity weights (capped)
    bias: np.ndarray
    factors: np.ndarray  # (n_movies, rank)
    genres: np.ndarray  # (n_movies, 4) planted genre indices, -1 padded; column 0 is the primary genre
    years: np.ndarray


@dataclass
class Users:
    activity: np.ndarray  # ratings per user, sums to the target
    bias: np.ndarray
    factors: np.ndarray  # (n_users, rank)
    first_seen: np.ndarray  # timestamps: each user rates within [first_seen, first_seen + span]
    span: np.ndarray
    tags: np.ndarray  # tags per user before deduplication


@dataclass
class Stats:
    """Running sums over the written ratings."""

    squared_error: float = 0.0  # sum of (signal - written)^2: the noise floor
    total: float = 0.0
    total_sq: float = 0.0
    tags: int = 0
    histogram: np.ndarray | None = None  # by half-star index 0..10
    movie_counts: np.ndarray | None = None


def generate(shape: str, out_dir: str | os.PathLike, seed: int, scale: float = 1.0,
             write_truth: bool = False) -> dict:
    """Write a synthetic release into `out_dir` (replacing it whole) and return `synth.json`'s content."""
    if shape not in SHAPES:
        raise ConfigError(f"unknown shape {shape!r}: choose one of {', '.join(sorted(SHAPES))}")
    spec, planted = SHAPES[shape], Planted()
    counts = scaled_counts(shape, scale)
    started = time.perf_counter()
    rng = _rng(seed, 0)
    movies = _draw_movies(rng, spec, planted, counts)
    users = _draw_users(rng, spec, planted, counts)
    seeded = _seed_every_movie(rng, users.activity, counts.movies)
    log.info("%s x%g: %d users, %d movies, %d ratings planned (%.1f s)", shape, scale, counts.users,
             counts.movies, counts.ratings, time.perf_counter() - started)
    final = Path(out_dir)
    staging = final.parent / f"{final.name}.staging-{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    try:
        stats = _write_release(staging, spec, seed, planted, movies, users, seeded)
        summary = _summary(shape, scale, seed, planted, counts, stats, spec, write_truth)
        summary["files"] = {p.name: p.stat().st_size for p in sorted(staging.iterdir())}
        if write_truth:
            _write_truth(staging / "truth", movies, users, counts)
        (staging / "synth.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        replace_local_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote %s in %.1f s: noise floor %.4f, mean %.3f, sd %.3f", final, time.perf_counter() - started,
             summary["noise_floor_rmse"], summary["observed"]["rating_mean"], summary["observed"]["rating_sd"])
    return summary


def scaled_counts(shape: str, scale: float) -> Counts:
    """The release's counts times `scale`; refuses scales where 20 ratings per user cannot fit."""
    spec = SHAPES[shape]
    if not scale > 0:
        raise ConfigError(f"--scale must be positive, got {scale}")
    users, movies, ratings = (max(1, round(n * scale)) for n in (spec.users, spec.movies, spec.ratings))
    min_scale = spec.ratings / (spec.users * spec.movies)
    if movies < MIN_RATINGS_PER_USER or ratings > users * movies:
        raise ConfigError(f"--scale {scale} is too small for {shape}: {ratings} ratings do not fit {users} users x "
                          f"{movies} movies; use --scale >= {min_scale:.3f} (plus a margin)")
    if ratings < MIN_RATINGS_PER_USER * users or ratings < movies:
        raise ConfigError(f"{shape} at --scale {scale}: too few ratings for {MIN_RATINGS_PER_USER} per user")
    return Counts(users, movies, ratings, round(spec.tags * scale), max(movies, round(spec.max_movie_id * scale)))


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent random stream per purpose and chunk, fixed by the seed."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=stream))


def _draw_movies(rng: np.random.Generator, spec: Shape, planted: Planted, counts: Counts) -> Movies:
    n, rank = counts.movies, planted.rank
    ids = np.sort(rng.choice(counts.max_movie_id, n, replace=False)) + 1
    genres = _draw_genres(rng, n)
    centroids = rng.standard_normal((len(GENRES), rank))
    in_genre = genres >= 0
    genre_part = np.where(in_genre[:, :, None], centroids[np.maximum(genres, 0)], 0.0).sum(axis=1)
    genre_part /= np.sqrt(in_genre.sum(axis=1))[:, None]
    own_part = rng.standard_normal((n, rank))
    factors = planted.factor_sd * (np.sqrt(planted.genre_share) * genre_part
                                   + np.sqrt(1 - planted.genre_share) * own_part)
    log_popularity = rng.standard_normal(n)
    weights = _capped_popularity(np.exp(spec.popularity_sigma * log_popularity), counts)
    corr = planted.movie_bias_popularity_corr
    bias = planted.movie_bias_sd * (corr * log_popularity + np.sqrt(1 - corr**2) * rng.standard_normal(n))
    bias -= np.dot(weights, bias) / weights.sum()  # zero mean per rating, so mu stays the mean rating
    last_year = time.gmtime(spec.last_timestamp).tm_year
    years = np.maximum(1915, last_year - np.floor(rng.exponential(12.0, n))).astype(np.int64)
    return Movies(ids, weights, bias, factors, genres, years)


def _draw_genres(rng: np.random.Generator, n: int) -> np.ndarray:
    """1-4 distinct genres per movie, drawn by genre frequency (Gumbel top-k, no loop per movie)."""
    weights = np.array([w for _, _, w in GENRES], dtype=np.float64)
    keys = np.log(weights) + rng.gumbel(size=(n, len(GENRES)))
    ranked = np.argsort(-keys, axis=1)[:, : len(GENRES_PER_MOVIE_P)]
    how_many = rng.choice(len(GENRES_PER_MOVIE_P), n, p=GENRES_PER_MOVIE_P) + 1
    return np.where(np.arange(ranked.shape[1]) < how_many[:, None], ranked, -1)


def _capped_popularity(weights: np.ndarray, counts: Counts) -> np.ndarray:
    """Cap weights so no movie expects more than MAX_MOVIE_USER_SHARE of the users."""
    for _ in range(20):
        cap = MAX_MOVIE_USER_SHARE * counts.users * weights.sum() / counts.ratings
        if weights.max() <= cap * (1 + 1e-9):
            break
        weights = np.minimum(weights, cap)
    return weights


def _draw_users(rng: np.random.Generator, spec: Shape, planted: Planted, counts: Counts) -> Users:
    n = counts.users
    activity = _user_activity(rng, n, counts.ratings, counts.movies, planted.activity_sigma)
    bias = planted.user_bias_sd * rng.standard_normal(n)
    factors = planted.factor_sd * rng.standard_normal((n, planted.rank))
    window = spec.last_timestamp - spec.first_timestamp
    first_seen = spec.first_timestamp + np.floor(rng.random(n) * window).astype(np.int64)
    # Most users rate within days, a few over years (lognormal span, median 2 days).
    span = np.exp(rng.normal(np.log(2 * 86_400), 2.0, n)).astype(np.int64)
    span = np.minimum(span, spec.last_timestamp - first_seen)
    return Users(activity, bias, factors, first_seen, span, _tags_per_user(rng, activity, counts.tags, planted))


def _user_activity(rng: np.random.Generator, n_users: int, n_ratings: int, cap: int, sigma: float) -> np.ndarray:
    """Ratings per user: 20 + c * lognormal, clipped to [20, cap], summing exactly to `n_ratings`."""
    raw = rng.lognormal(0.0, sigma, n_users)

    def total(c: float) -> float:
        return np.clip(MIN_RATINGS_PER_USER + c * raw, MIN_RATINGS_PER_USER, cap).sum()

    lo, hi = 0.0, cap / raw.min()
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(mid) < n_ratings else (lo, mid)
    target = np.clip(MIN_RATINGS_PER_USER + hi * raw, MIN_RATINGS_PER_USER, cap)
    activity = np.floor(target).astype(np.int64)
    fraction = target - activity
    while (missing := n_ratings - int(activity.sum())) != 0:
        movable = activity < cap if missing > 0 else activity > MIN_RATINGS_PER_USER
        order = np.flatnonzero(movable)[np.argsort(-fraction[movable] if missing > 0 else fraction[movable],
                                                   kind="stable")]
        activity[order[: abs(missing)]] += np.sign(missing)
    return activity


def _tags_per_user(rng: np.random.Generator, activity: np.ndarray, n_tags: int, planted: Planted) -> np.ndarray:
    """A few users tag, more the more they rate; the counts sum to `n_tags`."""
    tags = np.zeros(len(activity), dtype=np.int64)
    if n_tags == 0:
        return tags
    taggers = rng.choice(len(activity), max(1, round(planted.tagger_share * len(activity))), replace=False)
    effort = activity[taggers] * rng.lognormal(0.0, 1.0, len(taggers))
    tags[taggers] = rng.multinomial(n_tags, effort / effort.sum())
    return tags


def _seed_every_movie(rng: np.random.Generator, activity: np.ndarray, n_movies: int) -> tuple[np.ndarray, np.ndarray]:
    """Give each movie one rating by a random user (so every listed movie is rated, as in the real files).

    Picking distinct rating slots keeps each user's seeded movies within their activity.
    Returns (user, movie) sorted by user.
    """
    slots = rng.choice(int(activity.sum()), n_movies, replace=False)
    users = np.searchsorted(np.cumsum(activity), slots, side="right")
    movies = rng.permutation(n_movies)
    order = np.argsort(users, kind="stable")
    return users[order], movies[order]


def sample_movies(rng: np.random.Generator, need: np.ndarray, seeded_user: np.ndarray, seeded_movie: np.ndarray,
                  weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct movies for each user, by popularity without replacement (successive sampling).

    `need[u]` movies for local user u, always including u's seeded movies. Returns (user,
    movie) sorted by user then movie. Light users take the first distinct movies of a
    with-replacement stream (that is exactly successive sampling), topped up in rounds;
    heavy users, and any still short after MAX_REJECTION_ROUNDS, get exponential keys
    over all movies (Efraimidis-Spirakis: smallest Exp/weight wins).
    """
    n_movies = len(weights)
    heavy = need > DENSE_SHARE * n_movies
    light_users, light_movies, short = _sample_by_rejection(rng, need, ~heavy, seeded_user, seeded_movie, weights)
    dense_rows = np.flatnonzero(heavy | short)
    in_dense = np.isin(seeded_user, dense_rows)
    dense_users, dense_movies = _sample_dense(
        rng, need, dense_rows,
        np.concatenate([seeded_user[in_dense], light_users[np.isin(light_users, dense_rows)]]),
        np.concatenate([seeded_movie[in_dense], light_movies[np.isin(light_users, dense_rows)]]), weights)
    done = ~np.isin(light_users, dense_rows)
    keys = np.concatenate([light_users[done] * n_movies + light_movies[done], dense_users * n_movies + dense_movies])
    keys.sort()
    return keys // n_movies, keys % n_movies


def _sample_by_rejection(rng: np.random.Generator, need: np.ndarray, eligible: np.ndarray, seeded_user: np.ndarray,
                         seeded_movie: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rounds of with-replacement draws for eligible users; returns (users, movies, still_short mask)."""
    n_movies = len(weights)
    cumulative = np.cumsum(weights)
    keep = eligible[seeded_user]
    users, movies = seeded_user[keep], seeded_movie[keep]  # selections so far, in draw order per user
    finished_u, finished_m = [], []
    active = eligible.copy()
    oversample = 1.1
    for _ in range(MAX_REJECTION_ROUNDS):
        have = np.bincount(users, minlength=len(need))
        deficit = np.where(active, need - have, 0)
        if not deficit.any():
            break
        draws = np.ceil(deficit * oversample).astype(np.int64) + 2 * (deficit > 0)
        new_users = np.repeat(np.arange(len(need)), draws)
        new_movies = np.minimum(np.searchsorted(cumulative, rng.random(len(new_users)) * cumulative[-1],
                                                side="right"), n_movies - 1)
        users, movies = _first_distinct(np.concatenate([users, new_users]), np.concatenate([movies, new_movies]),
                                        need, n_movies)
        complete = np.bincount(users, minlength=len(need)) == need
        is_complete = complete[users]
        finished_u.append(users[is_complete])
        finished_m.append(movies[is_complete])
        users, movies = users[~is_complete], movies[~is_complete]
        active &= ~complete
        oversample *= 2
    finished_u.append(users)
    finished_m.append(movies)
    return np.concatenate(finished_u), np.concatenate(finished_m), active & (need > 0)


def _first_distinct(users: np.ndarray, movies: np.ndarray, need: np.ndarray,
                    n_movies: int) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the first `need[u]` distinct movies in the given (draw) order."""
    _, first = np.unique(users * n_movies + movies, return_index=True)
    first.sort()  # distinct pairs back in draw order
    by_user = first[np.argsort(users[first], kind="stable")]
    users, movies = users[by_user], movies[by_user]
    position = np.arange(len(users))
    group_start = np.maximum.accumulate(np.where(np.r_[True, users[1:] != users[:-1]], position, 0))
    keep = position - group_start < need[users]
    return users[keep], movies[keep]


def _sample_dense(rng: np.random.Generator, need: np.ndarray, rows: np.ndarray, forced_user: np.ndarray,
                  forced_movie: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sampling without replacement via one key row per user; forced pairs always win."""
    n_movies = len(weights)
    out_u, out_m = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    batch = max(1, DENSE_BATCH_ELEMENTS // n_movies)
    for start in range(0, len(rows), batch):
        block = rows[start:start + batch]
        keys = rng.exponential(size=(len(block), n_movies)) / weights
        in_block = np.isin(forced_user, block)
        keys[np.searchsorted(block, forced_user[in_block]), forced_movie[in_block]] = -1.0
        order = np.argsort(keys, axis=1)
        take = np.arange(n_movies) < need[block][:, None]
        out_u.append(np.broadcast_to(block[:, None], order.shape)[take])
        out_m.append(order[take])
    return np.concatenate(out_u), np.concatenate(out_m)


def _write_release(out: Path, spec: Shape, seed: int, planted: Planted, movies: Movies, users: Users,
                   seeded: tuple[np.ndarray, np.ndarray]) -> Stats:
    ext = "csv" if spec.csv else "dat"
    _write_text(out / f"movies.{ext}", spec, _movie_lines(_rng(seed, 2), spec, movies))
    if spec.name == "ml-1m":
        _write_text(out / "users.dat", spec, _user_lines(_rng(seed, 3), len(users.activity)))
    if spec.csv:
        _write_text(out / "links.csv", spec, _link_lines(_rng(seed, 4), movies.ids))
    stats = Stats(histogram=np.zeros(11, np.int64), movie_counts=np.zeros(len(movies.ids), np.int64))
    with open(out / f"ratings.{ext}", "wb") as ratings_file, _tags_file(out, spec) as tags_file:
        if spec.csv:
            ratings_file.write(b"userId,movieId,rating,timestamp\r\n")
        for chunk, lo in enumerate(range(0, len(users.activity), CHUNK_USERS)):
            started = time.perf_counter()
            hi = min(lo + CHUNK_USERS, len(users.activity))
            rng = _rng(seed, 1, chunk)
            user, movie, half_stars = _chunk_ratings(rng, spec, planted, movies, users, seeded, lo, hi, stats)
            timestamps = _timestamps(rng, users, user)
            _write_ratings(ratings_file, spec, user + 1, movies.ids[movie], half_stars, timestamps)
            if tags_file is not None:
                stats.tags += _write_tags(tags_file, spec, rng, users, movies.ids, user, movie, lo, hi)
            log.info("chunk %d: users %d-%d, %d ratings (%.1f s)", chunk, lo + 1, hi, len(user),
                     time.perf_counter() - started)
    return stats


def _chunk_ratings(rng: np.random.Generator, spec: Shape, planted: Planted, movies: Movies, users: Users,
                   seeded: tuple[np.ndarray, np.ndarray], lo: int, hi: int,
                   stats: Stats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample the chunk's (user, movie) pairs and their ratings; returns global user, movie, rating*2."""
    first, last = np.searchsorted(seeded[0], [lo, hi])
    local_user, movie = sample_movies(rng, users.activity[lo:hi], seeded[0][first:last] - lo,
                                      seeded[1][first:last], movies.weights)
    user = local_user + lo
    signal = planted_signal(planted.mu, users.bias, users.factors, movies.bias, movies.factors, user, movie)
    observed = signal + planted.noise_sd * rng.standard_normal(len(signal))
    lowest = 1 if spec.half_stars else 2
    half_stars = np.clip(np.round(observed * 2) if spec.half_stars else 2 * np.round(observed), lowest, 10)
    written = half_stars / 2
    stats.squared_error += float(np.sum((signal - written) ** 2))
    stats.total += float(written.sum())
    stats.total_sq += float(np.sum(written**2))
    half_stars = half_stars.astype(np.int64)
    stats.histogram += np.bincount(half_stars, minlength=11)
    stats.movie_counts += np.bincount(movie, minlength=len(movies.ids))
    return user, movie, half_stars


def planted_signal(mu: float, user_bias: np.ndarray, user_factors: np.ndarray, movie_bias: np.ndarray,
                   movie_factors: np.ndarray, user: np.ndarray, movie: np.ndarray) -> np.ndarray:
    """mu + b_u + b_i + p_u . q_i for each (user, movie) index pair (one rank component at a time)."""
    signal = mu + user_bias[user] + movie_bias[movie]
    for k in range(user_factors.shape[1]):
        signal += user_factors[user, k] * movie_factors[movie, k]
    return signal


def _timestamps(rng: np.random.Generator, users: Users, user: np.ndarray) -> np.ndarray:
    return users.first_seen[user] + np.floor(rng.random(len(user)) * (users.span[user] + 1)).astype(np.int64)


def _write_ratings(file: IO[bytes], spec: Shape, user_id: np.ndarray, movie_id: np.ndarray, half_stars: np.ndarray,
                   timestamps: np.ndarray) -> None:
    """Arrow's CSV writer; `::` comes from ':' around empty (null) columns."""
    text = pa.array(HALF_STAR_TEXT if spec.csv else SHORT_TEXT)
    rating = pa.DictionaryArray.from_arrays(pa.array(half_stars.astype(np.int8)), text)
    columns = [pa.array(user_id.astype(np.int32)), pa.array(movie_id.astype(np.int32)), rating,
               pa.array(timestamps)]
    if not spec.csv:
        columns = [columns[0], pa.nulls(len(user_id)), columns[1], pa.nulls(len(user_id)), columns[2],
                   pa.nulls(len(user_id)), columns[3]]
    table = pa.Table.from_arrays(columns, names=[f"c{i}" for i in range(len(columns))])
    options = pacsv.WriteOptions(include_header=False, delimiter="," if spec.csv else ":", quoting_style="none",
                                 eol=_eol(spec))
    pacsv.write_csv(table, file, options)


def _write_tags(file: IO[bytes], spec: Shape, rng: np.random.Generator, users: Users, movie_ids: np.ndarray,
                user: np.ndarray, movie: np.ndarray, lo: int, hi: int) -> int:
    """Tags of the chunk's taggers on movies they rated; duplicate (user, movie, tag) are dropped."""
    per_user = users.tags[lo:hi]
    tagger = np.repeat(np.arange(lo, hi), per_user)
    if len(tagger) == 0:
        return 0
    first_rating = np.searchsorted(user, tagger)
    tagged = movie[first_rating + np.floor(rng.random(len(tagger)) * users.activity[tagger]).astype(np.int64)]
    popularity = 1.0 / np.arange(1, len(TAG_VOCABULARY) + 1)
    word = rng.choice(len(TAG_VOCABULARY), len(tagger), p=popularity / popularity.sum())
    stamp = _timestamps(rng, users, tagger)
    key = (tagger * len(movie_ids) + tagged) * len(TAG_VOCABULARY) + word
    _, first = np.unique(key, return_index=True)
    texts = [_csv_field(t) for t in TAG_VOCABULARY] if spec.csv else TAG_VOCABULARY
    sep, eol = ("," if spec.csv else "::"), _eol(spec)
    lines = [f"{u + 1}{sep}{m}{sep}{texts[w]}{sep}{s}{eol}" for u, m, w, s in
             zip(tagger[first].tolist(), movie_ids[tagged[first]].tolist(), word[first].tolist(),
                 stamp[first].tolist(), strict=True)]
    file.write("".join(lines).encode(spec.encoding))
    return len(lines)


def _tags_file(out: Path, spec: Shape):
    if spec.tags == 0:
        return contextlib.nullcontext()
    file = open(out / f"tags.{'csv' if spec.csv else 'dat'}", "wb")  # noqa: SIM115 - closed by the with block
    if spec.csv:
        file.write(b"userId,movieId,tag,timestamp\r\n")
    return file


def _eol(spec: Shape) -> str:
    return "\r\n" if spec.csv else "\n"


def _csv_field(text: str) -> str:
    """Quote like GroupLens: only fields with a comma or a quote, doubling inner quotes."""
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if ("," in text or '"' in text) else text


def _write_text(path: Path, spec: Shape, lines: list[str]) -> None:
    with open(path, "wb") as file:
        file.write("".join(line + _eol(spec) for line in lines).encode(spec.encoding))


def _movie_lines(rng: np.random.Generator, spec: Shape, movies: Movies) -> list[str]:
    labels = [old if spec.name == "ml-1m" else new for old, new, _ in GENRES]
    imax = rng.random(len(movies.ids)) < (IMAX_P if spec.half_stars else 0.0)
    hidden = rng.random(len(movies.ids)) < (NO_GENRES_P if spec.csv else 0.0)
    titles = _titles(rng, spec, movies.years)
    lines = ["movieId,title,genres"] if spec.csv else []
    for i, movie_id in enumerate(movies.ids.tolist()):
        names = sorted(labels[g] for g in movies.genres[i] if g >= 0) + (["IMAX"] if imax[i] else [])
        genres = "(no genres listed)" if hidden[i] else "|".join(names)
        if spec.csv:
            lines.append(f"{movie_id},{_csv_field(titles[i])},{genres}")
        else:
            lines.append(f"{movie_id}::{titles[i]}::{genres}")
    return lines


def _titles(rng: np.random.Generator, spec: Shape, years: np.ndarray) -> list[str]:
    """Titles in MovieLens style: "Name (Year)", some "Name, The (Year)", some accented or quoted."""
    n = len(years)
    nouns = TITLE_NOUNS + (ACCENTED_NOUNS if spec.encoding != "ascii" else [])
    adjective = rng.integers(len(TITLE_ADJECTIVES), size=n)
    noun = rng.integers(len(nouns), size=n)
    style = rng.random(n)
    titles = []
    for a, b, s, year in zip(adjective.tolist(), noun.tolist(), style.tolist(), years.tolist(), strict=True):
        name = f"{TITLE_ADJECTIVES[a]} {nouns[b]}"
        if s < 0.12:
            name = f"{name}, The"
        elif s < 0.14 and spec.csv:
            name = f'"{nouns[b]}" {TITLE_ADJECTIVES[a]}'
        elif s < 0.30:
            name = f"{name}: Part {1 + int(s * 100) % 4}"
        titles.append(f"{name} ({year})")
    return titles


def _user_lines(rng: np.random.Generator, n_users: int) -> list[str]:
    """ml-1m demographics: UserID::Gender::Age::Occupation::Zip-code."""
    gender = np.where(rng.random(n_users) < 0.717, "M", "F")
    age = rng.choice(AGE_CODES, n_users, p=AGE_P)
    occupation = rng.integers(0, 21, n_users)
    zip_code = rng.integers(0, 100_000, n_users)
    plus_four = rng.integers(0, 10_000, n_users)
    long_zip = rng.random(n_users) < 0.03
    return [f"{u}::{g}::{a}::{o}::{z:05d}" + (f"-{p:04d}" if lz else "")
            for u, g, a, o, z, p, lz in zip(range(1, n_users + 1), gender.tolist(), age.tolist(),
                                            occupation.tolist(), zip_code.tolist(), plus_four.tolist(),
                                            long_zip.tolist(), strict=True)]


def _link_lines(rng: np.random.Generator, movie_ids: np.ndarray) -> list[str]:
    """links.csv: zero-padded 7-digit imdbId, tmdbId sometimes missing (empty), as in the real files."""
    n = len(movie_ids)
    imdb = rng.choice(9_999_999, n, replace=False) + 1
    tmdb = rng.choice(1_000_000, n, replace=False) + 1
    missing = rng.random(n) < 0.002
    lines = ["movieId,imdbId,tmdbId"]
    lines += [f"{m},{i:07d}," + ("" if miss else str(t))
              for m, i, t, miss in zip(movie_ids.tolist(), imdb.tolist(), tmdb.tolist(), missing.tolist(),
                                       strict=True)]
    return lines


def _write_truth(directory: Path, movies: Movies, users: Users, counts: Counts) -> None:
    """Planted parameters as Parquet: biases, factors (list<double>), the primary genre, activity."""
    directory.mkdir()
    rank = users.factors.shape[1]
    factor_type = pa.list_(pa.float64(), rank)
    pq.write_table(pa.table({
        "userId": pa.array(np.arange(1, counts.users + 1, dtype=np.int32)),
        "bias": pa.array(users.bias),
        "factors": pa.FixedSizeListArray.from_arrays(pa.array(users.factors.ravel()), type=factor_type),
        "ratings": pa.array(users.activity.astype(np.int32)),
    }), directory / "users.parquet")
    pq.write_table(pa.table({
        "movieId": pa.array(movies.ids.astype(np.int32)),
        "bias": pa.array(movies.bias),
        "factors": pa.FixedSizeListArray.from_arrays(pa.array(movies.factors.ravel()), type=factor_type),
        "genre": pa.array([GENRES[g][1] for g in movies.genres[:, 0]]),
        "popularity": pa.array(movies.weights / movies.weights.sum()),
    }), directory / "movies.parquet")


def _summary(shape: str, scale: float, seed: int, planted: Planted, counts: Counts, stats: Stats, spec: Shape,
             write_truth: bool) -> dict:
    n = counts.ratings
    mean = stats.total / n
    by_count = np.sort(stats.movie_counts)[::-1]
    top_decile = int(np.ceil(0.1 * len(by_count)))
    return {
        "shape": shape,
        "scale": scale,
        "seed": seed,
        "format": "csv" if spec.csv else "dat",
        "rating_values": "half stars 0.5-5.0" if spec.half_stars else "integers 1-5",
        "counts": {"users": counts.users, "movies": counts.movies, "ratings": n, "tags": stats.tags},
        **asdict(planted),
        "popularity_sigma": spec.popularity_sigma,
        "min_ratings_per_user": MIN_RATINGS_PER_USER,
        "noise_floor_rmse": float(np.sqrt(stats.squared_error / n)),
        "observed": {
            "rating_mean": mean,
            "rating_sd": float(np.sqrt(max(stats.total_sq / n - mean**2, 0.0))),
            "rating_histogram": {HALF_STAR_TEXT[i]: int(c) for i, c in enumerate(stats.histogram) if c},
            "top_10pct_movies_share": float(by_count[:top_decile].sum() / n),
            "movies_with_one_rating": int((stats.movie_counts == 1).sum()),
        },
        "genres": [new for _, new, _ in GENRES],
        "truth": "truth/users.parquet, truth/movies.parquet" if write_truth else None,
    }
