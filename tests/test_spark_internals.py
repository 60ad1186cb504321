"""The private Spark/numba hooks: the classic-Spark self-check and the warnings when a fallback is taken."""

import logging

import numpy as np
import pytest

from mfspark.errors import ConfigError
from mfspark.runtime import spark_internals


class ConnectLikeSession:
    """What a Spark Connect session does on `.sparkContext`: raise (PySparkNotImplementedError there)."""

    @property
    def sparkContext(self):
        raise NotImplementedError("[JVM_ATTRIBUTE_NOT_SUPPORTED] Attribute `sparkContext` is not supported")


class ContextWithoutJsc:
    _jvm = object()


class SessionWithoutJsc:
    sparkContext = ContextWithoutJsc()


def test_a_spark_connect_session_gets_one_clear_error():
    with pytest.raises(ConfigError, match=r"^this ALS needs classic Spark .*ConnectLikeSession lacks "
                                          r"SparkSession.sparkContext \(NotImplementedError\)"):
        spark_internals.check_classic(ConnectLikeSession())


def test_a_pyspark_without_the_hooks_gets_one_clear_error():
    with pytest.raises(ConfigError, match=r"^this ALS needs classic Spark .* lacks SparkContext._jsc;"):
        spark_internals.check_classic(SessionWithoutJsc())


def test_the_classic_session_passes_and_its_hooks_reach_the_jvm_the_session_runs_on(spark):
    spark_internals.check_classic(spark)
    # The Hadoop configuration is the session's own: a setting made through the public conf API shows in it.
    conf = spark_internals.hadoop_configuration(spark)
    conf.set("mfspark.test.marker", "42")
    assert spark_internals.hadoop_configuration(spark).get("mfspark.test.marker") == "42"
    # The JVM view builds Java objects; a Java array holds the values given, in order.
    hadoop = spark_internals.jvm(spark).org.apache.hadoop.fs
    renames = spark_internals.java_array(spark, hadoop.Options.Rename, [hadoop.Options.Rename.OVERWRITE,
                                                                       hadoop.Options.Rename.NONE])
    assert len(renames) == 2 and [str(r) for r in renames] == ["OVERWRITE", "NONE"]
    assert str(hadoop.Path("file:///a/b").getName()) == "b"


def test_missing_arrow_batch_rdd_falls_back_with_a_warning(caplog):
    class FrameWithoutJdf:
        pass

    with caplog.at_level(logging.WARNING, logger=spark_internals.__name__):
        assert spark_internals.arrow_batch_rdd(FrameWithoutJdf()) is None
    assert "falling back to mapInArrow" in caplog.text


def test_uncacheable_kernel_compiles_in_memory_with_a_warning(caplog):
    def read_only_cache():
        raise OSError("cannot write /nonexistent/numba_cache")

    with caplog.at_level(logging.WARNING, logger=spark_internals.__name__):
        kernel = spark_internals.cached_kernel(read_only_cache, lambda: np.add, "add_kernel")
    assert kernel is np.add
    assert "numba cannot cache add_kernel on disk (cannot write /nonexistent/numba_cache)" in caplog.text


def test_cacheable_kernel_logs_nothing(caplog):
    import numba

    def twice(x):
        return 2 * x

    with caplog.at_level(logging.WARNING, logger=spark_internals.__name__):
        kernel = spark_internals.cached_kernel(lambda: numba.njit(cache=True)(twice), lambda: None, "twice")
    assert kernel(21) == 42
    assert caplog.text == ""


def test_parquet_columns_names_files_and_source_columns_only_for_plain_selections(spark, tmp_path):
    from pyspark.sql import functions as F

    spark.createDataFrame([(1, 10, 4.0), (2, 20, 3.0)], "user_id int, movie_id int, rating float").repartition(2) \
        .write.parquet(str(tmp_path / "ratings"))
    ratings = spark.read.parquet(str(tmp_path / "ratings"))
    files, columns = spark_internals.parquet_columns(
        ratings.select(F.col("movie_id").alias("query_id"), F.col("user_id").alias("candidate_id")))
    assert columns == ["movie_id", "user_id"]
    assert sorted(files) == sorted(ratings.inputFiles()) and len(files) == 2
    assert spark_internals.parquet_columns(ratings.where("rating > 3").select("user_id")) is None
    assert spark_internals.parquet_columns(ratings.select((F.col("user_id") + 1).alias("user_id"))) is None
    assert spark_internals.parquet_columns(ratings.select(F.col("rating").cast("int"))) is None
    cached = spark.read.parquet(str(tmp_path / "ratings")).cache()
    try:
        assert spark_internals.parquet_columns(cached.select("user_id")) is None
    finally:
        cached.unpersist()
    assert spark_internals.parquet_columns(spark.createDataFrame([(1,)], "id int").select("id")) is None


def test_hash_partition_keys_land_in_their_own_partition(spark):
    from pyspark.sql import functions as F

    keys = spark_internals.hash_partition_keys(18)
    assert len(set(keys)) == 18
    frame = spark.createDataFrame([(k,) for k in keys], "block int").repartition(18, "block")
    placed = dict(frame.select("block", F.spark_partition_id().alias("p")).collect())
    assert placed == {k: i for i, k in enumerate(keys)}
    assert spark_internals._murmur3_int(-7) == spark.range(1).select(F.hash(F.lit(-7))).first()[0]


def own_block(block):
    return block


def test_co_partitioned_union_reads_partition_i_of_each_rdd_without_a_shuffle(spark):
    sc = spark.sparkContext
    resident = spark_internals.one_record_per_batch(
        sc.parallelize([(b, f"r{b}.{p}") for b in range(3) for p in range(2)]).partitionBy(3, own_block)
        .mapPartitions(lambda rows: rows, preservesPartitioning=True))
    messages = sc.parallelize([(b, f"m{s}->{b}") for s in range(2) for b in range(3)], 4).partitionBy(3, own_block)
    union = spark_internals.co_partitioned_union(resident, messages)
    solved = union.mapPartitions(lambda rows: [sorted(value for _, value in rows)], preservesPartitioning=True)
    # the result keeps the partitioner, so it can be unioned again (e.g. as the next half-step's start)
    again = spark_internals.co_partitioned_union(resident, solved.map(lambda v: (0, v), preservesPartitioning=True))
    assert union.getNumPartitions() == 3 and again.getNumPartitions() == 3
    assert solved.collect() == [sorted([f"r{b}.0", f"r{b}.1", f"m0->{b}", f"m1->{b}"]) for b in range(3)]
    assert union._jrdd.rdd().dependencies().head().getClass().getSimpleName() == "OneToOneDependency"
    with pytest.raises(ValueError, match="do not share one JVM partitioner"):
        spark_internals.co_partitioned_union(resident, sc.parallelize([(0, "x")], 3))
