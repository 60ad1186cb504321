"""Find a MovieLens release by name: `--data-dir`, then `$MFSPARK_DATA_DIR`, then the download
cache, and finally download it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from mfspark.data.download import GROUPLENS_URL, default_cache_dir, download_dataset
from mfspark.data.movielens import LAYOUT_FILES, RELEASES
from mfspark.errors import ConfigError

log = logging.getLogger(__name__)

RATINGS_FILES = {source.name for files in LAYOUT_FILES.values() for source in files if source.table == "ratings"}
# Directory names the GroupLens zips unpack to, where they differ from the release name.
UNPACKED_NAMES = {"ml-10m": "ml-10M100K"}


def is_release_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in RATINGS_FILES)


def search_roots(data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> list[Path]:
    roots = [data_dir, os.environ.get("MFSPARK_DATA_DIR"), cache_dir or default_cache_dir()]
    unique: list[Path] = []
    for root in roots:
        if root and Path(root) not in unique:
            unique.append(Path(root))
    return unique


def resolve_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    base_url: str = GROUPLENS_URL,
) -> Path:
    """The directory holding release `name`, downloading it into the cache when no copy is found."""
    if name not in RELEASES:
        raise ConfigError(f"unknown dataset '{name}': expected one of {', '.join(RELEASES)}")
    roots = search_roots(data_dir, cache_dir)
    for root in roots:
        for dir_name in (name, UNPACKED_NAMES.get(name)):
            if dir_name and is_release_dir(root / dir_name):
                log.info("dataset %s: using %s", name, root / dir_name)
                return root / dir_name
    if not download:
        raise ConfigError(f"dataset {name} not found in {', '.join(map(str, roots))}")
    log.info("dataset %s not found in %s: downloading it", name, ", ".join(map(str, roots)))
    return download_dataset(name, cache_dir, base_url)
