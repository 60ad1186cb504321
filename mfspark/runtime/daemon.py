"""Spark's Python worker daemon (`spark.python.daemon.module`), minus its BrokenPipeError tracebacks.

Spark closes a Python worker's socket when it no longer wants what the worker is sending: a task whose remaining
output is not needed (`take`, `first`, `limit`), a worker idle for a minute, every idle worker when the session
stops. The worker then fails to flush its last bytes, and because `spark.python.daemon.killWorkerOnFlushFailure`
(default true) re-raises that error, pyspark's daemon prints a `BrokenPipeError` traceback on a run that succeeded
(`rdd.map(f).take(1)` does it every time here). The JVM has already let go of that worker, so nothing is lost: here
the error just ends the worker, as the re-raise would, without the traceback; every other error prints as before
(`spark_internals.quiet_worker`: the patch of pyspark's internal daemon lives with the other private hooks).
Local profiles only: the module must be importable where the daemon starts, before `--py-files` reach `sys.path`.
"""

from mfspark.runtime import spark_internals

if __name__ == "__main__":
    spark_internals.run_quiet_daemon()
