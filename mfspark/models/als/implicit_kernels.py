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

Two solvers (`IMPLICIT_SOLVERS`), chosen once per fit (`ALSParams.implicit_solver`), as Spark's ALS.scala
chooses its `LeastSquaresNESolver` once:

* "cholesky": build the k x k matrix of each entity and solve it exactly: O(n_u k^2 + k^3) per entity, which
  at rank 64 is most of a half-step (n_u ~ 50 ratings: ~100k multiply-adds to build, ~44k to factor).
* "cg": a few conjugate-gradient steps on the same normal equations (Takacs, Pilaszy, Tikk 2011; the
  `implicit` library's `least_squares_cg`), warm-started from the entity's factors of the previous
  iteration. A never forms: A p = Y^T Y p + sum_i (c_i - 1)(y_i . p) y_i + reg n+ p costs
  O(k^2 + n_u k) (~10k multiply-adds for the example above), and each step needs one such product.
  The residual r = b - A x of the warm start needs one more and the honest objective of the x
  returned (sum_{p=1} c - 2 x.b + x^T A x without the shift, from A x formed once more) another, so
  three steps cost five products, ~3x less than the Cholesky solve at rank 64 and ~5x less at 128.
  As ALS converges the previous factors are close to the new optimum, so a few steps per
  half-step track it (each step cannot raise the entity's objective: CG minimises
  1/2 x^T A x - b.x over a growing Krylov space around the start). Worked example, rank 2, one
  user with one positive rating (c = 2) of y = (1, 0), Y^T Y = I, reg n+ = 1: A = I + (2-1) y y^T + I =
  diag(3, 2), b = 2 y = (2, 0). From x0 = (0, 0): r = p = (2, 0), A p = (6, 0), step r.r / p.Ap = 4/12,
  x = (2/3, 0), r = 0: exact in one step, as the error from the start lies along one eigenvector of A (in
  general CG is exact after as many steps as A has distinct eigenvalues, at most k). An entity with no
  ratings gets x = 0 (its exact solution, as Cholesky's), and one whose residual is already ~0 keeps
  its factors.
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

IMPLICIT_SOLVERS = ("cholesky", "cg")
# Below this squared residual norm an entity's system counts as solved (the `implicit` library's threshold).
CG_TOLERANCE = 1e-20


def solve_implicit_block(
    indptr: np.ndarray,
    cols: np.ndarray,
    ratings: np.ndarray,
    src_factors: np.ndarray,
    source_gram: np.ndarray,
    reg: float,
    alpha: float,
    nonnegative: bool = False,
    start: np.ndarray | None = None,
    cg_steps: int = 3,
) -> BlockSolution:
    """One implicit ALS half-step for a block (CSR as in `kernels.solve_block`).

    `source_gram` is Y^T Y over every source entity (not only this block's counterparts).
    `start` None: the exact (Cholesky, or NNLS when `nonnegative`) solve; else the "cg" solver:
    `cg_steps` conjugate-gradient steps from `start`, the block's factors before this half-step.
    `squared_error` is the block's weighted loss over all pairs, sum c (p - x.y)^2, of the factors
    returned, computed from the normal equations (sum_{p=1} c - 2 x.b + x^T A x), so it costs no
    extra pass; `penalty` is sum n+ |x|^2.
    """
    y = np.ascontiguousarray(src_factors)
    arrays = (np.asarray(indptr, dtype=np.int64), np.asarray(cols, dtype=np.int32),
              np.asarray(ratings, dtype=np.float32), y, np.ascontiguousarray(source_gram, dtype=np.float64))
    if start is None:
        factors = np.empty((len(indptr) - 1, y.shape[1]))
        loss, penalty = _solve_implicit_entities(*arrays, float(reg), float(alpha), bool(nonnegative), factors)
    else:
        if nonnegative:
            raise ValueError("the cg solver has no nonnegative form")
        factors = np.array(start, dtype=np.float64, order="C")  # updated in place
        if factors.shape != (len(indptr) - 1, y.shape[1]):
            raise ValueError(f"start has shape {factors.shape}, expected {(len(indptr) - 1, y.shape[1])}")
        loss, penalty = _cg_implicit_entities(*arrays, float(reg), float(alpha), int(cg_steps), factors)
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


@compiled()
def _cg_implicit_entities(indptr, cols, ratings, y, gram, reg, alpha, steps,
                          factors):  # pragma: no cover - compiled
    """`steps` CG steps per entity from its row of `factors`, in place; returns (weighted loss, penalty)."""
    k = y.shape[1]
    longest = 1
    for e in range(len(indptr) - 1):
        longest = max(longest, indptr[e + 1] - indptr[e])
    gathered, weights = np.empty((longest, k)), np.empty(longest)
    rhs, r, p, ap = np.empty(k), np.empty(k), np.empty(k), np.empty(k)
    loss = penalty = 0.0
    for e in range(len(indptr) - 1):
        lo, count = indptr[e], indptr[e + 1] - indptr[e]
        x = factors[e]
        if count == 0:  # no ratings: A = Y^T Y, b = 0, solved by 0
            x[:] = 0.0
            continue
        positives, confidence_sum = 0, 0.0
        rhs[:] = 0.0
        for j in range(count):
            rating = ratings[lo + j]
            weights[j] = alpha * abs(rating)  # c - 1
            row = y[cols[lo + j]]
            for q in range(k):
                gathered[j, q] = row[q]
            if rating > 0.0:
                positives += 1
                confidence_sum += 1.0 + weights[j]
                for q in range(k):
                    rhs[q] += (1.0 + weights[j]) * row[q]
        shift = reg * positives
        _apply_implicit(gram, gathered, weights, count, shift, x, r)  # r = b - A x
        for q in range(k):
            r[q] = rhs[q] - r[q]
            p[q] = r[q]
        rs_old = 0.0
        for q in range(k):
            rs_old += r[q] * r[q]
        for _ in range(steps):
            if rs_old < CG_TOLERANCE:
                break
            _apply_implicit(gram, gathered, weights, count, shift, p, ap)
            p_ap = 0.0
            for q in range(k):
                p_ap += p[q] * ap[q]
            step = rs_old / p_ap
            rs_new = 0.0
            for q in range(k):
                x[q] += step * p[q]
                r[q] -= step * ap[q]
                rs_new += r[q] * r[q]
            for q in range(k):
                p[q] = r[q] + rs_new / rs_old * p[q]
            rs_old = rs_new
        # the objective of the x returned: A x formed again, not the recursively updated residual
        _apply_implicit(gram, gathered, weights, count, 0.0, x, ap)
        x_b = x_ax = x_x = 0.0
        for q in range(k):
            x_b += x[q] * rhs[q]
            x_ax += x[q] * ap[q]
            x_x += x[q] * x[q]
        loss += confidence_sum - 2.0 * x_b + x_ax
        penalty += positives * x_x
    return loss, penalty


@compiled(inline=True)
def _apply_implicit(gram, gathered, weights, count, shift, v, out):  # pragma: no cover - compiled
    """out = (Y^T Y + sum_j (c_j - 1) y_j y_j^T + shift I) v, never forming the sum: O(k^2 + count k)."""
    k = len(v)
    for q in range(k):
        total = shift * v[q]
        for s in range(k):
            total += gram[q, s] * v[s]
        out[q] = total
    for j in range(count):
        along = 0.0
        for q in range(k):
            along += gathered[j, q] * v[q]
        along *= weights[j]
        for q in range(k):
            out[q] += along * gathered[j, q]


def gram_matrix(factors: np.ndarray) -> np.ndarray:
    """X^T X of a block's factors in float64: the block's share of the Gram its peers need."""
    f = np.asarray(factors, dtype=np.float64)
    return f.T @ f
