"""`mfspark report` and `mfspark sweep` end to end on a tiny planted ingest + a quick train."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mfspark.commands import report as report_job
from mfspark.commands import sweep as sweep_job
from mfspark.commands import train as train_job
from mfspark.errors import InputError
from mfspark.evaluation.draws import split_masks
from mfspark.models.ease import EASE
from mfspark.report.figures import with_hover_titles
from mfspark.report.inputs import ReportInputs, resolve_run
from mfspark.runtime.fs import LocalFileSystem
from tests.test_neighbours import expected_quality

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GENRES = ("Animation", "Horror", "Romance", "Action")
# A few real titles so the famous-movies path (not its fallback) runs.
NAMED = {1: ("Godfather, The", 1972), 2: ("Godfather: Part II, The", 1974), 3: ("You've Got Mail", 1998),
         4: ("Sleepless in Seattle", 1993)}


def tiny_ingest(spark, path: Path) -> None:
    """60 users x 40 movies, ~60% rated: biases plus a rank-2 taste that follows the planted genre."""
    rng = np.random.default_rng(7)
    genre_of = [GENRES[m % 4] for m in range(40)]
    centroids = {g: rng.normal(0, 0.8, 2) for g in GENRES}
    items = np.array([centroids[g] + rng.normal(0, 0.2, 2) for g in genre_of])
    users = rng.normal(0, 0.8, (60, 2))
    ratings = []
    for u in range(60):
        for m in range(40):
            if rng.random() < 0.6:
                value = 3.5 + 0.3 * np.sin(u) + 0.4 * np.cos(m) + users[u] @ items[m] + rng.normal(0, 0.3)
                ratings.append((u + 1, m + 1, float(np.clip(np.round(value * 2) / 2, 0.5, 5.0)),
                                dt.datetime(2020, 1, 1) + dt.timedelta(hours=u * 40 + m)))
    spark.createDataFrame(ratings, "user_id int, movie_id int, rating float, rated_at timestamp") \
        .write.parquet(str(path / "ratings"))
    movies = [(m + 1, *NAMED.get(m + 1, (f"Movie {m + 1}", 1990 + m % 20)), [genre_of[m], "Drama"][: 1 + m % 2])
              for m in range(40)]
    spark.createDataFrame(movies, "movie_id int, title string, year int, genres array<string>") \
        .write.parquet(str(path / "movies"))


def run_command(module, spark, argv: list[str]) -> dict:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args(argv), spark)


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory) -> Path:
    """ingest -> train (biased, rank 3) -> sweep (2 x 2) -> an EASE lists model -> report; returns the working
    directory."""
    root = tmp_path_factory.mktemp("report")
    tiny_ingest(spark, root / "ingest")
    split = ["--input", str(root / "ingest"), "--seed", "3"]
    run_command(train_job, spark, [*split, "--out", str(root / "train"), "--rank", "3", "--reg", "0.1",
                                   "--max-iter", "4", "--biases"])
    run_command(sweep_job, spark, [*split, "--out", str(root / "sweep"), "--ranks", "2,3", "--regs", "0.01,1",
                                   "--max-iter", "3"])
    liked = spark.read.parquet(str(root / "ingest" / "ratings")).where("rating >= 3")
    EASE(reg=5.0).fit(liked.select("user_id", "movie_id")).save(str(root / "lists" / "ease"))  # a train_lists stage
    run_command(report_job, spark, ["--ingest", str(root / "ingest"), "--model", str(root / "train"),
                                    "--sweep", str(root / "sweep"), "--lists", str(root / "lists"),
                                    "--out", str(root / "report"),
                                    "--svd-rank", "3", "--map-movies", "40", "--neighbour-min-count", "1",
                                    "--pca-users", "50", "--pca-movies", "30"])
    return root


class PageParser(HTMLParser):
    """Collects table cells (text and data-value), references (src/href) and the page's tags."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self.references: list[str] = []
        self.tags: set[str] = set()
        self._table = self._cell = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self.references += [attrs[k] for k in ("src", "href", "xlink:href") if k in attrs]
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = ["", attrs.get("data-value")]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._table[-1].append(tuple(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None


def parsed_page(report: Path) -> PageParser:
    parser = PageParser()
    parser.feed((report / "index.html").read_text(encoding="utf-8"))
    return parser


def test_every_figure_is_a_png_file_and_embedded_in_the_page(built):
    report = built / "report"
    names = {"accuracy", "convergence", "sweep", "item_map", "similarity", "residual_correlation",
             "residual_components", "user_profile"}
    assert {p.stem for p in (report / "figures").glob("*.png")} == names
    for name in names:
        data = (report / "figures" / f"{name}.png").read_bytes()
        assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert 300 < width < 2000 and 200 < height < 2000, (name, width, height)
    page = (report / "index.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == len(names) - 1  # the map is inline SVG
    assert page.count("<svg") == 1 and page.count("<title>") >= 40 + 1  # a hover title per movie, + the page's


def test_accuracy_table_equals_metrics_json(built):
    metrics = read_json_file(built / "train" / "metrics.json")
    report = json.loads((built / "report" / "report.json").read_text())
    rows = parsed_page(built / "report").tables["accuracy"]
    header = [text for text, _ in rows[0]]
    by_model = {cells[0][0]: cells for cells in rows[1:]}
    assert set(by_model) == {"global mean", "biases", "SVD rank 3", "ALS (plain)", "ALS (biased)", "MLlib ALS"}
    trained = by_model["ALS (biased)"]
    for key, column in (("rmse", "RMSE"), ("mae", "MAE")):
        text, exact = trained[header.index(column)]
        assert float(exact) == metrics[key] and text == f"{metrics[key]:.4f}"
    for row in report["accuracy"]["rows"]:  # every row of the page is the one in report.json
        assert float(by_model[row["model"]][header.index("RMSE")][1]) == row["rmse"]
    scores = {row["model"]: row["rmse"] for row in report["accuracy"]["rows"]}
    assert scores["biases"] < scores["global mean"] and scores["ALS (biased)"] < scores["global mean"]


def test_convergence_and_sweep_tables(built):
    metrics = read_json_file(built / "train" / "metrics.json")
    tables = parsed_page(built / "report").tables
    convergence = tables["convergence"][1:]
    assert [float(r[1][1]) for r in convergence] == metrics["train_rmse"]
    assert float(convergence[-1][3][1]) == metrics["rmse"]  # last iteration's held-out RMSE is metrics.json's
    assert all(r[3][1] is not None for r in convergence)  # iterations 1, 2, 3 refitted, 4 from metrics.json
    sweep = read_json_file(built / "sweep" / "metrics.json")
    assert len(sweep["points"]) == 4 and len(tables["sweep"]) == 5
    for point in sweep["points"]:
        assert point["train_rmse"] < point["test_rmse"] or point["reg"] == 1.0


def test_the_page_references_no_missing_file_and_no_remote_url(built):
    report = built / "report"
    page = (report / "index.html").read_text(encoding="utf-8")
    parsed = parsed_page(report)
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", page.replace("http://www.w3.org/", "")), \
        "remote URL in the page"
    assert not parsed.tags & {"script", "link", "iframe"}
    local = [ref for ref in parsed.references if not ref.startswith(("data:", "#"))]
    assert local and all((report / ref).is_file() for ref in local), local


def test_sweep_results_are_parquet(spark, built):
    frame = spark.read.parquet(str(built / "sweep" / "sweep"))
    assert frame.schema.simpleString().startswith("struct<rank:int,reg:double")
    assert sorted((r["rank"], r.reg) for r in frame.collect()) == [(2, 0.01), (2, 1.0), (3, 0.01), (3, 1.0)]
    assert (built / "sweep" / "sweep.png").read_bytes()[:8] == PNG_MAGIC


def test_user_section_lists_unseen_movies(spark, built):
    report = json.loads((built / "report" / "report.json").read_text())
    user = report["user"]
    seen = {r.movie_id for r in spark.read.parquet(str(built / "ingest" / "ratings"))
            .where(f"user_id = {user['user_id']}").collect()}
    assert len(user["top_n"]) == min(10, 40 - len(seen))
    assert not seen & {item["movie_id"] for item in user["top_n"]}
    scores = [item["score"] for item in user["top_n"]]
    assert scores == sorted(scores, reverse=True)
    assert sum(p["count"] for p in user["profile"] if p["genre"] != "Drama") == user["ratings"]


def test_similar_movies_of_both_models_and_their_numbers_equal_numpy(spark, built):
    """The rating model's neighbours (cosine of its item factors) and the lists model's (EASE's largest B_ij) of
    every movie, recomputed in numpy, give the report's genre agreement and co-watch lift (pandas, on the training
    part of the split: random, seed 3)."""
    ratings = spark.read.parquet(str(built / "ingest" / "ratings")).toPandas()
    test, _ = split_masks(ratings.user_id.to_numpy(), ratings.movie_id.to_numpy(), 0.2, seed=3, validation_seed=0)
    train = ratings[~test]
    genres = {r.movie_id: list(r.genres) for r in spark.read.parquet(str(built / "ingest" / "movies")).collect()}
    items = spark.read.parquet(str(built / "train" / "factors" / "items")).toPandas().sort_values("id")
    factors = np.stack(items.features.to_numpy()).astype(np.float64)
    unit = factors / np.linalg.norm(factors, axis=1, keepdims=True)
    ease = spark.read.parquet(str(built / "lists" / "ease" / "items")).toPandas().sort_values("movie_id")
    similarity = {"rating model": (items.id.to_numpy(), unit @ unit.T),
                  "lists model": (ease.movie_id.to_numpy(), np.stack(ease.weights.to_numpy()))}
    watched = set(train.movie_id)  # --neighbour-min-count 1: any movie with a training rating may be a neighbour
    report = json.loads((built / "report" / "report.json").read_text())["similarity"]
    for name, (ids, scores) in similarity.items():
        pairs = []
        for i, movie in enumerate(ids):  # 40 movies: all among the 200 most watched
            if movie in watched:
                allowed = [j for j in range(len(ids)) if j != i and ids[j] in watched]
                pairs += [(movie, ids[j]) for j in sorted(allowed, key=lambda j: (-scores[i, j], ids[j]))[:10]]
        expected = expected_quality(pairs, list(train[["user_id", "movie_id"]].itertuples(index=False)), genres)
        assert report["quality"][name] == pytest.approx(expected, rel=1e-6), name
    rows = parsed_page(built / "report").tables["neighbour-quality"]
    assert [cells[0][0] for cells in rows[1:]] == ["rating model", "lists model"]
    assert len(parsed_page(built / "report").tables["neighbours"][0]) == 4  # movie, genre, both models' neighbours


def test_hover_titles_follow_marker_order():
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" height="9">'
           '<g id="movies-0"><use xlink:href="#m" x="1"/><use xlink:href="#m" x="2"/></g></svg>')
    out = with_hover_titles(svg, {"movies-0": ["A & B", "C"]})
    assert re.findall(r'x="(\d)"><title>([^<]*)</title>', out) == [("1", "A &amp; B"), ("2", "C")]
    with pytest.raises(ValueError, match="2 markers for 1 titles"):
        with_hover_titles(svg, {"movies-0": ["A"]})


def test_run_directory_resolution_follows_the_latest_pointer_and_reused_stages(tmp_path):
    fs = LocalFileSystem()
    root = tmp_path / "root"
    old, new = root / "runs" / "20261129", root / "runs" / "20261130"
    for run, stages in ((old, ("ingest", "train")), (new, ("train", "evaluate", "recommend"))):
        for stage in stages:
            (run / stage).mkdir(parents=True)
        for marker in ("plan.json", "manifest.json", "_SUCCESS"):
            (run / marker).write_text("{}")
    (new / "ingest").mkdir()  # reused: its record names the original directory
    (new / "ingest" / "_SUCCESS").write_text(json.dumps({"key": "k", "location": "runs/20261129/ingest"}))
    expected = ReportInputs(str(old / "ingest"), str(new / "train"), metrics=str(new / "evaluate"),
                            recs=str(new / "recommend"))
    assert expected.metrics_json == str(new / "evaluate" / "metrics.json")
    assert resolve_run(fs, str(new)) == expected
    with pytest.raises(InputError, match="no complete run yet"):
        resolve_run(fs, str(root))
    (root / "LATEST").write_text(json.dumps({"run_id": "20261130"}))
    assert resolve_run(fs, str(root)) == expected
    (new / "_SUCCESS").unlink()
    with pytest.raises(InputError, match="is an incomplete pipeline run"):
        resolve_run(fs, str(new))
    with pytest.raises(InputError, match="neither a pipeline run nor root"):
        resolve_run(fs, str(tmp_path))


def read_json_file(path: Path) -> dict:
    return json.loads(path.read_text())


def test_chromium_renders_the_page(built):
    """A real browser opens the page from disk (no network), screenshots it and dumps its DOM: the picture is not
    blank (a share of it drawn, in many colours: the figures) and the DOM holds the page's tables and figures."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have headless Chromium (.ci/run installs the Debian package)")
        pytest.skip("headless Chromium not installed (Debian package `chromium`)")
    shot = built / "report" / "screenshot.png"
    page = (built / "report" / "index.html").as_uri()
    headless = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,4200"]
    subprocess.run([*headless, f"--screenshot={shot}", page], check=True, timeout=120, capture_output=True)
    assert shot.read_bytes()[:8] == PNG_MAGIC
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape == (4200, 1280, 3)
    colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    background = colours[counts.argmax()]
    drawn = (pixels != background).any(axis=2)
    # Measured on the rendered report: 0.098 of the pixels drawn, 3,890 colours (anti-aliased text is a few hundred;
    # the figures bring the rest). A blank page: 0 and 1.
    assert drawn.mean() > 0.04 and len(colours) > 1000, (drawn.mean(), len(colours))
    rows = np.flatnonzero(drawn.any(axis=1))
    assert rows[-1] - rows[0] > 2000  # drawn from the top down to the figures, not one line

    dom = subprocess.run([*headless, "--dump-dom", page], check=True, timeout=120, capture_output=True,
                         text=True).stdout
    parsed = PageParser()
    parsed.feed(dom)
    assert {"accuracy", "convergence", "sweep"} <= set(parsed.tables) and len(parsed.tables["accuracy"]) == 7
    assert dom.count("<img") == 7 and "ALS (biased)" in dom


def test_singular_vectors_and_components_match_numpy(spark):
    from pyspark.mllib.linalg import SparseVector
    from pyspark.mllib.linalg.distributed import RowMatrix

    from mfspark.report.analysis import principal_components, top_singular

    rng = np.random.default_rng(3)
    dense = rng.normal(size=(12, 5)) * (rng.random((12, 5)) < 0.7)  # zeros where "unrated"
    rows = spark.sparkContext.parallelize(
        [SparseVector(5, {j: v for j, v in enumerate(row) if v}) for row in dense], 2)
    v, s = top_singular(rows, 5, 2)
    _, s_ref, vt_ref = np.linalg.svd(dense)
    np.testing.assert_allclose(s, s_ref[:2], rtol=1e-9)
    np.testing.assert_allclose(np.abs(v.T @ vt_ref[:2].T), np.eye(2), atol=1e-8)  # same vectors up to sign
    components, explained = principal_components(RowMatrix(rows), 2)
    values, vectors = np.linalg.eigh(np.cov(dense, rowvar=False))
    np.testing.assert_allclose(np.abs(components.T @ vectors[:, [-1, -2]]), np.eye(2), atol=1e-8)
    np.testing.assert_allclose(explained, values[[-1, -2]] / values.sum(), rtol=1e-9)
