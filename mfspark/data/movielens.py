"""MovieLens release formats: which files each release has, how to tell releases apart, and
how each file's lines become typed, validated columns.

Parsing works on lines read by `spark.read.text` and uses only built-in column functions
(split, from_csv, try_cast, regexp), so the JVM does all the work. Every parsed row carries
`reason`: null when the row is valid, otherwise the first check it failed, as `code` or
`code:field` (for example `not_numeric:rating`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from mfspark.errors import InputError

CSV_RELEASES = ("ml-20m", "ml-25m", "ml-32m", "ml-latest", "ml-latest-small")
RELEASES = ("ml-100k", "ml-1m", "ml-10m", *CSV_RELEASES)
MAX_INT32 = 2**31 - 1

# u.genre is optional: this is its content in every ml-100k release.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
NO_GENRES = "(no genres listed)"
BLANK_LINE = "blank_line"
INVALID_UTF8 = "invalid_utf8"
FIELD_COUNT = "field_count"
DUPLICATE = "duplicate"

# Output tables (explicit schemas, also used to write empty tables).
TABLE_SCHEMAS = {
    "ratings": "user_id int, movie_id int, rating float, rated_at timestamp",
    "movies": "movie_id int, title string, year int, genres array<string>",
    "tags": "user_id int, movie_id int, tag string, tagged_at timestamp",
    "links": "movie_id int, imdb_id int, tmdb_id int",
    "users": "user_id int, gender string, age int, occupation string, zip_code string",
    "rejects": "source_file string, line_number bigint, raw_line string, reason string, table string",
}

# Rows sharing a key are duplicates: ratings keep the latest by timestamp, other tables the first line.
TABLE_KEYS = {"ratings": ("user_id", "movie_id"), "movies": ("movie_id",), "links": ("movie_id",),
              "users": ("user_id",)}
LATEST_BY = {"ratings": "rated_at"}


@dataclass(frozen=True)
class SourceFile:
    """One input file of a release and how to split its lines into named raw fields."""

    table: str
    name: str
    fields: tuple[str, ...]
    separator: str
    encoding: str = "utf-8"
    header: tuple[str, ...] | None = None  # CSV releases: the exact header line, as fields
    quoted: bool = False  # CSV quoting is possible (titles and tags contain commas)
    required: bool = False
    multiline: bool = False  # a quoted field may hold a line break (titles): lines are joined into records


@dataclass(frozen=True)
class Release:
    name: str
    layout: str  # ml-100k, ml-1m, ml-10m or csv: decides the files and their formats
    files: tuple[SourceFile, ...]
    half_stars: bool  # ratings 0.5..5.0 in half stars; otherwise whole stars 1..5


RATING_FIELDS = ("user_id", "movie_id", "rating", "timestamp")
TAG_FIELDS = ("user_id", "movie_id", "tag", "timestamp")
DAT_MOVIE_FIELDS = ("movie_id", "title", "genres")
ML100K_MOVIE_FIELDS = ("movie_id", "title", "release_date", "video_release_date", "imdb_url",
                       *(f"genre_{i}" for i in range(len(ML100K_GENRES))))

LAYOUT_FILES: dict[str, tuple[SourceFile, ...]] = {
    "ml-100k": (
        SourceFile("ratings", "u.data", RATING_FIELDS, "\t", "latin-1", required=True),
        SourceFile("movies", "u.item", ML100K_MOVIE_FIELDS, "|", "latin-1", required=True),
        SourceFile("users", "u.user", ("user_id", "age", "gender", "occupation", "zip_code"), "|", "latin-1"),
    ),
    "ml-1m": (
        SourceFile("ratings", "ratings.dat", RATING_FIELDS, "::", "latin-1", required=True),
        SourceFile("movies", "movies.dat", DAT_MOVIE_FIELDS, "::", "latin-1", required=True),
        SourceFile("users", "users.dat", ("user_id", "gender", "age", "occupation", "zip_code"), "::", "latin-1"),
    ),
    "ml-10m": (
        SourceFile("ratings", "ratings.dat", RATING_FIELDS, "::", required=True),
        SourceFile("movies", "movies.dat", DAT_MOVIE_FIELDS, "::", required=True),
        SourceFile("tags", "tags.dat", TAG_FIELDS, "::"),
    ),
    "csv": (
        SourceFile("ratings", "ratings.csv", RATING_FIELDS, ",", header=("userId", "movieId", "rating", "timestamp"),
                   required=True),
        SourceFile("movies", "movies.csv", DAT_MOVIE_FIELDS, ",", header=("movieId", "title", "genres"),
                   quoted=True, required=True, multiline=True),
        SourceFile("tags", "tags.csv", TAG_FIELDS, ",", header=("userId", "movieId", "tag", "timestamp"), quoted=True),
        SourceFile("links", "links.csv", ("movie_id", "imdb_id", "tmdb_id"), ",",
                   header=("movieId", "imdbId", "tmdbId")),
    ),
}


def release_named(name: str) -> Release:
    if name not in RELEASES:
        raise InputError(f"unknown MovieLens release '{name}': expected one of {', '.join(RELEASES)}")
    layout = name if name in LAYOUT_FILES else "csv"
    return Release(name, layout, LAYOUT_FILES[layout], half_stars=name not in ("ml-100k", "ml-1m"))


def detect_release(source_dir: Path) -> Release:
    """Tell the release from the files present (and, for ratings.dat alone, the rating scale)."""
    if not source_dir.is_dir():
        raise InputError(f"input directory {source_dir} does not exist (expected a MovieLens release directory)")
    present = {p.name for p in source_dir.iterdir() if p.is_file()}
    if "u.data" in present:
        return release_named("ml-100k")
    if "ratings.csv" in present:
        return release_named(source_dir.name if source_dir.name in CSV_RELEASES else "ml-latest")
    if "ratings.dat" in present:
        if "users.dat" in present and "tags.dat" not in present:
            return release_named("ml-1m")
        if "tags.dat" in present and "users.dat" not in present:
            return release_named("ml-10m")
        return release_named("ml-10m" if has_half_stars(source_dir / "ratings.dat") else "ml-1m")
    raise InputError(
        f"{source_dir} holds no MovieLens ratings file: expected ratings.csv (ml-20m and later), "
        f"ratings.dat (ml-1m, ml-10m) or u.data (ml-100k); found {', '.join(sorted(present)) or 'nothing'}"
    )


def has_half_stars(ratings_dat: Path, sample_lines: int = 100_000) -> bool:
    with ratings_dat.open("rb") as lines:
        for _, line in zip(range(sample_lines), lines):
            fields = line.split(b"::")
            if len(fields) == 4 and b"." in fields[2] and not fields[2].endswith(b".0"):
                return True
    return False


def read_genre_names(u_genre: Path) -> tuple[str, ...]:
    """ml-100k genre names in flag order, from u.genre (`name|index` lines) when present."""
    if not u_genre.is_file():
        return ML100K_GENRES
    pairs = [line.rsplit("|", 1) for line in u_genre.read_text(encoding="latin-1").splitlines() if "|" in line]
    names = tuple(name for name, _ in sorted(pairs, key=lambda pair: int(pair[1])))
    if len(names) != len(ML100K_GENRES):
        raise InputError(f"{u_genre}: expected {len(ML100K_GENRES)} genres, found {len(names)}")
    return names


def parse_lines(lines: DataFrame, source: SourceFile, release: Release, genre_names: tuple[str, ...]) -> DataFrame:
    """Add the table's typed columns, `reason` and `raw_line` (decoded text) to a DataFrame of lines (`value`)."""
    text = F.col("value")
    if source.encoding == "latin-1":
        text = F.decode(text.cast("binary"), "ISO-8859-1")
    raw, field_count = split_fields(text, source)
    # Split once into named columns: the checks refer to each field several times, and Spark keeps
    # this projection apart rather than repeating the split in every reference.
    fields = lines.select("*", text.alias("raw_line"), field_count.alias("_field_count"),
                          *(column.alias(f"_raw_{name}") for name, column in raw.items()))
    columns, checks = TABLE_PARSERS[source.table]({name: F.col(f"_raw_{name}") for name in raw}, release, genre_names)
    typed = fields.select("*", *(column.alias(name) for name, column in columns.items()))
    first_failure = [
        (BLANK_LINE, F.trim("raw_line") == ""),
        # Spark keeps a text line's bytes as they are; invalid UTF-8 would be stored as mojibake.
        *([(INVALID_UTF8, ~F.is_valid_utf8("raw_line"))] if source.encoding == "utf-8" else []),
        (FIELD_COUNT, F.col("_field_count") != len(source.fields)),
        *checks,
    ]
    reason = F.coalesce(*(F.when(failed, F.lit(code)) for code, failed in first_failure))
    raw_line = F.make_valid_utf8("raw_line") if source.encoding == "utf-8" else F.col("raw_line")
    return typed.select(*lines.columns, *columns, reason.alias("reason"), raw_line.alias("raw_line"))


def split_fields(text: Column, source: SourceFile) -> tuple[dict[str, Column], Column]:
    """Raw string fields by name, and the number of fields on the line."""
    if source.quoted:
        schema = ", ".join(f"`{name}` string" for name in source.fields)
        parsed = F.from_csv(text, schema, {"escape": '"', "mode": "PERMISSIVE"})
        unquoted = F.regexp_replace(text, r'"(?:[^"]|"")*"', "")
        count = F.size(F.split(unquoted, ",", -1))
        return {name: parsed[name] for name in source.fields}, count
    parts = F.split(text, re.escape(source.separator), -1)
    return {name: F.get(parts, i) for i, name in enumerate(source.fields)}, F.size(parts)


# Each helper returns the typed value of an output column and the checks on it. The checks refer
# to the typed column by name (`F.col`): parse_lines computes typed columns once, in their own
# projection, so a value parsed from text is not parsed again by every check that uses it.
Checks = list[tuple[str, Column]]


def positive_int(raw: Column, field: str) -> tuple[Column, Checks]:
    value = F.col(field)
    return raw.try_cast("int"), [
        (f"not_numeric:{field}", value.isNull() & raw.try_cast("double").isNull()),
        (f"not_positive_int32:{field}", value.isNull() | (value <= 0)),
    ]


# Spark's timestamp range (0001-01-01 .. 9999-12-31 UTC) in epoch seconds; beyond it the conversion overflows.
MIN_EPOCH_SECONDS, MAX_EPOCH_SECONDS = -62_135_596_800, 253_402_300_799


def epoch_seconds(raw: Column, column: str) -> tuple[Column, Checks]:
    seconds = raw.try_cast("bigint")
    in_range = seconds.between(MIN_EPOCH_SECONDS, MAX_EPOCH_SECONDS)
    return F.when(in_range, F.timestamp_seconds(seconds)), [
        ("not_numeric:timestamp", seconds.isNull()),
        ("out_of_range:timestamp", F.col(column).isNull()),
    ]


def non_empty(raw: Column, field: str) -> tuple[Column, Checks]:
    value = F.trim(raw)
    return value, [(f"empty:{field}", value.isNull() | (value == ""))]


def rating_on_scale(raw: Column, half_stars: bool) -> tuple[Column, Checks]:
    value = F.col("rating")
    steps = value * 2 if half_stars else value
    on_scale = value.between(0.5 if half_stars else 1.0, 5.0) & (steps == F.floor(steps))
    return raw.try_cast("float"), [("not_numeric:rating", value.isNull()), ("off_scale:rating", ~on_scale)]


def user_movie_event(raw: dict[str, Column], name: str, value: tuple[Column, Checks], time_name: str
                     ) -> tuple[dict, Checks]:
    """The columns and checks of a (user_id, movie_id, <name>, timestamp) row: a rating or a tag."""
    user_id, user_checks = positive_int(raw["user_id"], "user_id")
    movie_id, movie_checks = positive_int(raw["movie_id"], "movie_id")
    column, value_checks = value
    at, time_checks = epoch_seconds(raw["timestamp"], time_name)
    columns = {"user_id": user_id, "movie_id": movie_id, name: column, time_name: at}
    return columns, user_checks + movie_checks + value_checks + time_checks


def parse_ratings(raw: dict[str, Column], release: Release, _genres: tuple[str, ...]) -> tuple[dict, Checks]:
    return user_movie_event(raw, "rating", rating_on_scale(raw["rating"], release.half_stars), "rated_at")


def parse_movies(raw: dict[str, Column], release: Release, genre_names: tuple[str, ...]) -> tuple[dict, Checks]:
    movie_id, id_checks = positive_int(raw["movie_id"], "movie_id")
    full_title, title_checks = non_empty(raw["title"], "title")
    title, year = split_title_year(full_title)
    genres = genre_flags(raw, genre_names) if release.layout == "ml-100k" else genre_list(raw["genres"])
    return {"movie_id": movie_id, "title": title, "year": year, "genres": genres}, id_checks + title_checks


TITLE_YEAR = r"(?s)^(.*\S)\s*\((\d{4})\)$"  # (?s): a title may hold a line break (multiline)


def split_title_year(title: Column) -> tuple[Column, Column]:
    """"Toy Story (1995)" -> ("Toy Story", 1995); the year is the last "(dddd)" at the very end."""
    has_year = title.rlike(TITLE_YEAR)
    return (
        F.when(has_year, F.regexp_extract(title, TITLE_YEAR, 1)).otherwise(title),
        F.when(has_year, F.regexp_extract(title, TITLE_YEAR, 2).cast("int")),
    )


def genre_list(raw: Column) -> Column:
    genres = F.trim(raw)
    return F.when(genres.isNull() | (genres == "") | (genres == NO_GENRES), F.array().cast("array<string>")) \
        .otherwise(F.split(genres, r"\|"))


def genre_flags(raw: dict[str, Column], genre_names: tuple[str, ...]) -> Column:
    flagged = F.array(*(F.when(raw[f"genre_{i}"] == "1", F.lit(name)) for i, name in enumerate(genre_names)))
    return F.filter(flagged, lambda genre: genre.isNotNull())


def parse_tags(raw: dict[str, Column], _release: Release, _genres: tuple[str, ...]) -> tuple[dict, Checks]:
    return user_movie_event(raw, "tag", non_empty(raw["tag"], "tag"), "tagged_at")


def parse_links(raw: dict[str, Column], _release: Release, _genres: tuple[str, ...]) -> tuple[dict, Checks]:
    movie_id, movie_checks = positive_int(raw["movie_id"], "movie_id")
    imdb_id, imdb_checks = positive_int(raw["imdb_id"], "imdb_id")
    # Some movies have no TMDB id: an empty field is a null id, anything else must be a valid id.
    tmdb_raw = F.when(F.trim(raw["tmdb_id"]) != "", raw["tmdb_id"])
    tmdb_id, tmdb_checks = positive_int(tmdb_raw, "tmdb_id")
    tmdb_checks = [(code, tmdb_raw.isNotNull() & failed) for code, failed in tmdb_checks]
    return {"movie_id": movie_id, "imdb_id": imdb_id, "tmdb_id": tmdb_id}, movie_checks + imdb_checks + tmdb_checks


def parse_users(raw: dict[str, Column], _release: Release, _genres: tuple[str, ...]) -> tuple[dict, Checks]:
    user_id, id_checks = positive_int(raw["user_id"], "user_id")
    columns = {"user_id": user_id, "gender": F.trim(raw["gender"]), "age": raw["age"].try_cast("int"),
               "occupation": F.trim(raw["occupation"]), "zip_code": F.trim(raw["zip_code"])}
    return columns, id_checks + [("not_numeric:age", F.col("age").isNull())]


TABLE_PARSERS = {"ratings": parse_ratings, "movies": parse_movies, "tags": parse_tags, "links": parse_links,
                 "users": parse_users}
