"""Block-partitioned ALS: `estimator` (ALS, ALSModel), `blocks` (Spark plumbing), `inblock` and `solvers` (a
block's arrays and which kernel solves them), `kernels` (numeric loops)."""

from mfspark.models.als.estimator import ALS, ALSModel, ALSParams

__all__ = ["ALS", "ALSModel", "ALSParams"]
