"""What a job's outputs record about how they were made: software versions, input checksums."""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path
from typing import TYPE_CHECKING

import mfspark
from mfspark.runtime.fs import HadoopPath

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Bytes read per step while hashing: large enough for disk throughput, small in memory.
HASH_CHUNK_BYTES = 8 << 20


def versions(spark: SparkSession) -> dict[str, str]:
    """The `versions` block of every manifest and metrics file: mfspark, Spark (the JVM's),
    pyspark (the driver's Python side) and Python."""
    import pyspark

    return {"mfspark": mfspark.__version__, "spark": spark.version, "pyspark": pyspark.__version__,
            "python": platform.python_version()}


def file_md5(path: str | Path | HadoopPath) -> str:
    """Hex md5 of a file (local, or a `HadoopPath`), read in chunks (release zips and ratings files are gigabytes)."""
    digest = hashlib.md5()
    with (path if isinstance(path, HadoopPath) else Path(path)).open("rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
