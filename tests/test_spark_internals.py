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


def test_the_classic_session_passes(spark):
    spark_internals.check_classic(spark)


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
