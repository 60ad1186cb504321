"""The bias baseline scored on a split, as `mfspark baseline` reports it: rating metrics against the global
mean, ranking metrics of the model's own top-N lists (`BiasModel.recommend_for_users`, the lists the
pipeline's evaluate stage scores), and the search of its damping on a validation carve of the training part."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from mfspark.evaluation.metrics import DEFAULT_THRESHOLD, held_out_ranking, rating_metrics
from mfspark.evaluation.split import Split, cold_start_counts, make_splits
from mfspark.models.bias import BiasModel, BiasParams, tune

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


def validation_carve(train: DataFrame, split_kind: str, validation_fraction: float, seed: int) -> Split:
    """Validation from training, split the same way as the test (temporal stays temporal), seeded seed + 1."""
    kind = "temporal" if split_kind == "temporal" else "random"
    return make_splits(train, kind, test_fraction=validation_fraction, seed=seed + 1)[0]


def evaluate_split(split: Split, params: BiasParams, top_k: int,
                   relevance_threshold: float = DEFAULT_THRESHOLD) -> tuple[BiasModel, dict]:
    """The baseline fitted on split.train and scored on split.test: RMSE, MAE, the global mean's RMSE and
    (top_k > 0) the ranking metrics of its top-k lists (`held_out_ranking` of `BiasModel.recommend_for_users`,
    as the pipeline's evaluate stage scores them); timings and cold-start counts."""
    started = time.perf_counter()
    train, test = split.train.persist(), split.test.persist()
    counts = cold_start_counts(Split(split.name, train, test))
    model = BiasModel.fit(train, params)
    fitted = time.perf_counter()
    result = {"split": split.name, "counts": counts, "mu": model.mu}
    result.update({k: v for k, v in rating_metrics(model.predict(test)).items() if k != "count"})
    result["global_mean_rmse"] = rating_metrics(test.withColumn("prediction", F.lit(model.mu)))["rmse"]
    if top_k > 0:
        result["ranking"] = held_out_ranking(model.recommend_for_users, Split(split.name, train, test), top_k,
                                             relevance_threshold)
    result["timings_s"] = {"fit": round(fitted - started, 3), "evaluate": round(time.perf_counter() - fitted, 3)}
    train.unpersist()  # the model's bias tables are checkpointed: they do not need the cached split
    test.unpersist()
    log.info("%s: RMSE %.4f (global mean %.4f), MAE %.4f", split.name, result["rmse"], result["global_mean_rmse"],
             result["mae"])
    return model, result


def tune_params(split: Split, params: BiasParams, split_kind: str, validation_fraction: float, seed: int,
                lambdas_u: list[float], lambdas_i: list[float]) -> tuple[BiasParams, dict]:
    """The (lambda_u, lambda_i) of the grid with the lowest RMSE on a validation carve of split.train
    (`validation_carve`), and the record of the search."""
    carved = validation_carve(split.train, split_kind, validation_fraction, seed)
    chosen, table = tune(carved.train, carved.test, lambdas_u, lambdas_i, params)
    return chosen, {"validation_fraction": validation_fraction, "chosen": {
        "lambda_u": chosen.lambda_u, "lambda_i": chosen.lambda_i}, "grid": table}
