"""Implicit-feedback ALS: the kernel and the Spark fit against dense numpy references of the HKV objective."""

import numpy as np
import pytest
from scipy.optimize import nnls

from mfspark.errors import ConfigError
from mfspark.models.als.estimator import ALS
from mfspark.models.als.implicit_kernels import gram_matrix, solve_implicit_block
from mfspark.models.als.kernels import initial_factors


def implicit_block(n_dst=12, n_src=9, density=0.5, seed=0):
    """A block of signed ratings (some <= 0: confidence without preference) as CSR and as a dense matrix."""
    rng = np.random.default_rng(seed)
    mask = rng.random((n_dst, n_src)) < density
    mask[np.arange(n_dst), rng.integers(0, n_src, n_dst)] = True
    dense = np.where(mask, rng.integers(-2, 11, (n_dst, n_src)) / 2.0, 0.0)
    indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))])
    return indptr, np.nonzero(mask)[1].astype(np.int32), dense[mask].astype(np.float32), mask, dense


def confidence_preference(mask, dense, alpha):
    """Dense C and P of every pair (unrated: c = 1, p = 0)."""
    return 1.0 + alpha * np.abs(np.where(mask, dense, 0.0)), (mask & (dense > 0)).astype(float)


def implicit_reference(mask, dense, y, reg, alpha):
    """x_u = (Y^T C_u Y + reg n+_u I)^-1 Y^T C_u p_u over the full dense matrix, one entity at a time."""
    c, p = confidence_preference(mask, dense, alpha)
    return np.array([np.linalg.solve(y.T @ (c[e][:, None] * y) + reg * p[e].sum() * np.eye(y.shape[1]),
                                     y.T @ (c[e] * p[e])) for e in range(len(mask))])


def implicit_objective(mask, dense, x, y, reg, alpha):
    c, p = confidence_preference(mask, dense, alpha)
    loss = (c * (p - x @ y.T) ** 2).sum()
    return loss, loss + reg * ((p.sum(1) * (x**2).sum(1)).sum() + (p.sum(0) * (y**2).sum(1)).sum())


@pytest.mark.parametrize("rank", [3, 25])
def test_implicit_half_step_solves_the_exact_normal_equations(rank):
    indptr, cols, ratings, mask, dense = implicit_block(n_dst=20, n_src=40)
    y = np.random.default_rng(1).standard_normal((40, rank))
    solution = solve_implicit_block(indptr, cols, ratings, y, gram_matrix(y), reg=0.1, alpha=2.0)
    x = implicit_reference(mask, dense, y, 0.1, 2.0)
    np.testing.assert_allclose(solution.factors, x, rtol=1e-6, atol=1e-8)
    c, p = confidence_preference(mask, dense, 2.0)
    assert solution.squared_error == pytest.approx((c * (p - x @ y.T) ** 2).sum(), rel=1e-8)
    assert solution.penalty == pytest.approx((p.sum(1) * (x**2).sum(1)).sum(), rel=1e-8)


def test_confidence_and_preference_follow_mllib_signs():
    # one user: a positive rating (c = 1 + alpha*3, p = 1), a negative one (c = 1 + alpha*2, p = 0), one unrated
    y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    solution = solve_implicit_block(np.array([0, 2]), np.array([0, 1], np.int32), np.array([3.0, -2.0], np.float32),
                                    y, gram_matrix(y), reg=0.5, alpha=1.0)
    lhs = y.T @ y + 3.0 * np.outer(y[0], y[0]) + 2.0 * np.outer(y[1], y[1]) + 0.5 * 1 * np.eye(2)
    np.testing.assert_allclose(solution.factors[0], np.linalg.solve(lhs, 4.0 * y[0]), rtol=1e-12)


def test_nonnegative_implicit_solution_is_the_constrained_optimum():
    indptr, cols, ratings, mask, dense = implicit_block(n_dst=6, n_src=10, seed=3)
    y = np.random.default_rng(4).standard_normal((10, 4))
    solution = solve_implicit_block(indptr, cols, ratings, y, gram_matrix(y), reg=0.1, alpha=1.5, nonnegative=True)
    c, p = confidence_preference(mask, dense, 1.5)
    for e in range(len(mask)):
        # min 1/2 x^T A x - b^T x, x >= 0  is  min |L^T x - L^-1 b|, x >= 0  for A = L L^T
        lower = np.linalg.cholesky(y.T @ (c[e][:, None] * y) + 0.1 * p[e].sum() * np.eye(4))
        expected, _ = nnls(lower.T, np.linalg.solve(lower, y.T @ (c[e] * p[e])))
        assert solution.factors[e].min() >= 0
        np.testing.assert_allclose(solution.factors[e], expected, atol=1e-6)


def cg_block(start_seed=2, rank=6):
    """A block, its source factors and Gram, a random start, and the exact solution (numpy)."""
    indptr, cols, ratings, mask, dense = implicit_block(n_dst=20, n_src=40)
    y = np.random.default_rng(1).standard_normal((40, rank))
    start = np.random.default_rng(start_seed).standard_normal((20, rank))
    return (indptr, cols, ratings, y, gram_matrix(y)), start, implicit_reference(mask, dense, y, 0.1, 2.0), mask, dense


def test_cg_converges_to_the_exact_solution_as_steps_grow():
    block, start, exact, mask, dense = cg_block()
    c, p = confidence_preference(mask, dense, 2.0)
    errors, losses = [], []
    for steps in (1, 2, 4, 8, 16):
        solution = solve_implicit_block(*block, reg=0.1, alpha=2.0, start=start, cg_steps=steps)
        errors.append(np.abs(solution.factors - exact).max())
        # the loss and penalty are those of the factors returned, not of the exact solution
        assert solution.squared_error == pytest.approx((c * (p - solution.factors @ block[3].T) ** 2).sum(), rel=1e-9)
        assert solution.penalty == pytest.approx((p.sum(1) * (solution.factors**2).sum(1)).sum(), rel=1e-9)
        losses.append(solution.squared_error + 0.1 * solution.penalty)
    assert errors == sorted(errors, reverse=True) and errors[0] > 0.1
    assert losses == sorted(losses, reverse=True)  # each step lowers every entity's objective
    np.testing.assert_allclose(solution.factors, exact, rtol=1e-8, atol=1e-8)  # 16 steps > rank 6: exact
    np.testing.assert_allclose(start, cg_block()[1])  # the start is not written to


def test_one_cg_step_from_the_exact_solution_stays_there():
    block, _, exact, _, _ = cg_block()
    for steps in (1, 3):
        solution = solve_implicit_block(*block, reg=0.1, alpha=2.0, start=exact, cg_steps=steps)
        np.testing.assert_allclose(solution.factors, exact, rtol=1e-9, atol=1e-10)


def test_cg_gives_an_entity_without_ratings_zero_factors():
    indptr, cols, ratings, y, gram = cg_block()[0]
    indptr = np.insert(indptr, 3, indptr[2])  # entity 2 now has no ratings
    start = np.random.default_rng(5).standard_normal((len(indptr) - 1, y.shape[1]))
    exact = solve_implicit_block(indptr, cols, ratings, y, gram, reg=0.1, alpha=2.0)
    solution = solve_implicit_block(indptr, cols, ratings, y, gram, reg=0.1, alpha=2.0, start=start, cg_steps=20)
    assert not solution.factors[2].any() and not exact.factors[2].any()
    np.testing.assert_allclose(solution.factors, exact.factors, rtol=1e-8, atol=1e-8)
    assert solution.squared_error == pytest.approx(exact.squared_error, rel=1e-9)


RATINGS_SCHEMA = "user_id int, movie_id int, rating float"


def dense_implicit_als(mask, dense, user_ids, item_ids, rank, reg, alpha, iterations, seed):
    """Reference implicit ALS in plain numpy: same start, items first, float32 between half-steps."""
    x = initial_factors(user_ids, rank, seed).astype(np.float32).astype(np.float64)
    y = initial_factors(item_ids, rank, seed + 1).astype(np.float32).astype(np.float64)
    for _ in range(iterations):
        y = implicit_reference(mask.T, dense.T, x, reg, alpha).astype(np.float32).astype(np.float64)
        x = implicit_reference(mask, dense, y, reg, alpha).astype(np.float32).astype(np.float64)
    return x, y


def signed_ratings(seed=0, n_users=11, n_items=8):
    _, _, _, mask, dense = implicit_block(n_users, n_items, seed=seed)
    user_ids, item_ids = np.arange(n_users) * 7 + 3, np.arange(n_items) * 11 + 2
    rows = [(int(user_ids[u]), int(item_ids[i]), float(dense[u, i])) for u, i in zip(*np.nonzero(mask))]
    return rows, mask, dense, user_ids, item_ids


def factors_by_id(frame):
    return {row.id: np.array(row.features) for row in frame.collect()}


def test_implicit_fit_equals_dense_numpy_implicit_als(spark):
    rows, mask, dense, user_ids, item_ids = signed_ratings()
    ratings = spark.createDataFrame(rows, RATINGS_SCHEMA)
    model = ALS(rank=3, reg=0.1, max_iter=4, num_user_blocks=3, num_item_blocks=2, seed=5, implicit=True,
                alpha=2.0).fit(ratings)
    x, y = dense_implicit_als(mask, dense, user_ids, item_ids, 3, 0.1, 2.0, 4, seed=5)
    users, items = factors_by_id(model.user_factors), factors_by_id(model.item_factors)
    np.testing.assert_allclose(np.array([users[u] for u in user_ids]), x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.array([items[i] for i in item_ids]), y, rtol=1e-4, atol=1e-5)
    objectives = [it.objective for it in model.history.iterations]
    assert objectives[-1] == pytest.approx(implicit_objective(mask, dense, x, y, 0.1, 2.0)[1], rel=1e-4)
    assert objectives == sorted(objectives, reverse=True)


def test_implicit_predictions_are_unclipped_preference_scores(spark):
    rows, *_ = signed_ratings(seed=1)
    ratings = spark.createDataFrame(rows, RATINGS_SCHEMA)
    model = ALS(rank=3, max_iter=2, seed=1, implicit=True, alpha=40.0).fit(ratings)
    users, items = factors_by_id(model.user_factors), factors_by_id(model.item_factors)
    pairs = spark.createDataFrame([(3, 2), (3, 999)], "user_id int, movie_id int")
    scored = {r.movie_id: r.prediction for r in model.predict(pairs).collect()}
    assert scored[2] == pytest.approx(float(users[3] @ items[2]), rel=1e-5)
    assert scored[999] == 0.0  # unknown movie: no preference seen


def test_implicit_needs_a_nonnegative_alpha_and_no_biases():
    with pytest.raises(ConfigError, match="alpha"):
        ALS(implicit=True, alpha=-1.0)
    with pytest.raises(ConfigError, match="no biases"):
        ALS(implicit=True, biases=True)
    with pytest.raises(ConfigError, match="implicit_solver"):
        ALS(implicit=True, implicit_solver="lu")
    with pytest.raises(ConfigError, match="cg_steps"):
        ALS(implicit=True, cg_steps=0)
    with pytest.raises(ConfigError, match="nonnegative factors need the exact implicit solver"):
        ALS(implicit=True, implicit_solver="cg", nonnegative=True)


def planted_implicit_ratings(seed=3, n_users=120, n_items=80, rank=3, density=0.12):
    """Ratings 1..5 on the pairs a planted low-rank preference makes likely."""
    rng = np.random.default_rng(seed)
    affinity = rng.standard_normal((n_users, rank)) @ rng.standard_normal((rank, n_items))
    rated = rng.random((n_users, n_items)) < density * (1 + np.tanh(affinity))
    stars = np.clip(np.round(3 + affinity), 1, 5)
    return [(int(u) + 1, int(i) + 1, float(stars[u, i])) for u, i in zip(*np.nonzero(rated))]


def test_implicit_objective_of_ours_and_mllib_agree_within_one_percent(spark):
    from pyspark.ml.recommendation import ALS as MLlibALS

    from mfspark.evaluation.mllib_reference import implicit_objective

    ratings = spark.createDataFrame(planted_implicit_ratings(), RATINGS_SCHEMA).cache()
    # run to convergence: after 15 iterations a slow start (seed 1) is still 4% above its final value
    ours = ALS(rank=4, reg=0.1, max_iter=40, seed=1, implicit=True, alpha=2.0).fit(ratings)
    mllib = MLlibALS(rank=4, regParam=0.1, maxIter=40, seed=1, implicitPrefs=True, alpha=2.0, userCol="user_id",
                     itemCol="movie_id", ratingCol="rating").fit(ratings)
    ours_objective = implicit_objective(ratings, ours.user_factors, ours.item_factors, 0.1, 2.0)
    mllib_objective = implicit_objective(ratings, mllib.userFactors, mllib.itemFactors, 0.1, 2.0)
    # the objective the fit logged is the one computed from its factors
    assert ours.history.iterations[-1].objective == pytest.approx(ours_objective, rel=1e-5)
    assert ours_objective == pytest.approx(mllib_objective, rel=0.01)
    ratings.unpersist()


def test_implicit_fold_in_equals_a_further_user_half_step(spark):
    """Folding a training user's ratings in solves that user against the final item factors and Y^T Y
    of every item, as one more user half-step would: the fit's last half-step solved the users, so
    it gives the user's fitted row back, and the dense closed form over the final item factors."""
    rows, mask, dense, user_ids, item_ids = signed_ratings(seed=2)
    ratings = spark.createDataFrame(rows, RATINGS_SCHEMA)
    model = ALS(rank=3, reg=0.1, max_iter=3, num_user_blocks=2, num_item_blocks=2, seed=1, implicit=True,
                alpha=2.0).fit(ratings)
    users, items = factors_by_id(model.user_factors), factors_by_id(model.item_factors)
    u = int(np.flatnonzero((mask & (dense <= 0)).any(axis=1))[0])  # a user with confidence but no preference
    user = int(user_ids[u])
    folded = model.folded_user([(m, r) for v, m, r in rows if v == user] + [(999_999, 4.0)])  # unknown movie
    assert folded.used == mask[u].sum() and folded.bias == 0.0
    further = implicit_reference(mask, dense, np.array([items[i] for i in item_ids], np.float64), 0.1, 2.0)[u]
    np.testing.assert_allclose(folded.factors, further, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(folded.factors, users[user], rtol=1e-5, atol=1e-6)


def test_cg_fit_reaches_the_cholesky_objective_within_one_percent(spark):
    """The cg solver (3 steps, each half-step from the side's previous factors, over several blocks and
    checkpoint segment boundaries) reaches the exact solver's objective and logs the objective of its factors."""
    from mfspark.evaluation.mllib_reference import implicit_objective

    ratings = spark.createDataFrame(planted_implicit_ratings(), RATINGS_SCHEMA).cache()
    common = dict(rank=4, reg=0.1, max_iter=12, seed=1, implicit=True, alpha=2.0, num_user_blocks=3,
                  num_item_blocks=2)
    exact = ALS(**common, implicit_solver="cholesky").fit(ratings)
    cg = ALS(**common, implicit_solver="cg", checkpoint_interval=5).fit(ratings)
    cg_objective = implicit_objective(ratings, cg.user_factors, cg.item_factors, 0.1, 2.0)
    assert cg.history.iterations[-1].objective == pytest.approx(cg_objective, rel=1e-5)
    assert cg_objective == pytest.approx(exact.history.iterations[-1].objective, rel=0.01)
    assert len(cg.history.iterations) == 12
    # a warm start (blocks re-partitioned from a model's factor tables) starts the cg half-steps too
    resumed = ALS(**{**common, "max_iter": 2}, implicit_solver="cg").fit(ratings, initial_model=cg)
    assert resumed.history.iterations[-1].objective <= cg.history.iterations[-1].objective * (1 + 1e-4)
    ratings.unpersist()
