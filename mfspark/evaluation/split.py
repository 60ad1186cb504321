"""Seeded, reproducible train/test splits of a ratings table.

Random draws come from `xxhash64(seed, user_id, movie_id)`, not `rand()`: the same data and
seed give the same split whatever the partitioning or the order of the rows. Test ratings
whose user or movie never appears in training are kept (the bias model's cold-start path
scores them) and counted by `cold_start_counts`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyspark.sql import Window
from pyspark.sql import functions as F

from mfspark.errors import ConfigError, InputError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

SPLIT_KINDS = ("random", "temporal", "kfold", "predefined")
PREDEFINED_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
# ml-100k's u.data format (and its u1.base, ..., ub.test): tab-separated, no header.
ML100K_SCHEMA = "user_id int, movie_id int, rating float, unix_time long"


@dataclass(frozen=True)
class Split:
    """One train/test pair; `name` says which split (e.g. "random", "fold-2", "u1")."""

    name: str
    train: DataFrame
    test: DataFrame


def uniform_draw(seed: int) -> Column:
    """A value in [0, 1) fixed by (seed, user_id, movie_id) alone."""
    hashed = F.xxhash64(F.lit(seed), F.col("user_id"), F.col("movie_id"))
    return F.shiftrightunsigned(hashed, 11).cast("double") / float(2**53)


def check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"--test-fraction must be between 0 and 1, got {test_fraction}")


def random_split(ratings: DataFrame, test_fraction: float, seed: int) -> Split:
    """Each rating goes to test with probability `test_fraction`."""
    check_fraction(test_fraction)
    in_test = uniform_draw(seed) < test_fraction
    return Split("random", ratings.where(~in_test), ratings.where(in_test))


def temporal_split(ratings: DataFrame, test_fraction: float | None = None, last_k: int | None = None) -> Split:
    """Each user's latest ratings go to test: the last `last_k`, or round(test_fraction * n_u) of them.

    "Latest" orders by rated_at, ties broken by movie_id (the higher id counts as later), so
    the split is fully determined by the data.
    """
    if (test_fraction is None) == (last_k is None):
        raise ConfigError("temporal split needs exactly one of test_fraction and last_k")
    by_user = Window.partitionBy("user_id")
    newest_first = by_user.orderBy(F.col("rated_at").desc(), F.col("movie_id").desc())
    if last_k is not None:
        if last_k < 1:
            raise ConfigError(f"last_k must be >= 1, got {last_k}")
        n_test = F.lit(last_k)
    else:
        check_fraction(test_fraction)
        n_test = F.round(F.count(F.lit(1)).over(by_user) * test_fraction)
    flagged = ratings.withColumn("_in_test", F.row_number().over(newest_first) <= n_test)
    return Split("temporal", flagged.where(~F.col("_in_test")).drop("_in_test"),
                 flagged.where(F.col("_in_test")).drop("_in_test"))


def kfold_splits(ratings: DataFrame, folds: int, seed: int) -> list[Split]:
    """`folds` splits whose test parts partition the ratings (fold f holds draws in [f/k, (f+1)/k))."""
    if folds < 2:
        raise ConfigError(f"k-fold needs at least 2 folds, got {folds}")
    fold = F.floor(uniform_draw(seed) * folds)
    return [Split(f"fold-{f + 1}", ratings.where(fold != f), ratings.where(fold == f)) for f in range(folds)]


def read_ml100k_file(spark: SparkSession, path: str | Path) -> DataFrame:
    """One ml-100k ratings file (u.data, u1.base, ...) in the ingested ratings schema."""
    if not Path(path).is_file():
        raise InputError(f"{path}: not found (predefined ml-100k splits need u1.base, u1.test, ... from ml-100k)")
    raw = spark.read.csv(str(path), schema=ML100K_SCHEMA, sep="\t", mode="FAILFAST")
    return raw.select("user_id", "movie_id", "rating", F.timestamp_seconds("unix_time").alias("rated_at"))


def predefined_split(spark: SparkSession, source_dir: str | Path, name: str) -> Split:
    """ml-100k's own split `name` (u1..u5: 5-fold; ua/ub: 10 ratings per user in test)."""
    if name not in PREDEFINED_SPLITS:
        raise ConfigError(f"unknown predefined split '{name}' (choose from {', '.join(PREDEFINED_SPLITS)})")
    base = Path(source_dir)
    return Split(name, read_ml100k_file(spark, base / f"{name}.base"), read_ml100k_file(spark, base / f"{name}.test"))


def make_splits(
    ratings: DataFrame | None,
    kind: str,
    *,
    test_fraction: float = 0.2,
    seed: int = 42,
    folds: int = 5,
    predefined_dir: str | Path | None = None,
    predefined_name: str = "u1",
    spark: SparkSession | None = None,
) -> list[Split]:
    """The evaluation splits of one `kind` (`SPLIT_KINDS`): a single Split, or `folds` of them for k-fold.

    "predefined" reads ml-100k's own files (`predefined_dir`, `predefined_name`) with `spark`
    (default: the active session) and needs no `ratings`; the others split `ratings`.
    """
    if kind == "predefined":
        if not predefined_dir:
            raise ConfigError("--split predefined needs --predefined-dir (an ml-100k directory)")
        from pyspark.sql import SparkSession

        return [predefined_split(spark or SparkSession.active(), predefined_dir, predefined_name)]
    if kind not in SPLIT_KINDS:
        raise ConfigError(f"unknown split '{kind}' (choose from {', '.join(SPLIT_KINDS)})")
    if ratings is None:
        raise ConfigError(f"a {kind} split needs a ratings table")
    if kind == "kfold":
        return kfold_splits(ratings, folds, seed)
    if kind == "temporal":
        return [temporal_split(ratings, test_fraction=test_fraction)]
    return [random_split(ratings, test_fraction, seed)]


def cold_start_counts(split: Split) -> dict[str, int]:
    """Train/test sizes and how many test ratings have a user, a movie, or either unseen in training."""
    users = split.train.select("user_id").distinct().withColumn("_known_user", F.lit(1))
    movies = split.train.select("movie_id").distinct().withColumn("_known_movie", F.lit(1))
    flagged = split.test.select("user_id", "movie_id").join(users, "user_id", "left").join(movies, "movie_id", "left")
    new_user, new_movie = F.col("_known_user").isNull(), F.col("_known_movie").isNull()
    row = flagged.agg(
        F.count(F.lit(1)).alias("test"),
        F.sum(new_user.cast("long")).alias("test_unseen_user"),
        F.sum(new_movie.cast("long")).alias("test_unseen_movie"),
        F.sum((new_user | new_movie).cast("long")).alias("test_unseen_any"),
    ).first()
    counts = {key: int(value or 0) for key, value in row.asDict().items()}
    counts["train"] = split.train.count()
    log.info("split %s: %d train, %d test ratings; %d test ratings have an unseen user, %d an unseen movie "
             "(%d either): kept, scored by the cold-start path", split.name, counts["train"], counts["test"],
             counts["test_unseen_user"], counts["test_unseen_movie"], counts["test_unseen_any"])
    return counts
