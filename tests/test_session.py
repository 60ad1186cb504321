import argparse
import logging
import os
import subprocess
import sys

import pytest

from mfspark.errors import ConfigError, JavaError
from mfspark.runtime.session import check_java, load_profile, packaged_profiles, parse_overrides
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


def write_profile(directory, name="local", mfspark="", spark='"spark.sql.shuffle.partitions" = "3"'):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.toml").write_text(f"[spark]\n{spark}\n\n[mfspark]\n{mfspark}\n")
    return directory


@pytest.fixture
def elsewhere(monkeypatch, tmp_path):
    """Run from a directory with no ./conf and no MFSPARK_CONF_DIR, as an installed package would."""
    monkeypatch.delenv("MFSPARK_CONF_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_packaged_profiles_are_found_from_any_directory(elsewhere):
    profile = load_profile("local", elsewhere / "out")
    assert profile.source.endswith("(packaged)")
    assert profile.spark["spark.master"] == "local[*]"
    assert profile.spark == load_profile("local", elsewhere / "out", conf_dir=REPO / "conf").spark
    assert packaged_profiles() == ["cluster", "local", "test", "yarn"]


def test_override_directories_win_by_name_in_order(elsewhere, monkeypatch):
    write_profile(elsewhere / "conf", spark='"spark.sql.shuffle.partitions" = "3"')
    assert load_profile("local", elsewhere).spark == {"spark.sql.shuffle.partitions": "3"}  # ./conf
    env_dir = write_profile(elsewhere / "env", spark='"spark.sql.shuffle.partitions" = "4"')
    monkeypatch.setenv("MFSPARK_CONF_DIR", str(env_dir))
    assert load_profile("local", elsewhere).spark == {"spark.sql.shuffle.partitions": "4"}
    cli_dir = write_profile(elsewhere / "cli", spark='"spark.sql.shuffle.partitions" = "5"')
    assert load_profile("local", elsewhere, conf_dir=cli_dir).spark == {"spark.sql.shuffle.partitions": "5"}
    # A profile no override directory holds still comes from the package.
    assert load_profile("cluster", elsewhere, conf_dir=cli_dir).source.endswith("(packaged)")


def test_pyfiles_zip_carries_the_profiles(elsewhere):
    bundle = elsewhere / "mfspark.zip"
    subprocess.run(["bash", str(REPO / "scripts" / "build_pyfiles.sh"), str(bundle)], check=True,
                   capture_output=True, env={**os.environ, "PYTHON": sys.executable})
    probe = ("import mfspark.runtime.session as s; p = s.load_profile('local', 'out'); "
             "print(s.__file__); print(p.source); print(p.spark['spark.master'])")
    shown = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, check=True, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(bundle)}).stdout.splitlines()
    assert shown == [f"{bundle}/mfspark/runtime/session.py", f"{bundle}/mfspark/runtime/profiles/local.toml (packaged)",
                     "local[*]"]


def test_unknown_mfspark_key_in_a_profile_is_an_error_naming_it(elsewhere):
    write_profile(elsewhere / "conf", mfspark='chekpoint_dir = "/ckpt"')
    with pytest.raises(ConfigError, match=r"unknown mfspark setting 'chekpoint_dir' \(allowed: checkpoint_dir, "
                                          r"log_level;"):
        load_profile("local", elsewhere)


def test_unknown_mfspark_key_in_conf_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"--conf logLevel=DEBUG: unknown mfspark setting 'logLevel' "
                                          r"\(allowed: checkpoint_dir, log_level;"):
        load_profile("local", tmp_path, {"logLevel": "DEBUG"}, conf_dir=REPO / "conf")


def test_unknown_table_and_bad_log_level_are_errors(elsewhere):
    (elsewhere / "conf").mkdir()
    (elsewhere / "conf" / "local.toml").write_text("[sprak]\n")
    with pytest.raises(ConfigError, match=r"unknown table \[sprak\]"):
        load_profile("local", elsewhere)
    with pytest.raises(ConfigError, match="--conf log_level=loud: log_level 'loud' is not one of DEBUG, INFO"):
        load_profile("test", elsewhere, {"log_level": "loud"}, conf_dir=REPO / "conf")


@pytest.fixture
def root_level():
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def test_profile_log_level_is_honoured_after_the_cli_configured_logging(monkeypatch, tmp_path, root_level):
    from mfspark.commands import main as cli
    from mfspark.runtime import session

    monkeypatch.setattr(session, "build_session", lambda profile, app_name: profile)
    write_profile(tmp_path / "conf", mfspark='log_level = "WARNING"')
    cli.configure_logging("INFO")  # what main() does before the profile is known
    args = argparse.Namespace(profile="local", conf=None, conf_dir=str(tmp_path / "conf"), log_level=None,
                              out=str(tmp_path / "out"))
    assert cli.session_for(args, "app").log_level == "WARNING"
    assert logging.getLogger().level == logging.WARNING
    cli.session_for(argparse.Namespace(**{**vars(args), "log_level": "DEBUG"}), "app")  # --log-level wins
    assert logging.getLogger().level == logging.DEBUG
