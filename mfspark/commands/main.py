"""`mfspark <command>`: one entry point for every job; `jobs/*.py` call `main` too.

Each command lives in its own module exposing `add_arguments(parser)` and
`run(args, spark) -> dict | None` (the result is logged as one JSON line). Commands
that need no Spark (download, synth) set `NEEDS_SPARK = False` and get `spark=None`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from mfspark.errors import ConfigError, MfsparkError, NoSpaceLeftError, SparkJvmDiedError

COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("mfspark.commands.ingest", "read a MovieLens release into validated Parquet tables"),
    "download": ("mfspark.commands.download", "download a GroupLens release (md5-verified, cached)"),
    "synth": ("mfspark.commands.synth", "generate MovieLens-shaped synthetic data in a release format"),
    "baseline": ("mfspark.commands.baseline", "split, fit and evaluate the bias baseline"),
    "train": ("mfspark.commands.train", "train block-partitioned ALS and write factors"),
    "compare-mllib": ("mfspark.commands.compare_mllib", "train ours and Spark MLlib ALS on the same split"),
    "pipeline": ("mfspark.commands.pipeline", "ingest, baseline, train, evaluate, recommend into ROOT/runs/<run>"),
    "recommend": ("mfspark.commands.recommend", "top-N lists, audiences, similar movies, fold-in from a model"),
    "sweep": ("mfspark.commands.sweep", "held-out RMSE of ALS over a rank x lambda grid (Parquet + figure)"),
    "tune": ("mfspark.commands.tune", "choose ALS hyper-parameters on a validation split, score the best on test"),
    "report": ("mfspark.commands.report", "one self-contained HTML model report with figures"),
    "runs": ("mfspark.commands.runs", "list a pipeline root's runs, or print the URI of its latest complete run"),
}
# Options naming something a command reads, and the pipeline stage they stand for when given a pipeline root
# or run ("lists": the stage whose model made the run's lists). See `resolve_readers`.
READER_OPTIONS = {"input": "ingest", "ingest": "ingest", "model": "train", "warm_start": "train",
                  "recs": "recommend"}

log = logging.getLogger("mfspark")
# Optional dependencies and the extra that installs each (pyproject.toml): a command needing one says so.
EXTRAS = {"matplotlib": "plots"}


class Py4JRootRecords(logging.Filter):
    """Drops what py4j logs on the root logger (`logging.exception("Exception while sending command.")`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return Path(record.pathname).parent.name != "py4j"


def configure_logging(level: str) -> None:
    """Log to stderr at `level`. Called again once the profile is read: the level is set every
    time (basicConfig alone would keep the first call's level and ignore the profile's)."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.getLogger().setLevel(numeric)
    # py4j logs each gateway connection at INFO (and every command at DEBUG): shown only when debugging.
    logging.getLogger("py4j").setLevel(logging.INFO if numeric <= logging.DEBUG else logging.WARNING)
    # ... and a lost connection (a dead JVM) with its trace on the root logger: the same.
    root = logging.getLogger()
    for kept in [f for f in root.filters if isinstance(f, Py4JRootRecords)]:
        root.removeFilter(kept)
    if numeric > logging.DEBUG:
        root.addFilter(Py4JRootRecords())
    if "pyspark" in sys.modules:  # a Spark command (its module imported pyspark)
        from pyspark.logger import PySparkLogger

        # pyspark logs each analysis error it raises as a JSON line; `main` reports it as one line of its own.
        for name in ("DataFrameQueryContextLogger", "SQLQueryContextLogger"):
            PySparkLogger.getLogger(name).setLevel(logging.ERROR if numeric <= logging.DEBUG else logging.CRITICAL)


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    from mfspark.runtime.session import LOG_LEVELS

    group = parser.add_argument_group("runtime")
    group.add_argument("--profile", default="local", help="<profile>.toml, packaged or in an override directory "
                       "(default: local)")
    group.add_argument("--conf", action="append", metavar="KEY=VALUE",
                       help="override a Spark setting (spark.*) or an mfspark setting; repeatable")
    group.add_argument("--conf-dir", help="directory whose <profile>.toml overrides $MFSPARK_CONF_DIR's, ./conf's "
                       "and the packaged one")
    group.add_argument("--log-level", default=None, type=str.upper, choices=LOG_LEVELS, metavar="LEVEL",
                       help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default from the profile)")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; only the chosen command's module is imported (fast `--help`)."""
    parser = argparse.ArgumentParser(prog="mfspark", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name != command:
            continue
        module = import_command(name, module_name)
        module.add_arguments(cmd)
        if getattr(module, "NEEDS_SPARK", True):
            add_runtime_arguments(cmd)
        cmd.set_defaults(module=module)
    return parser


def import_command(name: str, module_name: str):
    """The command's module; a missing optional dependency is one line naming the extra to install, exit 2."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"mfspark {name}: error: needs {exc.name}, which is not installed: pip install 'mfspark[{extra}]'",
              file=sys.stderr)
        raise SystemExit(2) from None


def scratch_root(out: str | None) -> str:
    """Where a job's Spark scratch space and checkpoints go: beside `--out`, never inside it,
    because the output directory is swapped whole when the job commits."""
    if not out:
        return "out"
    if "://" in out:  # a URI's parent by its last "/" (PurePosixPath would fold "hdfs://" into "hdfs:/")
        parent = out.rstrip("/").rsplit("/", 1)[0]
        return parent if "/" in parent.split("://", 1)[1] else parent + "/"
    return str(Path(out).resolve().parent)


def session_for(args: argparse.Namespace, app_name: str):
    """Build the SparkSession from the profile, with `--out` as the output root."""
    from mfspark.runtime.session import build_session, load_profile, parse_overrides

    profile = load_profile(args.profile, scratch_root(getattr(args, "out", None)), parse_overrides(args.conf),
                           args.conf_dir)
    profile = replace(profile, log_level=args.log_level or profile.log_level)
    configure_logging(profile.log_level)
    return build_session(profile, app_name)


def spark_error_line(exc: BaseException) -> str | None:
    """The first line of an error Spark classified (it has an error condition, e.g. UNRESOLVED_COLUMN or
    FAILED_READ_FILE): Spark raises those about the user's query or files, and the line names the column or path.
    None for anything else, including Spark's INTERNAL_ERROR, which keeps its trace.
    """
    if "pyspark" not in sys.modules:  # Spark was never imported, so it raised nothing
        return None
    from py4j.protocol import Py4JError, Py4JJavaError
    from pyspark.errors import PySparkException

    if isinstance(exc, PySparkException):  # analysis errors, converted by pyspark
        condition, message = exc.getCondition(), str(exc)
    elif isinstance(exc, Py4JJavaError):  # e.g. a Parquet footer that cannot be read, left unconverted
        try:
            condition, message = exc.java_exception.getCondition(), exc.java_exception.getMessage()
        except Py4JError:  # not a SparkThrowable
            return None
    else:
        return None
    if not condition or condition.startswith("INTERNAL_ERROR"):
        return None
    return next((line.strip() for line in str(message).splitlines() if line.strip()), condition)


def exit_on_sigterm(signum, frame) -> None:
    """SIGTERM (cron timeouts, `kill`) unwinds like Ctrl-C: staging output, locks and checkpoints are cleaned up."""
    raise SystemExit(128 + signum)


def remove_checkpoint_dir(spark) -> None:
    """Spark leaves its per-context checkpoint directory (`_checkpoints/<uuid>`) behind: remove it on exit."""
    from mfspark.runtime.fs import HadoopFileSystem

    try:
        checkpoint_dir = spark.sparkContext.getCheckpointDir()
        if checkpoint_dir:
            HadoopFileSystem(spark).delete(checkpoint_dir)
    except Exception as exc:  # the JVM may already be gone (killed with us)
        log.warning("could not remove the checkpoint directory: %s", exc)


def check_schemes(args: argparse.Namespace, spark) -> None:
    """Refuse a path without a scheme when Spark's default filesystem is not the local disk (a HADOOP_CONF_DIR
    naming HDFS): mfspark would lock and commit it locally while Spark wrote it to HDFS."""
    from mfspark.runtime.spark_internals import hadoop_configuration

    default = str(hadoop_configuration(spark).get("fs.defaultFS") or "file:///")
    if default.startswith("file:"):
        return
    for option in ("out", *READER_OPTIONS):
        value = getattr(args, option, None)
        if value and "://" not in str(value) and not str(value).startswith("file:"):
            raise ConfigError(f"--{option.replace('_', '-')} {value} has no scheme while Spark's default filesystem is "
                              f"{default} (HADOOP_CONF_DIR): write {default.rstrip('/')}/... or file://{Path(value).absolute()}")


def resolve_readers(args: argparse.Namespace, spark) -> None:
    """Point every option naming an input at what to read: the current version of an output on a Hadoop
    filesystem, or the stage of a pipeline root's latest run (or of a given run). One rule for every reader."""
    from mfspark.pipeline.layout import resolve_stage
    from mfspark.runtime.commit import resolve_output
    from mfspark.runtime.fs import filesystem

    for option, stage in READER_OPTIONS.items():
        value = getattr(args, option, None)
        if not value or (option == "input" and args.command in ("ingest", "pipeline")):
            continue
        fs = filesystem(str(value), spark)
        chosen = "lists" if option == "model" and args.command == "recommend" else stage
        resolved = resolve_output(fs, resolve_stage(fs, str(value), chosen))
        if resolved != str(value):
            log.info("--%s %s: reading %s", option.replace("_", "-"), value, resolved)
        setattr(args, option, resolved)


@contextlib.contextmanager
def output_locks(args: argparse.Namespace, spark) -> Iterator[None]:
    """The lock of an `--out` on a Hadoop filesystem, for the whole command (local outputs are locked
    before Spark starts, in `run_command`)."""
    from mfspark.runtime.fs import filesystem, local_path
    from mfspark.runtime.locks import hold_lock

    out = getattr(args, "out", None)
    if not out or local_path(out) is not None or spark is None:
        yield
        return
    with hold_lock(filesystem(out, spark), out, f"mfspark {args.command}"):
        yield


def check_out_place(args: argparse.Namespace, out: str) -> None:
    """Refuse, before any work, an `--out` that overlaps what the command reads or names a plain file."""
    from mfspark.runtime.commit import check_disjoint
    from mfspark.runtime.fs import local_path

    for option in ("input", "data_dir", "cache_dir", "model"):
        value = getattr(args, option, None)
        if value:
            check_disjoint(value, out, f"--{option.replace('_', '-')}")
    local = local_path(out)
    if local is not None and local.is_file() and not local.is_symlink():
        raise ConfigError(f"--out {out} is a file: give a directory (it is created, or replaced whole when it is "
                          "an earlier output)")


def needs_spark(module, args: argparse.Namespace) -> bool:
    """A command's `NEEDS_SPARK`: a flag, or a function of its arguments (e.g. `runs` on a local root)."""
    flag = getattr(module, "NEEDS_SPARK", True)
    return bool(flag(args) if callable(flag) else flag)


def run_command(args: argparse.Namespace, module) -> dict | None:
    """Hold the output's lock (when the command has `--out`) around the Spark session and the run."""
    from mfspark.runtime.commit import output_lock
    from mfspark.runtime.failures import connection_lost, no_space_left
    from mfspark.runtime.spark_internals import jvm_alive

    out = getattr(args, "out", None)
    if out:
        check_out_place(args, out)
    with output_lock(out, f"mfspark {args.command}", sweep_scratch=True) if out else contextlib.nullcontext():
        spark = session_for(args, f"mfspark-{args.command}") if needs_spark(module, args) else None
        try:
            if spark is not None:
                check_schemes(args, spark)
            resolve_readers(args, spark)
            with output_locks(args, spark):
                return module.run(args, spark)
        except Exception as exc:
            if spark is not None and connection_lost(exc) and not jvm_alive(spark):
                raise SparkJvmDiedError(f"the Spark JVM died (killed or out of memory) during {args.command}: "
                                        f"{first_line(exc)}") from exc
            full = no_space_left(exc, out)
            if full is not None:  # Spark's own line names the write that failed, not why
                raise NoSpaceLeftError(full + (f" ({first_line(exc)})" if isinstance(exc, MfsparkError) else "")) \
                    from exc
            raise
        finally:
            if spark is not None:
                stop_quietly(spark)


def first_line(exc: BaseException) -> str:
    """The error's first line; other than ours (which name what failed) prefixed by its type (e.g. Py4JError)."""
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return text if isinstance(exc, MfsparkError) else f"{type(exc).__name__}: {text}".rstrip(": ")


def stop_quietly(spark) -> None:
    """Remove the checkpoint directory and stop the session, unless the JVM is gone: then there is nothing to
    stop, and `spark.stop()` would raise a ConnectionRefusedError that hides the error that ended the run."""
    from mfspark.runtime.spark_internals import jvm_alive

    if jvm_alive(spark, grace_seconds=0):  # not waiting: a JVM that died under the run was waited for there
        remove_checkpoint_dir(spark)
        spark.stop()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(next((a for a in argv if a in COMMANDS), None)).parse_args(argv)
    configure_logging(getattr(args, "log_level", None) or "INFO")
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    started = time.perf_counter()
    try:
        result = run_command(args, args.module)
    except MfsparkError as exc:
        print(f"mfspark {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine said no: permissions, a read-only or full disk, a file in the way
        where = f": {exc.filename}" if exc.filename else ""
        log.debug("%s failed", args.command, exc_info=exc)
        print(f"mfspark {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except Exception as exc:
        line = spark_error_line(exc)
        if line is None:
            raise
        log.debug("%s failed inside Spark", args.command, exc_info=exc)
        print(f"mfspark {args.command}: error: {line} (the full trace: --log-level DEBUG)", file=sys.stderr)
        return 2
    log.info("%s finished in %.1f s", args.command, time.perf_counter() - started)
    if result is not None:
        print(json.dumps(result, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
