"""`mfspark download`: fetch a GroupLens MovieLens zip, verify its md5, unpack it into the cache.

Resume-safe: bytes go to `<cache>/<name>.zip.part` (an interrupted download continues with an
HTTP Range request), the archive is renamed to `<name>.zip` only after its md5 matched, and it
is unpacked into a temporary directory that is renamed to `<cache>/<name>/` when complete. So
`<cache>/<name>/` either holds the whole release or does not exist.
"""

from __future__ import annotations

import http.client
import logging
import math
import os
import re
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import Request, urlopen

from mfspark.data.movielens import RELEASES
from mfspark.errors import ConfigError, DownloadError
from mfspark.runtime.provenance import file_md5

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"
CHUNK_BYTES = 1 << 20

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MFSPARK_DATA_DIR") or Path.home() / ".cache" / "mfspark")


def download_dataset(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    base_url: str = GROUPLENS_URL,
    md5: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """`<cache>/<name>/` holding the unpacked release, downloading and verifying it if needed."""
    check_options(name, base_url, md5, timeout)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / name
    if target.is_dir():
        log.info("%s already in %s", name, cache)
        return target
    cache.mkdir(parents=True, exist_ok=True)
    url = f"{base_url.rstrip('/')}/{name}.zip"
    archive = cache / f"{name}.zip"
    expected = (md5 or fetch_published_md5(url, timeout)).lower()
    if not (archive.is_file() and file_md5(archive) == expected):
        fetch_verified(url, archive, expected, timeout)
    unpack(archive, target)
    log.info("%s unpacked into %s", name, target)
    return target


def check_options(name: str, base_url: str, md5: str | None, timeout: float) -> None:
    """Reject bad options before touching the cache or the network (each as one line naming the value)."""
    if name not in RELEASES:
        raise ConfigError(f"unknown dataset '{name}': expected one of {', '.join(RELEASES)}")
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https", "file") or (parts.scheme != "file" and not parts.netloc):
        raise ConfigError(f"--base-url {base_url!r} is not an http://, https:// or file:// URL")
    if md5 is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
        raise ConfigError(f"--md5 {md5!r} is not an md5 checksum (32 hex digits)")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ConfigError(f"--timeout {timeout:g} must be a positive number of seconds")


def fetch_published_md5(url: str, timeout: float) -> str:
    """GroupLens publishes `<name>.zip.md5` beside each zip (`<hex>  <file>` or just the hex)."""
    try:
        with urlopen(f"{url}.md5", timeout=timeout) as response:
            text = response.read(4096).decode("ascii", errors="replace")
    except (URLError, OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"could not fetch the checksum {url}.md5: {reason(exc)} "
                            "(offline? pass --md5 HEX to give it yourself)") from exc
    match = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if not match:
        raise DownloadError(f"{url}.md5 holds no md5 checksum: {text[:100]!r}")
    return match.group(0)


def fetch_verified(url: str, archive: Path, expected_md5: str, timeout: float) -> None:
    part = archive.with_name(archive.name + ".part")
    fetch_to_part(url, part, timeout)
    actual = file_md5(part)
    if actual != expected_md5:
        part.unlink()
        raise DownloadError(f"{url}: md5 {actual} does not match the expected {expected_md5}; "
                            "the partial file was deleted, run again to download afresh")
    part.replace(archive)


def fetch_to_part(url: str, part: Path, timeout: float) -> None:
    """Append the rest of `url` to `part`, resuming from its current size with a Range request."""
    have = part.stat().st_size if part.exists() else 0
    request = Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    started = time.perf_counter()
    try:
        with urlopen(request, timeout=timeout) as response:
            if have and response.status != 206:
                log.info("%s: server ignored the Range request, downloading from the start", url)
                have = 0
            elif have:
                log.info("%s: resuming after %d bytes", url, have)
            length = response.headers.get("Content-Length")
            with part.open("ab" if have else "wb") as out:
                shutil.copyfileobj(response, out, CHUNK_BYTES)
            missing = have + int(length) - part.stat().st_size if length else 0
            if missing > 0:  # the connection closed early without an error
                raise http.client.IncompleteRead(b"", missing)
    except HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the md5 check decides
            return
        raise DownloadError(f"could not download {url}: {reason(exc)}") from exc
    except (URLError, OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"could not download {url}: {reason(exc)} ({kept_part(part)})") from exc
    log.info("%s: %d bytes in %.1f s", url, part.stat().st_size, time.perf_counter() - started)


def kept_part(part: Path) -> str:
    """What a failed download leaves behind, as the error message states it: a non-empty `.part` is kept for
    the next run to resume; an empty one (the connection failed before any byte arrived) is deleted."""
    size = part.stat().st_size if part.exists() else 0
    if size:
        return f"offline? the partial download {part} ({size:,} bytes) is kept and resumed by the next run"
    part.unlink(missing_ok=True)
    return "offline? nothing was downloaded"


def reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or exc) or type(exc).__name__


def unpack(archive: Path, target: Path) -> None:
    """Unzip into a temporary directory beside `target`, then rename the release directory into place.

    GroupLens zips hold one top directory (e.g. `ml-10M100K/`); its content becomes `target`.
    """
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.unpack-", dir=target.parent) as tmp:
        try:
            with zipfile.ZipFile(archive) as bundle:
                for member in bundle.namelist():
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise DownloadError(f"{archive}: refusing unsafe path {member!r} in the zip")
                bundle.extractall(tmp)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"{archive} is not a valid zip: {exc}") from exc
        entries = [p for p in Path(tmp).iterdir() if p.name != "__MACOSX"]
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else Path(tmp)
        if root == Path(tmp):
            root = Path(tmp) / target.name
            root.mkdir()
            for entry in entries:
                entry.rename(root / entry.name)
        root.rename(target)
