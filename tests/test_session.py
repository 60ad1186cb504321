import pytest

from mfspark.errors import ConfigError, JavaError
from mfspark.runtime.session import check_java, load_profile, parse_overrides
from tests.conftest import REPO


def test_local_profile_places_scratch_and_checkpoints_under_output_root(tmp_path):
    profile = load_profile("local", tmp_path / "out", conf_dir=REPO / "conf")
    assert profile.spark["spark.master"] == "local[*]"
    assert profile.spark["spark.local.dir"] == str((tmp_path / "out" / "_spark_tmp").resolve())
    assert profile.checkpoint_dir == str((tmp_path / "out" / "_checkpoints").resolve())


def test_cluster_profile_leaves_master_to_spark_submit(tmp_path):
    assert "spark.master" not in load_profile("cluster", tmp_path, conf_dir=REPO / "conf").spark


def test_overrides_go_to_spark_or_to_mfspark(tmp_path):
    overrides = parse_overrides(["spark.sql.shuffle.partitions=4", "checkpoint_dir=/ckpt"])
    profile = load_profile("local", tmp_path, overrides, conf_dir=REPO / "conf")
    assert profile.spark["spark.sql.shuffle.partitions"] == "4"
    assert profile.checkpoint_dir == "/ckpt"


def test_malformed_override_and_missing_profile_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["spark.master"])
    with pytest.raises(ConfigError, match="profile 'nope' not found"):
        load_profile("nope", tmp_path, conf_dir=REPO / "conf")


def test_missing_java_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(JavaError, match="Java not found"):
        check_java()


def test_old_java_is_rejected(monkeypatch, tmp_path):
    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho \'java version "1.8.0_392"\' >&2\n')
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(JavaError, match="Java 8 found"):
        check_java()


def test_session_has_checkpoint_dir(spark):
    assert spark.sparkContext.getCheckpointDir() is not None
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
