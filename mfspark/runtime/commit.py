"""Outputs of single commands, committed in one atomic step on every filesystem; one writer per output.

**Local disk**: `OUT` is a symbolic link to a version directory `.OUT.versions/<version>/` beside it. A job
writes a new version directory, fsyncs it, then points `OUT` at it by renaming a fresh link over the old
one (`rename(2)` replaces a link atomically) and fsyncs the parent. At every instant `OUT` names a complete
output: the old one until the rename, the new one after it. The previous version is kept (linked from
`.OUT.previous`), so a reader that resolved `OUT` just before the swap can finish reading it. A killed job
leaves only an unlinked version directory (or a `.OUT.link-*` link), removed by the next writer.

**Hadoop filesystems (HDFS, S3A)** have no links: `OUT` is a directory holding immutable versions
`OUT/_versions/<version>/` and a pointer file `OUT/_CURRENT` naming the current one (and the previous one,
kept for readers that resolved the pointer just before it moved). The pointer is replaced in one step
(`FileSystem.publish_text`: an atomic rename on HDFS, a single PUT on S3), only after every file of the
version is closed; readers go through `resolve_output`. A killed job leaves an unnamed version, removed by
the next writer under the lock (`OUT/_LOCK`, see `mfspark.runtime.locks`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
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

from mfspark.errors import ConfigError, InputError
from mfspark.runtime.fs import (
    FileSystem,
    HadoopFileSystem,
    LocalFileSystem,
    filesystem,
    fsync_dir,
    join,
    local_path,
)
from mfspark.runtime.locks import hold_lock, is_locked_here, local_lock

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Spark scratch space and checkpoints beside the outputs (conf/*.toml: "{output_root}/_spark_tmp", ...).
SCRATCH_DIRS = ("_spark_tmp", "_checkpoints")
# A versioned output on a Hadoop filesystem: OUT/_CURRENT names OUT/_versions/<version>.
CURRENT_POINTER = "_CURRENT"
VERSIONS = "_versions"


def replace_local_dir(staging: Path, final: Path) -> None:
    """Publish a finished local staging directory as `final` with `atomic_output`'s link commit (for jobs
    that run without Spark, e.g. synth): `final` names a complete output at every instant."""
    with output_lock(final, sweep_output=False):  # the sweep would take `staging` for a leftover
        version = versions_dir(final) / new_version_id()
        version.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(version)
        publish_version(final, version)


def write_json(spark: SparkSession, path: str, obj: Any) -> None:
    HadoopFileSystem(spark).write_json(path, obj)


def read_json(spark: SparkSession, path: str) -> Any:
    return json.loads(HadoopFileSystem(spark).read_text(path))


def resolve_output(fs: FileSystem, path: str) -> str:
    """The directory to read for output `path`: the version its `_CURRENT` pointer names (Hadoop
    filesystems), else `path` itself (a local output link, or a plain directory)."""
    pointer = fs.read_json_or_none(join(path, CURRENT_POINTER))
    if pointer is None:
        return str(path)
    return join(path, VERSIONS, pointer["version"])


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
            relation = "is the same as" if a == b else ("is inside" if a in b.parents else "contains")
            raise ConfigError(f"--out {out_path} {relation} {input_flag} {input_path}: committing the output "
                              f"would replace the input; choose a separate output directory")


def check_parquet_table(spark: SparkSession, path: str, what: str) -> None:
    """One clear line when `path` is missing, empty, or holds a file that is not whole Parquet (each data
    file must start and end with the magic bytes b'PAR1'), instead of Spark's long trace or a silent short read."""
    paths = HadoopFileSystem(spark)
    if not paths.exists(path):
        raise InputError(f"{path} not found: {what}")
    try:
        files = paths.data_files(path)
    except Exception as exc:  # a plain file where a directory was expected, permissions, ...
        raise InputError(f"{path} is not a readable Parquet directory ({type(exc).__name__}): {what}") from exc
    if not files:
        raise InputError(f"{path} holds no data files: {what}")
    for name in files:
        head, tail = parquet_ends(paths, f"{path}/{name}")
        if head != b"PAR1" or tail != b"PAR1":
            raise InputError(f"{path}/{name} is not a whole Parquet file (starts with {head!r}, ends with {tail!r}; "
                             f"both should be b'PAR1': truncated or damaged): {what}")


def parquet_ends(paths: HadoopFileSystem, path: str) -> tuple[bytes, bytes]:
    local = local_path(path)
    if local is not None:
        with open(local, "rb") as handle:
            head = handle.read(4)
            handle.seek(max(0, local.stat().st_size - 4))
            return head, handle.read(4)
    return paths.head(path, 4), paths.tail(path, 4)


@contextmanager
def output_lock(out: str | os.PathLike, command: str = "mfspark", sweep_scratch: bool = False,
                sweep_output: bool = True) -> Iterator[None]:
    """Hold a local output's lock (`locks.local_lock`) for the block; on entry, remove what killed earlier
    runs of `out` left behind, and with `sweep_scratch` (only before this process starts Spark: its own
    scratch must not look old) their Spark scratch space and checkpoints too.

    Re-entrant within one process (a job's `atomic_output` runs inside the job's lock). Outputs on
    Hadoop filesystems are locked by `atomic_output` itself, once the session that reaches them exists.
    """
    target = local_path(out)
    if target is None:
        yield
        return
    first = not is_locked_here(target)
    with local_lock(target, command) as handle:
        if first and sweep_output:
            sweep_leftovers(target)
        if first and sweep_scratch:
            sweep_scratch_dirs(target.parent, handle.started)
        yield


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
    fsync_dir(link.parent)  # the new link survives a power loss


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
    is removed and `final` stays as it was. Holds `final`'s lock meanwhile (see `mfspark.runtime.locks`)."""
    fs = filesystem(final, spark)
    if isinstance(fs, LocalFileSystem):
        with _local_output(fs, local_path(final), command) as staging:
            yield staging
    else:
        with _versioned_output(fs, str(final).rstrip("/"), command) as staging:
            yield staging
    log.info("committed %s", final)


@contextmanager
def _local_output(fs: LocalFileSystem, out: Path, command: str) -> Iterator[str]:
    with output_lock(out, command):
        version = versions_dir(out) / new_version_id()
        version.mkdir(parents=True)
        try:
            yield str(version)
            pause_point("publish")
        except BaseException:
            shutil.rmtree(version, ignore_errors=True)
            log.warning("run failed: %s left unchanged, its new output removed", out)
            raise
        fs.sync_tree(str(version))  # every file on disk before the link names it
        publish_version(out, version)


def check_versioned_container(fs: FileSystem, out: str) -> None:
    """Refuse to turn a directory holding someone else's files into a versioned output."""
    foreign = [name for name in fs.list_dir(out) if name not in (CURRENT_POINTER, VERSIONS, "_LOCK")
               and not name.startswith(f"{CURRENT_POINTER}.") and not name.startswith("._CURRENT")]
    if foreign:
        raise ConfigError(f"--out {out} already holds {', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}, "
                          "which is not an mfspark output (no _CURRENT pointer): choose a new or empty directory")


@contextmanager
def _versioned_output(fs: FileSystem, out: str, command: str) -> Iterator[str]:
    with hold_lock(fs, out, command) as lock:
        check_versioned_container(fs, out)
        current = fs.read_json_or_none(join(out, CURRENT_POINTER)) or {}
        keep = {current.get("version"), current.get("previous")}
        sweep_versions(fs, out, keep, "unpublished output of an interrupted run")
        version = new_version_id()
        staging = join(out, VERSIONS, version)
        fs.mkdirs(staging)
        try:
            yield staging
            pause_point("publish")
        except BaseException:
            fs.delete(staging)
            log.warning("run failed: %s left unchanged, its new output removed", out)
            raise
        lock.check()
        fs.publish_text(join(out, CURRENT_POINTER),
                        json.dumps({"version": version, "previous": current.get("version")}) + "\n")
        sweep_versions(fs, out, {version, current.get("version")}, "superseded output version")


def sweep_versions(fs: FileSystem, out: str, keep: set, why: str) -> None:
    for name in fs.list_dir(join(out, VERSIONS)):
        if name not in keep:
            log.info("removing %s (%s)", join(out, VERSIONS, name), why)
            fs.delete(join(out, VERSIONS, name))
