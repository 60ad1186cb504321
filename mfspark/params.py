"""Parameters declared once: a dataclass field carries its default, its doc, its bound or choices and its
command-line spelling, and everything else is derived from it: the argparse options, the checks, the
profile's tables and parameter files (`from_table`), and the configuration reference (`reference_rows`).

Spark ML's `Param` works the same way (`ALS.scala`: `val rank = new IntParam(this, "rank", "rank of the
factorization", ParamValidators.gtEq(1))`). Worked example, with the `ALSParams` fields `rank` and `scale_reg`:

    rank: int = param(10, "number of latent factors", low=1)
    scale_reg: bool = param(True, "...", option="constant-reg", negate=True)

give `--rank N` (default shown as 10; parsed as None when not given, so a profile or a parameter file
below it can still apply), `--constant-reg` (sets scale_reg False), the TOML/JSON keys `rank` and
`scale_reg`, and the refusal "rank (--rank) must be 1 or more, got 0". The options are made by
`mfspark.commands.args.add_model_options` (argparse belongs to the commands).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any, TypeVar

from mfspark.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Spec:
    """What a field says about itself besides its default."""

    doc: str
    kind: type  # int, float, str or bool: how a command-line or file value is read
    low: float | None = None  # smallest value allowed (NaN is refused too)
    high: float | None = None
    choices: tuple[str, ...] | None = None
    option: str | None = None  # the command-line name without "--" (default: the field name with dashes)
    negate: bool = False  # a flag that sets a bool field False (e.g. --constant-reg for scale_reg)
    settable: bool = True  # False: set by the code (e.g. by `fit`), not by options or files


def param(default: Any, doc: str, *, kind: type | None = None, low: float | None = None, high: float | None = None,
          choices: Iterable[str] | None = None, option: str | None = None, negate: bool = False,
          settable: bool = True) -> Any:
    """A dataclass field with its `Spec` (`kind` defaults to the type of `default`)."""
    spec = Spec(doc, kind or type(default), low, high, tuple(choices) if choices else None, option, negate, settable)
    return field(default=default, metadata={"spec": spec})


def specs(cls: type) -> list[tuple[Field, Spec]]:
    """The fields of dataclass `cls` that declare a `Spec`, in declaration order."""
    return [(f, f.metadata["spec"]) for f in fields(cls) if "spec" in f.metadata]


def settable_names(cls: type, exclude: Iterable[str] = ()) -> tuple[str, ...]:
    skip = set(exclude)
    return tuple(f.name for f, spec in specs(cls) if spec.settable and f.name not in skip)


def option_of(f: Field, spec: Spec, prefix: str = "") -> str:
    return f"--{prefix}{spec.option or f.name.replace('_', '-')}"


def from_table(cls: type, table: Mapping[str, Any], source: str, *, names: Iterable[str] | None = None) -> dict:
    """The fields set by a profile table or a parameter file, type-checked; an unknown key is an error naming
    `source` and the known keys. A key `cls.RENAMED` maps (a field's name before a rename) reads as the new one."""
    table = {getattr(cls, "RENAMED", {}).get(key, key): value for key, value in table.items()}
    known = {f.name: spec for f, spec in specs(cls) if spec.settable and (names is None or f.name in set(names))}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]} (known: {', '.join(known)})")
    return {key: _read(value, known[key], f"{source}: {key}") for key, value in table.items()}


def _read(value: Any, spec: Spec, where: str) -> Any:
    if value is None:
        return None
    ok = {bool: isinstance(value, bool), int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, int | float) and not isinstance(value, bool), str: isinstance(value, str)}
    if not ok[spec.kind]:
        raise ConfigError(f"{where} must be {spec.kind.__name__}, got {value!r}")
    return float(value) if spec.kind is float else value


def check(obj: object) -> None:
    """Refuse a field outside its bound or choices, naming the field and its option."""
    for f, spec in specs(type(obj)):
        value = getattr(obj, f.name)
        if value is None or isinstance(value, bool):
            continue
        named = f"{f.name}" + (f" ({option_of(f, spec)})" if spec.settable else "")
        if spec.choices and value not in spec.choices:
            raise ConfigError(f"{named} must be one of {', '.join(spec.choices)}, got '{value}'")
        if spec.low is not None and not value >= spec.low:  # NaN too
            raise ConfigError(f"{named} must be {spec.low:g} or more, got {value}")
        if spec.high is not None and not value <= spec.high:
            raise ConfigError(f"{named} must be {spec.high:g} or less, got {value}")


def layered(base: T, *layers: Mapping[str, Any]) -> T:
    """`base` with each layer's values applied in turn (a later layer wins)."""
    for layer in layers:
        base = replace(base, **layer)
    return base


def reference_rows(cls: type, *, prefix: str = "") -> list[str]:
    """The markdown table of `cls`'s settable fields: key, option, default, bound or choices, doc."""
    rows = ["| key | option | default | allowed | description |", "|---|---|---|---|---|"]
    for f, spec in specs(cls):
        if not spec.settable:
            continue
        default = f.default if f.default is not MISSING else ""
        allowed = ", ".join(spec.choices) if spec.choices else " ".join(
            part for part in (f">= {spec.low:g}" if spec.low is not None else "",
                              f"<= {spec.high:g}" if spec.high is not None else "") if part)
        doc = spec.doc.replace("|", "\\|")
        rows.append(f"| `{f.name}` | `{option_of(f, spec, prefix)}` | `{default}` | {allowed} | {doc} |")
    return rows
