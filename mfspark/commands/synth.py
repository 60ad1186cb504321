"""`mfspark synth`: MovieLens-shaped synthetic releases (see `mfspark.data.synth`)."""

from __future__ import annotations

import argparse

from mfspark.data.synth import SHAPES, generate

NEEDS_SPARK = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shape", required=True, choices=sorted(SHAPES), help="release to imitate")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply users, movies, ratings and tags by this (default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same arguments give identical bytes")
    parser.add_argument("--out", required=True, help="directory to write the release files into (replaced whole)")
    parser.add_argument("--write-truth", action="store_true",
                        help="also write the planted biases and factors to OUT/truth/*.parquet")


def run(args: argparse.Namespace, spark: None = None) -> dict:
    return generate(args.shape, args.out, args.seed, args.scale, args.write_truth)
