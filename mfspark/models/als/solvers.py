"""What one block of a half-step solves, on numpy arrays: the choice of kernel for the model (plain ALS-WR,
learned biases, the rated indicator (who rated what), implicit feedback) over the block's in-block (`inblock.InBlock`).

Spark-free, as the solver trait of MLlib's ALS.scala: `blocks` runs these solves inside Spark tasks, and the
single-node study (`scripts/studies/study_als_accuracy.py`) runs the same solves on a whole side in one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mfspark.models.als.implicit_kernels import gram_matrix, solve_implicit_block
from mfspark.models.als.inblock import InBlock
from mfspark.models.als.kernels import solve_biased_block, solve_block, solve_rated_factors


@dataclass(frozen=True)
class HalfStep:
    """What a side solves and the columns its factor rows carry.

    Plain ALS-WR: rows are the rank factors. Learned biases: rows are [factors, bias] and the
    bias rides to the other side as one more routed column, so the layout and the one stage
    per half-step stay as they are. Rated-indicator model (`rated` "rows" for users, "columns"
    for items): item rows also carry their rated factors z, and every block sends the
    other side its part of the Gram the rated-indicator terms need (users X^T X, items Z^T Z;
    rank x rank per message), which the receiving block sums over all its peers. With rated
    "both" each side does both: its rows carry [factors, bias, rated factors], its solve fits its
    rated-indicator rows against the other side's rated factors and then solves its own rated
    factors, and its messages carry both Grams (2 x rank x rank); the logged objective then counts the
    items' indicator term before the users' half-step moves v (exact for the users' side).
    `scale_reg` False: constant factor reg instead of ALS-WR's reg * n (learned biases only;
    `kernels.solve_biased_block`). Implicit
    feedback (`alpha`, MLlib's implicitPrefs): rows are the rank factors, and every block sends
    its part of X^T X (users) or Y^T Y (items) the same way. `implicit_solver` "cg" (implicit feedback
    only): `cg_steps` conjugate-gradient steps from the block's previous factors instead of the exact
    solve (`implicit_kernels`), so its half-step also reads those (`warm`).
    """

    rank: int
    reg: float
    nonnegative: bool = False
    learned_biases: bool = False
    mu: float = 0.0
    bias_reg: float = 0.0
    rated_weight: float = 0.0
    rated: str | None = None  # who-rated-what indicator: None, "rows" (users), "columns" (items) or "both"
    alpha: float | None = None  # implicit feedback: confidence 1 + alpha |r| (`implicit_kernels`)
    scale_reg: bool = True
    implicit_solver: str = "cholesky"  # implicit feedback: "cholesky" or "cg" (`implicit_kernels.IMPLICIT_SOLVERS`)
    cg_steps: int = 3

    @property
    def warm(self) -> bool:
        """Whether a solve starts from the block's previous factors (then `solve` needs them)."""
        return self.alpha is not None and self.implicit_solver == "cg"

    @property
    def width(self) -> int:
        """Columns of this side's factor rows."""
        if not self.learned_biases:
            return self.rank
        return self.rank + 1 + (self.rank if self.rated in ("columns", "both") else 0)

    def initial(self, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Starting rows from starting factors (bias and rated factors 0), and their Gram if sent."""
        rows = np.hstack([factors, np.zeros((len(factors), self.width - self.rank))])
        gram = gram_matrix(factors.astype(np.float32)) if self.rated or self.alpha is not None else None
        if self.rated == "both":
            gram = np.stack([gram, np.zeros_like(gram)])
        return rows, gram

    def solve(self, in_block: InBlock, stack: np.ndarray, source_gram: np.ndarray | None,
              previous: np.ndarray | None = None):
        """(new rows, rating counts, Gram to send, squared error, weighted penalty) of a block; `previous`: its
        rows before this half-step, which a `warm` solve starts from."""
        if self.alpha is not None:
            result = solve_implicit_block(in_block.indptr, in_block.cols, in_block.ratings, stack, source_gram,
                                          self.reg, self.alpha, self.nonnegative,
                                          previous if self.warm else None, self.cg_steps)
            factors = result.factors.astype(np.float32)  # the Gram of the factors as shipped
            return factors, None, gram_matrix(factors), result.squared_error, self.reg * result.penalty
        if not self.learned_biases:
            result = solve_block(in_block.indptr, in_block.cols, in_block.ratings, stack, self.reg, self.nonnegative)
            return result.factors, None, None, result.squared_error, self.reg * result.penalty
        # The other side's Grams: of its factors (to solve rated factors), of its rated ones (indicator rows).
        factor_gram, rated_gram = source_gram if self.rated == "both" else (source_gram, source_gram)
        fits_indicator, has_rated_factors = self.rated in ("rows", "both"), self.rated in ("columns", "both")
        result = solve_biased_block(in_block.indptr, in_block.cols, in_block.ratings, stack, self.rank, self.mu,
                                    self.reg, self.bias_reg, self.rated_weight,
                                    rated_gram if fits_indicator else None, scale_reg=self.scale_reg)
        factors, penalty, gram = result.factors, result.penalty, None
        own_gram = factors[:, :self.rank].T @ factors[:, :self.rank]
        if self.rated == "rows":
            gram = own_gram
        if has_rated_factors:
            rated, rated_penalty = solve_rated_factors(result.source_sums, np.diff(in_block.indptr), factor_gram,
                                                       self.rated_weight, self.reg, self.scale_reg)
            factors, penalty, gram = np.hstack([factors, rated]), penalty + rated_penalty, rated.T @ rated
            if self.rated == "both":
                gram = np.stack([own_gram, gram])
        return factors, result.rated_counts, gram, result.squared_error, penalty


def half_steps(rank: int, reg: float, nonnegative: bool, learned_biases: bool = False, mu: float = 0.0,
               bias_reg_user: float = 0.0, bias_reg_item: float = 0.0,
               rated_weight: float = 0.0, alpha: float | None = None, rated_sides: str = "users",
               scale_reg: bool = True, implicit_solver: str = "cholesky", cg_steps: int = 3
               ) -> tuple[HalfStep, HalfStep]:
    """(user side, item side) half-steps of one model (`alpha`: implicit feedback, solved by `implicit_solver`)."""
    rated = rated_weight > 0
    both = rated and rated_sides == "both"
    user = HalfStep(rank, reg, nonnegative, learned_biases, mu, bias_reg_user, rated_weight,
                    "both" if both else "rows" if rated else None, alpha, scale_reg, implicit_solver, cg_steps)
    item = HalfStep(rank, reg, nonnegative, learned_biases, mu, bias_reg_item, rated_weight,
                    "both" if both else "columns" if rated else None, alpha, scale_reg, implicit_solver, cg_steps)
    return user, item
