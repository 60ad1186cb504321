"""`mfspark ingest` end to end on the real ml-latest-small, through the command line."""

from __future__ import annotations

import json

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from mfspark.commands import main as cli
from tests.conftest import KeepSession


@pytest.fixture(scope="module")
def real_ingest(spark, ml_latest_small, tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "ml-latest-small"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "session_for", lambda args, app_name: KeepSession(spark))
        status = cli.main(["ingest", "--dataset", "ml-latest-small", "--data-dir", str(ml_latest_small.parent),
                           "--out", str(out)])
    assert status == 0
    return out, json.loads((out / "manifest.json").read_text())


def test_real_ml_latest_small_counts_and_manifest(spark, real_ingest):
    out, manifest = real_ingest
    ratings = spark.read.parquet(str(out / "ratings"))
    assert ratings.count() == 100_836
    assert ratings.select("user_id").distinct().count() == 610
    assert ratings.select("movie_id").distinct().count() == 9_724
    assert {name: spark.read.parquet(str(out / name)).count() for name in ("movies", "tags", "links", "rejects")} == {
        "movies": 9_742, "tags": 3_683, "links": 9_742, "rejects": 0}
    assert manifest["release"] == "ml-latest-small"
    assert {name: table["rows"] for name, table in manifest["tables"].items()} == {
        "ratings": 100_836, "movies": 9_742, "tags": 3_683, "links": 9_742}
    assert manifest["rejects"] == {"rows": 0, "path": "rejects", "by_reason": {},
                                   "by_file": {"ratings.csv": {}, "movies.csv": {}, "tags.csv": {}, "links.csv": {}}}
    assert manifest["inputs"]["ratings.csv"]["md5"] == "325a6f09399d1c45671f187505e1a100"


def test_real_ratings_values(spark, real_ingest):
    ratings = spark.read.parquet(str(real_ingest[0] / "ratings"))
    assert ratings.schema.simpleString() == "struct<user_id:int,movie_id:int,rating:float,rated_at:timestamp>"
    histogram = {row["rating"]: row["count"] for row in ratings.groupBy("rating").count().collect()}
    assert histogram == {0.5: 1370, 1.0: 2811, 1.5: 1791, 2.0: 7551, 2.5: 5550, 3.0: 20047, 3.5: 13136,
                         4.0: 26818, 4.5: 8551, 5.0: 13211}
    bounds = ratings.agg(F.min(F.unix_timestamp("rated_at")), F.max(F.unix_timestamp("rated_at"))).first()
    assert tuple(bounds) == (828124615, 1537799250)


def test_real_movies_titles_and_years(spark, real_ingest):
    movies = spark.read.parquet(str(real_ingest[0] / "movies"))
    picked = movies.filter(F.col("movie_id").isin(1, 29, 27008, 143410, 149334)).orderBy("movie_id")
    expected = spark.createDataFrame([
        (1, "Toy Story", 1995, ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]),
        (29, "City of Lost Children, The (Cité des enfants perdus, La)", 1995,
         ["Adventure", "Drama", "Fantasy", "Mystery", "Sci-Fi"]),
        (27008, "From Dusk Till Dawn 2: Texas Blood Money", 1999, ["Comedy", "Crime", "Horror"]),  # "(1999) "
        (143410, "Hyena Road", None, []),  # no year, "(no genres listed)"
        (149334, "Nocturnal Animals", None, ["Drama", "Thriller"]),
    ], movies.schema)
    assert_df_equality(picked, expected, ignore_nullable=True)


def test_cli_input_errors_exit_2(cli_with_test_session, tmp_path, capsys):
    status = cli_with_test_session(["ingest", "--input", str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
    assert status == 2
    assert f"mfspark ingest: error: input directory {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
