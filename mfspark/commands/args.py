"""Argument groups shared by commands: the ratings table a model job reads (an ingest output),
the split it evaluates on, and ALS's hyper-parameters."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import Field
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from mfspark import params
from mfspark.data.datasets import resolve_dataset
from mfspark.data.ingest import read_ratings
from mfspark.data.movielens import RELEASES
from mfspark.errors import ConfigError, InputError
from mfspark.evaluation import split as splits
from mfspark.models.als.estimator import PRESETS, ALSParams
from mfspark.models.base import COLD_START_STRATEGIES, DEFAULT_COLD_START
from mfspark.models.ease import EASEParams
from mfspark.models.lists_model import LISTS_KINDS
from mfspark.pipeline.stages import LISTS_FIELDS
from mfspark.runtime.fs import HadoopFileSystem, HadoopPath, filesystem, input_path
from mfspark.runtime.provenance import versions

# What a directory that is not a model holds, by a file it has: said in the refusal, so the user sees what they passed.
NOT_A_MODEL = (
    ("biases/model.json", "a `mfspark baseline` output (bias tables, no factors)"),
    ("metadata/part-00000", "a Spark MLlib model directory"),
    ("manifest.json", "an `mfspark ingest` output"),
)
PARAMS_FORMAT = "mfspark-params/1"  # a parameter file's "format" (read_params_file)
# A parameter file's model sections: the dataclass and the fields it may set (None: every settable one).
PARAMS_SECTIONS = {"als": (ALSParams, None), "lists": (ALSParams, LISTS_FIELDS), "ease": (EASEParams, None)}


def add_release_arguments(parser: argparse.ArgumentParser) -> None:
    """Where a MovieLens release comes from: a directory, or a release by name (ingest, pipeline)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="DIR", help="release directory (holding ratings.csv, ratings.dat or u.data)")
    source.add_argument("--dataset", metavar="NAME", help=f"release by name: {', '.join(RELEASES)}")
    parser.add_argument("--data-dir", help="where --dataset looks first (then $MFSPARK_DATA_DIR, the download cache)")
    parser.add_argument("--cache-dir",
                        help="download cache for --dataset (default $MFSPARK_DATA_DIR or ~/.cache/mfspark)")
    parser.add_argument("--format", choices=RELEASES, help="release format (default: detected from the files)")


def release_source(args: argparse.Namespace, spark: SparkSession | None = None) -> tuple[Path | HadoopPath, str | None]:
    """The release directory (local, or on HDFS/S3 through `spark`) and its format name (None: detect it) from
    `add_release_arguments`' options."""
    if args.input:
        return input_path(args.input, spark), args.format
    return resolve_dataset(args.dataset, args.data_dir, args.cache_dir), args.format or args.dataset


def add_split_arguments(parser: argparse.ArgumentParser,
                        kinds: tuple[str, ...] = ("random", "temporal", "predefined")) -> None:
    """The ratings table and the split of the model commands (train, tune, sweep, compare-mllib, baseline): one
    declaration. `kinds` (of `evaluation.split.SPLIT_KINDS`): with "kfold", --folds too (baseline)."""
    group = parser.add_argument_group("input and split")
    group.add_argument("--input", metavar="INGEST_OUT",
                       help="output directory of `mfspark ingest` (reads INGEST_OUT/ratings); "
                            "not needed with --split predefined")
    group.add_argument("--split", choices=kinds, default="random")
    group.add_argument("--predefined-dir", metavar="DIR",
                       help="--split predefined: ml-100k directory holding u1.base, u1.test, ...")
    group.add_argument("--predefined-name", choices=splits.PREDEFINED_SPLITS, default="u1")
    group.add_argument("--test-fraction", type=float, default=0.2, help="random/temporal test share (default 0.2)")
    group.add_argument("--seed", type=int, default=42,
                       help="seed of the random draws (split, folds, initial factors; default 42)")
    if "kfold" in kinds:
        group.add_argument("--folds", type=int, default=5, help="k for --split kfold (default 5)")


def comma_list(kind: type):
    """argparse type: comma-separated values of `kind`, as a tuple."""
    def parse(text: str) -> tuple:
        try:
            return tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got '{text}'") from None
    return parse


def load_split(spark: SparkSession, args: argparse.Namespace) -> splits.Split:
    """Read the ratings, split them, and cache both sides (each is read several times)."""
    if args.split != "predefined" and not args.input:
        raise ConfigError(f"--input (an `mfspark ingest` output) is required with --split {args.split}")
    ratings = read_ratings(spark, args.input) if args.split != "predefined" else None
    [split] = splits.make_splits(ratings, args.split, test_fraction=args.test_fraction, seed=args.seed,
                                 predefined_dir=args.predefined_dir, predefined_name=args.predefined_name, spark=spark)
    return splits.Split(split.name, split.train.cache(), split.test.cache())


def run_info(spark: SparkSession, args: argparse.Namespace, split: splits.Split) -> dict:
    """Provenance for metrics.json: input, split, counts, versions."""
    return {
        "input": args.input,
        "split": {"kind": args.split, "test_fraction": args.test_fraction, "seed": args.seed,
                  "predefined": f"{args.predefined_dir}/{args.predefined_name}" if args.split == "predefined" else None,
                  **splits.cold_start_counts(split)},
        "versions": versions(spark),
    }


def _dest(f: Field, spec: params.Spec, prefix: str) -> str:
    """The argparse destination: the option's own name (two models' fields of one name, e.g. ALS's and EASE's
    `reg` as --reg and --ease-reg, never share a destination)."""
    return params.option_of(f, spec, prefix).removeprefix("--").replace("-", "_")


def add_model_options(group: Any, cls: type, *, prefix: str = "", names: Iterable[str] | None = None,
                defaults: object | None = None, default_note: str = "") -> None:
    """An option per settable field of `cls` (only `names`, if given) on an argparse parser or group.

    Options parse to None when not given (see `given_params`); the help shows the default of `defaults` (an
    instance of `cls`) or, with `default_note`, says where the default comes from.
    """
    wanted = set(names) if names is not None else None
    shown = defaults if defaults is not None else cls()
    for f, spec in params.specs(cls):
        if not spec.settable or (wanted is not None and f.name not in wanted):
            continue
        value = getattr(shown, f.name)
        default = default_note or ("" if value is None else f" (default: {_shown(value, spec)})")
        kwargs: dict[str, Any] = {"dest": _dest(f, spec, prefix), "default": None, "help": spec.doc + default}
        if spec.kind is bool:
            kwargs["action"] = "store_const" if spec.negate else argparse.BooleanOptionalAction
            if spec.negate:
                kwargs["const"] = False
        else:
            kwargs["type"] = spec.kind
            kwargs["metavar"] = {int: "N", float: "X"}.get(spec.kind, "NAME")
            if spec.choices:
                kwargs["choices"], kwargs["metavar"] = spec.choices, None
        group.add_argument(params.option_of(f, spec, prefix), **kwargs)


def _shown(value: object, spec: params.Spec) -> str:
    if spec.kind is bool:
        return "off" if value == spec.negate else "on"
    return f"{value:g}" if isinstance(value, float) else str(value)


def given_params(args: argparse.Namespace, cls: type, *, prefix: str = "") -> dict[str, Any]:
    """The fields of `cls` given on the command line (options added by `add_options` with `prefix`)."""
    values = {f.name: getattr(args, _dest(f, spec, prefix), None) for f, spec in params.specs(cls) if spec.settable}
    return {name: value for name, value in values.items() if value is not None}


def add_als_arguments(parser: argparse.ArgumentParser) -> None:
    """ALS's options, derived from `ALSParams` (`mfspark.params`), plus --preset, --params and --cold-start."""
    group = parser.add_argument_group("ALS (later wins: built-in default, --preset, --params FILE, an option given)")
    add_model_options(group, ALSParams)
    add_preset_and_params_file(group)
    group.add_argument("--cold-start", choices=COLD_START_STRATEGIES, default=None,
                       help="test ratings of users or movies unseen in training: baseline (mu + the pre-fitted "
                            "biases), learned (mu + the biases learned inside ALS), nan or drop (left out of the RMSE) "
                            f"(default: the --params file's, else {DEFAULT_COLD_START})")


def add_preset_and_params_file(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--preset", choices=sorted(PRESETS),
                       help="accurate: rank, reg, iterations and biases chosen on validation splits "
                            "(docs/accuracy.md); options given and a --params file win over it")
    group.add_argument("--params", metavar="FILE",
                       help="a parameter file (JSON, e.g. the params.json `mfspark tune` writes): its values replace "
                            "the defaults; options given win over it")


def als_params(args: argparse.Namespace, spark: SparkSession | None = None) -> ALSParams:
    """The ALS parameters of a model command: defaults, --preset, --params FILE, the options given; checked."""
    chosen = params.layered(ALSParams(), PRESETS[args.preset] if args.preset else {},
                            read_params_file(args.params, spark)["als"] if args.params else {},
                            given_params(args, ALSParams), {"seed": args.seed})
    check_command_params(chosen)
    return chosen


def check_command_params(chosen: ALSParams) -> None:
    """`ALSParams.validate`, and the one thing a command refuses that the library allows: zero iterations
    (it would write the random initial factors as if they were a model)."""
    chosen.validate()
    if chosen.max_iter < 1:
        raise ConfigError(f"max_iter (--max-iter) must be 1 or more, got {chosen.max_iter}")


def cold_start(args: argparse.Namespace, spark: SparkSession | None = None) -> str:
    """--cold-start, else the --params file's choice, else the default strategy."""
    if args.cold_start:
        return args.cold_start
    chosen = read_params_file(args.params, spark).get("cold_start") if args.params else None
    return chosen or DEFAULT_COLD_START


def read_params_file(path: str, spark: SparkSession | None = None) -> dict:
    """A parameter file's sections, checked field by field (`PARAMS_SECTIONS`: als, the pipeline's lists model,
    ease) and `cold_start`; a missing or malformed file is one line."""
    fs = filesystem(path, spark)
    if not fs.exists(path):
        raise InputError(f"--params {path} not found")
    try:
        document = json.loads(fs.read_text(path))
    except json.JSONDecodeError as exc:
        raise InputError(f"--params {path}: not JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != PARAMS_FORMAT:
        raise InputError(f"--params {path}: not a parameter file (expected \"format\": \"{PARAMS_FORMAT}\")")
    unknown = sorted(set(document) - {"format", "cold_start", "lists_model", "chosen_by", *PARAMS_SECTIONS})
    if unknown:
        raise InputError(f"--params {path}: unknown section {unknown[0]}")
    cold = document.get("cold_start")
    if cold is not None and cold not in COLD_START_STRATEGIES:
        raise InputError(f"--params {path}: cold_start must be one of {', '.join(COLD_START_STRATEGIES)}, got {cold!r}")
    kind = document.get("lists_model")
    if kind is not None and kind not in LISTS_KINDS:
        raise InputError(f"--params {path}: lists_model must be one of {', '.join(LISTS_KINDS)}, got {kind!r}")
    return {name: params.from_table(cls, document.get(name, {}), f"--params {path}: {name}", names=names)
            for name, (cls, names) in PARAMS_SECTIONS.items()} | {"cold_start": cold, "lists_model": kind}


def params_document(chosen_by: dict, cold_start: str | None = None, lists_model: str | None = None,
                    **models: object) -> dict:
    """What `read_params_file` reads: for each model given by its section name (als, lists, ease), every field
    the section may set (the seed is the run's)."""
    def section(name: str, model: object) -> dict:
        cls, names = PARAMS_SECTIONS[name]
        return {key: getattr(model, key) for key in names or params.settable_names(cls)
                if getattr(model, key) is not None}
    return {"format": PARAMS_FORMAT, "chosen_by": chosen_by,
            **{name: section(name, model) for name, model in models.items() if model is not None},
            **({"cold_start": cold_start} if cold_start else {}),
            **({"lists_model": lists_model} if lists_model else {})}


def model_dir(spark: SparkSession, path: str, option: str) -> str:
    """The ALS model directory of `path`: a `mfspark train` output (the model in factors/) or that factors/
    directory itself; anything else is refused in one line saying what it looks like."""
    path = path.rstrip("/") or "/"
    paths = HadoopFileSystem(spark)
    for candidate in (f"{path}/factors", path):
        if paths.exists(f"{candidate}/metadata.json"):
            return candidate
    if not paths.exists(path):
        raise InputError(f"{option} {path} not found: expected a `mfspark train` output directory")
    looks = next((what for marker, what in NOT_A_MODEL if paths.exists(f"{path}/{marker}")), None)
    raise InputError(f"{option} {path} is not a `mfspark train` output (no factors/metadata.json)"
                     + (f": it looks like {looks}" if looks else ""))
