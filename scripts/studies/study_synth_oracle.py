"""How close to the planted noise floor can any estimator get on a synthetic release? An oracle bound.

    .venv/bin/python scripts/studies/study_synth_oracle.py --synth DIR --out oracle.md

DIR is `mfspark synth ... --write-truth --out DIR`. The ratings are split as `mfspark train` splits them
(`random_split`, --test-fraction, --seed). The oracles know everything but one side: the users' factors and
biases are solved from their training ratings given the TRUE movie factors, biases and mu (and symmetrically the
movies' given the true users), each by the Bayes posterior mean under the planted priors (ridge with
reg = noise_sd^2 / prior variance), and scored on test. No estimator that has to learn both sides can expect to
beat either oracle, so if an oracle is already more than 1% above the floor, "within 1% of the floor" is out of
reach at that shape whatever the model. The table by activity shows how many ratings per entity it would need.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from study_report import write_report

from mfspark.evaluation.draws import uniform_draws

ACTIVITY_EDGES = (0, 50, 100, 200, 500, 1000, np.inf)


def read_synth(directory: Path) -> tuple[pd.DataFrame, dict, dict]:
    """(ratings user/movie/rating, summary, truth: side -> (ids, bias, factors))."""
    summary = json.loads((directory / "synth.json").read_text())
    if summary["format"] == "csv":
        ratings = pd.read_csv(directory / "ratings.csv").rename(columns={"userId": "user", "movieId": "movie"})
    else:
        ratings = pd.read_csv(directory / "ratings.dat", sep="::", engine="python", header=None,
                              names=["user", "movie", "rating", "time"])
    truth = {}
    for side, column in (("users", "userId"), ("movies", "movieId")):
        table = pd.read_parquet(directory / "truth" / f"{side}.parquet")
        truth[side] = (table[column].to_numpy(), table["bias"].to_numpy(), np.stack(table["factors"].to_numpy()))
    return ratings[["user", "movie", "rating"]], summary, truth


def posterior_means(entity: np.ndarray, n_entities: int, other_factors: np.ndarray, residual: np.ndarray,
                    factor_reg: float, bias_reg: float) -> np.ndarray:
    """Per entity, [p, b] minimising sum (residual - b - p.q)^2 + factor_reg |p|^2 + bias_reg b^2 (one batch solve)."""
    design = np.hstack([other_factors, np.ones((len(residual), 1))])
    width = design.shape[1]
    gram = np.zeros((n_entities, width, width))
    np.add.at(gram, entity, design[:, :, None] * design[:, None, :])
    rhs = np.zeros((n_entities, width))
    np.add.at(rhs, entity, design * residual[:, None])
    gram += np.diag([factor_reg] * (width - 1) + [bias_reg])
    return np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth", required=True, type=Path, help="an `mfspark synth --write-truth` directory")
    parser.add_argument("--out", required=True, type=Path, help="markdown table")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", "scripts/studies/study_synth_oracle.py", *given])
    ratings, summary, truth = read_synth(args.synth)
    index = {side: pd.Index(truth[side][0]) for side in truth}
    rows = {side: index[side].get_indexer(ratings[column]) for side, column in (("users", "user"), ("movies", "movie"))}
    observed = ratings["rating"].to_numpy(np.float64)
    low, high = observed.min(), observed.max()
    signal = summary["mu"] + sum(truth[s][1][rows[s]] for s in truth) + np.einsum(
        "ij,ij->i", truth["users"][2][rows["users"]], truth["movies"][2][rows["movies"]])
    test = uniform_draws(args.seed, ratings["user"].to_numpy(), ratings["movie"].to_numpy()) < args.test_fraction
    noise_var = summary["noise_floor_rmse"] ** 2
    floor = float(np.sqrt(np.mean((signal[test] - observed[test]) ** 2)))
    lines = [f"{summary['shape']} x {summary['scale']} seed {summary['seed']}: {len(ratings):,} ratings, "
             f"{len(truth['users'][0]):,} users, {len(truth['movies'][0]):,} movies, planted rank {summary['rank']}; "
             f"test {int(test.sum()):,} (seed {args.seed}). Noise floor on test (planted signal vs written): "
             f"**{floor:.4f}** (all ratings {summary['noise_floor_rmse']:.4f}).", "",
             "| oracle (solved side given the true other side) | training ratings per solved entity, median "
             "(mean) | test RMSE | above floor |", "| --- | --- | ---: | ---: |"]
    by_activity = []
    for solved, known, prior in (("users", "movies", "user_bias_sd"), ("movies", "users", "movie_bias_sd")):
        known_ids, known_bias, known_factors = truth[known]
        entity, other = rows[solved], rows[known]
        train = ~test
        residual = observed[train] - summary["mu"] - known_bias[other[train]]
        solution = posterior_means(entity[train], len(truth[solved][0]), known_factors[other[train]], residual,
                                   noise_var / summary["factor_sd"] ** 2, noise_var / summary[prior] ** 2)
        predicted = np.clip(summary["mu"] + known_bias[other[test]] + solution[entity[test], -1] + np.einsum(
            "ij,ij->i", solution[entity[test], :-1], known_factors[other[test]]), low, high)
        error = predicted - observed[test]
        rmse = float(np.sqrt(np.mean(error**2)))
        counts = np.bincount(entity[train], minlength=len(truth[solved][0]))
        lines.append(f"| {solved} | {np.median(counts):.0f} ({counts.mean():.0f}) | {rmse:.4f} | "
                     f"{100 * (rmse / floor - 1):+.1f}% |")
        bucket = np.digitize(counts[entity[test]], ACTIVITY_EDGES[1:-1])
        for b in range(len(ACTIVITY_EDGES) - 1):
            inside = bucket == b
            if inside.any():
                bucket_floor = np.sqrt(np.mean((signal[test][inside] - observed[test][inside]) ** 2))
                bucket_rmse = np.sqrt(np.mean(error[inside] ** 2))
                by_activity.append(f"| {solved} | {ACTIVITY_EDGES[b]:g}-{ACTIVITY_EDGES[b + 1]:g} | "
                                   f"{int(inside.sum()):,} | {bucket_floor:.4f} | {bucket_rmse:.4f} | "
                                   f"{100 * (bucket_rmse / bucket_floor - 1):+.1f}% |")
    lines += ["", "By the solved entity's training ratings (test ratings of entities in that range):", "",
              "| solved | training ratings | test ratings | floor | oracle RMSE | above floor |",
              "| --- | --- | ---: | ---: | ---: | ---: |", *by_activity, ""]
    return write_report(args.out, command, lines)


if __name__ == "__main__":
    sys.exit(main())
