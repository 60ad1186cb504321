"""One writer per output or pipeline root, on every filesystem; a second writer fails at once naming the holder.

- **Local disk**: `flock` on `.<name>.lock` beside the target, named from the target's resolved path, so
  two spellings of one root (a symlink, `..`) share one lock. The kernel drops a flock when its process
  dies: a killed holder's lock is free at once.
- **HDFS** (any Hadoop filesystem with an atomic exclusive create): `<target>/_LOCK`, created only if
  absent (the NameNode decides), holding the holder's host, pid, command and a token. A thread moves its
  modification time every `MFSPARK_LOCK_HEARTBEAT_SECONDS` (10); a lock whose heartbeat is older than
  `MFSPARK_LOCK_STALE_SECONDS` (60) belongs to a dead driver and is taken over (renamed aside, atomically,
  then created again), with a warning naming the old holder.
- **S3A**: the same file, created by a conditional PUT (`If-None-Match: *`; S3 answers 412 when it exists).
  A stale lock is deleted, then created conditionally: two takeovers of one stale lock in the same instant
  can both delete, and then only one conditional create wins.

Before a commit makes anything visible, `LockHandle.check()` confirms the lock is still this process's,
so a driver that lost its lock (paused past the stale time and taken over) never publishes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from mfspark.errors import OutputLockedError
from mfspark.runtime.fs import FileSystem, LocalFileSystem, join, local_path

log = logging.getLogger(__name__)

HADOOP_LOCK_NAME = "_LOCK"


def heartbeat_seconds() -> float:
    return float(os.environ.get("MFSPARK_LOCK_HEARTBEAT_SECONDS", "10"))


def stale_seconds() -> float:
    return float(os.environ.get("MFSPARK_LOCK_STALE_SECONDS", "60"))


def holder_record(command: str) -> dict:
    started = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "command": command, "token": uuid.uuid4().hex,
            "started_at": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            "started_epoch": started}


def describe_holder(text: str) -> str:
    if not text.strip():
        return "a job that is starting (it has not written its name into the lock yet)"
    try:
        holder = json.loads(text)
        return (f"pid {holder['pid']} on host {holder['host']} since {holder['started_at']}"
                f" ({holder.get('command', '?')})")
    except (ValueError, KeyError, TypeError):
        return f"an unknown holder (the lock file holds {text.strip()[:80]!r})"


class LockHandle:
    """A held lock; `check()` raises if it is no longer ours."""

    def __init__(self, path: str, started: float):
        self.path, self.started = path, started

    def check(self) -> None:
        """Nothing to check for a flock: the kernel keeps it while this process lives."""


# ---------------------------------------------------------------- local: flock

_held_local: dict[Path, list] = {}  # lock file -> [handle, depth]: a job may re-enter its own lock


def local_lock_file(target: Path) -> Path:
    """`.<name>.lock` beside the target's real location.

    A target that is one of our output links (`OUT -> .OUT.versions/<v>`) is resolved up to its
    parent only: the link itself is the output, wherever it points.
    """
    resolved = target.resolve()
    if resolved.parent.name == f".{target.name}.versions":
        resolved = target.parent.resolve() / target.name
    return resolved.parent / f".{resolved.name}.lock"


def _read_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode("utf-8", errors="replace")


def _holder_of(fd: int) -> str:
    """The holder's record; a holder that has the flock but has not written yet gets a moment to do so."""
    for _ in range(10):
        text = _read_fd(fd)
        if text.strip():
            return text
        time.sleep(0.05)
    return ""


def _flock(path: Path, out: str, command: str) -> tuple[int, float]:
    """flock `path` or fail at once naming the holder; returns (fd, start time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe_holder(_holder_of(fd))
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
            log.warning("taking over the lock %s last held by %s (no process holds it any more)", path,
                        describe_holder(stale))
        record = holder_record(command)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)
        return fd, record["started_epoch"]


@contextmanager
def local_lock(target: Path, command: str) -> Iterator[LockHandle]:
    path = local_lock_file(target)
    if path in _held_local:
        _held_local[path][1] += 1
        try:
            yield _held_local[path][0]
        finally:
            _held_local[path][1] -= 1
        return
    fd, started = _flock(path, str(target), command)
    handle = LockHandle(str(path), started)
    _held_local[path] = [handle, 1]
    try:
        yield handle
    finally:
        del _held_local[path]
        path.unlink(missing_ok=True)
        os.close(fd)


def is_locked_here(target: Path) -> bool:
    return local_lock_file(target) in _held_local


# ---------------------------------------------------------------- Hadoop filesystems: exclusive create

_held_remote: dict[str, list] = {}


class RemoteLockHandle(LockHandle):
    """A lock file on a Hadoop filesystem, kept fresh by a heartbeat thread."""

    def __init__(self, fs: FileSystem, path: str, record: dict):
        super().__init__(path, record["started_epoch"])
        self.fs, self.record, self.text = fs, record, json.dumps(record)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="mfspark-lock-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(heartbeat_seconds()):
            try:
                if self.fs.object_store(self.path) and not self.still_ours():
                    # A heartbeat on S3 rewrites the object: never over another job's lock.
                    log.error("lost the lock %s to another job: heartbeat stopped; this job will not publish",
                              self.path)
                    return
                self.fs.touch(self.path, self.text)
            except Exception as exc:  # a transient error: the next beat may succeed; check() decides
                log.warning("lock heartbeat on %s failed: %s", self.path, str(exc).splitlines()[0][:200])

    def still_ours(self) -> bool:
        return (self.fs.read_json_or_none(self.path) or {}).get("token") == self.record["token"]

    def check(self) -> None:
        current = self.fs.read_json_or_none(self.path) or {}
        if current.get("token") != self.record["token"]:
            raise OutputLockedError(f"lost the lock {self.path}: another job took it over "
                                    f"({describe_holder(json.dumps(current)) if current else 'it is gone'}); "
                                    "nothing was published")

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):  # the JVM may be gone with a killed session: the lock goes stale
            if self.still_ours():
                self.fs.delete(self.path)


def _take_over_if_stale(fs: FileSystem, path: str, out: str) -> None:
    """Remove a lock whose heartbeat stopped, or fail naming its live holder."""
    try:
        age = time.time() - fs.modified(path)
        text = fs.read_text(path)
    except (OSError, Exception) as exc:  # gone between our create and this read: try the create again
        if "FileNotFound" in str(exc) or isinstance(exc, FileNotFoundError):
            return
        raise
    if age <= stale_seconds():
        raise OutputLockedError(f"{out} is in use by {describe_holder(text)}, last heartbeat {age:.0f} s ago; "
                                f"lock file {path}")
    log.warning("taking over the stale lock %s held by %s: no heartbeat for %.0f s (more than %.0f s)",
                path, describe_holder(text), age, stale_seconds())
    aside = f"{path}.stale-{uuid.uuid4().hex[:8]}"
    if not fs.object_store(path) and fs.rename(path, aside):  # only one taker's rename can succeed
        fs.delete(aside)
    elif fs.object_store(path):
        fs.delete(path)


@contextmanager
def remote_lock(fs: FileSystem, target: str, command: str) -> Iterator[LockHandle]:
    path = join(fs.qualify(target), HADOOP_LOCK_NAME)
    if path in _held_remote:
        yield _held_remote[path][0]
        return
    record = holder_record(command)
    for _ in range(3):
        if fs.create_exclusive(path, json.dumps(record)):
            break
        _take_over_if_stale(fs, path, target)
    else:
        raise OutputLockedError(f"{target}: could not create the lock {path} (others keep taking it)")
    handle = RemoteLockHandle(fs, path, record)
    handle.start()
    _held_remote[path] = [handle, 1]
    try:
        yield handle
    finally:
        del _held_remote[path]
        handle.release()


@contextmanager
def hold_lock(fs: FileSystem, target: str, command: str = "mfspark") -> Iterator[LockHandle]:
    """Hold the lock of `target` (an output or a pipeline root) for the block; re-entrant in one process."""
    local = local_path(target)
    if isinstance(fs, LocalFileSystem) and local is not None:
        with local_lock(local, command) as handle:
            yield handle
    else:
        with remote_lock(fs, target, command) as handle:
            yield handle
