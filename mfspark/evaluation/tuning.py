"""Validation search for ALS: rank x reg x bias fit x bias reg x rated weight (`--implicit-weights`).

Every point is fitted on a part of the training ratings and scored on the rest (the validation
split, carved from training with its own seed); only the point with the lowest validation RMSE is
refitted on the whole training part and scored, once, on the test split. A learned-bias point is
scored with both cold-start bias tables ("baseline", "learned": `mfspark.models.base`) and keeps the
better; the test split is scored with the chosen point's. Points that share a
layout (`ALSParams.layout_key`: the blocked ratings and the cold-start baseline) are fitted by
one `ALS.fit_each`, so the ratings are blocked and shuffled once per layout, not once per point.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import asdict, dataclass, replace

from pyspark.sql import DataFrame, SparkSession

from mfspark.errors import ConfigError
from mfspark.evaluation.metrics import held_out_ranking, rating_metrics, training_catalog
from mfspark.evaluation.split import Split, random_split
from mfspark.models.als.estimator import ALS, ALSParams, model_name
from mfspark.models.ease import EASE, EASEParams
from mfspark.models.lists_model import LIKED_MIN_RATING, LISTS_KINDS, fit_lists_model, liked

log = logging.getLogger(__name__)

POINT_COLUMNS = (("model", "string"), ("rank", "int"), ("reg", "double"), ("bias_fit", "string"),
                 ("bias_reg", "double"), ("implicit_weight", "double"), ("max_iter", "int"),
                 ("cold_start", "string"), ("validation_rmse", "double"), ("validation_rmse_seen", "double"),
                 ("fit_s", "double"))
POINT_SCHEMA = ", ".join(f"{name} {kind}" for name, kind in POINT_COLUMNS)


@dataclass(frozen=True)
class Grid:
    """The values searched; every combination is a point (rated weights > 0 with learned biases only). The names
    are the tune command's options (`--implicit-weights`), as are the output columns (`implicit_weight`)."""

    ranks: tuple[int, ...] = (25, 50, 100)
    regs: tuple[float, ...] = (0.1, 0.15, 0.2)
    bias_fits: tuple[str, ...] = ("baseline", "learned")
    bias_regs: tuple[float, ...] = (1.0, 5.0)
    implicit_weights: tuple[float, ...] = (0.0, 0.3)

    def points(self, base: ALSParams) -> list[ALSParams]:
        """`base` with each combination (biases on); combinations the model does not have are left out."""
        points = [replace(base, rank=rank, reg=reg, biases=True, bias_fit=fit, bias_reg_user=bias_reg,
                          bias_reg_item=bias_reg, rated_weight=weight)
                  for rank, reg, fit, bias_reg, weight in itertools.product(
                      self.ranks, self.regs, self.bias_fits, self.bias_regs, self.implicit_weights)
                  if weight == 0 or fit == "learned"]
        if not points:
            raise ConfigError(f"the tuning grid is empty: {self}")
        for point in points:
            point.validate()
        return points


@dataclass
class TuneResult:
    points: list[dict]  # one row per grid point (POINT_COLUMNS)
    best: ALSParams
    test: dict  # rating_metrics of the best point refitted on all the training ratings, on the test split
    test_seen_rmse: float
    test_fit_s: float
    validation_counts: tuple[int, int]  # (fit part, validation) ratings
    cold_start: str = "baseline"  # the best point's cold-start strategy, chosen on validation


def by_layout(points: list[ALSParams]) -> list[list[ALSParams]]:
    """Points grouped by the layout they can share, in grid order."""
    groups: dict[tuple, list[ALSParams]] = {}
    for point in points:
        groups.setdefault(point.layout_key(), []).append(point)
    return list(groups.values())


def point_row(params: ALSParams, validation: DataFrame, fit_s: float, model) -> dict:
    """A grid point's table row: its parameters, the cold-start strategy that scored its validation ratings best,
    validation RMSE (all ratings, with that strategy; user and movie seen) and fit time."""
    strategies = ("baseline", "learned") if params.learned_biases else ("baseline",)
    scored_all = {strategy: rating_metrics(model.predict(validation, strategy))["rmse"] for strategy in strategies}
    cold_start = min(strategies, key=scored_all.get)  # a tie keeps the baseline
    scored_seen = rating_metrics(model.predict(validation, "drop"))
    return {"model": model_name(params), "rank": params.rank, "reg": params.reg, "bias_fit": params.bias_fit,
            "bias_reg": params.bias_reg_user, "implicit_weight": params.rated_weight,
            "max_iter": params.max_iter, "cold_start": cold_start, "validation_rmse": scored_all[cold_start],
            "validation_rmse_seen": scored_seen["rmse"], "fit_s": round(fit_s, 3)}


def tune(split: Split, base: ALSParams, grid: Grid, validation_fraction: float = 0.2,
         validation_seed: int = 7) -> TuneResult:
    """Search `grid` on a validation split carved from `split.train`; score the best once on `split.test`."""
    points = grid.points(base)
    carved = random_split(split.train, validation_fraction, validation_seed)
    fit_part, validation = carved.train.cache(), carved.test.cache()
    counts = (fit_part.count(), validation.count())
    rows, started = [], time.perf_counter()
    try:
        for group in by_layout(points):
            fitted = ALS(**asdict(group[0])).fit_each(fit_part, group)
            for params, model in zip(group, fitted):
                rows.append(point_row(params, validation, model.history.fit_seconds, model))
                log.info("tune %d/%d %s rank %d, reg %g, bias reg %g, implicit %g: validation RMSE %.4f "
                         "(%.0f s so far)", len(rows), len(points), rows[-1]["model"], params.rank, params.reg,
                         params.bias_reg_user, params.rated_weight, rows[-1]["validation_rmse"],
                         time.perf_counter() - started)
    finally:
        fit_part.unpersist()
        validation.unpersist()
    best_row = min(rows, key=lambda row: row["validation_rmse"])
    best = points[rows.index(best_row)]
    fit_started = time.perf_counter()
    model = ALS(**asdict(best)).fit(split.train)
    test_fit_s = time.perf_counter() - fit_started
    test = rating_metrics(model.predict(split.test, best_row["cold_start"]))
    seen = rating_metrics(model.predict(split.test, "drop"))["rmse"]
    log.info("tune: best on validation %s (cold start %s), test RMSE %.4f", model_name(best), best_row["cold_start"],
             test["rmse"])
    return TuneResult(rows, best, test, seen, test_fit_s, counts, best_row["cold_start"])


def points_frame(spark: SparkSession, rows: list[dict]) -> DataFrame:
    return spark.createDataFrame([tuple(row[name] for name, _ in POINT_COLUMNS) for row in rows], POINT_SCHEMA)


def markdown_table(result: TuneResult) -> str:
    """The grid sorted by validation RMSE (the chosen point first, in bold), then the test line."""
    header = ["model", "rank", "reg", "bias reg", "implicit w", "iters", "cold start", "val RMSE", "val RMSE seen",
              "fit s"]
    lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
    for i, row in enumerate(sorted(result.points, key=lambda row: row["validation_rmse"])):
        name = f"**{row['model']}** (chosen)" if i == 0 else row["model"]
        lines.append(f"| {name} | {row['rank']} | {row['reg']:g} | {row['bias_reg']:g} | {row['implicit_weight']:g} | "
                     f"{row['max_iter']} | {row['cold_start']} | {row['validation_rmse']:.4f} | "
                     f"{row['validation_rmse_seen']:.4f} | {row['fit_s']:.1f} |")
    fit_count, validation_count = result.validation_counts
    lines += ["", f"Validation: {fit_count:,} ratings fitted, {validation_count:,} scored (carved from training). "
              f"Chosen point refitted on all the training ratings: test RMSE **{result.test['rmse']:.4f}** "
              f"(user and movie seen: {result.test_seen_rmse:.4f}; MAE {result.test['mae']:.4f}; "
              f"fit {result.test_fit_s:.1f} s)."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the lists model (`mfspark tune --lists`)

LIST_POINT_COLUMNS = (("model", "string"), ("rank", "int"), ("reg", "double"), ("alpha", "double"),
                      ("max_iter", "int"), ("min_rating", "double"), ("validation_ndcg", "double"),
                      ("validation_precision", "double"), ("fit_s", "double"))
LIST_K = 10  # lists are chosen by NDCG@10, the pipeline's evaluate metric
LIST_POINT_NAMES = ("model", "rank", "reg", "alpha", "max_iter", "min_rating")  # the columns naming a point


@dataclass(frozen=True)
class ListsGrid:
    """The lists models searched: implicit-feedback ALS over ranks x regs x alphas x iterations, and EASE over
    its regs; `kinds` says which of the two are searched."""

    kinds: tuple[str, ...] = ("implicit", "ease")
    ranks: tuple[int, ...] = (10, 32, 64)
    regs: tuple[float, ...] = (0.1, 0.3, 1.0)
    alphas: tuple[float, ...] = (0.5, 1.0)
    max_iters: tuple[int, ...] = (10,)
    ease_regs: tuple[float, ...] = (100.0, 200.0, 400.0, 800.0)
    ease_min_ratings: tuple[float, ...] = (3.0, 4.0)

    def points(self, implicit: ALSParams, ease: EASEParams) -> list[tuple[str, ALSParams | EASEParams]]:
        unknown = sorted(set(self.kinds) - set(LISTS_KINDS))
        if unknown:
            raise ConfigError(f"unknown lists model {unknown[0]} (known: {', '.join(LISTS_KINDS)})")
        points: list[tuple[str, ALSParams | EASEParams]] = []
        if "implicit" in self.kinds:
            points += [("implicit", replace(implicit, rank=rank, reg=reg, alpha=alpha, max_iter=iterations))
                       for rank, reg, alpha, iterations in itertools.product(
                           self.ranks, self.regs, self.alphas, self.max_iters)]
        if "ease" in self.kinds:
            points += [("ease", replace(ease, reg=reg, min_rating=threshold))
                       for threshold, reg in itertools.product(self.ease_min_ratings, self.ease_regs)]
        if not points:
            raise ConfigError(f"the lists grid is empty: {self}")
        for _, params in points:
            params.validate()
        return points


@dataclass
class ListsTuneResult:
    points: list[dict]  # one row per grid point (LIST_POINT_COLUMNS)
    best_kind: str
    best: ALSParams | EASEParams
    test: dict  # held_out_ranking of the best point refitted on all the training ratings, on the test split
    validation_counts: tuple[int, int]


@dataclass
class ListsSearch:
    """The validation search of the lists models: one row per point (LIST_POINT_COLUMNS), the best point."""

    points: list[dict]
    best_kind: str
    best: ALSParams | EASEParams
    validation_counts: tuple[int, int]


def search_lists(train: DataFrame, points: list[tuple[str, ALSParams | EASEParams]], validation_fraction: float = 0.2,
                 validation_seed: int = 7) -> ListsSearch:
    """Fit each lists model on part of `train`, score its top-10 lists of the validation users by NDCG@10
    (validation ratings >= 4 relevant, fitted movies excluded); the best by that. EASE points share one Gram
    matrix per liked threshold. The pipeline's `--lists auto` and `tune --lists` both choose this way."""
    carved = random_split(train, validation_fraction, validation_seed)
    validation = Split("validation", carved.train.cache(), carved.test.cache())
    counts = (validation.train.count(), validation.test.count())
    try:
        scored = score_lists(validation, points, "validation")
    finally:
        validation.train.unpersist()
        validation.test.unpersist()
    rows = [row for _, _, row in scored]
    kind, best, _ = scored[rows.index(best_list_row(rows))]
    log.info("lists search: best on validation %s", _describe(kind, best))
    return ListsSearch(rows, kind, best, counts)


def best_list_row(rows: list[dict]) -> dict:
    """The row a lists search chooses: the highest validation NDCG@10 (the first of equal ones)."""
    return max(rows, key=lambda row: row["validation_ndcg"])


def score_lists(split: Split, points: list[tuple[str, ALSParams | EASEParams]],
                label: str) -> list[tuple[str, ALSParams | EASEParams, dict]]:
    """(kind, params, row) per point: fitted on `split.train`, its top-10 lists of the `split.test` users scored
    (`label`_ndcg, `label`_precision: NDCG@10 and precision@10). Implicit points first, then EASE by threshold.
    On the validation carve this is the search; on the test split, every candidate's test scores."""
    scored, catalog = [], training_catalog(split)
    for kind, params, model, fit_s in _fitted(points, split.train):
        metrics = held_out_ranking(model.recommend_for_users, split, LIST_K, catalog=catalog)
        scored.append((kind, params, list_point(kind, params) | {
            f"{label}_ndcg": metrics["ndcg@10"], f"{label}_precision": metrics["precision@10"],
            "fit_s": round(fit_s, 3)}))
        log.info("lists %s %d/%d %s: NDCG@10 %.4f, precision@10 %.4f", label, len(scored), len(points),
                 _describe(kind, params), metrics["ndcg@10"], metrics["precision@10"])
    return scored


def tune_lists(split: Split, points: list[tuple[str, ALSParams | EASEParams]], validation_fraction: float = 0.2,
               validation_seed: int = 7) -> ListsTuneResult:
    """`search_lists` on `split.train`, then the best refitted on all of `split.train` and scored, once, on
    `split.test`."""
    search = search_lists(split.train, points, validation_fraction, validation_seed)
    model = fit_lists_model(search.best_kind, search.best, split.train)
    test = held_out_ranking(model.recommend_for_users, split, LIST_K)
    log.info("tune --lists: %s, test NDCG@10 %.4f", _describe(search.best_kind, search.best), test["ndcg@10"])
    return ListsTuneResult(search.points, search.best_kind, search.best, test, search.validation_counts)


def _fitted(points: list[tuple[str, ALSParams | EASEParams]], train: DataFrame):
    """(kind, params, model, fit seconds) per point: the implicit ALS points, then the EASE points from one Gram
    matrix (fitted lazily, one B in memory at a time)."""
    for kind, params in points:
        if kind == "implicit":
            started = time.perf_counter()
            yield kind, params, fit_lists_model(kind, params, train), time.perf_counter() - started
    layouts: dict[tuple, list[EASEParams]] = {}
    for kind, params in points:
        if kind == "ease":
            layouts.setdefault(params.layout, []).append(params)
    for group in layouts.values():
        started = time.perf_counter()
        rows = liked(train, group[0].min_rating).select("user_id", "movie_id")
        for params, model in zip(group, EASE(group[0]).fit_each(rows, group)):
            yield "ease", params, model, time.perf_counter() - started
            started = time.perf_counter()


def _describe(kind: str, params: ALSParams | EASEParams) -> str:
    if kind == "ease":
        return f"EASE reg {params.reg:g}, liked >= {params.min_rating:g}"
    return f"implicit ALS rank {params.rank}, reg {params.reg:g}, alpha {params.alpha:g}, {params.max_iter} it."


def list_point(kind: str, params: ALSParams | EASEParams) -> dict:
    """A lists point's LIST_POINT_NAMES columns: what names it in a table, and in candidates.json."""
    implicit = kind == "implicit"
    return {"model": kind, "rank": params.rank if implicit else None, "reg": params.reg,
            "alpha": params.alpha if implicit else None, "max_iter": params.max_iter if implicit else None,
            "min_rating": LIKED_MIN_RATING if implicit else params.min_rating}


def point_key(row: dict) -> tuple:
    """What identifies a lists point in a row of any table of them (validation, test, candidates.json)."""
    return tuple(row[name] for name in LIST_POINT_NAMES)


def list_points_frame(spark: SparkSession, rows: list[dict]) -> DataFrame:
    schema = ", ".join(f"{name} {kind}" for name, kind in LIST_POINT_COLUMNS)
    return spark.createDataFrame([tuple(row[name] for name, _ in LIST_POINT_COLUMNS) for row in rows], schema)


def lists_markdown_table(result: ListsTuneResult) -> str:
    """The lists grid by validation NDCG@10 (the chosen point first, in bold), then the test line."""
    lines = ["| model | rank | reg | alpha | iters | liked >= | val NDCG@10 | val precision@10 | fit s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for i, row in enumerate(sorted(result.points, key=lambda row: -row["validation_ndcg"])):
        name = f"**{row['model']}** (chosen)" if i == 0 else row["model"]
        cells = [row["rank"], f"{row['reg']:g}", None if row["alpha"] is None else f"{row['alpha']:g}",
                 row["max_iter"], f"{row['min_rating']:g}"]
        lines.append(f"| {name} | " + " | ".join("" if c is None else str(c) for c in cells) +
                     f" | {row['validation_ndcg']:.4f} | {row['validation_precision']:.4f} | {row['fit_s']:.1f} |")
    fit_count, validation_count = result.validation_counts
    lines += ["", f"Validation: {fit_count:,} ratings fitted, {validation_count:,} scored (carved from training). "
              f"Chosen point refitted on all the training ratings: test NDCG@10 **{result.test['ndcg@10']:.4f}**, "
              f"precision@10 {result.test['precision@10']:.4f}."]
    return "\n".join(lines) + "\n"
