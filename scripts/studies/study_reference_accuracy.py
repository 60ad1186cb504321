"""Reference libraries on exactly mfspark's random split: cmfrec's CMF (biases, implicit features) and Surprise's SVD++.

Run in a separate environment holding the libraries (never the project's .venv), with the worktree importable:

    python -m venv /tmp/ref && /tmp/ref/bin/pip install cmfrec scikit-surprise pandas threadpoolctl
    PYTHONPATH=. /tmp/ref/bin/python scripts/studies/study_reference_accuracy.py --ratings DIR/ratings.csv \
        --out ref.md \
        --cmfrec-grid '[{"k": 50, "lambda_": 10}, {"k": 50, "lambda_": 10, "add_implicit_features": true}]' \
        --svdpp-grid '[{"n_factors": 20}]'

The split is `mfspark.evaluation.split.random_split` (test: draw(--seed) < --test-fraction) and the validation
part is `random_split(train, --test-fraction, --validation-seed)`, the carve `mfspark tune` makes, computed
without Spark by `mfspark.evaluation.draws`. Every grid point (cmfrec.CMF or surprise.SVDpp keyword arguments,
one thread) is fitted on training minus validation and scored on validation; each library's best is refitted on
all of training and scored once on test. Unseen users or movies get each library's own fallback (global mean
plus the known bias); "seen" scores only pairs whose user and movie are in the fitted part.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from study_report import split_line, write_report

from mfspark.evaluation.draws import split_masks

Predictor = Callable[[pd.DataFrame], np.ndarray]


def fit_cmfrec(train: pd.DataFrame, params: dict) -> Predictor:
    import cmfrec

    model = cmfrec.CMF(**{"use_cg": False, "nthreads": 1, "verbose": False, **params})
    model.fit(train.rename(columns={"user": "UserId", "movie": "ItemId", "rating": "Rating"}))
    return lambda pairs: model.predict(pairs["user"].to_numpy(), pairs["movie"].to_numpy())


def fit_svdpp(train: pd.DataFrame, params: dict) -> Predictor:
    import surprise

    data = surprise.Dataset.load_from_df(train[["user", "movie", "rating"]], surprise.Reader(rating_scale=(0.5, 5)))
    model = surprise.SVDpp(**{"random_state": 0, "cache_ratings": True, **params})
    model.fit(data.build_full_trainset())
    return lambda pairs: np.array([model.predict(u, i).est for u, i in zip(pairs["user"], pairs["movie"])])


LIBRARIES = {"cmfrec": fit_cmfrec, "svdpp": fit_svdpp}


def score(train: pd.DataFrame, predict: Predictor, held_out: pd.DataFrame) -> tuple[float, float]:
    """(RMSE over every held-out rating, RMSE where user and movie are in `train`), predictions clipped."""
    error = np.clip(predict(held_out), 0.5, 5.0) - held_out["rating"].to_numpy()
    seen = (held_out["user"].isin(train["user"]) & held_out["movie"].isin(train["movie"])).to_numpy()
    return float(np.sqrt(np.mean(error**2))), float(np.sqrt(np.mean(error[seen] ** 2)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", required=True, type=Path, help="ratings.csv (userId,movieId,rating,...)")
    parser.add_argument("--out", required=True, type=Path, help="markdown table")
    parser.add_argument("--cmfrec-grid", default="[]", help="JSON list of cmfrec.CMF keyword arguments")
    parser.add_argument("--svdpp-grid", default="[]", help="JSON list of surprise.SVDpp keyword arguments")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--validation-seed", type=int, default=7)
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "scripts/studies/study_reference_accuracy.py", *given])
    frame = pd.read_csv(args.ratings).rename(columns={"userId": "user", "movieId": "movie"})
    frame = frame[["user", "movie", "rating"]]
    test, validation = split_masks(frame["user"].to_numpy(), frame["movie"].to_numpy(), args.test_fraction,
                                   args.seed, args.validation_seed)
    train, fit_part = frame[~test], frame[~test & ~validation]
    lines = ["| library | parameters | val RMSE | val RMSE seen | fit s |", "| --- | --- | ---: | ---: | ---: |"]
    results = []
    for library, grid in (("cmfrec", json.loads(args.cmfrec_grid)), ("svdpp", json.loads(args.svdpp_grid))):
        scores = []
        for params in grid:
            started = time.perf_counter()
            predict = LIBRARIES[library](fit_part, params)
            scores.append(score(fit_part, predict, frame[validation]))
            lines.append(f"| {library} | `{json.dumps(params)}` | {scores[-1][0]:.4f} | {scores[-1][1]:.4f} | "
                         f"{time.perf_counter() - started:.1f} |")
            print(lines[-1], flush=True)
        if grid:
            best = grid[int(np.argmin([s[0] for s in scores]))]
            test_all, test_seen = score(train, LIBRARIES[library](train, best), frame[test])
            results.append(f"- {library}, best on validation `{json.dumps(best)}`: **test RMSE {test_all:.4f}** "
                           f"(user and movie seen: {test_seen:.4f})")
            print(results[-1], flush=True)
    return write_report(args.out, command, [
        split_line(len(frame), test, args.seed, validation, args.validation_seed), "", *lines, "", *results])


if __name__ == "__main__":
    sys.exit(main())
