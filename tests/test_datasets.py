"""Datasets by name: --data-dir, then $MFSPARK_DATA_DIR, then the cache, then a download."""

from __future__ import annotations

from pathlib import Path

import pytest

from mfspark.data.datasets import resolve_dataset
from mfspark.errors import ConfigError
from tests.test_download import Server, release_zip, zip_files


def make_release(root: Path, name: str) -> Path:
    (root / name).mkdir(parents=True)
    (root / name / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,1\n")
    return root / name


def test_lookup_order_data_dir_then_env_then_cache(tmp_path, monkeypatch):
    data_dir, env_dir, cache_dir = tmp_path / "data", tmp_path / "env", tmp_path / "cache"
    monkeypatch.setenv("MFSPARK_DATA_DIR", str(env_dir))
    in_cache = make_release(cache_dir, "ml-latest-small")
    assert resolve_dataset("ml-latest-small", data_dir, cache_dir) == in_cache
    in_env = make_release(env_dir, "ml-latest-small")
    assert resolve_dataset("ml-latest-small", data_dir, cache_dir) == in_env
    in_data_dir = make_release(data_dir, "ml-latest-small")
    assert resolve_dataset("ml-latest-small", data_dir, cache_dir) == in_data_dir


def test_directory_without_ratings_is_skipped_and_unpacked_names_are_found(tmp_path, monkeypatch):
    monkeypatch.delenv("MFSPARK_DATA_DIR", raising=False)
    (tmp_path / "data" / "ml-10m").mkdir(parents=True)  # empty: not a release
    found = make_release(tmp_path / "cache", "ml-10M100K")
    assert resolve_dataset("ml-10m", tmp_path / "data", tmp_path / "cache") == found


def test_missing_dataset_is_downloaded_into_the_cache(tmp_path, monkeypatch):
    server = Server(zip_files("ml-latest-small", release_zip()))
    try:
        monkeypatch.delenv("MFSPARK_DATA_DIR", raising=False)
        path = resolve_dataset("ml-latest-small", tmp_path / "data", tmp_path / "cache", base_url=server.url)
    finally:
        server.close()
    assert path == tmp_path / "cache" / "ml-latest-small"
    assert (path / "ratings.csv").is_file()


def test_unknown_name_and_no_download(tmp_path, monkeypatch):
    monkeypatch.delenv("MFSPARK_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match="unknown dataset 'ml-7m'"):
        resolve_dataset("ml-7m", tmp_path)
    with pytest.raises(ConfigError, match="dataset ml-1m not found in"):
        resolve_dataset("ml-1m", tmp_path, tmp_path / "cache", download=False)
