"""What the benchmark and evaluation scripts end with: the result table printed, and written to --out."""

from __future__ import annotations

from pathlib import Path


def publish(lines: list[str], out: Path | None) -> None:
    """Print the table's lines (markdown) and, when `out` is given, write them there."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        out.write_text(text)
