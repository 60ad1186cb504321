"""One filesystem interface for outputs, pointers and locks: this machine's disk, or any Hadoop filesystem.

Commits and locks need a few primitives whose guarantees differ per filesystem; each
implementation says how it provides them:

- `publish_text` (replace a small file whole): local, a temp file, fsync, `rename(2)`, fsync of the directory;
  HDFS, a temp file and `FileContext.rename(OVERWRITE)`; S3A, one PUT (an object appears whole on close).
- `create_exclusive` (create only if absent): local `O_CREAT | O_EXCL`; HDFS `create(path, overwrite=false)`
  (the NameNode decides); S3A a conditional PUT (`If-None-Match: *`).
- `sync_tree` (data durable before a pointer names it): local, fsync of every file and directory; HDFS and
  S3A, nothing to do (a closed HDFS file is on its DataNodes, a closed object is stored).

Paths are strings: a local path, or a URI (`hdfs://nn:8020/x`, `s3a://bucket/x`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mfspark.errors import ConfigError
from mfspark.runtime.spark_internals import hadoop_configuration, java_array, jvm

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Schemes of object stores: no atomic rename, but a single PUT is atomic.
OBJECT_STORE_SCHEMES = ("s3a", "s3", "s3n", "gs", "oss", "cos")
# S3A's conditional create (HADOOP-19256): `createFile(path).must(...)` sends `If-None-Match: *`.
S3A_CONDITIONAL_CREATE = "fs.option.create.conditional.overwrite"


def local_path(path: str | os.PathLike) -> Path | None:
    """The path on this machine's filesystem, or None for HDFS, object stores and other schemes."""
    text = str(path)
    if text.startswith("file:"):
        return Path("/" + text[len("file:"):].lstrip("/"))
    return None if "://" in text else Path(text).absolute()


def scheme(path: str) -> str:
    return str(path).split("://", 1)[0].lower() if "://" in str(path) else "file"


def join(base: str, *names: str) -> str:
    return "/".join([str(base).rstrip("/"), *names])


class FileSystem(ABC):
    """The operations commits, pointers and locks are built from (see the module's table)."""

    name = "local"

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def is_dir(self, path: str) -> bool: ...

    @abstractmethod
    def list_dir(self, path: str) -> list[str]:
        """Names of the entries of a directory (empty when it does not exist)."""

    @abstractmethod
    def list_files(self, path: str) -> dict[str, int]:
        """Every file under `path` (relative name -> size in bytes)."""

    @abstractmethod
    def read_text(self, path: str) -> str: ...

    @abstractmethod
    def write_text(self, path: str, text: str) -> None:
        """Write a file inside a directory nobody reads yet (not atomic)."""

    @abstractmethod
    def publish_text(self, path: str, text: str) -> None:
        """Replace `path` whole: a reader sees the old content or the new one, never a mix or nothing."""

    @abstractmethod
    def create_exclusive(self, path: str, text: str) -> bool:
        """Create `path` holding `text` only if it does not exist; False when it does."""

    @abstractmethod
    def modified(self, path: str) -> float:
        """Modification time, seconds since the epoch."""

    @abstractmethod
    def touch(self, path: str, text: str) -> None:
        """Move a file's modification time to now (a lock's heartbeat); `text` is its content."""

    @abstractmethod
    def delete(self, path: str) -> None:
        """Remove a file or a whole directory; nothing when it does not exist."""

    @abstractmethod
    def rename(self, src: str, dst: str) -> bool:
        """Move `src` to a `dst` that does not exist; False when it could not."""

    @abstractmethod
    def mkdirs(self, path: str) -> None: ...

    def sync_tree(self, path: str) -> None:  # noqa: B027 (a no-op where closing a file makes it durable)
        """Make the files under `path` durable before a pointer names them (local disks only)."""

    @staticmethod
    def object_store(path: str) -> bool:
        """True for object stores (no atomic rename; a single PUT is atomic)."""
        return scheme(path) in OBJECT_STORE_SCHEMES

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_text(path))

    def write_json(self, path: str, obj: Any) -> None:
        """`write_text` of `obj` as indented JSON with sorted keys (the form of every mfspark side file)."""
        self.write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")

    def read_json_or_none(self, path: str) -> Any:
        try:
            return self.read_json(path)
        except (OSError, ValueError, LookupError):
            return None

    def qualify(self, path: str) -> str:
        """The path as printed for users and pointers name it."""
        return str(path)


class LocalFileSystem(FileSystem):
    """This machine's disk, through os calls (no JVM needed)."""

    name = "local"

    @staticmethod
    def _p(path: str) -> Path:
        return local_path(path) or Path(path)

    def exists(self, path: str) -> bool:
        p = self._p(path)
        return p.exists() or p.is_symlink()

    def is_dir(self, path: str) -> bool:
        return self._p(path).is_dir()

    def list_dir(self, path: str) -> list[str]:
        p = self._p(path)
        return sorted(entry.name for entry in p.iterdir()) if p.is_dir() else []

    def list_files(self, path: str) -> dict[str, int]:
        root = self._p(path).resolve()
        return {str(f.relative_to(root)): f.stat().st_size for f in sorted(root.rglob("*")) if f.is_file()}

    def read_text(self, path: str) -> str:
        return self._p(path).read_text(encoding="utf-8")

    def write_text(self, path: str, text: str) -> None:
        p = self._p(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")

    def publish_text(self, path: str, text: str) -> None:
        p = self._p(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        temporary = p.parent / f".{p.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, p)
        finally:
            temporary.unlink(missing_ok=True)
        fsync_dir(p.parent)

    def create_exclusive(self, path: str, text: str) -> bool:
        p = self._p(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        return True

    def modified(self, path: str) -> float:
        return self._p(path).stat().st_mtime

    def touch(self, path: str, text: str) -> None:
        os.utime(self._p(path))

    def delete(self, path: str) -> None:
        p = self._p(path)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)

    def rename(self, src: str, dst: str) -> bool:
        if self.exists(dst):
            return False
        try:
            os.rename(self._p(src), self._p(dst))
        except FileNotFoundError:
            return False
        return True

    def mkdirs(self, path: str) -> None:
        self._p(path).mkdir(parents=True, exist_ok=True)

    def sync_tree(self, path: str) -> None:
        root = self._p(path).resolve()
        for directory, _, files in os.walk(root):
            for name in files:
                fsync_file(Path(directory) / name)
            fsync_dir(Path(directory))
        fsync_dir(root.parent)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """fsync a directory, so the names it holds (a rename, a new file) survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class HadoopFileSystem(FileSystem):
    """Any Hadoop filesystem (HDFS, S3A, ...) through the session's JVM and Hadoop configuration."""

    name = "hadoop"

    def __init__(self, spark: SparkSession):
        self._spark = spark
        self._gateway = jvm(spark)
        self._conf = hadoop_configuration(spark)

    def _path(self, path: str) -> Any:
        return self._gateway.org.apache.hadoop.fs.Path(str(path))

    def _fs(self, path: str) -> Any:
        return self._path(path).getFileSystem(self._conf)

    def qualify(self, path: str) -> str:
        return str(self._fs(path).makeQualified(self._path(path)).toString())

    def exists(self, path: str) -> bool:
        return bool(self._fs(path).exists(self._path(path)))

    def is_dir(self, path: str) -> bool:
        try:
            return bool(self._fs(path).getFileStatus(self._path(path)).isDirectory())
        except Exception as exc:  # FileNotFoundException through Py4J
            if "FileNotFoundException" in str(exc):
                return False
            raise

    def list_dir(self, path: str) -> list[str]:
        if not self.exists(path):
            return []
        return sorted(status.getPath().getName() for status in self._fs(path).listStatus(self._path(path)))

    def list_files(self, path: str) -> dict[str, int]:
        base = self.qualify(path).rstrip("/") + "/"
        files, it = {}, self._fs(path).listFiles(self._path(path), True)
        while it.hasNext():
            status = it.next()
            files[status.getPath().toString().removeprefix(base)] = int(status.getLen())
        return dict(sorted(files.items()))

    def status(self, path: str) -> Any:
        """The Hadoop FileStatus of `path` (size, modification time)."""
        return self._fs(path).getFileStatus(self._path(path))

    def open_stream(self, path: str) -> Any:
        """An open Java InputStream of `path`."""
        return self._fs(path).open(self._path(path))

    def data_files(self, path: str) -> list[str]:
        """Names of the files in a directory, without Hadoop/Spark markers (`_SUCCESS`, `.crc`, ...)."""
        return sorted(status.getPath().getName() for status in self._fs(path).listStatus(self._path(path))
                      if status.isFile() and not status.getPath().getName().startswith(("_", ".")))

    def head(self, path: str, size: int) -> bytes:
        stream = self._fs(path).open(self._path(path))
        try:  # readNBytes returns a byte[], which Py4J hands over as bytes (it cannot fill a Python buffer)
            return bytes(stream.readNBytes(size))
        finally:
            stream.close()

    def tail(self, path: str, size: int) -> bytes:
        """The last `size` bytes of a file (a Parquet file ends in its footer length and b'PAR1')."""
        fs = self._fs(path)
        length = int(fs.getFileStatus(self._path(path)).getLen())
        stream = fs.open(self._path(path))
        try:
            stream.seek(max(0, length - size))
            return bytes(stream.readNBytes(size))
        finally:
            stream.close()

    def read_text(self, path: str) -> str:
        fs = self._fs(path)
        try:
            stream = fs.open(self._path(path))
        except Exception as exc:
            if "FileNotFoundException" in str(exc):
                raise FileNotFoundError(path) from None
            raise
        try:
            buffer = self._gateway.java.io.ByteArrayOutputStream()
            self._gateway.org.apache.hadoop.io.IOUtils.copyBytes(stream, buffer, 65536, False)
            return bytes(buffer.toByteArray()).decode("utf-8")
        finally:
            stream.close()

    def write_text(self, path: str, text: str) -> None:
        stream = self._fs(path).create(self._path(path), True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def publish_text(self, path: str, text: str) -> None:
        if self.object_store(path):  # one PUT when the stream closes: the object appears whole
            self.write_text(path, text)
            return
        parent, name = str(path).rstrip("/").rsplit("/", 1)
        temporary = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:8]}"
        self.write_text(temporary, text)
        try:
            hadoop = self._gateway.org.apache.hadoop.fs
            context = hadoop.FileContext.getFileContext(self._path(path).toUri(), self._conf)
            context.rename(self._path(temporary), self._path(path),
                           java_array(self._spark, hadoop.Options.Rename, [hadoop.Options.Rename.OVERWRITE]))
        finally:
            if self.exists(temporary):
                self.delete(temporary)

    def create_exclusive(self, path: str, text: str) -> bool:
        fs = self._fs(path)
        try:
            if self.object_store(path):
                builder = fs.createFile(self._path(path)).overwrite(False)
                stream = builder.must(S3A_CONDITIONAL_CREATE, True).build()
            else:
                stream = fs.create(self._path(path), False)
        except Exception as exc:  # taken: exists (HDFS, or S3A's check before writing), or being created (HDFS lease)
            if any(taken in str(exc) for taken in ("FileAlreadyExists", "PathExistsException", "AlreadyBeingCreated")):
                return False
            raise
        try:
            stream.write(bytearray(text.encode("utf-8")))
            stream.close()  # S3A: the conditional PUT happens here; 412 when another writer won
        except Exception as exc:
            if any(s in str(exc) for s in ("412", "PreconditionFailed", "FileAlreadyExists", "RemoteFileChanged")):
                return False
            raise
        return True

    def modified(self, path: str) -> float:
        return self._fs(path).getFileStatus(self._path(path)).getModificationTime() / 1000.0

    def touch(self, path: str, text: str) -> None:
        if self.object_store(path):  # objects have no settable time: rewrite it (we hold the lock it is)
            self.write_text(path, text)
        else:
            self._fs(path).setTimes(self._path(path), int(time.time() * 1000), -1)

    def delete(self, path: str) -> None:
        if self.exists(path):
            self._fs(path).delete(self._path(path), True)

    def rename(self, src: str, dst: str) -> bool:
        if self.exists(dst):
            return False
        return bool(self._fs(src).rename(self._path(src), self._path(dst)))

    def mkdirs(self, path: str) -> None:
        self._fs(path).mkdirs(self._path(path))


def filesystem(path: str, spark: SparkSession | None = None) -> FileSystem:
    """The filesystem `path` lives on; Hadoop filesystems need the session's JVM."""
    if local_path(path) is not None:
        return LocalFileSystem()
    if spark is None:
        raise ConfigError(f"{path}: a {scheme(path)}:// location is reached through Spark's Hadoop libraries, "
                          "and this command started no Spark session")
    return HadoopFileSystem(spark)


class HadoopPath:
    """The part of `pathlib.Path`'s interface that reading a release needs, for a file or directory on a
    Hadoop filesystem (`hdfs://`, `s3a://`): so one release reader serves local and cluster inputs."""

    CHUNK_BYTES = 4 << 20

    def __init__(self, fs: HadoopFileSystem, uri: str):
        self._fs, self._uri = fs, str(uri).rstrip("/")

    def __str__(self) -> str:
        return self._uri

    def __repr__(self) -> str:
        return f"HadoopPath({self._uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HadoopPath) and other._uri == self._uri

    def __hash__(self) -> int:
        return hash(self._uri)

    def __truediv__(self, name: str) -> HadoopPath:
        return HadoopPath(self._fs, join(self._uri, name))

    @property
    def name(self) -> str:
        return self._uri.rsplit("/", 1)[-1]

    def resolve(self) -> HadoopPath:
        return self

    def exists(self) -> bool:
        return self._fs.exists(self._uri)

    def is_dir(self) -> bool:
        return self._fs.is_dir(self._uri)

    def is_file(self) -> bool:
        return self.exists() and not self.is_dir()

    def iterdir(self) -> Iterator[HadoopPath]:
        return (self / name for name in self._fs.list_dir(self._uri))

    def stat(self) -> os.stat_result:
        status = self._fs.status(self._uri)
        size, mtime = int(status.getLen()), status.getModificationTime() / 1000.0
        return os.stat_result((0o100644, 0, 0, 1, 0, 0, size, mtime, mtime, mtime))

    def open(self, mode: str = "rb") -> io.BufferedReader:
        if mode != "rb":
            raise ValueError(f"{self._uri}: only binary reading is supported, not {mode!r}")
        return io.BufferedReader(_JavaInputStream(self._fs.open_stream(self._uri)), self.CHUNK_BYTES)

    def read_text(self, encoding: str = "utf-8") -> str:
        with self.open() as stream:
            return stream.read().decode(encoding)


class _JavaInputStream(io.RawIOBase):
    """A Java InputStream as a Python binary stream (chunks cross Py4J as byte[] -> bytes)."""

    def __init__(self, stream: Any):
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = bytes(self._stream.readNBytes(len(buffer)))
        buffer[:len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


def input_path(path: str | os.PathLike, spark: SparkSession | None = None) -> Path | HadoopPath:
    """A local `Path`, or a `HadoopPath` for an input on HDFS or an object store."""
    local = local_path(path)
    if local is not None:
        return local
    if spark is None:
        raise ConfigError(f"{path}: reading a {scheme(str(path))}:// input needs a Spark session")
    return HadoopPath(HadoopFileSystem(spark), str(path))
