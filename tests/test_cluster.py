"""ALS on a real Spark standalone cluster (scripts/local_cluster.sh: a master and two workers on 127.0.0.1).

- the same answer as local mode, same seed: factors equal to float tolerance, top-N lists equal;
- a worker killed (SIGKILL of its pid) while ALS trains, and separately after the fit while the
  model's factors are read: the job completes and its factors equal the clean run's.

Marked `cluster`: left out of a plain `pytest` run (see conftest.py); `pytest -m cluster` runs them
(CI's separate step). The master listens on $MFSPARK_TEST_MASTER_PORT (default 7177, UI 18180),
away from a cluster someone may run on 7077.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyspark
import pytest

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
PORT = int(os.environ.get("MFSPARK_TEST_MASTER_PORT", "7177"))
UI_PORT = int(os.environ.get("MFSPARK_TEST_MASTER_UI_PORT", "18180"))
JOB_TIMEOUT = 1800  # seconds; the machine may be busy
TOP_N = 10


class ModelBlocksLost(AssertionError):
    """The job failed because the model's locally checkpointed factor blocks died with their executor."""


@dataclass
class Cluster:
    state: Path
    master: str
    env: dict

    def control(self, action: str) -> None:
        subprocess.run([str(REPO / "scripts" / "local_cluster.sh"), action], env=self.env, check=True,
                       timeout=600)

    def worker_pid(self, name: str) -> int:
        return int((self.state / f"{name}.pid").read_text())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("cluster")
    env = {**os.environ, "MFSPARK_CLUSTER_DIR": str(state), "MASTER_PORT": str(PORT),
           "MASTER_UI_PORT": str(UI_PORT), "PYTHON": sys.executable}
    running = Cluster(state, f"spark://127.0.0.1:{PORT}", env)
    running.control("start")
    try:
        yield running
    finally:
        running.control("stop")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Scratch directory with the package zip and a small ratings table (a planted rank-3 structure)."""
    root = tmp_path_factory.mktemp("cluster-work")
    subprocess.run([str(REPO / "scripts" / "build_pyfiles.sh"), str(root / "mfspark.zip")], check=True,
                   env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    rng = np.random.default_rng(3)
    users, movies = rng.normal(size=(150, 3)), rng.normal(size=(90, 3))
    pairs = np.argwhere(rng.random((150, 90)) < 0.3)
    rating = np.clip(3.5 + (users[pairs[:, 0]] * movies[pairs[:, 1]]).sum(1) + rng.normal(0, 0.3, len(pairs)), 0.5, 5)
    table = pa.table({"user_id": pa.array(pairs[:, 0] + 1, pa.int32()),
                      "movie_id": pa.array(pairs[:, 1] + 1, pa.int32()),
                      "rating": pa.array(rating, pa.float32())})
    (root / "ratings").mkdir()
    pq.write_table(table, root / "ratings" / "part-0.parquet")
    return root


def submit(master: str, work: Path, out: Path, *extra: str) -> subprocess.Popen:
    """spark-submit tests/cluster_fit.py with the package as --py-files; output to OUT.log."""
    spark_home = Path(pyspark.__file__).parent
    # Only the zip provides mfspark to the job: no PYTHONPATH pointing at a checkout.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYSPARK_PYTHON": sys.executable}
    command = [str(spark_home / "bin" / "spark-submit"), "--master", master, "--py-files", str(work / "mfspark.zip"),
               "--conf", f"spark.pyspark.python={sys.executable}", "--conf", "spark.executor.memory=1g",
               str(REPO / "tests" / "cluster_fit.py"), str(work / "ratings"), str(out), *extra]
    log = open(f"{out}.log", "w")  # noqa: SIM115 (closed by finish())
    job = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    job.log = log
    return job


def finish(job: subprocess.Popen, out: Path) -> None:
    job.wait(timeout=JOB_TIMEOUT)
    job.log.close()
    if job.returncode != 0:
        tail = Path(f"{out}.log").read_text().splitlines()[-40:]
        pytest.fail(f"job exited {job.returncode}:\n" + "\n".join(tail))


def wait_for_line(out: Path, text: str, job: subprocess.Popen) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        if text in Path(f"{out}.log").read_text():
            return
        if job.poll() is not None:
            pytest.fail(f"job ended (exit {job.returncode}) before printing {text!r}")
        time.sleep(0.2)
    pytest.fail(f"no {text!r} within {JOB_TIMEOUT} s")


def factors(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Both sides' (ids, factor matrix), sorted by id."""
    sides = {}
    for side in ("users", "items"):
        table = pq.read_table(out / side)
        ids = table["id"].to_numpy()
        matrix = np.array(table["features"].to_pylist(), dtype=np.float64)
        order = np.argsort(ids)
        sides[side] = ids[order], matrix[order]
    return sides


def top_n(sides: dict) -> np.ndarray:
    (_, users), (item_ids, items) = sides["users"], sides["items"]
    return item_ids[np.argsort(-(users @ items.T), axis=1, kind="stable")[:, :TOP_N]]


def assert_same_model(out: Path, reference: Path) -> None:
    got, expected = factors(out), factors(reference)
    for side in ("users", "items"):
        np.testing.assert_array_equal(got[side][0], expected[side][0])
        np.testing.assert_allclose(got[side][1], expected[side][1], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(top_n(got), top_n(expected))


@pytest.fixture(scope="module")
def clean_run(cluster, work) -> Path:
    out = work / "clean"
    finish(submit(cluster.master, work, out), out)
    return out


def test_cluster_gives_the_local_answer(clean_run, work):
    local = work / "local"
    finish(submit("local[2]", work, local), local)
    assert len(factors(clean_run)["users"][0]) == 150
    assert_same_model(clean_run, local)


def test_worker_killed_while_als_trains(cluster, clean_run, work):
    out = work / "killed-in-fit"
    job = submit(cluster.master, work, out)
    wait_for_line(out, "ALS iteration 2/6", job)
    os.kill(cluster.worker_pid("worker-1"), signal.SIGKILL)
    try:
        finish(job, out)
    finally:
        cluster.control("start")  # brings worker-1 back for the next test
    assert_same_model(out, clean_run)


def test_worker_killed_after_the_fit(cluster, clean_run, work):
    out = work / "killed-after-fit"
    go = work / "go"
    job = submit(cluster.master, work, out, "--wait-for", str(go))
    wait_for_line(out, "FITTED", job)
    os.kill(cluster.worker_pid("worker-1"), signal.SIGKILL)
    time.sleep(15)  # the master and the driver notice the lost executor
    go.touch()
    try:
        job.wait(timeout=JOB_TIMEOUT)
    finally:
        cluster.control("start")
    if job.returncode != 0 and "CHECKPOINT_RDD_BLOCK_ID_NOT_FOUND" in Path(f"{out}.log").read_text():
        raise ModelBlocksLost("the fitted model could not be read after its executor was lost")
    finish(job, out)
    assert_same_model(out, clean_run)
