"""Errors Spark raises about a user's input reach the console as one line naming the path or column."""

from __future__ import annotations

import logging

import pytest


def write_ratings(spark, path, columns: str) -> None:
    spark.createDataFrame([(1, 2, 4.0)], columns).write.parquet(str(path))


def test_ratings_that_are_not_parquet_is_one_line_naming_the_file(cli_with_test_session, tmp_path, capsys):
    ratings = tmp_path / "ingest" / "ratings"
    ratings.mkdir(parents=True)
    (ratings / "part-0.csv").write_text("user_id,movie_id,rating,rated_at\n1,2,4.0,100\n")
    status = cli_with_test_session(["train", "--input", str(tmp_path / "ingest"), "--out", str(tmp_path / "als")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("mfspark train: error: ") and err.count("\n") == 1, err
    # Caught before Spark reads it (storage.check_parquet_table), so no trace exists to point at.
    assert "part-0.csv is not a whole Parquet file" in err
    assert "Traceback" not in err


def test_missing_column_is_one_line_naming_it_with_the_trace_at_debug(spark, cli_with_test_session, tmp_path,
                                                                      capsys, caplog):
    write_ratings(spark, tmp_path / "ingest" / "ratings", "user_id int, movie_id int, rating float")
    with caplog.at_level(logging.DEBUG, logger="mfspark"):
        status = cli_with_test_session(["baseline", "--input", str(tmp_path / "ingest"),
                                        "--out", str(tmp_path / "base")])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mfspark baseline: error:")]
    assert status == 2
    assert len(errors) == 1 and "`rated_at`" in errors[0] and "--log-level DEBUG" in errors[0], errors
    traced = [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    assert traced and "failed inside Spark" in traced[0].getMessage()
    assert "rated_at" in str(traced[0].exc_info[1])


# ---------------------------------------------------------------- recommend: bad options and bad models

def save_model(spark, path, user_rank: int = 2, item_rank: int = 2, params_rank: int = 2) -> None:
    """A plain model saved by hand (no fit): users 1, 2 and movies 10, 20, 30 with the given factor lengths."""
    from mfspark.models.als.estimator import ALSModel, ALSParams

    users = spark.createDataFrame([(u, [0.5 * u] * user_rank) for u in (1, 2)], "id int, features array<float>")
    items = spark.createDataFrame([(m, [m / 10] * item_rank) for m in (10, 20, 30)], "id int, features array<float>")
    ALSModel(users, items, ALSParams(rank=params_rank)).save(str(path))


@pytest.fixture(scope="module")
def recommend_inputs(spark, tmp_path_factory):
    """An ingest-like input (two users' ratings, three movies) and a train-like output holding a rank-2 model."""
    tmp_path = tmp_path_factory.mktemp("recommend")
    spark.createDataFrame([(1, 10, 4.0, None), (2, 20, 3.0, None)],
                          "user_id int, movie_id int, rating float, rated_at timestamp") \
        .write.parquet(str(tmp_path / "ingest" / "ratings"))
    spark.createDataFrame([(m, f"Movie {m}", 2000, ["Drama"]) for m in (10, 20, 30)],
                          "movie_id int, title string, year int, genres array<string>") \
        .write.parquet(str(tmp_path / "ingest" / "movies"))
    save_model(spark, tmp_path / "model" / "factors")
    return tmp_path


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"mfspark {command}: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("option, value", [("--top-n", "0"), ("--top-n", "-1"), ("--similar", "-1"),
                                           ("--user-block-size", "0"), ("--item-block-size", "0")])
def test_recommend_refuses_list_lengths_and_block_sizes_below_one(cli_with_test_session, recommend_inputs, capsys,
                                                                   option, value):
    root = recommend_inputs
    status = cli_with_test_session(["recommend", "--model", str(root / "model"), "--input", str(root / "ingest"),
                                    "--out", str(root / "recs"), option, value])
    assert status == 2
    assert f"{option} must be at least 1, got {value}" in one_error_line(capsys, "recommend")
    assert not (root / "recs").exists()


def test_recommend_refuses_an_out_that_would_replace_the_model(cli_with_test_session, recommend_inputs, capsys):
    root = recommend_inputs
    status = cli_with_test_session(["recommend", "--model", str(root / "model"), "--input", str(root / "ingest"),
                                    "--out", str(root / "model")])
    assert status == 2
    assert "is the same as --model" in one_error_line(capsys, "recommend")
    assert (root / "model" / "factors" / "metadata.json").is_file()


def make_not_a_model(spark, root, kind: str):
    """Directories a user might pass as --model: what `baseline`, MLlib and others write, and the train output's
    factors/ folder itself (accepted, like --warm-start's)."""
    if kind == "baseline output":  # its layout: biases/{users,movies,model.json}, metrics.json
        (root / kind / "biases").mkdir(parents=True)
        (root / kind / "biases" / "model.json").write_text('{"mu": 3.5, "params": {}}')
        (root / kind / "metrics.json").write_text("{}")
    elif kind == "MLlib model":
        (root / kind / "metadata").mkdir(parents=True)
        (root / kind / "metadata" / "part-00000").write_text('{"class":"org.apache.spark.ml.recommendation.ALSModel"}')
        spark.createDataFrame([(1, [0.1, 0.2])], "id int, features array<float>") \
            .write.parquet(str(root / kind / "userFactors"))
    elif kind == "empty directory":
        (root / kind).mkdir()
    return root / kind


@pytest.mark.parametrize("kind, said", [
    ("baseline output", "looks like a `mfspark baseline` output"),
    ("MLlib model", "looks like a Spark MLlib model directory"),
    ("empty directory", "is not a `mfspark train` output (no factors/metadata.json)"),
    ("missing", "not found"),
])
def test_recommend_model_that_is_not_a_train_output_is_one_line_saying_what_it_is(
        spark, cli_with_test_session, recommend_inputs, capsys, kind, said):
    root = recommend_inputs
    model = make_not_a_model(spark, root, kind)
    status = cli_with_test_session(["recommend", "--model", str(model), "--input", str(root / "ingest"),
                                    "--out", str(root / "recs")])
    assert status == 2
    line = one_error_line(capsys, "recommend")
    assert f"--model {model}" in line and said in line


def test_a_train_output_and_its_factors_folder_both_name_the_model(spark, recommend_inputs):
    from mfspark.commands.args import model_dir

    root = recommend_inputs
    for given in (root / "model", root / "model" / "factors"):
        assert model_dir(spark, f"{given}/", "--model") == str(root / "model" / "factors")


@pytest.mark.parametrize("user_rank, item_rank", [(3, 2), (2, 3)])
def test_a_model_whose_users_and_movies_differ_in_rank_is_refused_where_it_is_loaded(
        spark, cli_with_test_session, recommend_inputs, capsys, user_rank, item_rank):
    """User rank 3 against movie rank 2 made the kernel read past the movies' array; 2 against 3 ignored a
    component. Both are refused on load, naming the model and the ranks."""
    from mfspark.errors import InputError
    from mfspark.models.als.estimator import ALSModel

    root = recommend_inputs
    bad = root / f"bad-{user_rank}-{item_rank}"
    save_model(spark, bad / "factors", user_rank, item_rank)
    with pytest.raises(InputError, match=r"the model has rank 2 but its factors do not \((items|users) 3\)"):
        ALSModel.load(spark, str(bad / "factors"))
    status = cli_with_test_session(["recommend", "--model", str(bad), "--input", str(root / "ingest"),
                                    "--out", str(root / "recs")])
    assert status == 2
    assert "users and movies must have the same rank" in one_error_line(capsys, "recommend")


def test_top_n_refuses_factor_frames_of_different_rank(spark):
    from mfspark.recommend.lists import recommend_for_users

    users = spark.createDataFrame([(1, [1.0, 2.0, 3.0])], "id int, features array<float>")
    items = spark.createDataFrame([(10, [1.0, 1.0]), (20, [2.0, 0.0])], "id int, features array<float>")
    with pytest.raises(ValueError, match="queries' factors have rank 3 and the candidates' 2"):
        recommend_for_users(users, items, None, 1)


@pytest.mark.parametrize("users", ["1,2147483648", "2147483648"])
def test_recommend_users_as_a_comma_list_are_checked_like_a_file(cli_with_test_session, recommend_inputs, capsys,
                                                                  users):
    root = recommend_inputs
    status = cli_with_test_session(["recommend", "--model", str(root / "model"), "--input", str(root / "ingest"),
                                    "--out", str(root / "recs"), "--users", users])
    assert status == 2
    assert "--users" in (line := one_error_line(capsys, "recommend")) and "'2147483648'" in line


@pytest.mark.parametrize("rating, expected", [("nan", "must be finite, got 'nan'"), ("inf", "must be finite"),
                                              ("-inf", "must be finite")])
def test_ratings_file_refuses_ratings_that_are_not_finite(rating, expected):
    from mfspark.commands.recommend import read_ratings_file
    from mfspark.errors import InputError

    with pytest.raises(InputError, match=f"new.csv:3: the rating {expected}"):
        read_ratings_file(f"movie_id,rating\n10,4\n20,{rating}\n", "new.csv")


def test_ratings_file_refuses_ratings_off_the_models_scale():
    from mfspark.commands.recommend import read_ratings_file
    from mfspark.errors import InputError

    assert read_ratings_file("10,0.5\n20,5\n", "new.csv", (0.5, 5.0)) == [(10, 0.5), (20, 5.0)]
    with pytest.raises(InputError, match=r"new.csv:2: the rating must be on the model's rating scale 0.5..5, got '50'"):
        read_ratings_file("10,4\n20,50\n", "new.csv", (0.5, 5.0))


def test_ratings_file_message_counts_a_movie_rated_twice_once(cli_with_test_session, recommend_inputs, capsys):
    root = recommend_inputs
    (root / "new.csv").write_text("movie_id,rating\n10,4\n10,5\n20,3\n")
    status = cli_with_test_session(["recommend", "--model", str(root / "model"), "--input", str(root / "ingest"),
                                    "--ratings-file", str(root / "new.csv"), "--top-n", "1"])
    assert status == 0, capsys.readouterr().err
    assert "new user (2 of 2 rated movies used)" in capsys.readouterr().out


# ---------------------------------------------------------------- runtime and ALS options

def test_log_level_must_be_a_level_name_in_any_case(capsys):
    from mfspark.commands.main import build_parser

    assert build_parser("train").parse_args(["train", "--out", "x", "--log-level", "debug"]).log_level == "DEBUG"
    with pytest.raises(SystemExit) as exit_info:
        build_parser("train").parse_args(["train", "--out", "x", "--log-level", "LOUD"])
    assert exit_info.value.code == 2
    assert "argument --log-level: invalid choice: 'LOUD'" in capsys.readouterr().err


def test_negative_checkpoint_interval_is_refused_before_the_input_is_read(cli_with_test_session, tmp_path, capsys):
    """-1 used to turn checkpoints off without a word (0 does that, on purpose)."""
    status = cli_with_test_session(["train", "--input", str(tmp_path / "missing"), "--out", str(tmp_path / "als"),
                                    "--checkpoint-interval", "-1"])
    assert status == 2
    assert "checkpoint_interval (--checkpoint-interval) must be 0 or more, got -1" in one_error_line(capsys, "train")


HIDE_MATPLOTLIB = """
import sys
from importlib.abc import MetaPathFinder


class NoMatplotlib(MetaPathFinder):  # as if the `plots` extra were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "matplotlib":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NoMatplotlib())
from mfspark.commands.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_report_without_the_plots_extra_is_one_line_naming_it():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", HIDE_MATPLOTLIB, "report", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == "mfspark report: error: needs matplotlib, which is not installed: " \
                          "pip install 'mfspark[plots]'\n"


# ---------------------------------------------------------------- a JVM that dies under a command

def java_child(pid: int) -> int:
    """The pid of the JVM a Python driver launched (its child running java)."""
    from pathlib import Path

    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        if "java" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace"):
            return int(child)
    raise AssertionError(f"process {pid} has no java child")


def test_a_jvm_killed_during_a_command_is_one_line_and_exit_2(tmp_path):
    """As the OOM killer would: SIGKILL the driver's JVM (not the Python driver) while train runs. The session's
    stop() used to raise ConnectionRefusedError over the fit's error: 136-183 lines of traces, exit 1."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "ingest" / "ratings").mkdir(parents=True)
    rows = [(u, m, float((u * m) % 5 + 1)) for u in range(1, 21) for m in range(1, 11)]
    pq.write_table(pa.table({"user_id": pa.array([r[0] for r in rows], pa.int32()),
                             "movie_id": pa.array([r[1] for r in rows], pa.int32()),
                             "rating": pa.array([r[2] for r in rows], pa.float32()),
                             "rated_at": pa.array([None] * len(rows), pa.timestamp("us"))}),
                   tmp_path / "ingest" / "ratings" / "part-0.parquet")
    process = subprocess.Popen(
        [sys.executable, "-m", "mfspark.commands.main", "train", "--input", str(tmp_path / "ingest"), "--out",
         str(tmp_path / "als"), "--rank", "2", "--max-iter", "200", "--profile", "test", "--conf-dir",
         str(repo / "conf"), "--log-level", "INFO"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)})
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "mfspark.runtime.session: Spark" in line:  # the session is up: the command's next Spark call fails
            os.kill(java_child(process.pid), signal.SIGKILL)
            break
    seen += process.stderr.readlines()
    assert process.wait(timeout=120) == 2, "".join(seen[-40:])
    assert seen[-1].startswith("mfspark train: error: the Spark JVM died (killed or out of memory) during train: "), \
        "".join(seen[-40:])
    assert not [line for line in seen if "Traceback" in line or "Exception" in line], "".join(seen)
    assert not (tmp_path / "als").exists()


# ---------------------------------------------------------------- a full disk

@pytest.fixture
def small_disk(tmp_path):
    """A 64 KB tmpfs (needs root; skipped where mounting is not allowed)."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_is_one_line_saying_so_and_where(cli_with_test_session, small_disk, tmp_path, capsys):
    """Spark's own line named the failed write (TASK_WRITE_FAILED, or a Py4JJavaError 'while calling oNNNN.parquet')
    but not the cause, four Java causes down."""
    release = tmp_path / "release"
    release.mkdir()
    (release / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(
        f"{u},{m},{(u + m) % 10 / 2 + 0.5},{1_000_000_000 + u * 997 + m * 13}\n"
        for u in range(1, 201) for m in range(1, 101)))
    (release / "movies.csv").write_text("movieId,title,genres\n" + "".join(
        f"{m},Movie {m} (2000),Drama\n" for m in range(1, 101)))
    status = cli_with_test_session(["ingest", "--input", str(release), "--out", str(small_disk / "ingest")])
    assert status == 2
    line = one_error_line(capsys, "ingest")
    assert line.startswith(f"mfspark ingest: error: no space left on device writing file:{small_disk}/"), line


def test_the_disk_full_line_finds_the_cause_in_python_and_java_chains():
    from mfspark.errors import PipelineStageError
    from mfspark.runtime.failures import no_space_left

    full = OSError(28, "No space left on device", "/data/out/metrics.json")
    assert no_space_left(full, "/data/out") == "no space left on device writing /data/out/metrics.json"
    try:
        try:
            raise full
        except OSError as exc:
            raise PipelineStageError("stage evaluate failed: OSError") from exc
    except PipelineStageError as wrapped:
        assert no_space_left(wrapped, "/data") == "no space left on device writing /data/out/metrics.json"
    assert no_space_left(OSError(13, "Permission denied", "/data/out"), "/data") is None
