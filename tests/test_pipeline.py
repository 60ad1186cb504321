"""`mfspark pipeline`: run directories, skip/reuse/resume by stage key, `latest`, and SIGKILL at several moments."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mfspark.commands import report as report_job
from mfspark.errors import ConfigError, InputError, PipelineStageError
from mfspark.evaluation.split import random_split
from mfspark.models.als.estimator import ALSParams
from mfspark.models.bias import BiasParams
from mfspark.pipeline import layout
from mfspark.pipeline import run as pipeline
from mfspark.pipeline.run import run_pipeline
from mfspark.pipeline.stages import LISTS_ALS, PipelineConfig
from mfspark.runtime.fs import LocalFileSystem
from tests.independent import precision_at_k, predicted_ratings, rmse

REPO = Path(__file__).resolve().parents[1]


def tiny_release(directory: Path, users: int = 30, movies: int = 20, extra: int = 0) -> Path:
    """An ml-latest-small-shaped release: ratings.csv (about 400 ratings) and movies.csv."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [f"{u},{m},{(u * 7 + m * 3) % 9 / 2 + 0.5},{1_000_000_000 + u * 1000 + m}"
            for u in range(1, users + 1) for m in range(1, movies + 1) if (u + 2 * m) % 3]
    rows += [f"{users + 1},{m},4.0,1000000000" for m in range(1, extra + 1)]
    (directory / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    (directory / "movies.csv").write_text("movieId,title,genres\n" + "\n".join(
        f"{m},Movie {m} (2000),Drama" for m in range(1, movies + 1)) + "\n")
    return directory


def config(tmp_path: Path, **changes) -> PipelineConfig:
    base = PipelineConfig(root=str(tmp_path / "root"), source_dir=tiny_release(tmp_path / "release"), top_n=0,
                          bias=BiasParams(sweeps=2),
                          als=ALSParams(rank=2, max_iter=2, biases=True, seed=1),
                          lists_als=replace(LISTS_ALS, rank=2, max_iter=3, seed=1))
    return replace(base, **changes)


def stage_actions(result: dict) -> dict[str, str]:
    return {step["stage"]: step["action"] for step in result["plan"]}


def test_run_writes_stages_manifest_and_latest_then_skips_what_is_unchanged(spark, tmp_path):
    first = run_pipeline(spark, config(tmp_path))
    root = tmp_path / "root"
    run_dir = root / "runs" / first["run_id"]
    assert os.readlink(root / "latest") == f"runs/{first['run_id']}"
    for step in first["plan"]:
        assert json.loads((run_dir / step["stage"] / "_SUCCESS").read_text())["key"] == step["key"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    ratings_md5 = manifest["inputs"]["ratings.csv"]["md5"]
    assert len(ratings_md5) == 32 and manifest["rows"]["ingest"] == {"ratings": 400, "movies": 20}
    assert manifest["rows"]["split"]["train"] + manifest["rows"]["split"]["test"] == 400
    assert manifest["parameters"]["train"]["als"]["rank"] == 2
    assert set(manifest["seconds"]) == {"ingest", "baseline", "train", "evaluate"}
    assert 0.1 < manifest["metrics"]["als"]["rmse"] < 3 and manifest["metrics"]["baseline"]["count"] > 0
    assert pq.read_table(root / "latest" / "ingest" / "ratings").num_rows == 400
    assert json.loads((root / "LATEST").read_text())["run_id"] == first["run_id"]
    fs = LocalFileSystem()
    assert layout.resolve_run(fs, str(root)) == layout.resolve_run(fs, str(run_dir)) == str(run_dir)

    again = run_pipeline(spark, config(tmp_path))
    assert again["up_to_date"] and again["run_id"] == first["run_id"]

    # A new ALS setting: ingest and baseline are reused from the first run, train and evaluate rerun.
    changed = run_pipeline(spark, config(tmp_path, als=ALSParams(rank=3, max_iter=2, biases=True, seed=1)))
    assert stage_actions(changed) == {"ingest": "reuse", "baseline": "reuse", "train": "run", "evaluate": "run"}
    assert os.readlink(root / "latest") == f"runs/{changed['run_id']}"
    new_run = root / "runs" / changed["run_id"]
    assert layout.stage_location(fs, str(new_run), "ingest") == f"{root}/runs/{first['run_id']}/ingest"
    assert json.loads((new_run / "manifest.json").read_text())["stages"]["ingest"]["reused_from"] == first["run_id"]

    # A third run reuses from the second: its record names the original directory, never the second's record.
    third = run_pipeline(spark, config(tmp_path, als=ALSParams(rank=3, max_iter=2, biases=True, seed=1), top_n=2))
    assert stage_actions(third)["ingest"] == "reuse"
    third_run = root / "runs" / third["run_id"]
    assert layout.stage_location(fs, str(third_run), "ingest") == f"{root}/runs/{first['run_id']}/ingest"
    assert layout.stage_location(fs, str(third_run), "train") == f"{root}/runs/{changed['run_id']}/train"

    forced = run_pipeline(spark, config(tmp_path, force=True), dry_run=True)
    assert set(stage_actions(forced).values()) == {"run"}
    assert sorted(p.name for p in (root / "runs").iterdir()) == sorted([first["run_id"], changed["run_id"],
                                                                        third["run_id"]])


@pytest.fixture(scope="module")
def six_stage_run(spark, tmp_path_factory) -> tuple[dict, Path]:
    """(result, root) of one complete run of all six stages on the 40-movie release (read, never changed, by the
    tests below): every user has more than the 20 ratings below which a user gets the popularity list."""
    tmp_path = tmp_path_factory.mktemp("six-stages")
    source = tiny_release(tmp_path / "release40", movies=40)
    return run_pipeline(spark, config(tmp_path, top_n=3, source_dir=source)), tmp_path / "root"


def test_evaluate_writes_ranking_metrics_and_the_report_reads_the_pipeline_root(spark, six_stage_run, tmp_path):
    result, root = six_stage_run
    evaluated = json.loads((root / "latest" / "evaluate" / "metrics.json").read_text())
    assert {"kind": "random", "test_fraction": 0.2, "seed": 42}.items() <= evaluated["split"].items()
    assert not (root / "latest" / "evaluate" / "_train_pairs").exists()  # the stage's scratch, removed
    # The held-out RMSE of the written model (factors + its bias tables), recomputed with numpy on the split.
    train, test = split_frames(spark, root / "latest")
    expected = rmse(predicted_ratings(root / "latest" / "train" / "factors", test,
                                      (train.rating.min(), train.rating.max())), test.rating)
    assert evaluated["rmse"] == pytest.approx(expected, rel=1e-6) and evaluated["params"]["rank"] == 2
    for model in ("als", "baseline"):
        ranking = result["metrics"][model]
        assert 0 <= ranking["precision@10"] <= 1 and 0 < ranking["coverage@10"] <= 1 and ranking["users"] > 0

    run_report = ["--run", str(root), "--out", str(tmp_path / "report"), "--no-compare", "--svd-rank", "2",
                  "--map-movies", "20", "--neighbour-min-count", "1", "--pca-users", "20", "--pca-movies", "10"]
    parser = argparse.ArgumentParser()
    report_job.add_arguments(parser)
    report_job.run(parser.parse_args(run_report), spark)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    trained = next(row for row in report["accuracy"]["rows"] if row["description"].endswith("the trained model"))
    assert trained["rmse"] == evaluated["rmse"] and trained["ndcg@10"] == evaluated["test"]["ndcg@10"]


def test_lists_come_from_implicit_als_on_the_liked_ratings_with_every_rated_movie_excluded(spark, six_stage_run):
    result, root = six_stage_run
    assert [step["stage"] for step in result["plan"]] == [
        "ingest", "baseline", "train", "train_lists", "evaluate", "recommend"]
    run = root / "latest"
    lists_model = run / "train_lists" / "factors"
    assert json.loads((lists_model / "metadata.json").read_text())["params"]["implicit"] is True
    users, items = ({row["id"]: np.array(row["features"]) for row in pq.read_table(lists_model / side).to_pylist()}
                    for side in ("users", "items"))
    ratings = pq.read_table(run / "ingest" / "ratings").to_pandas()
    assert set(users) <= set(ratings.loc[ratings.rating >= 4, "user_id"])  # fitted on the liked ratings only
    recommended = pq.read_table(run / "recommend" / "recommendations").to_pandas()
    fallback = set(pq.read_table(run / "recommend" / "fallback_users").column("user_id").to_pylist())
    assert set(recommended.user_id) == set(ratings.user_id) and fallback == set(ratings.user_id) - set(users)
    for user, rows in recommended[~recommended.user_id.isin(fallback)].groupby("user_id"):
        unseen = sorted(set(items) - set(ratings.loc[ratings.user_id == user, "movie_id"]))
        scores = np.array([users[user] @ items[m] for m in unseen], np.float32)
        best = [unseen[i] for i in np.lexsort((unseen, -scores))[:3]]
        assert rows.sort_values("rank").movie_id.tolist() == best
    evaluated = json.loads((run / "evaluate" / "metrics.json").read_text())
    train, test = split_frames(spark, run)  # precision@10 of the lists' model, recomputed with numpy
    expected = precision_at_k(lists_model, train, test, 10)
    assert 0 < expected < 1 and evaluated["lists"]["precision@10"] == pytest.approx(expected)


def split_frames(spark, run: Path) -> tuple:
    """The pipeline's train and test ratings of RUN (its random split, seed 42, of the ingested ratings) as pandas."""
    ratings = spark.read.parquet(str(run / "ingest" / "ratings"))
    split = random_split(ratings, 0.2, 42)
    return split.train.toPandas(), split.test.toPandas()


def test_failing_stage_is_named_in_one_line_and_latest_is_not_moved(spark, tmp_path, monkeypatch):
    def broken(ctx, out):
        raise RuntimeError("disk full\nmore detail")

    stages = pipeline.build_stages

    def with_broken_baseline(cfg):
        return [replace(s, run=broken) if s.name == "baseline" else s for s in stages(cfg)]

    monkeypatch.setattr(pipeline, "build_stages", with_broken_baseline)
    with pytest.raises(PipelineStageError, match=r"^stage baseline failed: RuntimeError: disk full$"):
        run_pipeline(spark, config(tmp_path))
    root = tmp_path / "root"
    assert not (root / "latest").exists()
    [run_dir] = (root / "runs").iterdir()
    assert (run_dir / "ingest" / "_SUCCESS").is_file() and not (run_dir / "_SUCCESS").exists()


def test_run_id_names_the_run_directory_and_a_rerun_with_it_resumes_that_run(spark, tmp_path, monkeypatch):
    root = tmp_path / "root"
    stages = pipeline.build_stages

    def failing_evaluate(ctx, out):
        raise RuntimeError("killed")

    monkeypatch.setattr(pipeline, "build_stages", lambda cfg: [replace(s, run=failing_evaluate)
                                                               if s.name == "evaluate" else s for s in stages(cfg)])
    with pytest.raises(PipelineStageError, match="stage evaluate failed"):
        run_pipeline(spark, config(tmp_path, run_id="20260102"))
    monkeypatch.setattr(pipeline, "build_stages", stages)
    night = root / "runs" / "20260102"
    assert (night / "train" / "_SUCCESS").is_file() and not (night / "_SUCCESS").exists()

    # The scheduler's retry: the same id resumes that run, whatever else is in ROOT/runs.
    (root / "runs" / "20260101T000000Z-00000000").mkdir()
    resumed = run_pipeline(spark, config(tmp_path, run_id="20260102"))
    assert resumed["run_id"] == "20260102"
    assert stage_actions(resumed) == {"ingest": "skip", "baseline": "skip", "train": "skip", "evaluate": "run"}
    assert os.readlink(root / "latest") == "runs/20260102" and (night / "_SUCCESS").is_file()
    assert sorted(p.name for p in (root / "runs").iterdir()) == ["20260102"]  # the abandoned run is removed

    again = run_pipeline(spark, config(tmp_path, run_id="20260102"))
    assert again["up_to_date"] and again["run_id"] == "20260102"

    # The next night, same data: a run of that name, its stages linked from the night before.
    next_night = run_pipeline(spark, config(tmp_path, run_id="20260103"))
    assert set(stage_actions(next_night).values()) == {"reuse"}
    assert os.readlink(root / "latest") == "runs/20260103"
    assert layout.stage_location(LocalFileSystem(), str(root / "runs" / "20260103"), "train") == str(night / "train")

    with pytest.raises(ConfigError, match=r"^run 20260102 in .* is complete with other inputs and parameters; a "
                                          r"complete run is never rewritten: give another run id$"):
        run_pipeline(spark, config(tmp_path, run_id="20260102", als=ALSParams(rank=3, max_iter=2, biases=True)))


@pytest.mark.parametrize(("option", "env", "named"), [
    (["--run-id", "../elsewhere"], {}, "--run-id '../elsewhere'"),
    (["--run-id=-x"], {}, "--run-id '-x'"),
    ([], {"MFSPARK_RUN_ID": "2026/01/02"}, "MFSPARK_RUN_ID '2026/01/02'"),
])
def test_unsafe_run_id_is_one_error_line_naming_it(cli_with_test_session, tmp_path, capsys, monkeypatch, option,
                                                   env, named):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    status = cli_with_test_session(["pipeline", "--input", str(tiny_release(tmp_path / "release")),
                                    "--out", str(tmp_path / "root"), *option])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert err.startswith(f"mfspark pipeline: error: {named} is not a usable run id: it names ROOT/runs/<run id>/")
    assert not (tmp_path / "root").exists()


def test_stale_input_is_refused_when_the_check_is_on(spark, tmp_path):
    cfg = config(tmp_path, max_input_age_hours=1.0)
    old = time.time() - 3 * 3600
    for path in cfg.source_dir.iterdir():
        os.utime(path, (old, old))
    with pytest.raises(InputError, match=r"newest input file is 3\.0 h old, older than --max-input-age-hours 1"):
        run_pipeline(spark, cfg, dry_run=True)


# ---------------------------------------------------------------- SIGKILL at several moments

def start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "mfspark.commands.main", "pipeline", *args, "--profile", "test",
               "--conf-dir", str(REPO / "conf"), "--log-level", "INFO", "--top-n", "3", "--rank", "2",
               "--max-iter", "2", "--seed", "1"]
    return subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def kill_at(process: subprocess.Popen, line_part: str) -> str:
    """SIGKILL the pipeline (driver and, through it, its JVM) as soon as it logs a line containing `line_part`."""
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line_part in line:
            process.send_signal(signal.SIGKILL)  # its JVM exits when the driver's pipe to it closes
            process.wait()
            return "".join(seen)
    raise AssertionError(f"no log line with {line_part!r}; exit {process.wait()}:\n{''.join(seen[-20:])}")


def finish(process: subprocess.Popen) -> str:
    log = process.stderr.read()
    assert process.wait() == 0, log[-3000:]
    return log


def latest_id(root: Path) -> str:
    return json.loads((root / "LATEST").read_text())["run_id"]


def assert_latest_is_complete(root: Path, run_id: str) -> None:
    """LATEST names `run_id`, complete, and its tables hold what its manifest says."""
    run_dir = root / "runs" / run_id
    assert latest_id(root) == run_id and os.readlink(root / "latest") == f"runs/{run_id}"
    assert (run_dir / "_SUCCESS").is_file()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    fs = LocalFileSystem()
    stage = {name: Path(layout.stage_location(fs, str(run_dir), name)) for name in ("ingest", "train", "recommend")}
    assert pq.read_table(stage["ingest"] / "ratings").num_rows == manifest["rows"]["ingest"]["ratings"]
    assert pq.read_table(stage["train"] / "factors" / "users").num_rows > 0
    assert pq.read_table(stage["recommend"] / "recommendations").num_rows == manifest["rows"]["recommendations"]


# The moment of each kill -> (MFSPARK_TEST_PAUSE, the log line the kill follows). Each run after the first resumes
# the run the previous kill interrupted, one stage further each time.
KILLS = [
    ("mid-ingest", "", "movies.csv: 40 rows"),
    ("mid-train", "", "ALS iteration 1/2"),
    ("mid-train_lists", "", "stage 4/6 train_lists: running"),
    ("mid-recommend", "", "stage 6/6 recommend: running"),
    ("after the manifest", "manifest:600", "pausing"),
    ("while the pointer is written", "latest:600", "pausing"),
]


@pytest.mark.slow  # eight pipeline processes: CI's promise step runs it (`pytest -m "hadoop or slow"`)
def test_sigkill_at_six_moments_of_all_six_stages_leaves_latest_complete_and_the_rerun_matches(tmp_path):
    root = tmp_path / "root"
    day1 = tiny_release(tmp_path / "day1", movies=40)
    day2 = tiny_release(tmp_path / "day2", movies=40, extra=5)  # the next night's export: five more ratings
    finish(start(["--input", str(day1), "--out", str(root)]))
    day1_run = latest_id(root)
    assert_latest_is_complete(root, day1_run)

    for number, (moment, pause, line) in enumerate(KILLS):
        log = kill_at(start(["--input", str(day2), "--out", str(root)],
                            {"MFSPARK_TEST_PAUSE": pause} if pause else None), line)
        assert_latest_is_complete(root, day1_run)
        if number >= 2:  # resumed: the stages done before the previous kill are kept
            assert "stage 1/6 ingest: skipped" in log, moment

    log = finish(start(["--input", str(day2), "--out", str(root)]))  # complete before the last kill: LATEST moves
    assert "up to date" in log
    resumed = latest_id(root)
    assert resumed != day1_run
    assert_latest_is_complete(root, resumed)
    assert not list(root.glob(".latest.link-*")) and not list(root.glob(".LATEST.tmp-*"))

    finish(start(["--input", str(day2), "--out", str(root), "--force"]))  # uninterrupted, same seed
    uninterrupted = latest_id(root)
    assert uninterrupted != resumed
    for stage in ("baseline", "evaluate"):
        assert (root / "runs" / resumed / stage / "metrics.json").read_text() == \
            (root / "runs" / uninterrupted / stage / "metrics.json").read_text()
    lists = [pq.read_table(root / "runs" / run / "recommend" / "recommendations").sort_by(
        [("user_id", "ascending"), ("rank", "ascending")]).to_pylist() for run in (resumed, uninterrupted)]
    assert lists[0] == lists[1]


# ---------------------------------------------------------------- what is reused must be what the code makes

def test_a_change_to_any_source_file_changes_every_stage_key(tmp_path, monkeypatch):
    from importlib import resources

    from mfspark.pipeline import stages

    package = Path(resources.files("mfspark"))
    copy = tmp_path / "mfspark"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    stage_list = stages.build_stages(config(tmp_path))
    before = stages.stage_keys(stage_list)
    monkeypatch.setattr(stages.resources, "files", lambda name: copy)
    stages.code_identity.cache_clear()
    try:
        assert stages.stage_keys(stage_list) == before  # the same sources: the same keys
        kernel = copy / "models" / "als" / "kernels.py"
        kernel.write_text(kernel.read_text() + "\n# a fix\n")
        stages.code_identity.cache_clear()
        changed = stages.stage_keys(stage_list)
        assert all(changed[name] != before[name] for name in before)
    finally:
        stages.code_identity.cache_clear()


def test_retention_keeps_what_newer_runs_read_and_a_damaged_stage_is_run_again(spark, tmp_path, caplog):
    root = tmp_path / "root"
    first = run_pipeline(spark, config(tmp_path))
    second = run_pipeline(spark, config(tmp_path, als=ALSParams(rank=3, max_iter=2, biases=True, seed=1)))
    (root / ".latest.link-dead0000").symlink_to("runs/nowhere")  # left by a kill during a pointer update
    (root / ".LATEST.tmp-dead0000").write_text("{}")
    third = run_pipeline(spark, config(tmp_path, als=ALSParams(rank=4, max_iter=2, biases=True, seed=1)),
                         keep=1)
    # The third run reads ingest and baseline from the first: the first stays, the second goes.
    assert third["retired"] == [second["run_id"]]
    assert sorted(p.name for p in (root / "runs").iterdir()) == sorted([first["run_id"], third["run_id"]])
    assert not list(root.glob(".latest.link-*")) and not list(root.glob(".LATEST.tmp-*"))
    assert json.loads((root / "LATEST").read_text())["run_id"] == third["run_id"]

    # A part of the reused ratings is lost: the next run does not trust it.
    part = next((root / "runs" / first["run_id"] / "ingest" / "ratings").glob("part-*"))
    part.unlink()
    with caplog.at_level("WARNING"):
        again = run_pipeline(spark, config(tmp_path, als=ALSParams(rank=4, max_iter=2, biases=True, seed=1)))
    assert not again.get("up_to_date") and stage_actions(again)["ingest"] == "run"
    assert "stage ingest in" in caplog.text and "is damaged (1 files missing" in caplog.text
    manifest = json.loads((root / "runs" / again["run_id"] / "manifest.json").read_text())
    assert manifest["rows"]["ingest"]["ratings"] == 400
    assert pq.read_table(root / "runs" / again["run_id"] / "ingest" / "ratings").num_rows == 400


def test_a_run_being_removed_stops_being_resumable_before_its_data_goes(tmp_path, monkeypatch):
    fs = LocalFileSystem()
    root = pipeline.Root(fs, str(tmp_path / "root"))
    run = tmp_path / "root" / "runs" / "r1"
    (run / "ingest").mkdir(parents=True)
    (run / "ingest" / "_SUCCESS").write_text(json.dumps({"key": "k1"}))
    (run / "plan.json").write_text(json.dumps({"keys": {"ingest": "k1"}}))
    assert pipeline.resumable_run(root, {"ingest": "k1"}) == "r1"
    deleted = []

    def delete_then_die(path):  # a kill right after the first removal
        deleted.append(path)
        LocalFileSystem.delete(fs, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(fs, "delete", delete_then_die)
    with pytest.raises(KeyboardInterrupt):
        pipeline.remove_run(root, "r1", "test")
    assert deleted == [f"{root.uri}/runs/r1/plan.json"]
    assert pipeline.resumable_run(root, {"ingest": "k1"}) is None


def test_runs_lists_each_run_and_latest_prints_the_uri_programs_read(six_stage_run, tmp_path, capsys):
    from mfspark.commands.main import main

    first, shared = six_stage_run
    root = tmp_path / "root"  # a copy: the incomplete run added below must not reach the other tests' root
    shutil.copytree(shared, root, symlinks=True)
    (root / "runs" / "20990101T000000Z-killed00").mkdir()
    assert main(["runs", str(root)]) == 0
    table = capsys.readouterr().out.splitlines()
    manifest = json.loads((root / "runs" / first["run_id"] / "manifest.json").read_text())
    [row] = [line for line in table if line.startswith(first["run_id"])]
    assert "complete (latest)" in row and f"{manifest['metrics']['als']['rmse']:.4f}" in row
    assert f"train={manifest['seconds']['train']:.1f}" in row
    assert any(line.startswith("20990101T000000Z-killed00") and "incomplete" in line for line in table)

    assert main(["runs", str(root), "--latest"]) == 0
    assert capsys.readouterr().out.strip() == str(root / "runs" / first["run_id"])
    assert main(["runs", str(root), "--latest", "--stage", "ingest"]) == 0
    assert capsys.readouterr().out.strip() == str(root / "runs" / first["run_id"] / "ingest")
    assert main(["runs", str(tmp_path / "nothing-here"), "--latest"]) == 2
    assert "neither a pipeline run nor root" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "said"), [
    (["--rank", "0"], "rank (--rank) must be 1 or more, got 0"),
    (["--reg", "-0.1"], "reg (--reg) must be 0 or more, got -0.1"),
    (["--test-fraction", "1.5"], "--test-fraction must be between 0 and 1, got 1.5"),
    (["--lambda-u", "-5"], "lambda_u (--lambda-u) must be 0 or more, got -5.0"),
    (["--checkpoint-interval", "-1"], "checkpoint_interval (--checkpoint-interval) must be 0 or more, got -1"),
    (["--max-reject-fraction", "2"], "--max-reject-fraction must be between 0 and 1, got 2.0"),
])
def test_bad_stage_parameters_are_refused_before_any_stage_runs(cli_with_test_session, tmp_path, capsys, option,
                                                                said):
    status = cli_with_test_session(["pipeline", "--input", str(tiny_release(tmp_path / "release")),
                                    "--out", str(tmp_path / "root"), *option])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert err.startswith("mfspark pipeline: error: ") and said in err
    assert not (tmp_path / "root").exists()  # no stage ran
