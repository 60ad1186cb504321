"""Output directories that are committed atomically, and small JSON side files.

Every job writes its tables into a fresh temporary directory beside the final one and
swaps it in only when everything succeeded: a failed run leaves the previous output
untouched, and a rerun replaces it whole. Paths go through Hadoop's FileSystem API so the
same code works for local paths, HDFS and object stores.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mfspark.runtime.spark_internals import hadoop_configuration, jvm

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


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
    """Swap a finished local staging directory in for `final`, the previous output removed only after.

    The local-filesystem commit for jobs that run without Spark (synth), in the same order as
    `atomic_output`'s: old aside, new in, old deleted.
    """
    previous = final.with_name(f"{final.name}.previous-{uuid.uuid4().hex[:12]}")
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    shutil.rmtree(previous, ignore_errors=True)


def write_json(spark: SparkSession, path: str, obj: Any) -> None:
    HadoopPaths(spark).write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(spark: SparkSession, path: str) -> Any:
    return json.loads(HadoopPaths(spark).read_text(path))


@contextmanager
def atomic_output(spark: SparkSession, final: str) -> Iterator[str]:
    """Yield a staging directory; on success it replaces `final`, on failure it is removed.

    The swap is two renames (old aside, new in) followed by deleting the old copy, so a
    reader sees either the complete old output or the complete new one.
    """
    paths = HadoopPaths(spark)
    final = str(final).rstrip("/")
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
