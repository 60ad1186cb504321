"""One local SparkSession for the whole test run, built the way jobs build theirs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Fixtures of the local HDFS/YARN/S3 services: hadoop_services, hdfs_root, s3_root.
pytest_plugins = ["tests.hadoop_services"]


class KeepSession:
    """The test session for the CLI: `main` stops its session at the end, the suite still needs it."""

    def __init__(self, spark):
        self._spark = spark

    def __getattr__(self, name):
        return getattr(self._spark, name)

    def stop(self):
        pass


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from mfspark.runtime.session import build_session, load_profile
    from tests.hadoop_services import spark_conf as hadoop_spark_conf

    root = tmp_path_factory.mktemp("spark")
    # The s3a jars must be on the JVM from its start: the one session of the suite carries them (and the local S3
    # server's fs.s3a.* settings, inert until a test reads s3a://) whenever scripts/fetch_jars.sh has run.
    profile = load_profile("test", root, overrides=hadoop_spark_conf(), conf_dir=REPO / "conf")
    session = build_session(profile, "mfspark-tests")
    yield session
    session.stop()


@pytest.fixture
def cli_with_test_session(spark, monkeypatch):
    """`mfspark.commands.main.main`, running its command on the test session."""
    from mfspark.commands import main as cli

    monkeypatch.setattr(cli, "session_for", lambda args, app_name: KeepSession(spark))
    return cli.main


def movielens_dir() -> Path | None:
    """Directory holding real releases (ml-latest-small, ...), if this machine has one."""
    for candidate in (os.environ.get("MFSPARK_DATA_DIR"), REPO.parent / "shared" / "data" / "movielens"):
        if candidate and (Path(candidate) / "ml-latest-small" / "ratings.csv").is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def ml_latest_small() -> Path:
    found = movielens_dir()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have ml-latest-small: set MFSPARK_DATA_DIR")
        pytest.skip("ml-latest-small not available (set MFSPARK_DATA_DIR)")
    return found / "ml-latest-small"


# Tests that take minutes each, left out of the default suite unless `-m` names their marker; `.ci/run` runs each
# marker as its own step, every time (markers: pyproject.toml).
OPT_IN_MARKERS = ("cluster", "hadoop", "slow", "bench_smoke")


def pytest_collection_modifyitems(config, items):
    """Mark the tests that read ml-latest-small `integration`, and leave the opt-in tests out unless `-m` names
    their marker."""
    for item in items:
        if "ml_latest_small" in item.fixturenames:
            item.add_marker(pytest.mark.integration)
    named = config.option.markexpr or ""
    left_out = [marker for marker in OPT_IN_MARKERS if marker not in named]
    kept = [item for item in items if not any(item.get_closest_marker(marker) for marker in left_out)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept
