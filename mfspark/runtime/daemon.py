"""Spark's Python worker daemon (`spark.python.daemon.module`), minus the BrokenPipeError tracebacks of teardown.

When a session stops, Spark closes the sockets of its idle, reused Python workers. Each worker then fails to flush
its last message to the JVM, and because `spark.python.daemon.killWorkerOnFlushFailure` (default true) re-raises
that error, pyspark's daemon prints a `BrokenPipeError` traceback per worker on a run that succeeded. The JVM has
already let go of such a worker, so nothing is lost: here the error just ends the worker, as the re-raise would,
without the traceback. Every other error is printed as before. Local profiles only: the module must be importable
where the daemon starts, before `--py-files` reach `sys.path`.
"""

from __future__ import annotations

import socket

from pyspark import daemon

pyspark_worker = daemon.worker


def worker(sock: socket.socket, authenticated: bool) -> int:
    """pyspark's `daemon.worker`; a broken pipe (the JVM closed this worker's socket) is exit code 1, quietly."""
    try:
        return pyspark_worker(sock, authenticated)
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    daemon.worker = worker
    daemon.manager()
