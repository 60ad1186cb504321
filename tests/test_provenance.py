"""The provenance every output records: one versions block, one md5."""

import hashlib
import platform

import pyspark

import mfspark
from mfspark.runtime.provenance import HASH_CHUNK_BYTES, file_md5, versions


def test_file_md5_hashes_across_chunks(tmp_path):
    data = bytes(range(256)) * (HASH_CHUNK_BYTES // 256 + 3)  # a chunk and a bit
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_md5(path) == hashlib.md5(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert file_md5(tmp_path / "empty") == "d41d8cd98f00b204e9800998ecf8427e"


def test_versions_block(spark):
    assert versions(spark) == {"mfspark": mfspark.__version__, "spark": spark.version,
                               "pyspark": pyspark.__version__, "python": platform.python_version()}
