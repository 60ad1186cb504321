"""Block-partitioned ALS: `estimator` (ALS, ALSModel), `blocks` (Spark plumbing), `kernels` (numeric loops)."""

from mfspark.models.als.estimator import ALS, ALSModel, ALSParams

__all__ = ["ALS", "ALSModel", "ALSParams"]
