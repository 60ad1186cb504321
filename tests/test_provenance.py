"""The provenance every output records: one versions block, one md5."""

import hashlib
import sys
from pathlib import Path

from mfspark.runtime.provenance import HASH_CHUNK_BYTES, file_md5, versions


def test_file_md5_hashes_across_chunks(tmp_path):
    data = bytes(range(256)) * (HASH_CHUNK_BYTES // 256 + 3)  # a chunk and a bit
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_md5(path) == hashlib.md5(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert file_md5(tmp_path / "empty") == "d41d8cd98f00b204e9800998ecf8427e"


def test_versions_block_names_what_is_installed_and_running(spark):
    """Each version against a source independent of the code under test: the installed distributions' metadata,
    the JVM's own SparkContext, the interpreter's version tuple."""
    from importlib.metadata import version

    assert versions(spark) == {"mfspark": version("mfspark"), "spark": spark.sparkContext.version,
                               "pyspark": version("pyspark"), "python": ".".join(map(str, sys.version_info[:3]))}


def test_file_md5_of_a_file_read_through_hadoop_equals_the_local_digest(spark, tmp_path):
    """An input on HDFS or S3 is hashed through Hadoop's FileSystem (HadoopPath); here a local file by its file:// URI,
    several read chunks long."""
    from mfspark.runtime.fs import HadoopFileSystem, HadoopPath

    data = bytes(range(256)) * (3 * HadoopPath.CHUNK_BYTES // 256 + 7)
    path = tmp_path / "ratings.csv"
    path.write_bytes(data)
    remote = HadoopPath(HadoopFileSystem(spark), path.as_uri())
    assert file_md5(remote) == hashlib.md5(data).hexdigest()
    assert remote.stat().st_size == len(data) and remote.is_file() and not remote.is_dir()
    assert [p.name for p in HadoopPath(HadoopFileSystem(spark), tmp_path.as_uri()).iterdir()] == ["ratings.csv"]


def test_an_input_is_hashed_once_per_version_of_the_file(tmp_path, monkeypatch):
    """The pipeline's plan and the ingest manifest both describe the inputs: one md5 pass per file version."""
    from mfspark.data import ingest

    reads = []

    def counted_md5(path):
        reads.append(path)
        return hashlib.md5(Path(path).read_bytes()).hexdigest()

    monkeypatch.setattr(ingest, "file_md5", counted_md5)
    ingest._input_md5.cache_clear()
    path = tmp_path / "ratings.csv"
    path.write_text("1,2\n")
    first, again = ingest.describe_input(path), ingest.describe_input(path)
    path.write_text("1,2,3\n")  # another version: its size (and modification time) changed
    changed = ingest.describe_input(path)
    assert first == again and first["md5"] == hashlib.md5(b"1,2\n").hexdigest()
    assert changed["md5"] == hashlib.md5(b"1,2,3\n").hexdigest() and changed["bytes"] == 6
    assert len(reads) == 2
