"""What a user sees on stderr: a successful run prints mfspark's own lines, no Spark chatter, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys

from mfspark.runtime.logs import LOG4J2_PROPERTIES, spark_console_level, with_console_logging
from tests.conftest import REPO

RATINGS = ["userId,movieId,rating,timestamp"] + [
    f"{u},{m},{(u * m) % 5 + 1}.0,{1000 + u * 10 + m}" for u in range(1, 21) for m in range(1, 11)
] + ["1,2,four,100"]  # one reject: ingest numbers its line (the code path that had an unpartitioned window)


def test_successful_ingest_and_train_print_no_traceback_and_no_spark_warnings(tmp_path):
    source = tmp_path / "release"
    source.mkdir()
    (source / "ratings.csv").write_text("\n".join(RATINGS) + "\n")
    common = ["--profile", "test", "--conf-dir", str(REPO / "conf"), "--log-level", "INFO"]
    ingest = ["ingest", "--input", str(source), "--out", str(tmp_path / "ingest"), "--max-reject-fraction", "0.05"]
    train = ["train", "--input", str(tmp_path / "ingest"), "--out", str(tmp_path / "als"), "--rank", "2",
             "--max-iter", "2"]
    script = ("import sys; from mfspark.commands.main import main; "
              f"sys.exit(main({[*ingest, *common]!r}) or main({[*train, *common]!r}))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
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
