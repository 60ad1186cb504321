"""The local HDFS, YARN and S3 services (scripts/hadoop_local.sh) for tests, and the Spark settings that reach them.

Fixtures (import them in a test module, or from conftest):
  hadoop_services  session-scoped: the services, started by the script unless already running, stopped at the end only
                   if this run started them. In CI (`CI` set) a service that cannot start FAILS the tests that need it;
                   elsewhere they skip, so a machine without Java or the jars still runs the rest.
  hdfs_root        a fresh `hdfs://127.0.0.1:PORT/tests/<uuid>` per test
  s3_root          a fresh `s3a://BUCKET/tests/<uuid>` per test
`spark_conf()` returns the extra Spark settings (the s3a jars and fs.s3a.*): jars count only at JVM start, so the
suite's one session (tests/conftest.py) includes them whenever the jars are there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "hadoop_local.sh"
JARS = Path(os.environ.get("JARS_DIR", REPO / ".jars"))
STATE = Path(os.environ.get("HADOOP_LOCAL_DIR", REPO / "out" / "hadoop-local"))
START_TIMEOUT_S = 300


@dataclass(frozen=True)
class HadoopServices:
    """Where the running services are: the values of the script's env.sh."""

    hdfs: str  # fs.defaultFS of the local HDFS, e.g. hdfs://127.0.0.1:19820
    s3_endpoint: str  # http://127.0.0.1:19000
    s3_bucket: str
    conf_dir: Path  # a HADOOP_CONF_DIR for spark-submit --master yarn and the hdfs CLI
    env: dict[str, str]  # every export of env.sh (credentials included)
    started_here: bool


def _script(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HADOOP_LOCAL_DIR": str(STATE), "JARS_DIR": str(JARS)}
    env.setdefault("PYTHON", sys.executable)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)


def _read_env() -> dict[str, str]:
    """The `export KEY=VALUE` lines of STATE/env.sh."""
    values = {}
    for line in (STATE / "env.sh").read_text(encoding="utf-8").splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            values[key] = value
    return values


def s3a_jars_ready() -> bool:
    """scripts/fetch_jars.sh has filled .jars/s3a."""
    return (JARS / "s3a" / ".complete").is_file()


def spark_conf() -> dict[str, str]:
    """Extra Spark settings for s3a on the local S3 server: spark.jars (.jars/s3a) and fs.s3a.*.

    Read from STATE/spark-s3.conf, which `hadoop_local.sh conf` writes without starting anything (ports are fixed,
    so the file is right before and after a start). Empty when the jars are missing: the suite then runs without
    s3a, and the S3 tests fail (CI) or skip.
    """
    if not s3a_jars_ready():
        return {}
    done = _script("conf")
    if done.returncode != 0:
        raise RuntimeError(f"hadoop_local.sh conf failed: {done.stderr.strip()[-500:]}")
    conf = {}
    for line in (STATE / "spark-s3.conf").read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(" ")
        if key and not key.startswith("#"):
            conf[key] = value.strip()
    return conf


def _unavailable(message: str) -> None:
    """A service that is not there: a failure in CI (the tests must run there), a skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"CI needs the local Hadoop services: {message}", pytrace=False)
    pytest.skip(f"local Hadoop services unavailable: {message}")


@pytest.fixture(scope="session")
def hadoop_services() -> Iterator[HadoopServices]:
    if not (JARS / "minicluster" / ".complete").is_file() or not s3a_jars_ready():
        _unavailable(f"{JARS} incomplete: run scripts/fetch_jars.sh")
    started_here = False
    if _script("status").returncode != 0:
        done = _script("start", timeout=START_TIMEOUT_S)
        if done.returncode != 0:
            _script("stop")  # leave nothing half-started behind
            _unavailable(f"hadoop_local.sh start failed:\n{done.stderr.strip()[-2000:]}")
        started_here = True
    env = _read_env()
    services = HadoopServices(hdfs=env["MFSPARK_HDFS"], s3_endpoint=env["MFSPARK_S3_ENDPOINT"],
                              s3_bucket=env["MFSPARK_S3_BUCKET"], conf_dir=Path(env["HADOOP_CONF_DIR"]), env=env,
                              started_here=started_here)
    yield services
    if started_here:
        _script("stop")


@pytest.fixture
def hdfs_root(hadoop_services: HadoopServices) -> str:
    return f"{hadoop_services.hdfs}/tests/{uuid.uuid4().hex}"


@pytest.fixture
def s3_root(hadoop_services: HadoopServices) -> str:
    return f"s3a://{hadoop_services.s3_bucket}/tests/{uuid.uuid4().hex}"


def yarn_submit_command(services: HadoopServices, application: str | Path, *args: str, deploy_mode: str = "cluster",
                        py_files: str | Path | None = None, extra_conf: dict[str, str] | None = None,
                        ) -> tuple[list[str], dict[str, str]]:
    """(command, env) of `spark-submit --master yarn` on the local YARN: HADOOP_CONF_DIR from the script,
    spark.yarn.archive uploaded once (`hadoop_local.sh spark-archive`), every endpoint on 127.0.0.1, this interpreter
    on the NodeManagers (same machine; on a real cluster: a packed venv with --archives, see docs/hadoop_local.md),
    the s3a jars and settings, and the conf/yarn.toml sizing given as --conf so it holds from the JVM's start."""
    done = _script("spark-archive", timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"hadoop_local.sh spark-archive failed: {done.stderr.strip()[-1000:]}")
    properties = Path(done.stdout.strip().splitlines()[-1])
    spark_home = Path(__import__("pyspark").__file__).parent
    conf = {"spark.pyspark.python": sys.executable, "spark.pyspark.driver.python": sys.executable,
            "spark.executor.instances": "2", "spark.executor.cores": "1", "spark.executor.memory": "1g",
            "spark.driver.memory": "1g", "spark.yarn.am.memory": "512m", **spark_conf(), **(extra_conf or {})}
    command = [str(spark_home / "bin" / "spark-submit"), "--master", "yarn", "--deploy-mode", deploy_mode,
               "--properties-file", str(properties)]
    if py_files:
        command += ["--py-files", str(py_files)]
    for key, value in conf.items():
        command += ["--conf", f"{key}={value}"]
    command += [str(application), *args]
    # Only the zip provides mfspark to the job: no PYTHONPATH pointing at a checkout.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | services.env | {"SPARK_HOME": str(spark_home)}
    return command, env


def s3_client(services: HadoopServices):  # -> botocore S3 client (boto3 comes with moto[server])
    """A boto3 client on the local S3 server, with the credentials the Spark settings use."""
    import boto3

    return boto3.client("s3", endpoint_url=services.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=services.env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=services.env["AWS_SECRET_ACCESS_KEY"])
