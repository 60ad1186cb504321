"""ALS numeric kernels against dense numpy references (no Spark)."""

import numpy as np
import pytest
from scipy.optimize import nnls

from mfspark.models.als import kernels as K
from mfspark.runtime.compiled import compiled


def random_block(n_dst=9, n_src=6, density=0.6, seed=0):
    """A small rating block in CSR form plus the same ratings as a dense masked matrix."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n_dst, n_src)) < density
    mask[np.arange(n_dst), rng.integers(0, n_src, n_dst)] = True  # every entity has a rating
    dense = np.where(mask, rng.integers(1, 11, (n_dst, n_src)) / 2.0, 0.0)
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))])
    cols = np.nonzero(mask)[1].astype(np.int32)
    ratings = dense[mask].astype(np.float32)
    return indptr, cols, ratings, mask, dense


def ridge_reference(mask, dense, y, reg):
    """Closed-form ALS-WR solution, one entity at a time."""
    out = []
    for e in range(mask.shape[0]):
        ys, r = y[mask[e]], dense[e, mask[e]]
        out.append(np.linalg.solve(ys.T @ ys + reg * len(r) * np.eye(y.shape[1]), ys.T @ r))
    return np.array(out)


@pytest.mark.parametrize("rank", [3, 40])
def test_half_step_equals_closed_form_ridge_solution(rank):
    indptr, cols, ratings, mask, dense = random_block(n_dst=30, n_src=50, density=0.5)
    y = np.random.default_rng(1).standard_normal((50, rank))
    solution = K.solve_block(indptr, cols, ratings, y, reg=0.1)
    np.testing.assert_allclose(solution.factors, ridge_reference(mask, dense, y, 0.1), rtol=1e-6, atol=1e-8)


def test_float32_factors_as_shipped_give_the_float64_solution_to_float32_precision():
    indptr, cols, ratings, mask, dense = random_block(n_dst=30, n_src=50, density=0.5)
    y = np.random.default_rng(1).standard_normal((50, 10)).astype(np.float32)
    solution = K.solve_block(indptr, cols.astype(np.uint16), ratings.astype(np.float16), y, reg=0.1)
    np.testing.assert_allclose(solution.factors, ridge_reference(mask, dense, y.astype(np.float64), 0.1),
                               rtol=1e-5, atol=1e-6)


def test_normal_equations_of_one_entity_equal_the_dense_gram_and_rhs():
    indptr, cols, ratings, mask, dense = random_block(n_dst=12, n_src=8)
    y = np.random.default_rng(2).standard_normal((8, 5))
    e, k = 3, 5
    gathered, values, gram, rhs = np.empty((k, 8)), np.empty(8), np.empty((k, k)), np.empty(k)
    sum_r2 = K.normal_equations(indptr[e], indptr[e + 1], cols, ratings, y, gathered, values, gram, rhs)
    ys, r = y[mask[e]], dense[e, mask[e]]
    np.testing.assert_allclose(gram, ys.T @ ys, atol=1e-12)
    np.testing.assert_allclose(rhs, ys.T @ r, atol=1e-12)
    assert sum_r2 == pytest.approx(float(r @ r), rel=1e-12)


def test_objective_terms_come_from_the_normal_equations():
    indptr, cols, ratings, mask, dense = random_block(n_dst=20, n_src=10)
    y = np.random.default_rng(3).standard_normal((10, 4))
    solution = K.solve_block(indptr, cols, ratings, y, reg=0.05)
    x = ridge_reference(mask, dense, y, 0.05)
    np.testing.assert_allclose(solution.factors, x, rtol=1e-6)
    residual = np.where(mask, dense - x @ y.T, 0.0)
    assert solution.squared_error == pytest.approx(float((residual**2).sum()), rel=1e-9)
    assert solution.penalty == pytest.approx(float((mask.sum(axis=1) * (x**2).sum(axis=1)).sum()), rel=1e-9)


def test_cholesky_solve_refuses_a_matrix_that_is_not_positive_definite():
    x, factor = np.empty(2), np.empty((2, 2))
    assert K.cholesky_solve(np.array([[4.0, 2.0], [2.0, 3.0]]), np.array([2.0, 1.0]), factor, x)
    np.testing.assert_allclose(x, np.linalg.solve([[4.0, 2.0], [2.0, 3.0]], [2.0, 1.0]))
    assert not K.cholesky_solve(np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([1.0, 1.0]), factor, x)


def test_nonnegative_solution_matches_scipy_nnls():
    rng = np.random.default_rng(4)
    c = rng.standard_normal((5, 12, 6))
    d = rng.standard_normal((5, 12))
    x = np.empty((5, 6))
    for i in range(5):
        K.nonnegative_solve(c[i].T @ c[i], c[i].T @ d[i], x[i])
    expected = np.array([nnls(c[i], d[i])[0] for i in range(5)])
    assert (x >= 0).all() and (expected == 0).any()
    np.testing.assert_allclose(x, expected, atol=1e-6)


def test_nonnegative_half_step_is_nonnegative_and_equals_unconstrained_when_inactive():
    indptr, cols, ratings, mask, dense = random_block()
    y = np.abs(np.random.default_rng(5).standard_normal((6, 3)))
    constrained = K.solve_block(indptr, cols, ratings, y, reg=0.1, nonnegative=True).factors
    free = ridge_reference(mask, dense, y, 0.1)
    assert (constrained >= 0).all()
    inactive = (free > 0).all(axis=1)
    assert inactive.any() and not inactive.all()
    np.testing.assert_allclose(constrained[inactive], free[inactive], atol=1e-7)


def test_zero_reg_on_rank_deficient_grams_gives_minimum_norm_solution():
    indptr, cols, ratings = np.array([0, 1]), np.array([0], dtype=np.int32), np.array([3.0], dtype=np.float32)
    y = np.array([[1.0, 1.0]])
    x = K.solve_block(indptr, cols, ratings, y, reg=0.0).factors
    np.testing.assert_allclose(x, [[1.5, 1.5]], rtol=1e-6)


def test_compact_uint16_cols_reach_the_last_of_65536_sources():
    m, k = 65_536, 4
    y = np.random.default_rng(5).standard_normal((m, k))
    indptr, ratings = np.array([0, 3, 4]), np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    cols = np.array([65_535, 0, 7, 65_535], dtype=np.uint16)
    wide = K.solve_block(indptr, cols.astype(np.int64), ratings, y, reg=0.1).factors
    np.testing.assert_array_equal(K.solve_block(indptr, cols, ratings, y, reg=0.1).factors, wide)
    ys = y[[65_535, 0, 7]]
    np.testing.assert_allclose(wide[0], np.linalg.solve(ys.T @ ys + 0.3 * np.eye(k), ys.T @ [1.0, 2.0, 3.0]))


def test_initial_factors_depend_only_on_seed_and_id():
    ids = np.array([5, 17, 3, 99_999])
    full = K.initial_factors(ids, 8, seed=42)
    np.testing.assert_array_equal(K.initial_factors(ids[[2, 0]], 8, seed=42), full[[2, 0]])
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1.0)
    assert not np.allclose(K.initial_factors(ids, 8, seed=43), full)
    assert (K.initial_factors(ids, 8, seed=42, nonnegative=True) >= 0).all()
    draws = K.initial_factors(np.arange(20_000), 1, seed=7)[:, 0]
    assert abs(np.mean(np.sign(draws))) < 0.05  # symmetric around 0, not degenerate


def test_nan_input_gives_nan_factors_not_leftover_memory():
    indptr, cols = np.array([0, 2, 3]), np.array([0, 1, 1], dtype=np.int32)
    ratings = np.array([np.nan, 4.0, 3.0], dtype=np.float32)
    factors = K.solve_block(indptr, cols, ratings, np.eye(2), reg=0.1).factors
    assert np.isnan(factors[0]).all()
    np.testing.assert_allclose(factors[1], [0.0, 3.0 / 1.1])


def test_kernels_compile_in_memory_where_numba_cannot_write_its_cache(monkeypatch):
    from numba.core import caching

    def unwritable(self):
        raise PermissionError("read-only cache directory")

    monkeypatch.setattr(caching._CacheLocator, "ensure_cache_path", unwritable)
    kernel = compiled()(lambda x: x + 1.0)
    assert kernel(1.0) == 2.0
    assert type(kernel._cache).__name__ == "NullCache"


def biased_objective(mask, dense, mu, x, y, z, reg, bias_reg, weight):
    """The learned-bias (and implicit) ALS objective, dense: x, y are [factors, bias] rows, z implicit factors."""
    k = x.shape[1] - 1
    prediction = mu + x[:, k:] + y[:, k].T[None, :] + x[:, :k] @ y[:, :k].T
    error = (np.where(mask, dense - prediction, 0.0) ** 2).sum()
    implicit = weight * ((mask - x[:, :k] @ z.T) ** 2).sum() if z is not None else 0.0
    penalty = reg * ((mask.sum(1) * (x[:, :k] ** 2).sum(1)).sum() + (mask.sum(0) * (y[:, :k] ** 2).sum(1)).sum())
    penalty += bias_reg * ((x[:, k] ** 2).sum() + (y[:, k] ** 2).sum())
    if z is not None:
        penalty += reg * (mask.sum(0) * (z**2).sum(1)).sum()
    return error, implicit, penalty


def stacked_least_squares(design, targets, penalties):
    """argmin |design w - targets|^2 + sum penalties_p w_p^2, as one lstsq over stacked rows."""
    rows = np.vstack([design, np.diag(np.sqrt(penalties))])
    return np.linalg.lstsq(rows, np.concatenate([targets, np.zeros(len(penalties))]), rcond=None)[0]


@pytest.mark.parametrize("scale_reg", [True, False])
def test_learned_bias_half_step_solves_factors_and_bias_jointly(scale_reg):
    indptr, cols, ratings, mask, dense = random_block(n_dst=25, n_src=30, density=0.4)
    rank, mu, reg, bias_reg = 4, 3.2, 0.1 if scale_reg else 1.5, 2.5
    src = np.random.default_rng(6).standard_normal((30, rank + 1))  # [y, b_i]
    solution = K.solve_biased_block(indptr, cols, ratings, src, rank, mu, reg, bias_reg, scale_reg=scale_reg)
    shifts = reg * mask.sum(1) if scale_reg else np.full(25, reg)  # ALS-WR's reg * n_u, or a constant reg
    for e in range(25):
        rated = mask[e]
        design = np.hstack([src[rated, :rank], np.ones((rated.sum(), 1))])
        expected = stacked_least_squares(design, dense[e, rated] - mu - src[rated, rank],
                                         [shifts[e]] * rank + [bias_reg])
        np.testing.assert_allclose(solution.factors[e], expected, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(solution.source_sums, mask.astype(float) @ src[:, :rank], atol=1e-12)
    x = solution.factors
    prediction = mu + x[:, rank:] + src[:, rank][None, :] + x[:, :rank] @ src[:, :rank].T
    assert solution.squared_error == pytest.approx(float((np.where(mask, dense - prediction, 0) ** 2).sum()),
                                                   rel=1e-9)
    assert solution.penalty == pytest.approx(
        float((shifts * (x[:, :rank] ** 2).sum(1)).sum()) + bias_reg * float((x[:, rank] ** 2).sum()))


def test_implicit_user_half_step_also_fits_the_whole_rated_indicator_row():
    indptr, cols, ratings, mask, dense = random_block(n_dst=20, n_src=15, density=0.4, seed=2)
    rank, mu, reg, bias_reg, weight = 3, 3.0, 0.05, 4.0, 0.7
    rng = np.random.default_rng(7)
    y, z = rng.standard_normal((15, rank + 1)), rng.standard_normal((15, rank))
    solution = K.solve_biased_block(indptr, cols, ratings, np.hstack([y, z]), rank, mu, reg, bias_reg, weight,
                                    z.T @ z)
    for e in range(20):
        rated = mask[e]
        # ratings rows [y_i, 1] -> r - mu - b_i; every item's indicator row sqrt(w) [z_j, 0] -> sqrt(w) 1[rated]
        design = np.vstack([np.hstack([y[rated, :rank], np.ones((rated.sum(), 1))]),
                            np.sqrt(weight) * np.hstack([z, np.zeros((15, 1))])])
        targets = np.concatenate([dense[e, rated] - mu - y[rated, rank], np.sqrt(weight) * rated])
        expected = stacked_least_squares(design, targets, [reg * rated.sum()] * rank + [bias_reg])
        np.testing.assert_allclose(solution.factors[e], expected, rtol=1e-7, atol=1e-9)
    error, _, _ = biased_objective(mask, dense, mu, solution.factors, y, z, 0.0, 0.0, weight)
    x = solution.factors
    implicit = weight * ((mask - x[:, :rank] @ z.T) ** 2).sum()
    penalty = reg * (mask.sum(1) * (x[:, :rank] ** 2).sum(1)).sum() + bias_reg * (x[:, rank] ** 2).sum()
    assert solution.squared_error == pytest.approx(error, rel=1e-9)
    assert solution.penalty == pytest.approx(implicit + penalty, rel=1e-9)


@pytest.mark.parametrize("scale_reg", [True, False])
def test_implicit_item_factors_fit_the_indicator_column_against_every_user(scale_reg):
    _, _, _, mask, _ = random_block(n_dst=12, n_src=18, density=0.3, seed=3)  # items x users
    rank, weight, reg = 4, 0.5, 0.2
    x = np.random.default_rng(8).standard_normal((18, rank))
    z, penalty = K.solve_rated_factors(mask.astype(float) @ x, mask.sum(1), x.T @ x, weight, reg, scale_reg)
    shifts = reg * mask.sum(1) if scale_reg else np.full(12, reg)
    for j in range(12):
        expected = stacked_least_squares(np.sqrt(weight) * x, np.sqrt(weight) * mask[j], [shifts[j]] * rank)
        np.testing.assert_allclose(z[j], expected, rtol=1e-7, atol=1e-9)
    assert penalty == pytest.approx(float((shifts * (z**2).sum(1)).sum()))


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_alternating_learned_bias_fit_decreases_the_exact_objective_every_half_step(weight):
    _, _, _, mask, dense = random_block(n_dst=30, n_src=20, density=0.35, seed=4)
    rank, reg, bias_reg = 3, 0.05, 1.0
    mu = dense[mask].mean()

    def csr(m):
        return np.concatenate([[0], np.cumsum(m.sum(1))]), np.nonzero(m)[1].astype(np.int32), \
            (dense if m is mask else dense.T)[m].astype(np.float32)

    users, items = csr(mask), csr(mask.T)
    x = np.hstack([K.initial_factors(np.arange(30), rank, 1), np.zeros((30, 1))])
    y, z = np.zeros((20, rank + 1)), np.zeros((20, rank))
    history = []
    for _ in range(6):
        solved = K.solve_biased_block(*items, x, rank, mu, reg, bias_reg)
        y = solved.factors
        if weight:
            z, _ = K.solve_rated_factors(solved.source_sums, mask.sum(0), x[:, :rank].T @ x[:, :rank], weight, reg)
        history.append(sum(biased_objective(mask, dense, mu, x, y, z if weight else None, reg, bias_reg, weight)))
        solved = K.solve_biased_block(*users, np.hstack([y, z]), rank, mu, reg, bias_reg, weight,
                                      z.T @ z if weight else None)
        x = solved.factors
        error, implicit, penalty = biased_objective(mask, dense, mu, x, y, z if weight else None, reg, bias_reg, weight)
        history.append(error + implicit + penalty)
        assert solved.squared_error == pytest.approx(error, rel=1e-9)
    assert all(later <= earlier * (1 + 1e-12) for earlier, later in zip(history, history[1:]))
    assert history[-1] < 0.9 * history[1]


def test_pairs_without_a_rating_count_only_as_rated_in_the_implicit_term():
    indptr, cols, ratings, mask, dense = random_block(n_dst=15, n_src=12, density=0.5, seed=5)
    unrated = np.zeros_like(mask)
    unrated[mask] = np.random.default_rng(9).random(mask.sum()) < 0.3  # known pairs, rating not known
    ratings = np.where(unrated[mask], np.nan, ratings).astype(np.float32)
    rank, mu, reg, bias_reg, weight = 3, 3.0, 0.1, 2.0, 0.5
    rng = np.random.default_rng(10)
    y, z = rng.standard_normal((12, rank + 1)), rng.standard_normal((12, rank))
    solution = K.solve_biased_block(indptr, cols, ratings, np.hstack([y, z]), rank, mu, reg, bias_reg, weight,
                                    z.T @ z)
    for e in range(15):
        rated = mask[e] & ~unrated[e]
        design = np.vstack([np.hstack([y[rated, :rank], np.ones((rated.sum(), 1))]),
                            np.sqrt(weight) * np.hstack([z, np.zeros((12, 1))])])
        targets = np.concatenate([dense[e, rated] - mu - y[rated, rank], np.sqrt(weight) * mask[e]])
        expected = stacked_least_squares(design, targets, [reg * rated.sum()] * rank + [bias_reg])
        np.testing.assert_allclose(solution.factors[e], expected, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(solution.rated_counts, (mask & ~unrated).sum(1))
    np.testing.assert_allclose(solution.source_sums, mask.astype(float) @ y[:, :rank], atol=1e-12)


@pytest.mark.parametrize("side", [0, 1])
def test_ratings_are_packed_by_the_compiled_block_grouping_as_by_hash_and_stable_sort(side, monkeypatch):
    """ALS packs its ratings by destination block with the top-N engine's compiled `group_by_block`: the chunks
    equal those of the numpy hash (`block_of`) and a stable sort by block, rows in input order within a block."""
    import pickle

    import pyarrow as pa

    from mfspark.models.als import blocks
    from mfspark.models.als.inblock import block_of

    class Task:
        @staticmethod
        def partitionId() -> int:
            return 0

    monkeypatch.setattr(blocks.TaskContext, "get", staticmethod(lambda: Task))
    monkeypatch.setattr(blocks, "PACK_CHUNK_RATINGS", 7)  # several chunks per block
    rng = np.random.default_rng(side)
    users = rng.integers(1, 2**31 - 1, 300).astype(np.int32)
    users[50:90] = users[50]  # a run of one user, as ratings usually arrive
    items = rng.integers(1, 5000, 300).astype(np.int32)
    ratings = (rng.integers(1, 11, 300) / 2).astype(np.float32)
    batch = pa.RecordBatch.from_arrays([pa.array(users), pa.array(items), pa.array(ratings)], ["u", "i", "r"])
    num_user_blocks, num_item_blocks = 5, 3
    got = [(block, pickle.loads(payload))
           for block, payload in blocks._pack_by_block(iter([batch]), side, num_user_blocks, num_item_blocks)]

    dst, src, num_dst, num_src = (users, items, num_user_blocks, num_item_blocks) if side == 0 \
        else (items, users, num_item_blocks, num_user_blocks)
    dst_block, src_block = block_of(dst, num_dst), block_of(src, num_src)
    order = np.argsort(dst_block, kind="stable")
    expected = []
    for block in range(num_dst):
        rows = order[dst_block[order] == block]
        expected += [(block, rows[lo:lo + 7]) for lo in range(0, len(rows), 7)]
    assert [block for block, _ in got] == [block for block, _ in expected]
    for (_, arrays), (_, rows) in zip(got, expected):
        for value, want in zip(arrays, (dst[rows], src_block[rows].astype(np.uint16), src[rows], ratings[rows])):
            np.testing.assert_array_equal(value, want)
