"""Write a ratings.dat release (ml-1m / synth format, `user::movie::rating::time`) as ml-100k files:
u.data plus one predefined fold, u1.base / u1.test (a seeded random 80/20 of the ratings), tab-separated.

    .venv/bin/python scripts/ml100k_format.py --input <synth ml-1m dir> --out <dir> [--test-fraction 0.2 --seed 1]

For scoring `mfspark train --split predefined` on data in the ml-100k format with a planted noise floor
(`mfspark synth` writes the ml-1m/10m/25m/32m formats only). Small releases only: it reads the file whole.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="directory holding ratings.dat")
    parser.add_argument("--out", required=True)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    ratings = pd.read_csv(Path(args.input) / "ratings.dat", sep="::", engine="python", header=None,
                          names=["user_id", "movie_id", "rating", "unix_time"])
    ratings["rating"] = ratings["rating"].round().clip(1, 5).astype(int)  # ml-100k ratings are whole stars
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    test = np.random.default_rng(args.seed).random(len(ratings)) < args.test_fraction
    for name, part in (("u.data", ratings), ("u1.base", ratings[~test]), ("u1.test", ratings[test])):
        part.to_csv(out / name, sep="\t", header=False, index=False)
    print(f"{len(ratings)} ratings: {int((~test).sum())} in u1.base, {int(test.sum())} in u1.test -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
