"""Ingest of every MovieLens release format from tiny inline fixtures, rejects and failure modes."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
from chispa import assert_df_equality

from mfspark.data.ingest import ingest_release
from mfspark.data.movielens import ML100K_GENRES, TABLE_SCHEMAS, detect_release, read_genre_names
from mfspark.errors import ConfigError, InputError, RejectThresholdError


def write(directory: Path, name: str, lines: list[str], encoding: str = "utf-8", eol: str = "\n") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes("".join(line + eol for line in lines).encode(encoding))
    return path


def at(seconds: int) -> dt.datetime:
    """What Spark returns for epoch seconds in the UTC session (naive UTC datetimes)."""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).replace(tzinfo=None)


def table(spark, out: Path, name: str):
    return spark.read.parquet(str(out / name))


def expect(spark, name: str, rows: list[tuple]):
    return spark.createDataFrame(rows, TABLE_SCHEMAS[name])


def assert_table(spark, out: Path, name: str, rows: list[tuple]) -> None:
    assert_df_equality(table(spark, out, name), expect(spark, name, rows), ignore_row_order=True,
                       ignore_nullable=True)


def csv_release(root: Path, ratings: list[str] | None = None) -> Path:
    crlf = "\r\n"
    write(root, "ratings.csv", ["userId,movieId,rating,timestamp", *(ratings or [
        "1,1,4.0,964982703", "1,2,0.5,964982704", "2,1,5.0,964982705"])], eol=crlf)
    write(root, "movies.csv", [
        "movieId,title,genres",
        "1,Toy Story (1995),Adventure|Animation|Children",
        '2,"City of Lost Children, The (Cité des enfants perdus, La) (1995)",Drama|Fantasy',
        '3,"""Great Performances"" Cats (1998)",Musical',
        "4,Babylon 5,Sci-Fi",
        "5,Hyena Road ,(no genres listed)",
    ], eol=crlf)
    write(root, "tags.csv", ["userId,movieId,tag,timestamp", '1,1,"funny, clever",1445714994', "2,1,pixar,1445714995"],
          eol=crlf)
    write(root, "links.csv", ["movieId,imdbId,tmdbId", "1,0114709,862", "2,0112682,", "3,0173714,16992"], eol=crlf)
    return root


def test_detect_release_from_files(tmp_path):
    cases = {
        "ml-100k": ["u.data", "u.item"],
        "ml-1m": ["ratings.dat", "movies.dat", "users.dat"],
        "ml-10m": ["ratings.dat", "movies.dat", "tags.dat"],
        "ml-25m": ["ratings.csv", "movies.csv"],
        "other": ["ratings.csv"],
    }
    for name, files in cases.items():
        for file_name in files:
            write(tmp_path / name, file_name, ["1::1::3.5::1"])
    assert {name: detect_release(tmp_path / name).name for name in cases} == {
        "ml-100k": "ml-100k", "ml-1m": "ml-1m", "ml-10m": "ml-10m", "ml-25m": "ml-25m", "other": "ml-latest"}
    # ratings.dat alone: half stars mean ml-10m, whole stars ml-1m.
    write(tmp_path / "half", "ratings.dat", ["1::1::5::1", "1::2::3.5::2"])
    write(tmp_path / "whole", "ratings.dat", ["1::1::5::1", "1::2::3::2"])
    assert detect_release(tmp_path / "half").name == "ml-10m"
    assert detect_release(tmp_path / "whole").name == "ml-1m"


BAD_RATINGS = [
    "1,1,4.0,100",          # line 2: kept
    "1,2,4.0",              # 3: wrong field count
    "1,3,four,100",         # 4: not numeric
    "1,4,5.5,100",          # 5: above the scale
    "1,5,4.25,100",         # 6: not a half star
    "0,6,4.0,100",          # 7: id not positive
    "1,2147483648,4.0,100",  # 8: id beyond int32
    "x,7,4.0,100",          # 9: id not numeric
    "1,8,4.0,yesterday",    # 10: timestamp not numeric
    "",                     # 11: blank line, skipped and counted
    "2,1,3.0,200",          # 12: duplicate, older: rejected
    "2,1,4.0,300",          # 13: duplicate, latest: kept
    "2,1,2.0,100",          # 14: duplicate, oldest: rejected
    "3,1,3.0,500",          # 15: same timestamp: the later line wins, so rejected
    "3,1,3.5,500",          # 16: kept
    "1,9,4.0,99999999999999",  # 17: beyond Spark's timestamp range (year 9999)
]
BAD_LINES = {3: "field_count", 4: "not_numeric:rating", 5: "off_scale:rating", 6: "off_scale:rating",
             7: "not_positive_int32:user_id", 8: "not_positive_int32:movie_id", 9: "not_numeric:user_id",
             10: "not_numeric:timestamp", 12: "duplicate", 14: "duplicate", 15: "duplicate",
             17: "out_of_range:timestamp"}
SMALL_SPLITS = "64"  # bytes per file split: ratings.csv is read as several splits, so line numbers cross them


@pytest.fixture(scope="module")
def csv_ingest(spark, tmp_path_factory):
    """One ingest of a CSV release (quotes, CRLF, every reject reason) shared by the tests below."""
    root = tmp_path_factory.mktemp("csv")
    source, out = csv_release(root / "ml-latest-small", BAD_RATINGS), root / "out"
    previous = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", SMALL_SPLITS)
    try:
        assert spark.read.text(str(source / "ratings.csv")).rdd.getNumPartitions() > 3
        manifest = ingest_release(spark, source, str(out), max_reject_fraction=1.0)
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", previous)
    return source, out, manifest


def test_csv_release_with_quotes_crlf_and_titles(spark, csv_ingest):
    _, out, manifest = csv_ingest
    assert_table(spark, out, "ratings", [(1, 1, 4.0, at(100)), (2, 1, 4.0, at(300)), (3, 1, 3.5, at(500))])
    assert_table(spark, out, "movies", [
        (1, "Toy Story", 1995, ["Adventure", "Animation", "Children"]),
        (2, "City of Lost Children, The (Cité des enfants perdus, La)", 1995, ["Drama", "Fantasy"]),
        (3, '"Great Performances" Cats', 1998, ["Musical"]),
        (4, "Babylon 5", None, ["Sci-Fi"]),
        (5, "Hyena Road", None, []),
    ])
    assert_table(spark, out, "tags", [(1, 1, "funny, clever", at(1445714994)), (2, 1, "pixar", at(1445714995))])
    assert_table(spark, out, "links", [(1, 114709, 862), (2, 112682, None), (3, 173714, 16992)])
    assert manifest["release"] == "ml-latest-small"
    assert {name: t["rows"] for name, t in manifest["tables"].items()} == {
        "ratings": 3, "movies": 5, "tags": 2, "links": 3}
    written = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert written == ["links", "manifest.json", "movies", "ratings", "rejects", "tags"]


def test_each_reject_reason_with_physical_line_numbers(spark, csv_ingest):
    _, out, manifest = csv_ingest
    assert_table(spark, out, "rejects", [("ratings.csv", line, BAD_RATINGS[line - 2], reason, "ratings")
                                         for line, reason in BAD_LINES.items()])
    assert manifest["rejects"]["by_reason"] == {
        "duplicate": 3, "field_count": 1, "not_numeric:rating": 1, "not_numeric:timestamp": 1,
        "not_numeric:user_id": 1, "not_positive_int32:movie_id": 1, "not_positive_int32:user_id": 1,
        "off_scale:rating": 2, "out_of_range:timestamp": 1}
    assert manifest["rejects"]["rows"] == len(BAD_LINES)
    assert manifest["rejects"]["by_file"]["ratings.csv"] == manifest["rejects"]["by_reason"]
    assert manifest["inputs"]["ratings.csv"]["blank_lines"] == 1
    assert manifest["inputs"]["ratings.csv"]["md5"] == hashlib.md5((csv_ingest[0] / "ratings.csv").read_bytes()
                                                                  ).hexdigest()


def test_rerun_is_idempotent(spark, csv_ingest):
    source, out, first = csv_ingest
    tables = {name: table(spark, out, name).collect() for name in ("ratings", "movies", "tags", "links", "rejects")}
    second = ingest_release(spark, source, str(out), max_reject_fraction=1.0)
    for name, rows in tables.items():
        assert_df_equality(table(spark, out, name), spark.createDataFrame(rows, TABLE_SCHEMAS[name]),
                           ignore_row_order=True, ignore_nullable=True)
    volatile = ("created_at", "timings_s")
    assert {k: v for k, v in first.items() if k not in volatile} == {k: v for k, v in second.items()
                                                                    if k not in volatile}


def test_too_many_rejects_fails_and_keeps_the_previous_output(spark, csv_ingest, tmp_path):
    _, out, _ = csv_ingest
    before = table(spark, out, "ratings").collect()
    manifest_before = (out / "manifest.json").read_text()
    bad = csv_release(tmp_path / "bad", ["1,1,4.0,100", "1,2,9.0,100", "1,3,4.0,100"])
    with pytest.raises(RejectThresholdError) as failure:
        ingest_release(spark, bad, str(out), max_reject_fraction=0.1)
    message = str(failure.value)
    assert "ratings.csv" in message and "1 of 3 rows rejected" in message
    assert "line 3: off_scale:rating in '1,2,9.0,100'" in message
    assert sorted(table(spark, out, "ratings").collect()) == sorted(before)
    assert (out / "manifest.json").read_text() == manifest_before
    assert [p.name for p in out.parent.iterdir() if "staging" in p.name] == []


def test_threshold_error_echoes_at_most_200_characters_of_the_line(spark, tmp_path):
    huge = "1,2,9.0," + "7" * 100_000
    bad = csv_release(tmp_path / "bad", ["1,1,4.0,100", huge])
    with pytest.raises(RejectThresholdError) as failure:
        ingest_release(spark, bad, str(tmp_path / "out"), max_reject_fraction=0.1)
    message = str(failure.value)
    assert f"in {huge[:200]!r} (first 200 of 100,008 characters)" in message
    assert len(message) < 500


def test_out_equal_to_or_inside_the_input_is_refused_before_anything_is_written(spark, tmp_path):
    source = csv_release(tmp_path / "release")
    before = sorted(p.name for p in source.iterdir())
    for out in (source, source / "out"):
        with pytest.raises(ConfigError, match="--out .* --input"):
            ingest_release(spark, source, str(out))
    assert sorted(p.name for p in source.iterdir()) == before


def test_ml100k_tab_and_pipe_files_latin1(spark, tmp_path):
    source = tmp_path / "ml-100k"
    write(source, "u.data", ["196\t242\t3\t881250949", "186\t302\t5\t891717742"])
    flags = ["0"] * 19
    flags[3] = flags[5] = "1"  # Animation, Comedy
    write(source, "u.item", [
        "|".join(["242", "Kolya (1996)", "24-Jan-1997", "", "http://us.imdb.com/M/title-exact?Kolya%20(1996)", *flags]),
        "|".join(["302", "Café au lait (1993)", "01-Jan-1993", "", "", *["0"] * 18, "1"]),
    ], encoding="latin-1")
    write(source, "u.user", ["196|49|M|writer|55105", "186|39|F|executive|00000"])
    out = tmp_path / "out"
    manifest = ingest_release(spark, source, str(out))
    assert manifest["release"] == "ml-100k"
    assert_table(spark, out, "ratings", [(196, 242, 3.0, at(881250949)), (186, 302, 5.0, at(891717742))])
    assert_table(spark, out, "movies", [(242, "Kolya", 1996, ["Animation", "Comedy"]),
                                        (302, "Café au lait", 1993, ["Western"])])
    assert_table(spark, out, "users", [(196, "M", 49, "writer", "55105"), (186, "F", 39, "executive", "00000")])


def test_ml100k_genre_names_from_u_genre_in_index_order(tmp_path):
    assert read_genre_names(tmp_path / "u.genre") == ML100K_GENRES  # absent: the standard list
    renamed = [f"G{i}|{i}" for i in reversed(range(19))]
    write(tmp_path, "u.genre", [*renamed, ""], encoding="latin-1")
    assert read_genre_names(tmp_path / "u.genre") == tuple(f"G{i}" for i in range(19))
    write(tmp_path, "u.genre", ["Action|0"])
    with pytest.raises(InputError, match="expected 19 genres, found 1"):
        read_genre_names(tmp_path / "u.genre")


def test_ml1m_dat_files_latin1_whole_stars_and_rejects_in_every_table(spark, tmp_path):
    source = tmp_path / "ml-1m"
    write(source, "ratings.dat", ["1::1193::5::978300760", "1::661::3::978302109", "1::2::3.5::978300761",
                                  "1::3::0::978300762"])
    write(source, "movies.dat", ["1193::One Flew Over the Cuckoo's Nest (1975)::Drama",
                                 "661::Schtonk! Fälscher (1992)::Comedy|Drama", "661::Again (1992)::Drama",
                                 "x::Bad::Drama", "3::::Drama", "4::Heat (1995)"], encoding="latin-1")
    write(source, "users.dat", ["1::F::1::10::48067", "2::M::old::10::48067"])
    out = tmp_path / "out"
    assert ingest_release(spark, source, str(out), max_reject_fraction=1.0)["release"] == "ml-1m"
    assert_table(spark, out, "ratings", [(1, 1193, 5.0, at(978300760)), (1, 661, 3.0, at(978302109))])
    assert_table(spark, out, "movies", [(1193, "One Flew Over the Cuckoo's Nest", 1975, ["Drama"]),
                                        (661, "Schtonk! Fälscher", 1992, ["Comedy", "Drama"])])
    assert_table(spark, out, "users", [(1, "F", 1, "10", "48067")])
    assert_table(spark, out, "rejects", [
        ("ratings.dat", 3, "1::2::3.5::978300761", "off_scale:rating", "ratings"),
        ("ratings.dat", 4, "1::3::0::978300762", "off_scale:rating", "ratings"),
        ("movies.dat", 3, "661::Again (1992)::Drama", "duplicate", "movies"),
        ("movies.dat", 4, "x::Bad::Drama", "not_numeric:movie_id", "movies"),
        ("movies.dat", 5, "3::::Drama", "empty:title", "movies"),
        ("movies.dat", 6, "4::Heat (1995)", "field_count", "movies"),
        ("users.dat", 2, "2::M::old::10::48067", "not_numeric:age", "users"),
    ])


def test_ml10m_half_stars_tags_utf8(spark, tmp_path):
    source = tmp_path / "ml-10M100K"
    write(source, "ratings.dat", ["1::122::3.5::838985046", "2::122::0.5::838985047"])
    write(source, "movies.dat", ["122::Boomerang (1992)::Comedy|Romance", "123::Amélie (2001)::Comedy"])
    write(source, "tags.dat", ["15::4973::excellent!::1215184630"])
    out = tmp_path / "out"
    assert ingest_release(spark, source, str(out))["release"] == "ml-10m"
    assert_table(spark, out, "ratings", [(1, 122, 3.5, at(838985046)), (2, 122, 0.5, at(838985047))])
    assert_table(spark, out, "movies", [(122, "Boomerang", 1992, ["Comedy", "Romance"]),
                                        (123, "Amélie", 2001, ["Comedy"])])
    assert_table(spark, out, "tags", [(15, 4973, "excellent!", at(1215184630))])


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "does not exist"),
    (lambda d: d.mkdir(), "holds no MovieLens ratings file"),
    (lambda d: write(d, "README.txt", ["hello"]), "found README.txt"),
    (lambda d: write(d, "ratings.csv", []), "ratings.csv is empty"),
    (lambda d: write(d, "ratings.csv", ["userId,movieId,rating,timestamp"]), "missing movies.csv"),
    (lambda d: write(d, "ratings.csv", ["user,item,rating,ts"]), "unrecognised header 'user,item,rating,ts'"),
])
def test_bad_input_directories_are_input_errors(spark, tmp_path, setup, message):
    source = tmp_path / "src"
    setup(source)
    with pytest.raises(InputError, match=message):
        ingest_release(spark, source, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_header_only_ratings_is_an_input_error(spark, tmp_path):
    source = csv_release(tmp_path / "src")
    write(source, "ratings.csv", ["userId,movieId,rating,timestamp"])
    with pytest.raises(InputError, match="ratings.csv has no data rows"):
        ingest_release(spark, source, str(tmp_path / "out"))


def test_invalid_utf8_is_rejected_with_its_line_not_stored_as_mojibake(spark, tmp_path):
    source = csv_release(tmp_path / "ml-latest-small")
    (source / "tags.csv").write_bytes(b"userId,movieId,tag,timestamp\r\n1,1,caf\xe9,100\r\n2,1,caf\xc3\xa9,200\r\n")
    manifest = ingest_release(spark, source, str(tmp_path / "out"), max_reject_fraction=1.0)
    assert_table(spark, tmp_path / "out", "tags", [(2, 1, "caf\u00e9", at(200))])
    rejects = spark.read.parquet(str(tmp_path / "out" / "rejects")).collect()
    assert [(r.line_number, r.reason, r.raw_line) for r in rejects] == [(2, "invalid_utf8", "1,1,caf\ufffd,100")]
    assert manifest["rejects"]["by_reason"] == {"invalid_utf8": 1}


def test_a_header_with_cr_only_line_endings_is_shown_with_escapes(spark, tmp_path):
    """Printed raw, the CRs sent the terminal back to the line's start and the header looked right."""
    source = csv_release(tmp_path / "src")
    write(source, "ratings.csv", ["userId,movieId,rating,timestamp", "1,1,4.0,964982703"], eol="\r")
    with pytest.raises(InputError) as error:
        ingest_release(spark, source, str(tmp_path / "out"))
    message = str(error.value)
    assert "\r" not in message
    assert "unrecognised header 'userId,movieId,rating,timestamp\\r1,1,4.0,964982703' (its lines end in CR " \
           "alone: convert them to LF or CRLF), expected 'userId,movieId,rating,timestamp'" in message


def test_a_quoted_title_holding_a_line_break_is_one_movie(spark, tmp_path):
    source = csv_release(tmp_path / "ml-latest-small")
    write(source, "movies.csv", [
        "movieId,title,genres",
        '1,"Toy Story,\nthe first (1995)",Animation',
        '2,"Two ""quoted""\nlines\nthree (1996)",Drama',
        "3,Jumanji (1995),Adventure",
        '4,"Unclosed, Movie (1997),Drama',
        "5,Grumpier Old Men (1995),Comedy",
    ], eol="\r\n")
    manifest = ingest_release(spark, source, str(tmp_path / "out"), max_reject_fraction=1.0)
    assert_table(spark, tmp_path / "out", "movies", [(1, "Toy Story,\nthe first", 1995, ["Animation"]),
                                                     (2, 'Two "quoted"\nlines\nthree', 1996, ["Drama"]),
                                                     (3, "Jumanji", 1995, ["Adventure"])])
    rejects = spark.read.parquet(str(tmp_path / "out" / "rejects")).where("table = 'movies'").collect()
    # The unclosed quote swallows the rest of the file: one rejected record, reported where it starts (line 8).
    assert [(r.line_number, r.reason) for r in rejects] == [(8, "field_count")]
    assert manifest["inputs"]["movies.csv"]["rows"] == 3
