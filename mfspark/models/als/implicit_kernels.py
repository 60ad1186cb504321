"""Numeric kernel of implicit-feedback ALS (Hu, Koren, Volinsky 2008), with MLlib's conventions.

Nothing here knows about Spark. A rating r of (u, i) is an observation of strength |r|:
preference p = 1 if r > 0 else 0, confidence c = 1 + alpha * |r|; every pair not rated has
p = 0, c = 1. The objective (MLlib's `implicitPrefs=true`, regularisation scaled by each
entity's count of positive ratings) is

    sum over ALL (u,i) of c_ui (p_ui - x_u . y_i)^2 + reg * (sum_u n+_u |x_u|^2 + sum_i n+_i |y_i|^2)

and the normal equations of entity u, with Y^T Y the Gram of *every* source factor:

    (Y^T Y + sum_{i rated} (c_ui - 1) y_i y_i^T + reg * n+_u * I) x_u = sum_{i: r_ui > 0} c_ui y_i

Y^T Y is the same for every entity of a half-step, so the per-entity work stays proportional
to its own ratings (the trick of the paper); it arrives summed from the per-block Grams the
source blocks send with their factors.
"""

from __future__ import annotations

import numpy as np

from mfspark.models.als.kernels import (
    BlockSolution,
    entity_buffers,
    quadratic_form,
    solve_regularised,
)
from mfspark.runtime.compiled import compiled


def solve_implicit_block(
    indptr: np.ndarray,
    cols: np.ndarray,
    ratings: np.ndarray,
    src_factors: np.ndarray,
    source_gram: np.ndarray,
    reg: float,
    alpha: float,
    nonnegative: bool = False,
) -> BlockSolution:
    """One implicit ALS half-step for a block (CSR as in `kernels.solve_block`).

    `source_gram` is Y^T Y over every source entity (not only this block's counterparts).
    `squared_error` is the block's weighted loss over all pairs, sum c (p - x.y)^2, computed
    from the normal equations (sum_{p=1} c - 2 x.b + x^T A x), so it costs no extra pass;
    `penalty` is sum n+ |x|^2.
    """
    y = np.ascontiguousarray(src_factors)
    factors = np.empty((len(indptr) - 1, y.shape[1]))
    loss, penalty = _solve_implicit_entities(
        np.asarray(indptr, dtype=np.int64), np.asarray(cols, dtype=np.int32), np.asarray(ratings, dtype=np.float32),
        y, np.ascontiguousarray(source_gram, dtype=np.float64), float(reg), float(alpha), bool(nonnegative), factors)
    return BlockSolution(factors, max(loss, 0.0), penalty)


@compiled()
def _solve_implicit_entities(indptr, cols, ratings, y, gram, reg, alpha, nonnegative,
                             factors):  # pragma: no cover - compiled
    """Solve every entity into `factors`; returns (weighted loss, penalty)."""
    k = y.shape[1]
    gathered, weights, lhs, factor, rhs = entity_buffers(indptr, k)
    loss = penalty = 0.0
    for e in range(len(indptr) - 1):
        lo, count = indptr[e], indptr[e + 1] - indptr[e]
        positives, confidence_sum = 0, 0.0
        for p in range(k):
            rhs[p] = 0.0
        for j in range(count):
            r = ratings[lo + j]
            weights[j] = alpha * abs(r)  # c - 1: the extra weight of an observed pair
            row = y[cols[lo + j]]
            for p in range(k):
                gathered[p, j] = row[p]
            if r > 0.0:  # preference 1: contributes c * y to the right-hand side
                positives += 1
                confidence_sum += 1.0 + weights[j]
                for p in range(k):
                    rhs[p] += (1.0 + weights[j]) * row[p]
        for p in range(k):
            for q in range(p + 1):
                total = 0.0
                for j in range(count):
                    total += weights[j] * gathered[p, j] * gathered[q, j]
                lhs[p, q] = lhs[q, p] = gram[p, q] + total
        shift = reg * positives
        x = factors[e]
        solve_regularised(lhs, rhs, shift, nonnegative, factor, x)
        x_b = x_x = 0.0
        for p in range(k):
            x_b += x[p] * rhs[p]
            x_x += x[p] * x[p]
        # sum over all pairs of c (p - x.y)^2 = sum_{p=1} c - 2 x.b + x^T (lhs - shift I) x
        loss += confidence_sum - 2.0 * x_b + quadratic_form(lhs, x, k) - shift * x_x
        penalty += positives * x_x
    return loss, penalty


def gram_matrix(factors: np.ndarray) -> np.ndarray:
    """X^T X of a block's factors in float64: the block's share of the Gram its peers need."""
    f = np.asarray(factors, dtype=np.float64)
    return f.T @ f
