"""Every benchmark script run end to end on a tiny synthetic release, so none breaks silently: they reach into the
package's private helpers, and nothing else runs them between benchmark sessions.

Not in the default suite (they start a JVM or a cluster each): `pytest -m bench_smoke tests/test_bench_smoke.py`,
CI's own step (.ci/run). Each test checks the script exits 0 and writes its table; the numbers mean nothing here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.bench_smoke

# 650 users x 236 movies, 100,000 ratings in ml-25m's CSV layout: the smallest ml-25m shape that synth allows.
SHAPE, SCALE = "ml-25m", 0.004


def run(*argv, timeout: float = 600) -> str:
    """A benchmark script (or `-m module`) with this Python from the repository root; its stdout."""
    result = subprocess.run([sys.executable, *map(str, argv)], cwd=REPO, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{argv[0]} exited {result.returncode}:\n{result.stderr[-4000:]}"
    return result.stdout


def table(path: Path) -> str:
    text = path.read_text()
    assert "| ---" in text, text[:2000]
    return text


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench-smoke")


@pytest.fixture(scope="module")
def release(work) -> Path:
    from mfspark.data.synth import generate

    generate(SHAPE, work / "release", seed=1, scale=SCALE)
    return work / "release"


@pytest.fixture(scope="module")
def ingest(work, release) -> Path:
    run("-m", "mfspark.commands.main", "ingest", "--input", release, "--out", work / "ingest")
    return work / "ingest"


def test_bench_als(work):
    run("benchmarks/bench_als.py", "--shapes", SHAPE, "--scale", SCALE, "--iterations", 1, "--work", work / "als",
        "--out", work / "als.md")
    assert "ours" in table(work / "als.md")


def test_bench_als_implicit(work, ingest):
    run("benchmarks/bench_als_implicit.py", "--input", ingest, "--out", work / "als_implicit.md", "--rank", 4,
        "--max-iter", 2, "--repeats", 1, "--work", work / "als_implicit")
    table(work / "als_implicit.md")


def test_bench_implicit_solvers(work, ingest):
    run("benchmarks/bench_implicit_solvers.py", "--input", ingest, "--out", work / "implicit_solvers.md",
        "--rank", 4, "--cg-steps", 3, "--repeats", 1, "--work", work / "implicit_solvers")
    assert "cg, 3 steps" in table(work / "implicit_solvers.md")


def test_bench_baseline(work, ingest):
    assert '"rmse' in run("benchmarks/bench_baseline.py", ingest, "--work", work / "baseline", "--sweeps", 2)


def test_bench_ingest(work, release):
    run("benchmarks/bench_ingest.py", "--input", release, "--out", work / "bench-ingest" / "out",
        "--results", work / "ingest.md", "--bad-lines", 5)
    table(work / "ingest.md")


def test_bench_ranking(work, release):
    """The cheap models of the field (each model's grid is fixed: implicit's ALS and BPR grids take minutes)."""
    run("benchmarks/bench_ranking.py", "--ratings", release / "ratings.csv", "--out", work / "ranking.md",
        "--models", "popularity", "implicit item-kNN cosine", "EASE (numpy)", "--interactions", "liked")
    table(work / "ranking.md")


def test_eval_ranking(work, ingest):
    """One split, a model without and one with Spark ALS (every model and section refits ALS: minutes)."""
    run("benchmarks/eval_ranking.py", "--input", ingest, "--out", work / "eval_ranking.md", "--rank", 4,
        "--sections", "full", "--splits", "random", "--models", "popularity", "biased ALS")
    table(work / "eval_ranking.md")


def test_bench_recommend(work, ingest):
    """The engine run (ours, MLlib, implicit, with the in-run checks), the kernels alone, and the whole command."""
    common = ["--shape", SHAPE, "--scale", SCALE, "--work", work / "recommend", "--out", work / "recommend.md"]
    run("benchmarks/bench_recommend.py", *common)
    run("benchmarks/bench_recommend.py", *common, "--in-memory")
    run("-m", "mfspark.commands.main", "train", "--input", ingest, "--out", work / "model", "--rank", 4,
        "--max-iter", 2)
    run("benchmarks/bench_recommend.py", *common, "--command", work / "model", "--input", ingest, "--repeats", 1)
    text = table(work / "recommend.md")
    assert "MLlib" in text and "implicit" in text and "whole `mfspark recommend`" in text


def test_bench_warm_start(work, ingest):
    run("benchmarks/bench_warm_start.py", "--input", ingest, "--out", work / "warm_start.md", "--cold-iterations", 2,
        "--repeats", 1)
    table(work / "warm_start.md")


def test_bench_pipeline_cluster(work, release):
    run("benchmarks/bench_pipeline_cluster.py", "--input", release, "--work", work / "cluster", "--results",
        work / "pipeline_cluster.md", "--worker-memory", "1g", "--executor-memory", "768m", "--port", 7377)
    table(work / "pipeline_cluster.md")


def test_bench_pipeline(work, release):
    """Ours against the plain-MLlib job (benchmarks/mllib_pipeline.py), each a fresh process."""
    run("benchmarks/bench_pipeline.py", "--inputs", release, "--work", work / "pipeline", "--out", work / "pipeline.md")
    assert "MLlib" in table(work / "pipeline.md")
