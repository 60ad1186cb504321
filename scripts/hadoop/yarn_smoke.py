"""A trivial PySpark job for `spark-submit --master yarn`: proves the driver and the executors run the wanted Python,
import mfspark from the --py-files zip, and read and write HDFS.

    spark-submit --master yarn --py-files dist/mfspark.zip scripts/hadoop/yarn_smoke.py hdfs://127.0.0.1:19820/smoke/RUN
Prints one JSON line (in cluster mode it is in the AM container's stdout) and writes OUT/result.json.
"""

from __future__ import annotations

import json
import sys
import time


def executor_facts(_: object) -> list[tuple[str, str]]:
    import mfspark  # from the --py-files zip on the executor's sys.path

    return [(sys.executable, mfspark.__file__)]


def main(out: str) -> None:
    from pyspark.sql import SparkSession

    import mfspark

    t0 = time.time()
    spark = SparkSession.builder.appName("mfspark-yarn-smoke").getOrCreate()
    sc = spark.sparkContext
    started = time.time() - t0
    frame = spark.range(10_000).selectExpr("id", "id % 10 AS bucket")
    frame.write.mode("overwrite").parquet(f"{out}/table")
    back = spark.read.parquet(f"{out}/table").groupBy("bucket").count().orderBy("bucket").collect()
    executors = sorted(set(sc.parallelize(range(4), 4).mapPartitions(executor_facts).collect()))
    result = {
        "master": sc.master,
        "deploy_mode": sc.getConf().get("spark.submit.deployMode", "client"),
        "app_id": sc.applicationId,
        "driver_python": sys.executable,
        "driver_mfspark": mfspark.__file__,
        "executors": executors,
        "rows_per_bucket": sorted({row["count"] for row in back}),
        "session_start_s": round(started, 1),
        "job_s": round(time.time() - t0 - started, 1),
    }
    line = json.dumps(result)
    spark.sparkContext.parallelize([line], 1).saveAsTextFile(f"{out}/result.json")
    print(line)
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1])
