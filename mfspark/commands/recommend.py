"""`mfspark recommend`: top-N lists for every user (or a subset) from a `mfspark train` output.

Outputs under OUT (committed atomically):
  recommendations/   user_id int, rank int, movie_id int, score float   (every user, seen movies excluded)
  fallback_users/    user_id int, reason string, ratings int            (who got a cold-start list, and why)
  audiences/         movie_id int, rank int, user_id int, score float   (--audiences)
  similar_movies/    movie_id int, rank int, similar_movie_id int, similarity float   (--similar K)
  genre_rows/        user_id int, genre string, genre_rank int, rank int, movie_id int, score float (--genre-rows)
With --ratings-file (no --out) it folds one new user in and prints that user's list.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import re

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from mfspark.commands.args import model_dir
from mfspark.data.ingest import read_ratings
from mfspark.errors import ConfigError, InputError
from mfspark.models.als.estimator import ALSModel
from mfspark.models.als.foldin import folded_frames
from mfspark.models.als.lists import write_top_n
from mfspark.models.base import resolve_scale
from mfspark.recommend import lists as recs
from mfspark.recommend.topn import BlockSizes
from mfspark.runtime.commit import atomic_output
from mfspark.runtime.fs import HadoopFileSystem

log = logging.getLogger(__name__)

FOLDED_USER_ID = -1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="MODEL_DIR", help="a `mfspark train` output directory")
    parser.add_argument("--input", required=True, metavar="INGEST_OUT",
                        help="`mfspark ingest` output: every rated movie is excluded; titles come from its movies")
    parser.add_argument("--out", help="output directory (replaced atomically); not needed with --ratings-file")
    parser.add_argument("--top-n", type=int, default=10)
    parser.add_argument("--users", metavar="FILE|IDS", help="only these users: a file of ids (one per line) or 1,2,3")
    parser.add_argument("--allow-list", metavar="FILE", help="recommend only these movie ids (one per line)")
    parser.add_argument("--block-list", metavar="FILE", help="never recommend these movie ids (one per line)")
    parser.add_argument("--min-ratings", type=int, default=recs.DEFAULT_MIN_RATINGS,
                        help="users with fewer ratings in --input get the popularity list (default: %(default)s)")
    parser.add_argument("--audiences", action="store_true", help="also write the top-N users per movie")
    parser.add_argument("--similar", type=int, metavar="K", help="also write each movie's K most similar movies")
    parser.add_argument("--genre-rows", action="store_true", help="also write top-N per favourite genre (top 3)")
    parser.add_argument("--ratings-file", metavar="CSV", help="fold in a new user (movie_id,rating lines) and print")
    parser.add_argument("--show-user", type=int, help="user whose list is printed (default: the first)")
    parser.add_argument("--user-block-size", type=int, default=BlockSizes().queries)
    parser.add_argument("--item-block-size", type=int, default=BlockSizes().candidates)


def check_options(args: argparse.Namespace) -> None:
    """Refuse list lengths and block sizes the engine cannot use (an --out overlapping --model is refused before
    the run, `commands.main.check_out_place`)."""
    for option, value in (("--top-n", args.top_n), ("--similar", args.similar),
                          ("--user-block-size", args.user_block_size), ("--item-block-size", args.item_block_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{option} must be at least 1, got {value}")


def run(args: argparse.Namespace, spark: SparkSession) -> dict:
    check_options(args)
    model = ALSModel.load(spark, model_dir(spark, args.model, "--model"))
    movies = spark.read.parquet(f"{args.input.rstrip('/')}/movies")
    sizes = BlockSizes(args.user_block_size, args.item_block_size)
    baseline = model.list_baseline
    candidates = recs.Candidates(_id_frame(spark, args.allow_list, "--allow-list"),
                                 _id_frame(spark, args.block_list, "--block-list"))
    if args.ratings_file:
        return _fold_in_and_print(spark, model, baseline, movies, candidates, sizes, args)
    if not args.out:
        raise InputError("--out is required (unless --ratings-file is given)")
    # Not cached: the seen pairs must stay a plain projection of the ingest's Parquet, which the engine's tasks
    # read with pyarrow (a cached frame goes through the JVM: seconds per 10M pairs).
    ratings = read_ratings(spark, args.input)
    users = _id_frame(spark, args.users, "--users", column="user_id")
    seen = ratings.select("user_id", "movie_id")
    result = {}
    with atomic_output(spark, args.out) as staging:
        written = write_top_n(model, ratings, staging, args.top_n, args.min_ratings, users, candidates, sizes)
        if args.audiences:
            recs.audiences(model.user_factors, model.item_factors, seen, args.top_n, baseline, sizes) \
                .write.parquet(f"{staging}/audiences")
        if args.similar:
            recs.similar_movies(model.item_factors, args.similar, sizes).write.parquet(f"{staging}/similar_movies")
        if args.genre_rows:
            favourites = recs.favourite_genres(ratings, movies)
            recs.genre_rows(model.user_factors, model.item_factors, seen, movies, favourites, args.top_n, baseline,
                            sizes).write.parquet(f"{staging}/genre_rows")
            result["genres"] = spark.read.parquet(f"{staging}/genre_rows").select("genre").distinct().count()
        result |= {"rows": written.rows, "users": written.users, "fallback_users": written.fallback_users}
        shown = args.show_user if args.show_user is not None else written.first_user
        if shown is not None:
            lists = spark.read.parquet(f"{staging}/recommendations")
            _print_list(f"user {shown}", lists.where(F.col("user_id") == shown), movies)
    return result


def _fold_in_and_print(spark: SparkSession, model: ALSModel, baseline, movies: DataFrame, candidates, sizes,
                       args: argparse.Namespace) -> dict:
    scale = resolve_scale(model.params.min_rating, model.params.max_rating, None)  # a model not fitted: unbounded
    ratings = read_ratings_file(HadoopFileSystem(spark).read_text(args.ratings_file), args.ratings_file, scale)
    folded = model.folded_user(ratings)
    users, seen, user_baseline = folded_frames(spark, FOLDED_USER_ID, folded, ratings, baseline)
    lists = recs.recommend_for_users(users, model.item_factors, seen, args.top_n, user_baseline, None, candidates,
                                     sizes)
    movies_rated = len({movie for movie, _ in ratings})  # a movie rated twice counts once, as fold-in uses it
    _print_list(f"new user ({folded.used} of {movies_rated} rated movies used)", lists, movies)
    return {"folded_ratings": folded.used, "bias": folded.bias}


def _print_list(heading: str, rows: DataFrame, movies: DataFrame) -> None:
    """One user's list with titles and genres: its rows, then their movies, reach the driver (a few each)."""
    ranked = sorted(rows.collect(), key=lambda row: row["rank"])
    ids = [row["movie_id"] for row in ranked]
    titles = {row["movie_id"]: row for row in
              movies.where(F.col("movie_id").isin(ids)).select("movie_id", "title", "year", "genres").collect()}
    print(f"Top {len(ranked)} for {heading}:")
    for row in ranked:
        movie = titles.get(row["movie_id"])
        title = movie["title"] if movie else f"movie {row['movie_id']}"
        year = f" ({movie['year']})" if movie and movie["year"] else ""
        genres = "|".join((movie["genres"] if movie else None) or [])
        print(f"{row['rank']:>3}. {title}{year}  [{genres}]  score {row['score']:.3f}")


_ID_LIST = re.compile(r"^\d+(,\d+)*$")


def _id_frame(spark: SparkSession, value: str | None, option: str, column: str = "movie_id") -> DataFrame | None:
    """Ids from a comma list (`1,2,3`, --users only) or a file of one id per line ('#' comments, blanks ok)."""
    if value is None:
        return None
    if column == "user_id" and _ID_LIST.match(value):
        ids = [_checked_id(v, option, value) for v in value.split(",")]
    else:
        ids = parse_id_lines(HadoopFileSystem(spark).read_text(value), value, option)
    return spark.createDataFrame([(i,) for i in sorted(set(ids))], f"{column} int")


def _checked_id(value: str, option: str, where: str) -> int:
    if not value.isdigit() or int(value) >= 2**31:
        raise InputError(f"{option} {where}: expected an id (non-negative int below 2^31), got '{value}'")
    return int(value)


def parse_id_lines(text: str, source: str, option: str) -> list[int]:
    ids = []
    for number, line in enumerate(text.splitlines(), 1):
        value = line.split("#", 1)[0].strip()
        if value:
            ids.append(_checked_id(value, option, f"{source}:{number}"))
    return ids


def read_ratings_file(text: str, source: str, scale: tuple[float | None, float | None] = (None, None)
                      ) -> list[tuple[int, float]]:
    """(movie_id, rating) pairs from CSV lines `movie_id,rating` (a header line movie_id/movieId,rating is skipped).

    Ratings must be finite and on the model's `scale` (min, max; None: unbounded): one NaN would make the
    folded user's factors NaN, and an off-scale rating is a typo, not a preference."""
    low, high = (-math.inf if scale[0] is None else scale[0]), (math.inf if scale[1] is None else scale[1])
    pairs = []
    for number, fields in enumerate(csv.reader(io.StringIO(text)), 1):
        if not fields or not "".join(fields).strip():
            continue
        if number == 1 and fields[0].strip().lower() in ("movie_id", "movieid"):
            continue
        try:
            if len(fields) != 2:
                raise ValueError
            movie_id, rating = int(fields[0]), float(fields[1])
        except ValueError:
            raise InputError(f"{source}:{number}: expected movie_id,rating, got '{','.join(fields)}'") from None
        if not (low <= rating <= high and math.isfinite(rating)):  # the comparison is also false for NaN
            bounds = f"on the model's rating scale {scale[0]:g}..{scale[1]:g}" if None not in scale else "finite"
            raise InputError(f"{source}:{number}: the rating must be {bounds}, got '{fields[1].strip()}'")
        pairs.append((movie_id, rating))
    if not pairs:
        raise InputError(f"{source}: no ratings")
    return pairs
