"""The pipeline and the single commands on real cluster storage: HDFS (a MiniDFSCluster) and S3 (moto's server),
both started by scripts/hadoop_local.sh. Commits, pointers, locks and kills, each checked on the store itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from mfspark.errors import OutputLockedError
from mfspark.models.als.estimator import ALSParams
from mfspark.pipeline import layout
from mfspark.pipeline.run import run_pipeline
from mfspark.pipeline.stages import LISTS_ALS, PipelineConfig
from mfspark.runtime.commit import CURRENT_POINTER, atomic_output, resolve_output
from mfspark.runtime.fs import HadoopFileSystem, LocalFileSystem, input_path, join
from tests.hadoop_services import spark_conf
from tests.test_pipeline import finish, kill_at, tiny_release

pytestmark = pytest.mark.hadoop  # CI's `pytest -m "hadoop or slow"` step; not in the default suite
REPO = Path(__file__).resolve().parents[1]
FAST_LOCKS = {"MFSPARK_LOCK_HEARTBEAT_SECONDS": "1", "MFSPARK_LOCK_STALE_SECONDS": "6"}


def upload(spark, local_dir: Path, uri: str) -> str:
    fs = HadoopFileSystem(spark)
    for path in local_dir.iterdir():
        fs.write_text(join(uri, path.name), path.read_text())
    return uri


def small_config(root: str, source, **changes) -> PipelineConfig:
    base = PipelineConfig(root=root, source_dir=source, top_n=3, als=ALSParams(rank=2, max_iter=2, biases=True, seed=1),
                          lists_als=replace(LISTS_ALS, rank=2, max_iter=3, seed=1))
    return replace(base, **changes)


def recommendations(spark, stage_dir: str) -> list[tuple]:
    rows = spark.read.parquet(join(stage_dir, "recommendations")).collect()
    return sorted((r.user_id, r.rank, r.movie_id) for r in rows)


@pytest.mark.parametrize("store", ["hdfs", "s3"])
def test_pipeline_on_cluster_storage_equals_the_local_run_and_a_rerun_skips_everything(
        spark, tmp_path, request, store):
    root = request.getfixturevalue(f"{store}_root")
    release = tiny_release(tmp_path / "release", movies=40)
    source = input_path(upload(spark, release, f"{root}-input"), spark) if store == "hdfs" else release
    remote = run_pipeline(spark, small_config(f"{root}/nightly", source))
    local = run_pipeline(spark, small_config(str(tmp_path / "local"), release))
    assert remote["metrics"] == local["metrics"]
    fs = HadoopFileSystem(spark)
    run = layout.resolve_run(fs, f"{root}/nightly")
    assert run == f"{root}/nightly/runs/{remote['run_id']}"
    assert json.loads(fs.read_text(f"{root}/nightly/LATEST"))["run_id"] == remote["run_id"]
    assert recommendations(spark, join(run, "recommend")) == \
        recommendations(spark, str(tmp_path / "local" / "runs" / local["run_id"] / "recommend"))
    again = run_pipeline(spark, small_config(f"{root}/nightly", source))
    assert again["up_to_date"] and again["run_id"] == remote["run_id"]
    assert not fs.exists(f"{root}/nightly/_LOCK")


def test_a_second_writer_is_refused_while_the_holder_beats_and_takes_over_once_it_stops(
        spark, hdfs_root, monkeypatch, caplog, tmp_path):
    for name, value in FAST_LOCKS.items():
        monkeypatch.setenv(name, value)
    fs = HadoopFileSystem(spark)
    lock = f"{hdfs_root}/nightly/_LOCK"
    holder = {"host": "other-host", "pid": 4242, "command": "mfspark pipeline", "token": "theirs",
              "started_at": "2026-12-07T02:00:00+00:00", "started_epoch": time.time()}
    assert fs.create_exclusive(lock, json.dumps(holder))
    config = small_config(f"{hdfs_root}/nightly", tiny_release(tmp_path / "release"), top_n=0)
    with pytest.raises(OutputLockedError, match=r"in use by pid 4242 on host other-host .*last heartbeat \d+ s ago"):
        run_pipeline(spark, config)
    assert not fs.exists(f"{hdfs_root}/nightly/runs")  # refused before any work
    time.sleep(7)  # the holder's heartbeat stops: stale after 6 s
    with caplog.at_level("WARNING"):
        result = run_pipeline(spark, config)
    assert "taking over the stale lock" in caplog.text and "pid 4242 on host other-host" in caplog.text
    assert layout.latest_run_id(fs, f"{hdfs_root}/nightly") == result["run_id"]
    assert not fs.exists(lock)


@pytest.mark.parametrize("store", ["hdfs", "s3"])
def test_a_single_output_is_replaced_whole_and_a_failed_write_leaves_the_old_one(spark, request, store):
    out = f"{request.getfixturevalue(f'{store}_root')}/model"
    fs = HadoopFileSystem(spark)
    with atomic_output(spark, out) as staging:
        spark.range(3).write.parquet(f"{staging}/t")
    first = resolve_output(fs, out)
    with pytest.raises(RuntimeError, match="boom"), atomic_output(spark, out) as staging:
        spark.range(7).write.parquet(f"{staging}/t")
        raise RuntimeError("boom")
    assert resolve_output(fs, out) == first and spark.read.parquet(f"{first}/t").count() == 3
    with atomic_output(spark, out) as staging:
        spark.range(5).write.parquet(f"{staging}/t")
    second = resolve_output(fs, out)
    assert second != first and spark.read.parquet(f"{second}/t").count() == 5
    pointer = json.loads(fs.read_text(f"{out}/{CURRENT_POINTER}"))
    assert pointer["previous"] == first.rsplit("/", 1)[1]  # kept for readers that resolved it just before
    assert sorted(fs.list_dir(f"{out}/_versions")) == sorted([first.rsplit("/", 1)[1], second.rsplit("/", 1)[1]])


# ---------------------------------------------------------------- SIGKILL of the driver on HDFS and S3

def cli(args: list[str], extra_env: dict | None = None) -> subprocess.Popen:
    conf = [f"--conf={key}={value}" for key, value in spark_conf().items()]
    command = [sys.executable, "-m", "mfspark.commands.main", *args, "--profile", "test", "--conf-dir",
               str(REPO / "conf"), "--log-level", "INFO", *conf]
    return subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), **FAST_LOCKS, **(extra_env or {})})


PIPELINE_OPTIONS = ["--rank", "2", "--max-iter", "2", "--seed", "1", "--top-n", "3"]
KILLS = {  # the moment -> the log line the kill follows
    "mid-train": ("", "ALS iteration 1/2"),
    "mid-recommend": ("", "stage 6/6 recommend: running"),
    "after the manifest": ("manifest:600", "pausing"),
    "while the pointer is written": ("latest:600", "pausing"),
}


@pytest.mark.parametrize(("store", "moments"), [
    ("hdfs", list(KILLS)), ("s3", ["mid-recommend", "while the pointer is written"])])
def test_sigkill_of_the_driver_leaves_the_previous_run_latest_and_intact_and_the_rerun_resumes(
        spark, tmp_path, request, store, moments):
    root = f"{request.getfixturevalue(f'{store}_root')}/nightly"
    fs = HadoopFileSystem(spark)
    day1 = tiny_release(tmp_path / "day1", movies=40)
    day2 = tiny_release(tmp_path / "day2", movies=40, extra=5)
    finish(cli(["pipeline", "--input", str(day1), "--out", root, *PIPELINE_OPTIONS]))
    day1_run = layout.latest_run_id(fs, root)
    day1_lists = recommendations(spark, join(root, "runs", day1_run, "recommend"))

    for number, moment in enumerate(moments):
        pause, line = KILLS[moment]
        log = kill_at(cli(["pipeline", "--input", str(day2), "--out", root, *PIPELINE_OPTIONS],
                          {"MFSPARK_TEST_PAUSE": pause} if pause else None), line)
        if number > 0:  # each attempt resumes the run the previous kill interrupted
            assert "stage 1/6 ingest: skipped" in log and "taking over the stale lock" in log, moment
        assert layout.latest_run_id(fs, root) == day1_run, moment
        assert recommendations(spark, join(layout.resolve_run(fs, root), "recommend")) == day1_lists, moment
        time.sleep(7)  # the killed driver's lock goes stale

    # The last kill came after the run was complete, before LATEST moved: the rerun only publishes it.
    log = finish(cli(["pipeline", "--input", str(day2), "--out", root, *PIPELINE_OPTIONS]))
    assert "taking over the stale lock" in log and "up to date" in log
    resumed = layout.latest_run_id(fs, root)
    assert resumed != day1_run
    manifest = json.loads(fs.read_text(join(root, "runs", resumed, "manifest.json")))
    assert manifest["rows"]["ingest"]["ratings"] == 805  # day 2: two thirds of 30 x 40, and 5 more


@pytest.mark.parametrize(("store", "command"), [("hdfs", "ingest"), ("s3", "ingest"), ("hdfs", "train"),
                                                 ("s3", "recommend")])
def test_a_single_command_killed_during_its_commit_leaves_the_old_output_readable(
        spark, tmp_path, request, cli_with_test_session, store, command):
    out = f"{request.getfixturevalue(f'{store}_root')}/{command}"
    release = tiny_release(tmp_path / "release", movies=40)
    ingested = str(tmp_path / "ingested")
    assert cli_with_test_session(["ingest", "--input", str(release), "--out", ingested]) == 0
    model = str(tmp_path / "model")
    assert cli_with_test_session(["train", "--input", ingested, "--out", model, "--rank", "2", "--max-iter", "2"]) == 0
    args = {"ingest": ["ingest", "--input", str(release), "--out", out],
            "train": ["train", "--input", ingested, "--out", out, "--rank", "2", "--max-iter", "2"],
            "recommend": ["recommend", "--model", model, "--input", ingested, "--out", out, "--top-n", "3"]}[command]
    assert cli_with_test_session(args) == 0
    fs = HadoopFileSystem(spark)
    old = resolve_output(fs, out)
    old_files = fs.list_files(old)

    kill_at(cli(args, {"MFSPARK_TEST_PAUSE": "publish:600"}), "pausing")
    assert resolve_output(fs, out) == old and fs.list_files(old) == old_files
    [orphan] = [v for v in fs.list_dir(f"{out}/_versions") if v != old.rsplit("/", 1)[1]]

    time.sleep(7)  # the killed job's lock goes stale
    os.environ.update(FAST_LOCKS)
    try:
        assert cli_with_test_session(args) == 0
    finally:
        for name in FAST_LOCKS:
            os.environ.pop(name)
    assert orphan not in fs.list_dir(f"{out}/_versions")  # swept by the next writer
    assert resolve_output(fs, out) != old


def test_the_pipeline_submitted_to_yarn_in_cluster_mode_equals_the_local_run(
        spark, hadoop_services, hdfs_root, tmp_path, cli_with_test_session):
    from tests.hadoop_services import yarn_submit_command

    release = tiny_release(tmp_path / "release", movies=40)
    options = ["--rank", "2", "--max-iter", "2", "--seed", "1", "--top-n", "3"]
    assert cli_with_test_session(["pipeline", "--input", str(release), "--out", str(tmp_path / "local"),
                                  *options]) == 0
    source = upload(spark, release, f"{hdfs_root}/release")
    zip_path = tmp_path / "mfspark.zip"
    subprocess.run([str(REPO / "scripts" / "build_pyfiles.sh"), str(zip_path)], check=True, timeout=120,
                   env={**os.environ, "PYTHON": sys.executable}, capture_output=True)
    # The local run's parallelism: ALS blocks and shuffle partitions decide the factors bit for bit.
    command, env = yarn_submit_command(
        hadoop_services, REPO / "jobs" / "pipeline.py", "--profile", "yarn", "--input", source,
        "--out", f"{hdfs_root}/nightly", *options, "--conf", "spark.default.parallelism=2",
        "--conf", "spark.sql.shuffle.partitions=2", py_files=zip_path)
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    fs = HadoopFileSystem(spark)
    run = layout.resolve_run(fs, f"{hdfs_root}/nightly")
    local_run = layout.resolve_run(LocalFileSystem(), str(tmp_path / "local"))
    assert recommendations(spark, join(run, "recommend")) == recommendations(spark, join(local_run, "recommend"))
    remote_metrics = json.loads(fs.read_text(join(run, "manifest.json")))["metrics"]
    assert remote_metrics == json.loads(Path(local_run, "manifest.json").read_text())["metrics"]
