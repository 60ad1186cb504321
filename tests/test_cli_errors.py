"""Errors Spark raises about a user's input reach the console as one line naming the path or column."""

from __future__ import annotations

import logging


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
