"""Atomic output commits (link swap), the per-output lock, leftovers of killed runs, input checks."""

import json
import os
import subprocess
import sys
import time

import pytest

from mfspark.errors import ConfigError, InputError, OutputLockedError
from mfspark.runtime.commit import (
    atomic_output,
    check_disjoint,
    check_parquet_table,
    output_lock,
    point_link,
    read_json,
    replace_local_dir,
    write_json,
)


def visible(directory):
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def test_atomic_output_replaces_previous_output_whole(spark, tmp_path):
    final = str(tmp_path / "tables")
    with atomic_output(spark, final) as staging:
        spark.range(3).write.parquet(f"{staging}/t")
        write_json(spark, f"{staging}/manifest.json", {"run": 1})
    first = os.path.realpath(final)
    with atomic_output(spark, final) as staging:
        spark.range(5).write.parquet(f"{staging}/t")
        write_json(spark, f"{staging}/manifest.json", {"run": 2})
    assert spark.read.parquet(f"{final}/t").count() == 5
    assert read_json(spark, f"{final}/manifest.json") == {"run": 2}
    assert visible(tmp_path) == ["tables"]
    # The replaced version stays readable for readers that resolved the link before the swap.
    assert os.path.realpath(tmp_path / ".tables.previous") == first
    assert spark.read.parquet(f"{first}/t").count() == 3
    with atomic_output(spark, final) as staging:
        spark.range(7).write.parquet(f"{staging}/t")
    assert len(list((tmp_path / ".tables.versions").iterdir())) == 2  # the current one and the one it replaced
    assert not (tmp_path / ".tables.lock").exists()


def test_failed_run_leaves_previous_output_intact(spark, tmp_path):
    final = str(tmp_path / "tables")
    with atomic_output(spark, final) as staging:
        spark.range(3).write.parquet(f"{staging}/t")
    with pytest.raises(RuntimeError, match="boom"), atomic_output(spark, final) as staging:
        spark.range(7).write.parquet(f"{staging}/t")
        raise RuntimeError("boom")
    assert spark.read.parquet(f"{final}/t").count() == 3
    assert visible(tmp_path) == ["tables"]
    assert len(list((tmp_path / ".tables.versions").iterdir())) == 1


def test_replace_local_dir_swaps_whole_and_leaves_nothing_behind(tmp_path):
    final, staging = tmp_path / "out", tmp_path / "out.staging-1"
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    replace_local_dir(staging, final)  # no previous output
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    staging.mkdir()
    (staging / "newer.txt").write_text("newer")
    replace_local_dir(staging, final)
    assert [p.name for p in final.iterdir()] == ["newer.txt"]
    assert visible(tmp_path) == ["out"] and final.is_symlink()


def test_commit_is_one_rename_so_out_always_exists(tmp_path, monkeypatch):
    """The old design renamed OUT aside, then staging in: a kill between left no OUT. Now the only
    step that changes what OUT names is one os.replace of a link; OUT exists before and after it."""
    old, new = tmp_path / "v1", tmp_path / "v2"
    old.mkdir()
    new.mkdir()
    (old / "f").write_text("old")
    (new / "f").write_text("new")
    out = tmp_path / "out"
    point_link(out, old)
    seen = []
    real_replace = os.replace

    def watching_replace(src, dst):
        seen.append((out / "f").read_text())  # just before the swap: the old output, complete
        real_replace(src, dst)
        seen.append((out / "f").read_text())

    monkeypatch.setattr(os, "replace", watching_replace)
    point_link(out, new)
    assert seen == ["old", "new"]


def test_a_pre_link_output_directory_is_swapped_for_the_link_without_a_gap(spark, tmp_path):
    final = tmp_path / "tables"
    final.mkdir()
    (final / "legacy.txt").write_text("yesterday")
    with atomic_output(spark, str(final)) as staging:
        spark.range(2).write.parquet(f"{staging}/t")
    assert final.is_symlink() and spark.read.parquet(f"{final}/t").count() == 2
    assert (tmp_path / ".tables.previous" / "legacy.txt").read_text() == "yesterday"


def test_second_writer_fails_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mfspark.runtime.commit import output_lock\n"
         f"with output_lock({str(out)!r}, 'mfspark train'):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "held"
        expected = rf"is in use by pid {holder.pid} on host .* since .*mfspark train"
        with pytest.raises(OutputLockedError, match=expected), output_lock(out):
            pass
    finally:
        holder.kill()
        holder.wait()
    with output_lock(out):  # the killed holder's lock is free again
        assert json.loads((tmp_path / ".out.lock").read_text())["pid"] == os.getpid()


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_log_line(tmp_path, caplog):
    lock = tmp_path / ".out.lock"
    lock.write_text(json.dumps({"host": "h1", "pid": 999999, "started_at": "2026-01-01T00:00:00+00:00",
                                "command": "mfspark ingest"}))
    with caplog.at_level("WARNING"), output_lock(tmp_path / "out"):
        pass
    assert "taking over the lock" in caplog.text and "last held by pid 999999 on host h1" in caplog.text
    assert "no process holds it any more" in caplog.text and "gone" not in caplog.text
    assert not lock.exists()


def test_a_lock_file_naming_a_live_pid_that_holds_no_flock_is_not_called_gone(tmp_path, caplog):
    (tmp_path / ".out.lock").write_text(json.dumps({"host": "h1", "pid": 1, "started_at": "2026-01-01T00:00:00+00:00",
                                                    "command": "mfspark train"}))
    with caplog.at_level("WARNING"), output_lock(tmp_path / "out"):
        pass
    assert "last held by pid 1 on host h1" in caplog.text and "that process is gone" not in caplog.text


def test_two_spellings_of_one_root_share_one_lock(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "alias").symlink_to(root)
    (tmp_path / "sub").mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from mfspark.runtime.commit import output_lock\n"
         f"with output_lock({str(root)!r}, 'mfspark pipeline'):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "held"
        for spelling in (tmp_path / "alias", tmp_path / "sub" / ".." / "root"):
            with pytest.raises(OutputLockedError, match=rf"is in use by pid {holder.pid} .*mfspark pipeline"), \
                    output_lock(spelling):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_holder_that_has_not_written_its_name_yet_is_described_as_starting(tmp_path):
    import fcntl

    lock = tmp_path / ".out.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held, still empty: a job between its flock and its write
    try:  # flocks of two open files conflict even within one process
        with pytest.raises(OutputLockedError, match=r"in use by a job that is starting \(it has not written"), \
                output_lock(tmp_path / "out"):
            pass
    finally:
        os.close(fd)


def test_lock_sweeps_leftovers_of_killed_runs_but_not_running_jobs(tmp_path):
    out = tmp_path / "out"
    (tmp_path / ".out.versions" / "20260101T000000-dead").mkdir(parents=True)  # unpublished (killed) version
    (tmp_path / "out.staging-abc").mkdir()  # the old design's staging directory
    old_scratch = [tmp_path / "_spark_tmp" / "blockmgr-old", tmp_path / "_checkpoints" / "0f0f"]
    for path in old_scratch:
        path.mkdir(parents=True)
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    running = tmp_path / "_checkpoints" / "running-job"
    running.mkdir()
    os.utime(running, (time.time() - 60, time.time() - 60))
    # A job writing to a sibling output, started two minutes ago and still running (this process).
    (tmp_path / ".other.lock").write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid(),
                                                      "started_epoch": time.time() - 120}))
    with output_lock(out, sweep_scratch=True):
        pass
    assert sorted(p.name for p in tmp_path.rglob("*")) == [".other.lock", ".out.versions", "_checkpoints",
                                                           "_spark_tmp", "running-job"]


def test_old_designs_half_commit_is_restored(tmp_path):
    """A kill between the old design's two renames left OUT missing and OUT.previous-*: the next run puts it back."""
    (tmp_path / "out.previous-1234").mkdir()
    (tmp_path / "out.previous-1234" / "f").write_text("yesterday")
    with output_lock(tmp_path / "out"):
        pass
    assert (tmp_path / "out" / "f").read_text() == "yesterday"


@pytest.mark.parametrize("input_rel, out_rel, relation", [
    ("data", "data", "is the same as"), ("data", "data/out", "is inside"), ("data/release", "data", "contains"),
    ("data", "link", "is the same as"),
])
def test_out_overlapping_input_is_refused(tmp_path, input_rel, out_rel, relation):
    (tmp_path / "data" / "release").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "data")
    with pytest.raises(ConfigError, match=rf"/{out_rel} {relation} --input "):
        check_disjoint(tmp_path / input_rel, tmp_path / out_rel)
    check_disjoint(tmp_path / "data", tmp_path / "data-out")  # a sibling with a common prefix is fine


def test_ratings_directory_that_is_empty_or_not_parquet_is_one_clear_line(spark, tmp_path):
    empty = tmp_path / "empty" / "ratings"
    empty.mkdir(parents=True)
    (empty / "_SUCCESS").touch()
    with pytest.raises(InputError, match=r"ratings holds no data files: --input must be"):
        check_parquet_table(spark, str(empty), "--input must be an ingest output")
    csv = tmp_path / "csv" / "ratings"
    csv.mkdir(parents=True)
    (csv / "part-0.csv").write_text("1,2,3.0\n")
    with pytest.raises(InputError, match=r"part-0.csv is not a whole Parquet file \(starts with b'1,2,'"):
        check_parquet_table(spark, str(csv), "--input must be an ingest output")
    spark.range(1).write.parquet(str(tmp_path / "ok" / "ratings"))
    check_parquet_table(spark, str(tmp_path / "ok" / "ratings"), "")
    # A part truncated past its first bytes: its footer (ending in b'PAR1') is gone.
    spark.range(100).repartition(2).write.parquet(str(tmp_path / "cut" / "ratings"))
    part = sorted((tmp_path / "cut" / "ratings").glob("part-*.parquet"))[1]
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(InputError, match=rf"{part.name} is not a whole Parquet file .* truncated or damaged"):
        check_parquet_table(spark, str(tmp_path / "cut" / "ratings"), "")


def test_sigterm_unwinds_removing_new_output_lock_and_checkpoints(tmp_path):
    """SIGTERM (cron timeout, kill) mid-commit: exit 143, the previous output stays, nothing is left behind."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    release = tmp_path / "release"
    release.mkdir()
    (release / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,100\n2,1,3.0,200\n")
    (release / "movies.csv").write_text("movieId,title,genres\n1,Toy Story (1995),Comedy\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "yesterday.txt").write_text("kept")
    job = subprocess.Popen(
        [sys.executable, "-m", "mfspark.commands.main", "ingest", "--input", str(release), "--out", str(out),
         "--profile", "test", "--conf-dir", os.path.join(repo, "conf"), "--log-level", "INFO"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=repo,
        env={**os.environ, "PYTHONPATH": repo, "MFSPARK_TEST_PAUSE": "publish:600"})
    seen = []
    for line in job.stderr:
        seen.append(line)
        if "pausing" in line:
            assert list((tmp_path / "_checkpoints").iterdir())  # this job's checkpoint directory exists now
            job.send_signal(subprocess.signal.SIGTERM)
            break
    assert job.wait(timeout=300) == 143, "".join(seen[-20:])
    assert (out / "yesterday.txt").read_text() == "kept"
    assert visible(tmp_path) == ["_checkpoints", "_spark_tmp", "out", "release"]
    assert list((tmp_path / ".out.versions").iterdir()) == [] and not (tmp_path / ".out.lock").exists()
    assert list((tmp_path / "_checkpoints").iterdir()) == []


@pytest.mark.parametrize("command", ["train", "baseline", "pipeline"])
def test_cli_refuses_out_inside_input_before_starting_spark(tmp_path, capsys, command):
    from mfspark.commands.main import main

    (tmp_path / "in").mkdir()
    assert main([command, "--input", str(tmp_path / "in"), "--out", str(tmp_path / "in" / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"mfspark {command}: error: --out {tmp_path}/in/out is inside --input {tmp_path}/in: "
                     "committing the output would replace the input; choose a separate output directory")
    assert list((tmp_path / "in").iterdir()) == []


def test_an_unwritable_or_file_out_is_one_line_before_any_work(tmp_path, capsys):
    from mfspark.commands.main import main

    release = tmp_path / "release"
    release.mkdir()
    locked = tmp_path / "locked"
    locked.mkdir()
    # Immutable: not even root may create an entry in it (permission bits do not stop root).
    subprocess.run(["chattr", "+i", str(locked)], check=True)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    try:
        assert main(["ingest", "--input", str(release), "--out", str(locked / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("mfspark ingest: error: Operation not permitted: ") and err.count("\n") == 1, err
        assert main(["ingest", "--input", str(release), "--out", str(a_file)]) == 2
        err = capsys.readouterr().err
        assert err == f"mfspark ingest: error: --out {a_file} is a file: give a directory (it is created, or " \
                      "replaced whole when it is an earlier output)\n"
        assert a_file.read_text() == "not a directory"
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)


def test_out_inside_the_data_dir_of_a_named_dataset_is_refused_before_writing(tmp_path, capsys):
    from mfspark.commands.main import main

    data_dir = tmp_path / "movielens"
    (data_dir / "ml-latest-small").mkdir(parents=True)
    for out in (data_dir, data_dir / "ml-latest-small"):
        assert main(["pipeline", "--dataset", "ml-latest-small", "--data-dir", str(data_dir), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"--out {out} is " in err and f"--data-dir {data_dir}" in err
    assert sorted(p.name for p in data_dir.rglob("*")) == ["ml-latest-small"]


def test_data_and_the_pointer_reach_the_disk_before_the_pointer_names_them(tmp_path, monkeypatch):
    """A power loss must not leave LATEST (or an output link) naming data that never reached the disk: every file
    and directory of the new version is fsynced, then the pointer file, then the directory holding the pointer."""
    from mfspark.runtime.fs import LocalFileSystem

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    run = tmp_path / "root" / "runs" / "r1"
    (run / "ingest" / "ratings").mkdir(parents=True)
    (run / "ingest" / "ratings" / "part-0.parquet").write_bytes(b"PAR1....PAR1")
    (run / "_SUCCESS").write_text("{}")
    fs = LocalFileSystem()
    fs.sync_tree(str(run))
    fs.publish_text(str(tmp_path / "root" / "LATEST"), '{"run_id": "r1"}')
    data = [str(run / "ingest" / "ratings" / "part-0.parquet"), str(run / "_SUCCESS"),
            str(run / "ingest" / "ratings"), str(run)]
    assert all(path in synced for path in data), synced
    pointer_at = max(i for i, path in enumerate(synced) if "/.LATEST.tmp-" in path)
    assert max(synced.index(path) for path in data) < pointer_at  # data first, then the pointer
    assert synced[-1] == str(tmp_path / "root")  # the rename itself made durable
    assert json.loads((tmp_path / "root" / "LATEST").read_text()) == {"run_id": "r1"}


def test_checkpoints_of_an_hdfs_or_s3_output_go_beside_it_on_that_store_and_scratch_stays_local():
    import tempfile

    from mfspark.commands.main import scratch_root
    from mfspark.runtime.session import load_profile
    from tests.conftest import REPO

    assert scratch_root("hdfs://nn:8020/recs/nightly/") == "hdfs://nn:8020/recs"
    assert scratch_root("s3a://bucket/nightly") == "s3a://bucket/"
    profile = load_profile("local", scratch_root("s3a://bucket/recs/nightly"), conf_dir=REPO / "conf")
    assert profile.checkpoint_dir == "s3a://bucket/recs/_checkpoints"
    scratch = profile.spark["spark.local.dir"]
    assert scratch.startswith(f"{tempfile.gettempdir()}/mfspark/") and scratch.endswith("/_spark_tmp")
    other = load_profile("local", scratch_root("hdfs://nn:8020/other/nightly"), conf_dir=REPO / "conf")
    assert other.spark["spark.local.dir"] != scratch  # one scratch directory per output root
