"""`mfspark runs ROOT`: the runs of a pipeline root (id, state, start, seconds per stage, headline metrics);
`--latest` prints the URI of the latest complete run, `--stage` the location of one of its stages.

Local roots are read without Spark; HDFS and S3 roots through a Spark session's Hadoop libraries.
"""

from __future__ import annotations

import argparse

from mfspark.errors import InputError
from mfspark.pipeline.layout import (
    STAGES,
    format_runs,
    list_runs,
    resolve_run,
    resolve_stage,
    runs_json,
)
from mfspark.runtime.fs import filesystem, local_path


def NEEDS_SPARK(args: argparse.Namespace) -> bool:  # noqa: N802 (the commands' flag, here decided per root)
    return local_path(args.root) is None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", metavar="ROOT", help="a pipeline output root (local path, hdfs://..., s3a://...)")
    parser.add_argument("--latest", action="store_true",
                        help="print only the URI of the latest complete run (exit 2 when there is none)")
    parser.add_argument("--stage", choices=(*STAGES, "lists"),
                        help="with --latest: print where that stage's output is instead ('lists': the stage whose "
                             "model made the lists)")
    parser.add_argument("--json", action="store_true", help="the list as JSON")


def run(args: argparse.Namespace, spark) -> None:
    fs = filesystem(args.root, spark)
    root = args.root.rstrip("/")
    if args.latest or args.stage:
        run_uri = fs.qualify(resolve_run(fs, root))
        if args.stage:
            location = resolve_stage(fs, run_uri, args.stage)
            if not fs.exists(location):
                raise InputError(f"run {run_uri} has no {args.stage} stage")
            print(fs.qualify(location))
        else:
            print(run_uri)
        return
    runs = list_runs(fs, root)
    if not runs and not fs.exists(root):
        raise InputError(f"{root} does not exist")
    print(runs_json(runs) if args.json else format_runs(runs))
