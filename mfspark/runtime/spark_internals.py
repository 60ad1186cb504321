"""Every private pyspark, JVM and numba hook mfspark relies on, in one place.

Each hook says which public API it stands in for and why that public API does not do.
They exist only in classic Spark (a driver-side SparkContext talking to the JVM over Py4J);
`check_classic` tells a Spark Connect session, or a pyspark without them, apart with one
clear error when the session starts, instead of an AttributeError deep inside a fit.
A fallback taken because a hook is missing is logged as a WARNING.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mfspark.errors import ConfigError

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    import pyarrow as pa
    from pyspark import RDD
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

log = logging.getLogger(__name__)

# Private attributes of classic pyspark the hooks below use, checked when a session starts.
_SPARK_CONTEXT_HOOKS = ("_jsc", "_jvm")
_RDD_HOOKS = ("_jrdd", "_jrdd_deserializer", "_reserialize")


def check_classic(spark: Any) -> None:
    """Refuse a session this ALS cannot run on, in one line: it needs classic Spark's JVM hooks.

    A Spark Connect session has no SparkContext (pyspark raises on `spark.sparkContext`);
    a pyspark that renamed a private attribute lacks the hook. Either way nothing would work
    past the first RDD operation, so say so before any job starts.
    """
    kind = f"{type(spark).__module__}.{type(spark).__name__}"
    try:
        context = spark.sparkContext
        missing = [f"SparkContext.{name}" for name in _SPARK_CONTEXT_HOOKS if getattr(context, name, None) is None]
        if not missing:  # an empty RDD is built without a job: only its Python wrapper is inspected
            empty = context.emptyRDD()
            missing = [f"RDD.{name}" for name in _RDD_HOOKS if not hasattr(empty, name)]
    except Exception as error:  # Spark Connect: PySparkNotImplementedError (JVM_ATTRIBUTE_NOT_SUPPORTED)
        missing = [f"SparkSession.sparkContext ({type(error).__name__})"]
    if missing:
        raise ConfigError(f"this ALS needs classic Spark (a JVM SparkContext, not Spark Connect): the session "
                          f"{kind} lacks {', '.join(missing)}; run with a local or cluster master, not `sc://`")


def jvm(spark: SparkSession) -> Any:
    """The Py4J view of the driver JVM (`SparkContext._jvm`).

    Stands in for a public Hadoop FileSystem API, which pyspark does not have: output
    commits (rename, delete, exists) must go through Hadoop to work on HDFS and object stores.
    """
    return spark.sparkContext._jvm


def java_array(spark: SparkSession, java_class: Any, values: list) -> Any:
    """A Java array of `java_class` holding `values` (`SparkContext._gateway.new_array`).

    Stands in for Java varargs, which Py4J does not convert: Hadoop's
    `FileContext.rename(src, dst, Options.Rename...)`, the one atomic replace of a file on HDFS.
    """
    array = spark.sparkContext._gateway.new_array(java_class, len(values))
    for i, value in enumerate(values):
        array[i] = value
    return array


def hadoop_configuration(spark: SparkSession) -> Any:
    """The session's Hadoop Configuration (`JavaSparkContext.hadoopConfiguration()` via `_jsc`),
    the one every FileSystem of the job must be opened with (credentials, s3a settings)."""
    return spark.sparkContext._jsc.hadoopConfiguration()


def jvm_gc(spark: SparkSession) -> None:
    """Ask the driver JVM for a garbage collection (`java.lang.System.gc()`).

    Spark's ContextCleaner deletes shuffle files and checkpoints only once the JVM has
    collected the RDDs that referenced them; there is no public trigger, and without it a
    long ALS fit fills the disk with old iterations' shuffles.
    """
    spark.sparkContext._jvm.System.gc()


def arrow_batch_rdd(frame: DataFrame) -> RDD | None:
    """The DataFrame's partitions as an RDD of serialized Arrow record batches (IPC messages), or None.

    Stands in for `DataFrame.mapInArrow(...).rdd`: `Dataset.toArrowBatchRdd` is JVM-internal
    (public in the bytecode) and hands the batches to Python as they are, about 4x faster
    for ALS's ratings (20M ratings: 1.3 s against 5 s for the transfer) because nothing is
    turned back into rows. None, with a WARNING, when this Spark lacks it: the caller then
    takes the `mapInArrow` path.
    """
    from py4j.protocol import Py4JError
    from pyspark import RDD
    from pyspark.serializers import NoOpSerializer

    try:
        batches = frame._jdf.toArrowBatchRdd().toJavaRDD()
    except (Py4JError, AttributeError) as error:
        log.warning("Dataset.toArrowBatchRdd unavailable (%s): falling back to mapInArrow, about 4x slower", error)
        return None
    return RDD(batches, frame.sparkSession.sparkContext, NoOpSerializer())


# The fast JVM-to-Python path of `pack_partitions`; tests turn it off to exercise the fallback.
USE_ARROW_BATCH_RDD = True


def pack_partitions(frame: DataFrame, pack) -> RDD:
    """`pack` (Arrow record batches -> (int, bytes) pairs, e.g. (block, pickled arrays)) run over each partition
    of `frame`, as an RDD of those pairs.

    Fast path: the partitions' Arrow record batches as a plain Python RDD (`arrow_batch_rdd`), about 4x faster
    than `mapInArrow` plus `.rdd` because nothing is converted back into rows. If a Spark version lacks it, the
    same packing runs inside `mapInArrow`.
    """
    batches = arrow_batch_rdd(frame) if USE_ARROW_BATCH_RDD else None
    if batches is not None:
        schema = arrow_schema(frame.schema)
        return batches.mapPartitions(lambda payloads: pack(_record_batches(payloads, schema)))

    def as_arrow(batches):
        import pyarrow as pa

        for block, payload in pack(batches):
            yield pa.RecordBatch.from_arrays([pa.array([block], pa.int32()), pa.array([payload], pa.binary())],
                                             names=["block", "payload"])

    rows = frame.mapInArrow(as_arrow, "block int, payload binary").rdd
    return rows.map(lambda row: (row.block, row.payload))


def _record_batches(payloads, schema):
    """Arrow record batches from the serialized IPC messages of `toArrowBatchRdd`."""
    import pyarrow as pa

    for payload in payloads:
        yield pa.ipc.read_record_batch(pa.py_buffer(payload), schema)


def parquet_columns(frame: DataFrame) -> tuple[list[str], list[str]] | None:
    """(files, source column of each output column) when `frame` is only a selection of columns of
    a Parquet table (`spark.read.parquet(path).select(...)`, renames allowed), else None.

    Stands in for a public description of a DataFrame's source: `inputFiles()` lists the files
    but not whether the frame is more than their columns. The optimised plan must be a
    projection of plain columns straight over an unpartitioned Parquet relation: no filter,
    join, computed or cast column, cache (the plan then shows the cached relation) or
    partition column. A caller can then read those columns itself (pyarrow, in its tasks)
    instead of paying the JVM's row-by-row Arrow conversion. None also when the plan
    classes are not the ones expected (another Spark version): the caller reads `frame`.
    """
    from py4j.protocol import Py4JError

    try:
        plan = frame._jdf.queryExecution().optimizedPlan()
        if plan.getClass().getSimpleName() != "Project" or plan.child().getClass().getSimpleName() != "LogicalRelation":
            return None
        relation = plan.child().relation()
        if (relation.getClass().getSimpleName() != "HadoopFsRelation"
                or relation.fileFormat().getClass().getSimpleName() != "ParquetFileFormat"
                or not relation.partitionSchema().isEmpty()):
            return None
        projections = plan.projectList()
        columns = []
        for i in range(projections.size()):
            expression = projections.apply(i)
            if expression.getClass().getSimpleName() == "Alias":
                expression = expression.child()
            if expression.getClass().getSimpleName() != "AttributeReference":
                return None
            columns.append(expression.name())
    except (Py4JError, AttributeError):
        return None
    return list(frame.inputFiles()), columns


def hash_partition_keys(num_partitions: int) -> list[int]:
    """Int keys k_0, k_1, ... such that `repartition(num_partitions, col)` puts k_i in partition i.

    Stands in for a way to place rows in a chosen partition of a DataFrame, which Spark lacks:
    `repartition` sends a row to pmod(Murmur3(value, seed 42), n) (HashPartitioning), so
    block ids used as keys directly would collide (18 blocks -> about 12 partitions). The
    hash is Spark's `Murmur3_x86_32.hashInt`, unchanged since Spark 1.x because bucketed
    tables depend on it (a test checks it against `spark_partition_id`).
    """
    keys, taken, candidate = [None] * num_partitions, 0, 0
    while taken < num_partitions:
        partition = _murmur3_int(candidate) % num_partitions
        if keys[partition] is None:
            keys[partition], taken = candidate, taken + 1
        candidate += 1
    return keys


def _murmur3_int(value: int, seed: int = 42) -> int:
    """Spark's Murmur3_x86_32.hashInt(value, seed) as a signed 32-bit int."""
    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF

    k1 = rotl((value & 0xFFFFFFFF) * 0xCC9E2D51 & 0xFFFFFFFF, 15) * 0x1B873593 & 0xFFFFFFFF
    h1 = (rotl(seed ^ k1, 13) * 5 + 0xE6546B64) & 0xFFFFFFFF
    h1 ^= 4
    h1 = (h1 ^ (h1 >> 16)) * 0x85EBCA6B & 0xFFFFFFFF
    h1 = (h1 ^ (h1 >> 13)) * 0xC2B2AE35 & 0xFFFFFFFF
    h1 ^= h1 >> 16
    return h1 - (1 << 32) if h1 >= 1 << 31 else h1


def zip_partitions(left: RDD, right: RDD) -> RDD:
    """Pair the i-th JVM element of each partition of `left` with the i-th of `right` (a narrow JVM zip).

    Stands in for `RDD.zip`, which re-pickles both sides through an extra Python pass unless
    their batch sizes agree. Callers guarantee that each JVM element on both sides is one
    pickled record (see `one_record_per_batch`), so the elements pair up as they are.
    """
    from pyspark import RDD
    from pyspark.serializers import PairDeserializer

    pairs = left._jrdd.zip(right._jrdd)
    return RDD(pairs, left.ctx, PairDeserializer(left._jrdd_deserializer, right._jrdd_deserializer))


def co_partitioned_union(*rdds: RDD) -> RDD:
    """Partition i of the result is partition i of each of `rdds` in turn (a narrow JVM union, no shuffle).

    Stands in for `RDD.union`, which re-pickles both sides through a Python pass when their serializers
    differ (batch sizes) and then loses the co-location. Every RDD here must carry the same partitioner in
    the JVM (`partitionBy` with the same function and count, then only partition-preserving maps): the JVM
    union is then a `PartitionerAwareUnionRDD`, which keeps that partitioner. Anything else is refused, as a
    plain union would silently concatenate the partitions. Each JVM element on every side must be a
    pickled list of records (pyspark's batched pickles, whatever the batch size), read back as one stream.
    """
    from pyspark import RDD
    from pyspark.serializers import BatchedSerializer, CPickleSerializer

    union = rdds[0]._jrdd
    for rdd in rdds[1:]:
        union = union.union(rdd._jrdd)  # JavaRDD.union: SparkContext.union, partitioner-aware when it can be
    if union.rdd().getClass().getSimpleName() != "PartitionerAwareUnionRDD":
        raise ValueError("co_partitioned_union: the RDDs do not share one JVM partitioner "
                         f"({[rdd._jrdd.rdd().partitioner().toString() for rdd in rdds]})")
    return RDD(union, rdds[0].ctx, BatchedSerializer(CPickleSerializer()))


def one_record_per_batch(rdd: RDD) -> RDD:
    """`rdd` re-encoded one pickled record per serialized batch (`RDD._reserialize` with pyspark's
    `BatchedSerializer(CPickleSerializer(), 1)`), so `zip_partitions` pairs records, not batches of them:
    there is no public way to fix the batch size of an RDD's pickled elements."""
    from pyspark.serializers import BatchedSerializer, CPickleSerializer

    return rdd._reserialize(BatchedSerializer(CPickleSerializer(), 1))


def arrow_schema(schema: StructType) -> pa.Schema:
    """The Arrow schema Spark writes `schema`'s rows in (`pyspark.sql.pandas.types.to_arrow_schema`, not
    public API), to read the record batches of `arrow_batch_rdd`."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema)


def count_in_jvm(rdd: RDD) -> int:
    """Count the elements in the JVM (`RDD._jrdd.count()`).

    Stands in for `RDD.count`, which pipes every record through a second Python worker per
    task only to count it; here the count is the point of a job that materialises
    persisted or checkpoint-marked RDDs.
    """
    return int(rdd._jrdd.count())


def cached_kernel(compile_cached: Callable[[], Any], compile_in_memory: Callable[[], Any], name: str) -> Any:
    """A numba kernel cached on disk when numba can write its cache, else compiled in memory (WARNING).

    `Dispatcher._cache._impl.locator.ensure_cache_path()` is numba's private check that the
    cache directory is writable; numba's public `cache=True` skips it for code imported from
    a zip (`spark-submit --py-files`) and the first call then fails on an executor whose
    home is read-only or missing. The in-memory fallback costs a compile (about 2.5 s) in
    every Python worker, so it is logged.
    """
    try:
        kernel = compile_cached()
        kernel._cache._impl.locator.ensure_cache_path()
        return kernel
    except (OSError, RuntimeError, AttributeError) as error:
        log.warning("numba cannot cache %s on disk (%s): compiling it in memory in every worker", name, error)
        return compile_in_memory()


def jvm_alive(spark: SparkSession, grace_seconds: float = 1.0) -> bool:
    """Whether the driver JVM is still running.

    `SparkContext._gateway.proc` is the JVM this Python process launched (pyspark keeps the
    Popen there). A JVM being killed closes its sockets a moment before it can be reaped, so
    a caller that saw a connection fail waits up to `grace_seconds` for the exit. A JVM that
    launched Python itself (spark-submit) has no such handle and is asked for the time.
    """
    import subprocess

    from py4j.protocol import Py4JError

    process = getattr(spark.sparkContext._gateway, "proc", None)
    if process is not None:
        try:
            process.wait(timeout=grace_seconds)
        except subprocess.TimeoutExpired:
            return True
        return False
    try:
        spark.sparkContext._jvm.java.lang.System.currentTimeMillis()
    except (Py4JError, OSError):
        return False
    return True


def quiet_accumulator_server_when_the_jvm_dies(spark: SparkSession) -> None:
    """pyspark's accumulator server (`SparkContext._accumulatorServer`, a socketserver) prints a traceback to
    stderr when its JVM connection ends mid-read: for a killed JVM that is noise over the one line that says
    so, logged at DEBUG instead. Errors while the JVM lives are printed as before."""
    server = spark.sparkContext._accumulatorServer
    print_error = server.handle_error

    def handle_error(request, client_address) -> None:
        if jvm_alive(spark):
            print_error(request, client_address)
        else:
            log.debug("accumulator server: the JVM is gone", exc_info=True)

    server.handle_error = handle_error


def quiet_worker(pyspark_worker: Callable[[socket.socket, bool], int]) -> Callable[[socket.socket, bool], int]:
    """pyspark's daemon `worker` function, where a broken pipe (the JVM closed the worker's socket) ends the
    worker with exit code 1 without a traceback; every other error is raised as before (see runtime/daemon.py)."""

    def worker(sock: socket.socket, authenticated: bool) -> int:
        try:
            return pyspark_worker(sock, authenticated)
        except BrokenPipeError:
            return 1

    return worker


def run_quiet_daemon() -> None:
    """pyspark's worker daemon (`pyspark.daemon.manager`, internal) with its `worker` made `quiet_worker`."""
    from pyspark import daemon

    daemon.worker = quiet_worker(daemon.worker)
    daemon.manager()
