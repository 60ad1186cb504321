"""The provenance every output records: one versions block, one md5."""

import hashlib
import sys

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
