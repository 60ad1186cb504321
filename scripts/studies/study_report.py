"""What the single-node study scripts (study_*.py) share: the split line and writing the markdown report."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def split_line(n_ratings: int, test: np.ndarray, seed: int, validation: np.ndarray | None = None,
               validation_seed: int | None = None) -> str:
    carve = "" if validation is None else (f", validation {int(validation.sum()):,} carved from training "
                                           f"(seed {validation_seed})")
    return f"{n_ratings:,} ratings; test {int(test.sum()):,} (seed {seed}){carve}."


def write_report(out: Path, command: str, lines: list[str]) -> int:
    """Write `lines` under the command line (with the time) to `out`, print them; the script's exit status."""
    text = "\n".join([f"Command: `{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}).", *lines, ""])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0
