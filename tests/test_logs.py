"""What a user sees on stderr: a successful run prints mfspark's own lines, no Spark chatter, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mfspark.runtime.logs import LOG4J2_PROPERTIES, spark_console_level, with_console_logging
from tests.conftest import REPO

RATINGS = ["userId,movieId,rating,timestamp"] + [
    f"{u},{m},{(u * m) % 5 + 1}.0,{1000 + u * 10 + m}" for u in range(1, 21) for m in range(1, 11)
] + ["1,2,four,100"]  # one reject: ingest numbers its line (the code path that had an unpartitioned window)


def test_successful_runs_print_no_traceback_and_no_spark_warnings(tmp_path):
    source = tmp_path / "release"
    source.mkdir()
    (source / "ratings.csv").write_text("\n".join(RATINGS) + "\n")
    (source / "movies.csv").write_text("movieId,title,genres\n" + "".join(f"{m},Movie {m} (2000),Drama\n"
                                                                         for m in range(1, 11)))
    common = ["--profile", "test", "--conf-dir", str(REPO / "conf"), "--log-level", "INFO"]
    ingest = ["ingest", "--input", str(source), "--out", str(tmp_path / "ingest"), "--max-reject-fraction", "0.05"]
    train = ["train", "--input", str(tmp_path / "ingest"), "--out", str(tmp_path / "als"), "--rank", "2",
             "--max-iter", "2"]
    # Then a Python stage whose output Spark stops reading (take): the JVM closes that worker's socket, which
    # made pyspark's daemon print a BrokenPipeError traceback every time.
    script = "\n".join([
        "import sys",
        "from mfspark.commands.main import main",
        "from mfspark.runtime.session import build_session, load_profile",
        f"assert main({[*ingest, *common]!r}) == 0 and main({[*train, *common]!r}) == 0",
        f"spark = build_session(load_profile('test', {str(tmp_path)!r}, conf_dir={str(REPO / 'conf')!r}))",
        "assert spark.sparkContext.parallelize(range(2_000_000), 2).map(lambda x: x * 2).take(1) == [0]",
        "spark.stop()",
    ])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert any("ingest finished" in line for line in lines) and any("train finished" in line for line in lines)
    assert not [line for line in lines if "Traceback" in line or "Error" in line]
    assert not [line for line in lines if " WARN " in line or "WindowExec" in line or "log4j" in line]
    assert all(" INFO mfspark" in line for line in lines if " INFO " in line), run.stderr


def test_spark_console_level_is_errors_only_unless_debugging():
    assert [spark_console_level(level) for level in ("DEBUG", "debug", "INFO", "WARNING")] == [
        "INFO", "INFO", "ERROR", "ERROR"]
    options = with_console_logging({"spark.driver.extraJavaOptions": "-Xss4m"}, "DEBUG")
    assert options["spark.driver.extraJavaOptions"] == (
        f"-Xss4m -Dlog4j2.configurationFile={LOG4J2_PROPERTIES.as_uri()} -Dmfspark.spark.log.level=INFO")
    assert LOG4J2_PROPERTIES.is_file()
    own = {"spark.driver.extraJavaOptions": "-Dlog4j2.configurationFile=file:/etc/mine.properties"}
    assert with_console_logging(own, "INFO") == own


def test_worker_daemon_ends_a_worker_quietly_on_a_broken_pipe_only():
    from mfspark.runtime.spark_internals import quiet_worker

    def closed_by_the_jvm(sock, authenticated):
        raise BrokenPipeError(32, "Broken pipe")

    # ends the worker, as pyspark's re-raise would, without the traceback
    assert quiet_worker(closed_by_the_jvm)(None, True) == 1

    def other_failure(sock, authenticated):
        raise ValueError("a real error")

    with pytest.raises(ValueError, match="a real error"):
        quiet_worker(other_failure)(None, True)
    assert quiet_worker(lambda sock, authenticated: 0)(None, True) == 0
