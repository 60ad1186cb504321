"""Splits: disjoint, complete, reproducible for a seed whatever the partitioning; cold-start counts."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from mfspark.errors import ConfigError, InputError
from mfspark.evaluation.draws import uniform_draws
from mfspark.evaluation.split import (
    Split,
    cold_start_counts,
    kfold_splits,
    make_splits,
    predefined_split,
    random_split,
    temporal_split,
    uniform_draw,
)

SCHEMA = "user_id int, movie_id int, rating float, rated_at timestamp"
EPOCH = dt.datetime(2020, 1, 1)


def make_rows(users: int = 30, per_user: int = 20) -> list[tuple]:
    """Deterministic ratings; user u rates movies u, u+1, ... at times that are not in movie order."""
    rows = []
    for u in range(1, users + 1):
        for j in range(per_user):
            movie = u + j
            seconds = (j * 7919) % per_user * 3600 // 2  # pairs of equal times: ties exercise movie_id order
            rows.append((u, movie, float(1 + (u * j) % 9) / 2, EPOCH + dt.timedelta(seconds=seconds)))
    return rows


@pytest.fixture(scope="module")
def ratings(spark):
    return spark.createDataFrame(make_rows(), SCHEMA).cache()


def keys(df) -> set[tuple[int, int]]:
    return {(r["user_id"], r["movie_id"]) for r in df.select("user_id", "movie_id").collect()}


def assert_partition(split: Split, ratings) -> None:
    train, test = keys(split.train), keys(split.test)
    assert not train & test
    assert train | test == keys(ratings)
    assert split.train.count() + split.test.count() == ratings.count()


def test_random_split_is_complete_disjoint_and_about_the_fraction(ratings):
    split = random_split(ratings, 0.25, seed=7)
    assert_partition(split, ratings)
    assert 0.18 < split.test.count() / ratings.count() < 0.32
    assert split.train.columns == ratings.columns


def test_random_split_ignores_partitioning_and_depends_on_seed(ratings):
    once = random_split(ratings.repartition(1), 0.25, seed=7).test
    again = random_split(ratings.repartition(5, "rating").orderBy(F.rand(3)), 0.25, seed=7).test
    assert_df_equality(once, again, ignore_row_order=True)
    assert keys(random_split(ratings, 0.25, seed=8).test) != keys(once)


def test_numpy_draws_equal_sparks_including_negative_and_large_ids(spark):
    pairs = [(1, 1), (7, 318), (610, 193609), (-5, 2**31 - 1), (0, -(2**31))]
    frame = spark.createDataFrame(pairs, "user_id int, movie_id int")
    for seed in (42, 7):
        expected = [r["u"] for r in frame.select(uniform_draw(seed).alias("u")).collect()]
        users, movies = (np.array(column) for column in zip(*pairs))
        assert uniform_draws(seed, users, movies).tolist() == expected


def test_bad_fraction_is_a_config_error(ratings):
    with pytest.raises(ConfigError):
        random_split(ratings, 1.0, seed=1)


def test_temporal_split_puts_each_users_latest_ratings_in_test(ratings):
    split = temporal_split(ratings, test_fraction=0.2)
    assert_partition(split, ratings)
    test_per_user = split.test.groupBy("user_id").agg(F.count("*").alias("n"), F.min("rated_at").alias("first"))
    assert {r["n"] for r in test_per_user.collect()} == {4}  # round(0.2 * 20)
    last_train = split.train.groupBy("user_id").agg(F.max("rated_at").alias("last"))
    joined = test_per_user.join(last_train, "user_id").collect()
    assert len(joined) == 30 and all(r["last"] <= r["first"] for r in joined)


def test_temporal_split_breaks_time_ties_by_movie_id(spark):
    same_time = [(1, m, 3.0, EPOCH) for m in (5, 9, 2, 7)] + [(1, 1, 4.0, EPOCH - dt.timedelta(days=1))]
    split = temporal_split(spark.createDataFrame(same_time, SCHEMA), last_k=2)
    assert keys(split.test) == {(1, 9), (1, 7)}
    assert keys(split.train) == {(1, 5), (1, 2), (1, 1)}


def test_temporal_split_needs_exactly_one_size(ratings):
    with pytest.raises(ConfigError):
        temporal_split(ratings)
    with pytest.raises(ConfigError):
        temporal_split(ratings, test_fraction=0.2, last_k=3)


def test_kfold_test_parts_partition_the_ratings(ratings):
    folds = kfold_splits(ratings, 3, seed=11)
    assert [f.name for f in folds] == ["fold-1", "fold-2", "fold-3"]
    tests = [keys(f.test) for f in folds]
    assert set().union(*tests) == keys(ratings)
    assert sum(len(t) for t in tests) == ratings.count()
    for fold in folds:
        assert_partition(fold, ratings)
    again = kfold_splits(ratings.repartition(3), 3, seed=11)
    assert [keys(f.test) for f in again] == tests


def write_ml100k(path, name: str, rows: list[tuple]) -> None:
    path.joinpath(name).write_text("".join(f"{u}\t{m}\t{r}\t{t}\n" for u, m, r, t in rows))


def test_predefined_split_reads_ml100k_files(spark, tmp_path):
    write_ml100k(tmp_path, "u1.base", [(1, 1, 5, 874965758), (1, 2, 3, 876893171), (2, 1, 4, 888550871)])
    write_ml100k(tmp_path, "u1.test", [(1, 6, 5, 887431973), (3, 2, 1, 878542960)])
    split = predefined_split(spark, tmp_path, "u1")
    assert split.name == "u1"
    assert split.test.schema.simpleString() == "struct<user_id:int,movie_id:int,rating:float,rated_at:timestamp>"
    rows = sorted(split.test.select("user_id", "movie_id", "rating", F.col("rated_at").cast("long")).collect())
    assert [tuple(r) for r in rows] == [(1, 6, 5.0, 887431973), (3, 2, 1.0, 878542960)]
    assert split.train.count() == 3


def test_predefined_split_errors(spark, tmp_path):
    with pytest.raises(InputError, match="u2.base"):
        predefined_split(spark, tmp_path, "u2")
    with pytest.raises(ConfigError, match="u9"):
        predefined_split(spark, tmp_path, "u9")


def test_cold_start_counts(spark):
    train = spark.createDataFrame([(1, 10, 4.0, EPOCH), (2, 11, 3.0, EPOCH)], SCHEMA)
    test = spark.createDataFrame([(1, 11, 4.0, EPOCH), (3, 10, 2.0, EPOCH), (1, 12, 5.0, EPOCH),
                                  (3, 12, 1.0, EPOCH)], SCHEMA)
    counts = cold_start_counts(Split("hand", train, test))
    assert counts == {"train": 2, "test": 4, "test_unseen_user": 2, "test_unseen_movie": 2, "test_unseen_any": 3}


def test_make_splits_selects_each_kind_by_name(spark, ratings, tmp_path):
    [random] = make_splits(ratings, "random", test_fraction=0.25, seed=7)
    assert_df_equality(random.test, random_split(ratings, 0.25, seed=7).test, ignore_row_order=True)
    [temporal] = make_splits(ratings, "temporal", test_fraction=0.25, seed=7)
    assert_df_equality(temporal.test, temporal_split(ratings, test_fraction=0.25).test, ignore_row_order=True)
    folds = make_splits(ratings, "kfold", seed=11, folds=3)
    assert [keys(f.test) for f in folds] == [keys(f.test) for f in kfold_splits(ratings, 3, seed=11)]
    write_ml100k(tmp_path, "ua.base", [(1, 1, 5, 874965758)])
    write_ml100k(tmp_path, "ua.test", [(2, 1, 4, 888550871)])
    [predefined] = make_splits(None, "predefined", predefined_dir=tmp_path, predefined_name="ua", spark=spark)
    assert (predefined.name, keys(predefined.test)) == ("ua", {(2, 1)})


def test_make_splits_errors_name_what_is_missing(ratings):
    with pytest.raises(ConfigError, match="--split predefined needs --predefined-dir"):
        make_splits(None, "predefined")
    with pytest.raises(ConfigError, match="unknown split 'loo' \\(choose from random, temporal, kfold, predefined\\)"):
        make_splits(ratings, "loo")
    with pytest.raises(ConfigError, match="a kfold split needs a ratings table"):
        make_splits(None, "kfold")
