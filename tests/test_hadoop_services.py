"""The local HDFS and S3 services (scripts/hadoop_local.sh) work from the suite's Spark session, and the primitives a
commit protocol needs behave as the lead's design assumes (docs/hadoop_local.md):
  HDFS: create(path, overwrite=false) is atomic (one winner of a race), FileContext.rename(OVERWRITE) replaces a file,
        setTimes moves a heartbeat's mtime;
  S3:   the server answers If-None-Match: * with 412 when the key exists (also on CompleteMultipartUpload), and S3A
        (hadoop-aws 3.5.0) sends it for createFile(path).must("fs.option.create.conditional.overwrite", true).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from py4j.protocol import Py4JJavaError

from mfspark.runtime.spark_internals import hadoop_configuration, jvm
from tests.hadoop_services import REPO, HadoopServices, s3_client, yarn_submit_command

pytestmark = pytest.mark.hadoop  # CI's `pytest -m "hadoop or slow"` step; not in the default suite
CONDITIONAL_CREATE = "fs.option.create.conditional.overwrite"


def _roundtrip(spark, root: str) -> None:
    frame = spark.range(1000).selectExpr("id", "id % 7 AS bucket", "cast(id AS double) / 3 AS value")
    frame.write.parquet(f"{root}/table")
    back = spark.read.parquet(f"{root}/table")
    assert back.count() == 1000
    assert sorted(back.collect()) == sorted(frame.collect())


def test_parquet_roundtrip_on_hdfs(spark, hdfs_root):
    _roundtrip(spark, hdfs_root)


def test_parquet_roundtrip_on_s3(spark, s3_root):
    _roundtrip(spark, s3_root)


def _path(spark, uri: str):
    return jvm(spark).org.apache.hadoop.fs.Path(uri)


def _fs(spark, uri: str):
    return _path(spark, uri).getFileSystem(hadoop_configuration(spark))


def _java_class(exc: Py4JJavaError) -> str:
    """The Java exception's class; for an HDFS RemoteException, the class it carries from the NameNode."""
    error = exc.java_exception
    name = error.getClass().getName()
    return error.getClassName() if name == "org.apache.hadoop.ipc.RemoteException" else name


def _write(stream, data: bytes) -> None:
    stream.write(bytearray(data))
    stream.close()


def test_hdfs_exclusive_create_has_one_winner(spark, hdfs_root):
    """Eight threads race create(path, overwrite=false) on one path, five times: exactly one wins each race (the
    NameNode decides under its namespace lock), the losers get FileAlreadyExistsException."""
    fs = _fs(spark, hdfs_root)
    for race in range(5):
        lock = _path(spark, f"{hdfs_root}/race-{race}/_lock")

        def claim(writer: int, lock=lock) -> str:
            try:
                _write(fs.create(lock, False), f"writer {writer}".encode())
                return "won"
            except Py4JJavaError as exc:
                return _java_class(exc)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(claim, range(8)))
        assert outcomes.count("won") == 1, outcomes
        # A loser sees FileAlreadyExistsException once the winner closed the file, AlreadyBeingCreatedException
        # while the winner still writes it (the lease): both mean "taken".
        assert set(outcomes) - {"won"} <= {"org.apache.hadoop.fs.FileAlreadyExistsException",
                                           "org.apache.hadoop.hdfs.protocol.AlreadyBeingCreatedException"}, outcomes


def test_hdfs_rename_overwrite_and_heartbeat(spark, hdfs_root):
    """FileContext.rename(src, dst, Options.Rename.OVERWRITE) replaces an existing file in one step (the varargs
    parameter is a Java array built through py4j); setTimes moves the modification time (a lock's heartbeat)."""
    j = jvm(spark)
    conf = hadoop_configuration(spark)
    fs = _fs(spark, hdfs_root)
    src, dst = _path(spark, f"{hdfs_root}/pointer.tmp"), _path(spark, f"{hdfs_root}/pointer")
    _write(fs.create(dst, False), b"run-1")
    _write(fs.create(src, False), b"run-2")
    files = j.org.apache.hadoop.fs.FileContext.getFileContext(dst.toUri(), conf)
    options = spark.sparkContext._gateway.new_array(j.org.apache.hadoop.fs.Options.Rename, 1)
    options[0] = j.org.apache.hadoop.fs.Options.Rename.OVERWRITE
    files.rename(src, dst, options)
    assert not fs.exists(src)
    stream = fs.open(dst)
    assert bytes(j.org.apache.commons.io.IOUtils.toByteArray(stream)) == b"run-2"
    stream.close()

    before = fs.getFileStatus(dst).getModificationTime()
    beat = before + 5000
    fs.setTimes(dst, beat, -1)  # -1: leave the access time alone
    assert fs.getFileStatus(dst).getModificationTime() == beat


def test_s3_server_honours_if_none_match(hadoop_services: HadoopServices):
    """The S3 server refuses a PUT (and a CompleteMultipartUpload) with If-None-Match: * on an existing key: 412."""
    from botocore.exceptions import ClientError

    s3 = s3_client(hadoop_services)
    bucket, key = hadoop_services.s3_bucket, f"tests/{uuid.uuid4().hex}/_lock"
    s3.put_object(Bucket=bucket, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=bucket, Key=key, Body=b"second", IfNoneMatch="*")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)
    part = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x")
    with pytest.raises(ClientError) as refused:
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"], IfNoneMatch="*",
                                     MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]})
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"first"


def test_s3a_conditional_create(spark, s3_root):
    """hadoop-aws 3.5.0: createFile(path).must("fs.option.create.conditional.overwrite", true) sends If-None-Match: *;
    the second such create of one key fails at close (when S3A PUTs the object) and the first content stays."""
    fs = _fs(spark, s3_root)
    lock = _path(spark, f"{s3_root}/_lock")
    assert fs.hasPathCapability(lock, CONDITIONAL_CREATE)
    _write(fs.createFile(lock).must(CONDITIONAL_CREATE, True).build(), b"holder 1")
    with pytest.raises(Py4JJavaError) as refused:
        _write(fs.createFile(lock).must(CONDITIONAL_CREATE, True).build(), b"holder 2")
    # Not FileAlreadyExistsException: S3A maps the 412 to RemoteFileChangedException (an IOException).
    assert _java_class(refused.value) == "org.apache.hadoop.fs.s3a.RemoteFileChangedException"
    assert "412" in refused.value.java_exception.getMessage()
    stream = fs.open(lock)
    assert bytes(jvm(spark).org.apache.commons.io.IOUtils.toByteArray(stream)) == b"holder 1"
    stream.close()


def test_yarn_cluster_mode_submit(spark, hadoop_services, hdfs_root, tmp_path):
    """spark-submit --master yarn --deploy-mode cluster on the local YARN: the driver and executors run in
    containers, import mfspark from the --py-files zip, and read and write HDFS."""
    zip_path = tmp_path / "mfspark.zip"
    subprocess.run([str(REPO / "scripts" / "build_pyfiles.sh"), str(zip_path)], check=True, timeout=120,
                   env={**os.environ, "PYTHON": sys.executable}, capture_output=True)
    command, env = yarn_submit_command(hadoop_services, REPO / "scripts" / "hadoop" / "yarn_smoke.py", hdfs_root,
                                       py_files=zip_path)
    started = time.monotonic()
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
    seconds = time.monotonic() - started
    (tmp_path / "spark-submit.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    result = json.loads(spark.read.text(f"{hdfs_root}/result.json").first()["value"])
    assert result["deploy_mode"] == "cluster" and result["master"] == "yarn"
    assert result["rows_per_bucket"] == [1000]
    assert all(python == sys.executable and "mfspark.zip" in module for python, module in result["executors"])
    print(f"yarn cluster-mode submit: {seconds:.1f} s")
