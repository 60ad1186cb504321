"""Output directories that are committed atomically, one writer per output, and small JSON side files.

Commit design (local filesystem): `OUT` is a symbolic link to a version directory
`.OUT.versions/<version>/` beside it. A job writes a new version directory, then points `OUT`
at it by renaming a fresh link over the old one (`rename(2)` replaces a link atomically).
At every instant `OUT` names a complete output: the old one until the rename, the new one
after it. The previous version is kept (linked from `.OUT.previous`), so a reader that
resolved `OUT` just before the swap can finish reading it. A killed job leaves only an
unlinked version directory, removed by the next run.

Non-local outputs (HDFS, object stores) have no atomic link swap: they fall back to two
renames (old aside, new in), which leaves a short moment with no `OUT`; the pipeline's
`ROOT/latest` pointer has the same fallback. One writer per output: `output_lock` holds
`.OUT.lock` (a `flock`ed file naming host, pid and start time) for the whole job.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mfspark.errors import ConfigError, InputError, OutputLockedError
from mfspark.runtime.spark_internals import hadoop_configuration, jvm

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Spark scratch space and checkpoints beside the outputs (conf/*.toml: "{output_root}/_spark_tmp", ...).
SCRATCH_DIRS = ("_spark_tmp", "_checkpoints")


class HadoopPaths:
    """Thin wrapper over `org.apache.hadoop.fs.FileSystem` for one SparkSession."""

    def __init__(self, spark: SparkSession):
        self._gateway = jvm(spark)
        self._conf = hadoop_configuration(spark)

    def _path(self, path: str):
        return self._gateway.org.apache.hadoop.fs.Path(str(path))

    def _fs(self, path: str):
        return self._path(path).getFileSystem(self._conf)

    def exists(self, path: str) -> bool:
        return bool(self._fs(path).exists(self._path(path)))

    def delete(self, path: str) -> None:
        if self.exists(path):
            self._fs(path).delete(self._path(path), True)

    def rename(self, src: str, dst: str) -> None:
        if not self._fs(src).rename(self._path(src), self._path(dst)):
            raise OSError(f"could not rename {src} to {dst}")

    def mkdirs(self, path: str) -> None:
        self._fs(path).mkdirs(self._path(path))

    def data_files(self, path: str) -> list[str]:
        """Names of the files in a directory, without Hadoop/Spark markers (`_SUCCESS`, `.crc`, ...)."""
        return sorted(status.getPath().getName() for status in self._fs(path).listStatus(self._path(path))
                      if status.isFile() and not status.getPath().getName().startswith(("_", ".")))

    def head(self, path: str, size: int) -> bytes:
        stream = self._fs(path).open(self._path(path))
        try:  # byte by byte: py4j copies a Python buffer instead of filling it
            values = (stream.read() for _ in range(size))
            return bytes(value for value in values if value >= 0)
        finally:
            stream.close()

    def write_text(self, path: str, text: str) -> None:
        stream = self._fs(path).create(self._path(path), True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def read_text(self, path: str) -> str:
        fs = self._fs(path)
        status = fs.getFileStatus(self._path(path))
        stream = fs.open(self._path(path))
        try:
            buf = self._gateway.java.io.ByteArrayOutputStream()
            self._gateway.org.apache.hadoop.io.IOUtils.copyBytes(stream, buf, max(4096, status.getLen()), False)
            return bytes(buf.toByteArray()).decode("utf-8")
        finally:
            stream.close()


def replace_local_dir(staging: Path, final: Path) -> None:
    """Publish a finished local staging directory as `final` with `atomic_output`'s link commit (for jobs
    that run without Spark, e.g. synth): `final` names a complete output at every instant."""
    with output_lock(final, sweep_output=False):  # the sweep would take `staging` for a leftover
        version = versions_dir(final) / new_version_id()
        version.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(version)
        publish_version(final, version)


def write_json(spark: SparkSession, path: str, obj: Any) -> None:
    HadoopPaths(spark).write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(spark: SparkSession, path: str) -> Any:
    return json.loads(HadoopPaths(spark).read_text(path))


def local_path(path: str | os.PathLike) -> Path | None:
    """The path on this machine's filesystem, or None for HDFS, object stores and other schemes."""
    text = str(path)
    if text.startswith("file:"):
        return Path("/" + text[len("file:"):].lstrip("/"))
    return None if "://" in text else Path(text).absolute()


# ---------------------------------------------------------------- input checks

def check_disjoint(input_path: str | os.PathLike, out_path: str | os.PathLike, input_flag: str = "--input") -> None:
    """Refuse an output equal to, inside, or containing the input: committing it would delete the source."""
    source, out = local_path(input_path), local_path(out_path)
    if source is None or out is None:
        if str(input_path).rstrip("/") == str(out_path).rstrip("/"):
            raise ConfigError(f"--out {out_path} is the same as {input_flag}: it would replace the input")
        return
    for a, b in ((source, out), (source.resolve(), out.resolve())):
        if a == b or a in b.parents or b in a.parents:
            relation = "the same as" if a == b else ("inside" if a in b.parents else "contains")
            raise ConfigError(f"--out {out_path} is {relation} {input_flag} {input_path}: committing the output "
                              f"would replace the input; choose a separate output directory")


def check_parquet_table(spark: SparkSession, path: str, what: str) -> None:
    """One clear line when `path` is missing, empty, or not Parquet (instead of Spark's long trace)."""
    paths = HadoopPaths(spark)
    if not paths.exists(path):
        raise InputError(f"{path} not found: {what}")
    try:
        files = paths.data_files(path)
    except Exception as exc:  # a plain file where a directory was expected, permissions, ...
        raise InputError(f"{path} is not a readable Parquet directory ({type(exc).__name__}): {what}") from exc
    if not files:
        raise InputError(f"{path} holds no data files: {what}")
    magic = paths.head(f"{path}/{files[0]}", 4)
    if magic != b"PAR1":
        raise InputError(f"{path}/{files[0]} is not a Parquet file (starts with {magic!r}, expected b'PAR1'): {what}")


# ---------------------------------------------------------------- one writer per output

_held_locks: dict[Path, list] = {}  # lock file -> [fd, depth]: a job may re-enter its own lock


def lock_file(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def describe_holder(text: str) -> str:
    try:
        holder = json.loads(text)
        return (f"pid {holder['pid']} on host {holder['host']} since {holder['started_at']}"
                f" ({holder.get('command', '?')})")
    except (ValueError, KeyError, TypeError):
        return f"an unknown holder ({text.strip()[:80]!r})"


def _read_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode("utf-8", errors="replace")


def _acquire(path: Path, out: str, command: str) -> tuple[int, float]:
    """flock `path` or fail at once naming the holder; returns (fd, start time).

    The kernel drops a flock when its process dies, so a lock whose holder was killed is free;
    its file still names the dead holder, which we report as a stale lock taken over.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(_read_fd(fd))
            os.close(fd)
            raise OutputLockedError(f"{out} is in use by {holder}; lock file {path}") from None
        try:  # the previous holder unlinks the file on release: make sure we locked the file at `path`
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        stale = _read_fd(fd)
        if stale.strip():
            log.warning("taking over the stale lock %s held by %s (that process is gone)", path,
                        describe_holder(stale))
        started = time.time()
        info = {"host": socket.gethostname(), "pid": os.getpid(), "command": command,
                "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
                "started_epoch": started}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(info).encode())
        os.fsync(fd)
        return fd, started


@contextmanager
def output_lock(out: str | os.PathLike, command: str = "mfspark", sweep_scratch: bool = False,
                sweep_output: bool = True) -> Iterator[None]:
    """Hold the output's lock for the block; on entry, remove what killed earlier runs of `out` left behind,
    and with `sweep_scratch` (only before this process starts Spark: its own scratch must not look old)
    their Spark scratch space and checkpoints too.

    Re-entrant within one process (a job's `atomic_output` runs inside the job's lock).
    Non-local outputs are not locked (no flock there).
    """
    target = local_path(out)
    if target is None:
        yield
        return
    path = lock_file(target)
    if path in _held_locks:
        _held_locks[path][1] += 1
        try:
            yield
        finally:
            _held_locks[path][1] -= 1
        return
    fd, started = _acquire(path, str(out), command)
    _held_locks[path] = [fd, 1]
    try:
        if sweep_output:
            sweep_leftovers(target)
        if sweep_scratch:
            sweep_scratch_dirs(target.parent, started)
        yield
    finally:
        del _held_locks[path]
        path.unlink(missing_ok=True)
        os.close(fd)


def live_lock_starts(directory: Path) -> list[float]:
    """Start times of the running jobs holding a lock in `directory` (holders on this host whose pid is alive)."""
    starts, host = [], socket.gethostname()
    for path in directory.glob(".*.lock"):
        try:
            holder = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            continue
        if holder.get("host") == host and pid_alive(int(holder.get("pid", 0))):
            starts.append(float(holder.get("started_epoch", 0)))
    return starts


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path, why: str) -> None:
    log.info("removing %s (%s)", path, why)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_leftovers(out: Path) -> None:
    """Remove what killed runs left of `out`: unpublished versions and staging directories (we hold its
    lock, so nobody else writes them)."""
    published = {p.resolve() for p in (out, previous_link(out)) if p.is_symlink()}
    versions = versions_dir(out)
    for version in sorted(versions.iterdir()) if versions.is_dir() else []:
        if version.resolve() not in published:
            _remove(version, "unpublished output of an interrupted run")
    restore_pre_link_output(out)
    for leftover in out.parent.glob(f"{out.name}.staging-*"):
        _remove(leftover, "staging output of an interrupted run")
    for leftover in out.parent.glob(f".{out.name}.link-*"):
        _remove(leftover, "link of an interrupted commit")


def sweep_scratch_dirs(directory: Path, lock_started: float) -> None:
    """Remove Spark scratch and checkpoint directories under `directory` older than every running lock
    holder there: they belong to no running job."""
    oldest_running = min([lock_started, *live_lock_starts(directory)])
    for scratch in SCRATCH_DIRS:
        for entry in (directory / scratch).glob("*"):
            try:
                if entry.lstat().st_mtime < oldest_running:
                    _remove(entry, "Spark scratch space of a run that is no longer running")
            except FileNotFoundError:
                continue


def restore_pre_link_output(out: Path) -> None:
    """Before the link design a kill between two renames left `OUT` missing and `OUT.previous-*`: put it back."""
    previous = sorted(out.parent.glob(f"{out.name}.previous-*"), key=lambda p: p.stat().st_mtime)
    if previous and not out.exists() and not out.is_symlink():
        log.warning("%s was missing after an interrupted commit: restoring %s", out, previous[-1])
        previous[-1].rename(out)
        previous = previous[:-1]
    for leftover in previous:
        _remove(leftover, "old output of an interrupted commit")


# ---------------------------------------------------------------- atomic commit

def versions_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.versions"


def previous_link(out: Path) -> Path:
    return out.parent / f".{out.name}.previous"


def new_version_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


def point_link(link: Path, target: Path) -> None:
    """Make `link` a symbolic link to `target` in one atomic step (a new link renamed over the old one)."""
    temporary = link.parent / f".{link.name}.link-{uuid.uuid4().hex[:8]}"
    os.symlink(os.path.relpath(target, link.parent), temporary)
    try:
        if link.is_dir() and not link.is_symlink():
            _exchange(temporary, link)
            return
        os.replace(temporary, link)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _exchange(link: Path, directory: Path) -> None:
    """Swap a pre-link-design output directory for the link in one step (Linux renameat2 RENAME_EXCHANGE),
    then keep the old directory as the previous version."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None or renameat2(at_fdcwd, bytes(link), at_fdcwd, bytes(directory), rename_exchange) != 0:
        code = ctypes.get_errno() if renameat2 is not None else errno.ENOSYS
        log.warning("no atomic exchange here (%s): replacing directory %s with a link in two steps",
                    os.strerror(code), directory)
        aside = directory.parent / f"{directory.name}.previous-{uuid.uuid4().hex[:8]}"
        directory.rename(aside)
        os.replace(link, directory)
        link = aside
    kept = versions_dir(directory) / f"pre-link-{uuid.uuid4().hex[:8]}"
    kept.parent.mkdir(parents=True, exist_ok=True)
    link.rename(kept)  # `link` now names the old directory
    point_link(previous_link(directory), kept)


def publish_version(out: Path, version: Path) -> None:
    """Point `out` at `version`, keep the version it replaces as the previous one, delete older versions."""
    replaced = out.resolve() if out.is_symlink() else None
    if replaced is not None:
        point_link(previous_link(out), replaced)
    point_link(out, version)
    keep = {version.resolve(), previous_link(out).resolve() if previous_link(out).is_symlink() else None}
    for old in versions_dir(out).iterdir():
        if old.resolve() not in keep:
            _remove(old, "superseded output version")


def pause_point(name: str) -> None:
    """Sleep here when `MFSPARK_TEST_PAUSE=name:seconds`: the kill test's way to stop a job at a known moment."""
    point, _, seconds = os.environ.get("MFSPARK_TEST_PAUSE", "").partition(":")
    if point == name:
        log.warning("pausing %s s at %s (MFSPARK_TEST_PAUSE)", seconds, name)
        time.sleep(float(seconds))


@contextmanager
def atomic_output(spark: SparkSession, final: str, command: str = "mfspark") -> Iterator[str]:
    """Yield a directory to write into; on success it becomes `final` in one atomic step, on failure it
    is removed and `final` stays as it was. Holds `final`'s lock (see `output_lock`) meanwhile."""
    out = local_path(final)
    if out is None:
        with _two_rename_output(spark, str(final).rstrip("/")) as staging:
            yield staging
        return
    with output_lock(out, command):
        version = versions_dir(out) / new_version_id()
        version.mkdir(parents=True)
        try:
            yield str(version)
            pause_point("publish")
        except BaseException:
            shutil.rmtree(version, ignore_errors=True)
            log.warning("run failed: %s left unchanged, its new output removed", final)
            raise
        publish_version(out, version)
    log.info("committed %s", final)


@contextmanager
def _two_rename_output(spark: SparkSession, final: str) -> Iterator[str]:
    """Fallback for filesystems without atomic link replacement: old aside, new in, old deleted."""
    paths = HadoopPaths(spark)
    token = uuid.uuid4().hex[:12]
    staging = f"{final}.staging-{token}"
    paths.mkdirs(staging)
    try:
        yield staging
    except BaseException:
        paths.delete(staging)
        log.warning("run failed: %s left unchanged, staging output removed", final)
        raise
    previous = f"{final}.previous-{token}"
    had_previous = paths.exists(final)
    if had_previous:
        paths.rename(final, previous)
    paths.rename(staging, final)
    if had_previous:
        paths.delete(previous)
    log.info("committed %s", final)
