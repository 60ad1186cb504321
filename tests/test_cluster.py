"""The pipeline and ALS on a real Spark standalone cluster (scripts/local_cluster.sh: a master and two workers on
127.0.0.1), against local mode and under faults. One cluster for the module; the clean cluster run is shared.

- the whole pipeline (`jobs/pipeline.py` through spark-submit) on the cluster equals the same command in local mode:
  the factors of both models (float tolerance), the evaluate stage's metrics, identical top-N lists;
- a worker killed (SIGKILL of its pid) while the pipeline's ALS trains, and separately after an ALS fit while the
  model's factors are read: the job completes with the clean answer, and its event log shows the lost executor
  (`SparkListenerExecutorRemoved`) and the tasks that failed or were resubmitted because of it;
- the driver killed (SIGKILL of spark-submit's process group) while the pipeline trains: the same
  command again resumes the run (ingest and baseline skipped) and ends with the clean run's outputs.

Marked `cluster`: left out of a plain `pytest` run (see conftest.py); `.ci/run` always runs them as its own step,
`pytest -m cluster tests/test_cluster.py`. The master listens on $MFSPARK_TEST_MASTER_PORT (default 7177, UI
$MFSPARK_TEST_MASTER_UI_PORT, default 18180), away from a cluster someone may run on 7077.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
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
JOB_TIMEOUT = 900  # seconds; the machine may be busy
TOP_N = 10
USERS = 150


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
    users, movies = rng.normal(size=(USERS, 3)), rng.normal(size=(90, 3))
    pairs = np.argwhere(rng.random((USERS, 90)) < 0.3)
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


def spark_submit(master: str, work: Path, out: Path, application: Path, *args: str) -> subprocess.Popen:
    """spark-submit APPLICATION with the package as --py-files, in its own process group; output to OUT.log, the
    application's Spark event log (every listener event, as JSON lines) under OUT.events/."""
    spark_home = Path(pyspark.__file__).parent
    events = Path(f"{out}.events")
    events.mkdir(exist_ok=True)
    # Only the zip provides mfspark to the job: no PYTHONPATH pointing at a checkout.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYSPARK_PYTHON": sys.executable}
    command = [str(spark_home / "bin" / "spark-submit"), "--master", master, "--py-files", str(work / "mfspark.zip"),
               "--conf", f"spark.pyspark.python={sys.executable}", "--conf", "spark.executor.memory=1g",
               # One plain JSON-lines file per application (Spark 4 rolls and zstd-compresses by default), with the
               # executors' cached blocks (BlockUpdated events: which executor held what when it was lost).
               "--conf", "spark.eventLog.enabled=true", "--conf", f"spark.eventLog.dir={events.as_uri()}",
               "--conf", "spark.eventLog.rolling.enabled=false", "--conf", "spark.eventLog.compress=false",
               "--conf", "spark.eventLog.logBlockUpdates.enabled=true",
               # 4,045 ratings: Spark SQL's 200 shuffle partitions were most of each stage's time (the same in the
               # local-mode reference runs, so both sides partition alike).
               "--conf", "spark.sql.shuffle.partitions=2",
               str(application), *args]
    log = open(f"{out}.log", "a")  # noqa: SIM115 (closed by finish()); a resumed run appends
    job = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)
    job.log = log
    return job


def submit(master: str, work: Path, out: Path, *extra: str) -> subprocess.Popen:
    """tests/cluster_fit.py: fit ALS on the planted ratings, write the factors to OUT; output to OUT.log."""
    return spark_submit(master, work, out, REPO / "tests" / "cluster_fit.py", str(work / "ratings"), str(out), *extra)


def finish(job: subprocess.Popen, out: Path) -> None:
    job.wait(timeout=JOB_TIMEOUT)
    job.log.close()
    if job.returncode != 0:
        tail = Path(f"{out}.log").read_text().splitlines()[-40:]
        pytest.fail(f"job exited {job.returncode}:\n" + "\n".join(tail))


def wait_for_line(out: Path, text: str, job: subprocess.Popen, timeout: float = JOB_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in Path(f"{out}.log").read_text():
            return
        if job.poll() is not None:
            pytest.fail(f"job ended (exit {job.returncode}) before printing {text!r}")
        time.sleep(0.1)
    os.killpg(job.pid, signal.SIGKILL)  # spark-submit and the Python driver under it
    pytest.fail(f"no {text!r} within {timeout} s")


# ---------------------------------------------------------------- what the event log says happened

def events(out: Path) -> list[dict]:
    """Every listener event of the application OUT's job ran, from its event log under OUT.events/."""
    [path] = [p for p in Path(f"{out}.events").iterdir() if not p.name.startswith(".")]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def task_ends(log: list[dict]) -> list[dict]:
    return [e for e in log if e["Event"] == "SparkListenerTaskEnd"]


def task_failures(log: list[dict]) -> Counter:
    """How many tasks ended otherwise than in success, by reason (ExecutorLostFailure, FetchFailed, Resubmitted:
    a finished map task whose output died with its executor, ...)."""
    reasons = (e["Task End Reason"]["Reason"] for e in task_ends(log))
    return Counter(reason for reason in reasons if reason != "Success")


def assert_ran_on_both_workers_without_loss(out: Path) -> None:
    log = events(out)
    hosts = {e["Block Manager ID"]["Executor ID"]: e["Block Manager ID"]["Port"] for e in log
             if e["Event"] == "SparkListenerBlockManagerAdded" and e["Block Manager ID"]["Executor ID"] != "driver"}
    ran_on = {e["Task Info"]["Executor ID"] for e in task_ends(log)}
    assert ran_on == set(hosts) and len(set(hosts.values())) == 2, (ran_on, hosts)
    assert not [e for e in log if e["Event"] == "SparkListenerExecutorRemoved"] and not task_failures(log)


def lost_executor(log: list[dict]) -> tuple[str, int]:
    """The executor removed while the job ran (there must be exactly one) and the position of its removal."""
    removed = [(i, e) for i, e in enumerate(log) if e["Event"] == "SparkListenerExecutorRemoved"]
    assert removed, "no executor was removed: the kill did not reach the job"
    assert len(removed) == 1, removed
    at, event = removed[0]
    assert "worker lost" in event["Removed Reason"], event
    return event["Executor ID"], at


def assert_tasks_were_redone_after_the_loss(out: Path) -> None:
    """An executor was lost while the job needed it: tasks that failed with it (ExecutorLostFailure, FetchFailed),
    finished tasks whose output died with it (Resubmitted), or a stage run again (attempt > 0) after the loss for
    outputs it held; and every task after the loss ran elsewhere."""
    log = events(out)
    executor, at = lost_executor(log)
    failures = task_failures(log)
    stages_again = sorted({e["Stage Info"]["Stage ID"] for e in log[at:] if e["Event"] == "SparkListenerStageSubmitted"
                           and e["Stage Info"]["Stage Attempt ID"] > 0})
    assert failures or stages_again, f"executor {executor} removed but no task failed or was resubmitted, and " \
                                     "no stage was run again"
    assert executor in {e["Task Info"]["Executor ID"] for e in task_ends(log[:at])}
    succeeded_after = {e["Task Info"]["Executor ID"] for e in task_ends(log[at:])
                       if e["Task End Reason"]["Reason"] == "Success"}
    assert succeeded_after and executor not in succeeded_after, succeeded_after


def assert_cached_blocks_were_lost(out: Path) -> list[str]:
    """An executor was lost while it held cached RDD blocks (never dropped before its loss); every task after the
    loss ran on the other executor. Returns the lost blocks."""
    log = events(out)
    executor, at = lost_executor(log)
    held: dict[str, bool] = {}
    for e in log[:at]:
        if e["Event"] == "SparkListenerBlockUpdated" and e["Block Updated Info"]["Block Manager ID"]["Executor ID"] \
                == executor and e["Block Updated Info"]["Block ID"].startswith("rdd_"):
            info = e["Block Updated Info"]
            held[info["Block ID"]] = info["Storage Level"]["Use Memory"] or info["Storage Level"]["Use Disk"]
    lost = sorted(block for block, kept in held.items() if kept)
    assert lost, f"executor {executor} held no cached block when it was lost"
    succeeded_after = {e["Task Info"]["Executor ID"] for e in task_ends(log[at:])
                       if e["Task End Reason"]["Reason"] == "Success"}
    assert succeeded_after and executor not in succeeded_after, succeeded_after
    return lost


# ---------------------------------------------------------------- ALS's answer

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


def assert_same_model(out: Path, reference: Path) -> None:
    """Bit for bit the same factors (see docs/cluster.md: why a cluster run, a fault or a resume changes none)."""
    got, expected = factors(out), factors(reference)
    for side in ("users", "items"):
        np.testing.assert_array_equal(got[side][0], expected[side][0])
        np.testing.assert_array_equal(got[side][1], expected[side][1])


@pytest.fixture(scope="module")
def local_runs(work) -> dict[str, tuple[subprocess.Popen, Path]]:
    """The local-mode references (tests/cluster_fit.py and the pipeline), both started at once in the background:
    they need no cluster and overlap the cluster's runs (most of a small job's time is JVM, Python and scheduling
    latency, not CPU)."""
    fit, root = work / "fit-local", work / "pipeline-local"
    return {"fit": (submit("local[2]", work, fit), fit), "pipeline": (pipeline("local[2]", work, root), root)}


@pytest.fixture(scope="module")
def local_fit(local_runs) -> Path:
    """tests/cluster_fit.py in local mode: the reference of the after-the-fit worker kill."""
    job, out = local_runs["fit"]
    finish(job, out)
    assert len(factors(out)["users"][0]) == USERS
    return out


def test_worker_killed_while_als_trains(cluster, local_fit, work):
    out = work / "killed-in-fit"
    job = submit(cluster.master, work, out)
    wait_for_line(out, "ALS iteration 2/6", job)  # inside the fit's one Spark job (tests/cluster_fit.py)
    os.kill(cluster.worker_pid("worker-1"), signal.SIGKILL)
    try:
        finish(job, out)
    finally:
        cluster.control("start")  # brings worker-1 back for the next test
    assert_tasks_were_redone_after_the_loss(out)
    assert_same_model(out, local_fit)


def test_worker_killed_after_the_fit(cluster, local_fit, work):
    out = work / "killed-after-fit"
    go = work / "go"
    job = submit(cluster.master, work, out, "--wait-for", str(go))
    wait_for_line(out, "FITTED", job)
    os.kill(cluster.worker_pid("worker-1"), signal.SIGKILL)
    # The driver knows (a lost worker's executors drop their connection at once): the model is read without it.
    wait_for_line(out, "Lost executor", job, timeout=120)
    go.touch()
    try:
        job.wait(timeout=JOB_TIMEOUT)
    finally:
        cluster.control("start")  # brings worker-1 back for the next test
    if job.returncode != 0 and "CHECKPOINT_RDD_BLOCK_ID_NOT_FOUND" in Path(f"{out}.log").read_text():
        raise ModelBlocksLost("the fitted model could not be read after its executor was lost")
    finish(job, out)
    assert_cached_blocks_were_lost(out)  # the fitted model's blocks among them: read back from its checkpoint
    assert_same_model(out, local_fit)


# ---------------------------------------------------------------- the pipeline

RUN_ID = "20260102"


def pipeline(master: str, work: Path, root: Path) -> subprocess.Popen:
    """The nightly command: jobs/pipeline.py on MASTER into ROOT, run id RUN_ID; output to ROOT.log."""
    return spark_submit(master, work, root, REPO / "jobs" / "pipeline.py",
                        "--profile", "cluster", "--input", str(work / "release"), "--out", str(root),
                        "--run-id", RUN_ID, "--log-level", "INFO", "--rank", "4", "--max-iter", "6",
                        "--checkpoint-interval", "2", "--seed", "7", "--top-n", str(TOP_N))


def manifest_metrics(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())["metrics"]


def recommendations(run: Path) -> list[dict]:
    return pq.read_table(run / "recommend" / "recommendations", columns=["user_id", "rank", "movie_id"]) \
        .sort_by([("user_id", "ascending"), ("rank", "ascending")]).to_pylist()


def assert_same_pipeline_outputs(run: Path, reference: Path) -> None:
    """The same factors of both models and top-N lists as the reference run, the same test metrics up to the
    order of a sum's terms (Spark merges partial sums in the order their shuffle blocks arrive)."""
    for stage in ("train", "train_lists"):  # the rating-value model and the lists' implicit-feedback model
        assert_same_model(run / stage / "factors", reference / stage / "factors")
    metrics = [manifest_metrics(r) for r in (run, reference)]
    assert metrics[0].keys() == metrics[1].keys() == {"baseline", "als", "lists"}
    for model in metrics[0]:  # the evaluate stage's metrics of ALS, the bias baseline and the lists' model
        assert metrics[0][model] == pytest.approx(metrics[1][model], rel=1e-12, abs=0), model
    lists = recommendations(run)
    assert lists == recommendations(reference) and len(lists) == USERS * TOP_N


@pytest.fixture(scope="module")
def local_pipeline(local_runs) -> Path:
    """The nightly command in local mode (`--master local[2]`, the same profile and arguments)."""
    job, root = local_runs["pipeline"]
    finish(job, root)
    return root / "runs" / RUN_ID


@pytest.fixture(scope="module")
def cluster_pipeline(cluster, work) -> Path:
    """The nightly command on the cluster, nothing killed: the reference of the fault tests."""
    root = work / "pipeline-clean"
    finish(pipeline(cluster.master, work, root), root)
    assert_ran_on_both_workers_without_loss(root)
    return root / "runs" / RUN_ID


def test_the_pipeline_on_the_cluster_equals_the_pipeline_in_local_mode(cluster_pipeline, local_pipeline):
    assert_same_pipeline_outputs(cluster_pipeline, local_pipeline)
    # Not two empty answers: every user got a list of unrated movies.
    ratings = pq.read_table(cluster_pipeline / "ingest" / "ratings", columns=["user_id", "movie_id"]).to_pylist()
    seen = {(r["user_id"], r["movie_id"]) for r in ratings}
    lists = recommendations(cluster_pipeline)
    assert len({r["user_id"] for r in lists}) == USERS and not seen & {(r["user_id"], r["movie_id"]) for r in lists}


def test_driver_killed_while_the_pipeline_trains_is_resumed_by_the_same_command(cluster, cluster_pipeline, work):
    killed = work / "pipeline-driver-killed"
    job = pipeline(cluster.master, work, killed)
    wait_for_line(killed, "ALS iteration 2/6", job)
    os.killpg(job.pid, signal.SIGKILL)  # spark-submit's JVM and the Python driver under it
    job.wait(timeout=60)
    job.log.close()
    run = killed / "runs" / RUN_ID
    assert (run / "baseline" / "_SUCCESS").is_file() and not (run / "train" / "_SUCCESS").exists()
    assert not (killed / "latest").exists()

    first_log = Path(f"{killed}.log").read_text()
    job = pipeline(cluster.master, work, killed)  # the same command again
    finish(job, killed)
    log = Path(f"{killed}.log").read_text()[len(first_log):]
    assert "stage 1/6 ingest: skipped" in log and "stage 2/6 baseline: skipped" in log, log[-3000:]
    assert "stage 3/6 train: running" in log and "ALS iteration 2/6" in first_log
    assert os.readlink(killed / "latest") == f"runs/{RUN_ID}" and (run / "_SUCCESS").is_file()
    assert_same_pipeline_outputs(run, cluster_pipeline)
