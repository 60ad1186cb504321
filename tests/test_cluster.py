"""ALS on a real Spark standalone cluster (scripts/local_cluster.sh: a master and two workers on 127.0.0.1).

- the same answer as local mode, same seed: factors equal to float tolerance, top-N lists equal;
- a worker killed (SIGKILL of its pid) while ALS trains, and separately after the fit while the
  model's factors are read: the job completes and its factors equal the clean run's;
- the driver killed (SIGKILL of spark-submit's process group) while the pipeline trains: the same
  command again resumes the run (ingest and baseline skipped) and ends with the clean run's outputs.

Marked `cluster`: left out of a plain `pytest` run (see conftest.py); `pytest -m cluster` runs them
(CI's separate step). The master listens on $MFSPARK_TEST_MASTER_PORT (default 7177, UI 18180),
away from a cluster someone may run on 7077.
"""

from __future__ import annotations

import json
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
    write_release(root / "release", table)
    return root


def write_release(directory: Path, table: pa.Table) -> None:
    """The same ratings as an ml-latest-small-shaped release (half-star ratings), for the pipeline."""
    directory.mkdir()
    stars = np.clip(np.round(table["rating"].to_numpy() * 2) / 2, 0.5, 5.0)
    lines = [f"{u},{m},{r:.1f},{1_500_000_000 + i}" for i, (u, m, r) in
             enumerate(zip(table["user_id"].to_pylist(), table["movie_id"].to_pylist(), stars, strict=True))]
    (directory / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(lines) + "\n")
    movies = sorted(set(table["movie_id"].to_pylist()))
    (directory / "movies.csv").write_text("movieId,title,genres\n" + "\n".join(
        f"{m},Movie {m} (2000),Drama" for m in movies) + "\n")


def spark_submit(master: str, work: Path, log_path: Path, application: Path, *args: str) -> subprocess.Popen:
    """spark-submit APPLICATION with the package as --py-files, in its own process group; output to LOG_PATH."""
    spark_home = Path(pyspark.__file__).parent
    # Only the zip provides mfspark to the job: no PYTHONPATH pointing at a checkout.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYSPARK_PYTHON": sys.executable}
    command = [str(spark_home / "bin" / "spark-submit"), "--master", master, "--py-files", str(work / "mfspark.zip"),
               "--conf", f"spark.pyspark.python={sys.executable}", "--conf", "spark.executor.memory=1g",
               str(application), *args]
    log = open(log_path, "w")  # noqa: SIM115 (closed by finish())
    job = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    job.log = log
    return job


def submit(master: str, work: Path, out: Path, *extra: str) -> subprocess.Popen:
    """tests/cluster_fit.py: fit ALS on the planted ratings, write the factors to OUT; output to OUT.log."""
    return spark_submit(master, work, Path(f"{out}.log"), REPO / "tests" / "cluster_fit.py", str(work / "ratings"),
                        str(out), *extra)


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


# ---------------------------------------------------------------- the driver killed mid-train

RUN_ID = "20260102"


def pipeline(cluster: Cluster, work: Path, root: Path) -> subprocess.Popen:
    """The nightly command: jobs/pipeline.py on the cluster into ROOT, run id RUN_ID; output to ROOT.log."""
    return spark_submit(cluster.master, work, Path(f"{root}.log"), REPO / "jobs" / "pipeline.py",
                        "--profile", "cluster", "--input", str(work / "release"), "--out", str(root),
                        "--run-id", RUN_ID, "--log-level", "INFO", "--rank", "4", "--max-iter", "6",
                        "--checkpoint-interval", "2", "--seed", "7", "--top-n", str(TOP_N))


def assert_same_pipeline_outputs(run: Path, reference: Path) -> None:
    """The same factors of both models (float tolerance), test metrics and top-N lists as the reference run."""
    for stage in ("train", "train_lists"):  # the rating-value model and the lists' implicit-feedback model
        assert_same_model(run / stage / "factors", reference / stage / "factors")
    metrics = [json.loads((r / "manifest.json").read_text())["metrics"] for r in (run, reference)]
    assert metrics[0].keys() == metrics[1].keys() == {"baseline", "als", "lists"}
    for model in metrics[0]:  # the evaluate stage's metrics of ALS, the bias baseline and the lists' model
        assert metrics[0][model] == pytest.approx(metrics[1][model], rel=1e-5), model

    def lists(r: Path) -> list:
        return pq.read_table(r / "recommend" / "recommendations", columns=["user_id", "rank", "movie_id"]) \
            .sort_by([("user_id", "ascending"), ("rank", "ascending")]).to_pylist()

    assert lists(run) == lists(reference) and len(lists(run)) == 150 * TOP_N


def test_driver_killed_while_the_pipeline_trains_is_resumed_by_the_same_command(cluster, work):
    clean = work / "pipeline-clean"
    job = pipeline(cluster, work, clean)
    finish(job, clean)

    killed = work / "pipeline-killed"
    job = pipeline(cluster, work, killed)
    wait_for_line(killed, "ALS iteration 2/6", job)
    os.killpg(job.pid, signal.SIGKILL)  # spark-submit's JVM and the Python driver under it
    job.wait(timeout=60)
    job.log.close()
    run = killed / "runs" / RUN_ID
    assert (run / "baseline" / "_SUCCESS").is_file() and not (run / "train" / "_SUCCESS").exists()
    assert not (killed / "latest").exists()

    first_log = Path(f"{killed}.log").read_text()
    job = pipeline(cluster, work, killed)  # the same command again
    finish(job, killed)
    log = Path(f"{killed}.log").read_text()
    assert "stage 1/6 ingest: skipped" in log and "stage 2/6 baseline: skipped" in log, log[-3000:]
    assert "stage 3/6 train: running" in log and "ALS iteration 2/6" in first_log
    assert os.readlink(killed / "latest") == f"runs/{RUN_ID}" and (run / "_SUCCESS").is_file()
    assert_same_pipeline_outputs(run, clean / "runs" / RUN_ID)
