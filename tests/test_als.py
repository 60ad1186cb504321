"""Block-partitioned ALS on Spark against a dense numpy ALS, plus the model API."""

import gc
import math
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from mfspark.models.als import blocks
from mfspark.models.als.estimator import ALS, ALSModel
from mfspark.models.als.inblock import assemble_in_block, block_of, out_block, unique_inverse
from mfspark.models.als.kernels import initial_factors
from mfspark.models.bias import fit_biases as _fit_biases

RATINGS_SCHEMA = "user_id int, movie_id int, rating float"


def small_ratings(seed=0, n_users=9, n_items=7, density=0.5):
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    mask[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    user_ids, item_ids = np.arange(n_users) * 7 + 3, np.arange(n_items) * 11 + 2
    dense = np.where(mask, rng.integers(1, 11, mask.shape) / 2.0, 0.0)
    rows = [(int(user_ids[u]), int(item_ids[i]), float(dense[u, i])) for u, i in zip(*np.nonzero(mask))]
    return rows, mask, dense, user_ids, item_ids


def dense_als(mask, dense, user_ids, item_ids, rank, reg, iterations, seed):
    """Reference ALS-WR in plain numpy, same start and order (items first), float32 between half-steps."""
    x = initial_factors(user_ids, rank, seed).astype(np.float32).astype(np.float64)
    y = initial_factors(item_ids, rank, seed + 1).astype(np.float32).astype(np.float64)

    def solve(m, r, src):
        out = [np.linalg.solve(src[row].T @ src[row] + reg * row.sum() * np.eye(rank), src[row].T @ r[e, row])
               for e, row in enumerate(m)]
        return np.array(out).astype(np.float32).astype(np.float64)

    for _ in range(iterations):
        y = solve(mask.T, dense.T, x)
        x = solve(mask, dense, y)
    return x, y


def factors_by_id(frame):
    return {row.id: np.array(row.features) for row in frame.collect()}


def test_in_block_is_csr_of_ratings_with_rows_into_the_received_stack():
    dst_ids = np.array([20, 10, 20, 10, 20])
    src_block = np.array([1, 0, 0, 1, 1])
    src_ids = np.array([44, 32, 32, 40, 40])
    ratings = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    block = assemble_in_block(dst_ids, src_block, src_ids, ratings, num_src=3)
    assert block.ids.tolist() == [10, 20]
    assert block.indptr.tolist() == [0, 2, 5]
    # ordered by (entity, source block, source id), whatever the arrival order
    assert block.ratings.tolist() == [2.0, 4.0, 3.0, 5.0, 1.0]
    assert block.src_counts.tolist() == [1, 2, 0]
    # received stack = [src0 id 32, src1 id 40, src1 id 44]
    assert block.cols.tolist() == [0, 1, 0, 1, 2]
    shuffled = assemble_in_block(dst_ids[::-1], src_block[::-1], src_ids[::-1], ratings[::-1], num_src=3)
    np.testing.assert_array_equal(shuffled.ratings, block.ratings)


def test_out_block_lists_per_peer_the_entities_it_has_rated():
    # entity 10 rated by peers 0 and 1, entity 20 by peer 1 only, entity 30 by peer 0 only; peer 2 rated nothing
    block = assemble_in_block(np.array([10, 20, 10, 30, 20]), np.array([0, 1, 1, 0, 1]),
                              np.array([7, 8, 9, 7, 9]), np.ones(5), num_src=3)
    sends = out_block(block)
    assert [s.tolist() for s in sends] == [[0, 2], [0, 1], []]


@pytest.mark.parametrize("values", [np.array([5, 3, 5, 9, 3, 0]), np.array([2**40, 7, 2**40]), np.array([-4, 2, -4])])
def test_unique_inverse_matches_numpy(values):
    unique, inverse = unique_inverse(values)
    expected_unique, expected_inverse = np.unique(values, return_inverse=True)
    np.testing.assert_array_equal(unique, expected_unique)
    np.testing.assert_array_equal(inverse, expected_inverse)


def test_blocks_are_a_fixed_hash_of_the_id():
    ids = np.arange(1, 10_001)
    blocks = block_of(ids, 4)
    np.testing.assert_array_equal(block_of(ids[::-1], 4), blocks[::-1])
    assert np.bincount(blocks, minlength=4).min() > 2_300  # balanced, also for consecutive ids


def test_fit_equals_dense_numpy_als(spark):
    rows, mask, dense, user_ids, item_ids = small_ratings()
    ratings = spark.createDataFrame(rows, RATINGS_SCHEMA)
    model = ALS(rank=3, reg=0.1, max_iter=4, num_user_blocks=3, num_item_blocks=2, seed=5).fit(ratings)
    x, y = dense_als(mask, dense, user_ids, item_ids, 3, 0.1, 4, seed=5)
    users, items = factors_by_id(model.user_factors), factors_by_id(model.item_factors)
    np.testing.assert_allclose(np.array([users[u] for u in user_ids]), x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.array([items[i] for i in item_ids]), y, rtol=1e-4, atol=1e-5)
    residual = np.where(mask, dense - x @ y.T, 0.0)
    last = model.history.iterations[-1]
    assert last.train_rmse == pytest.approx(math.sqrt((residual**2).sum() / mask.sum()), rel=1e-4)
    penalty = (mask.sum(1) * (x**2).sum(1)).sum() + (mask.sum(0) * (y**2).sum(1)).sum()
    assert last.objective == pytest.approx((residual**2).sum() + 0.1 * penalty, rel=1e-4)
    objectives = [it.objective for it in model.history.iterations]
    assert objectives == sorted(objectives, reverse=True)


def test_factors_do_not_depend_on_block_counts_and_repeat_for_a_seed(spark):
    rows, *_ = small_ratings(seed=1, n_users=15, n_items=12)
    ratings = spark.createDataFrame(rows, RATINGS_SCHEMA)
    one = ALS(rank=4, max_iter=3, num_user_blocks=1, num_item_blocks=1, seed=9).fit(ratings)
    many = ALS(rank=4, max_iter=3, num_user_blocks=4, num_item_blocks=3, seed=9).fit(ratings.repartition(5))
    a, b = factors_by_id(one.item_factors), factors_by_id(many.item_factors)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_long_runs_keep_one_checkpoint_and_finish(spark):
    rows, *_ = small_ratings(seed=2)
    ratings = spark.createDataFrame(rows, RATINGS_SCHEMA)
    checkpoint_root = Path(spark.sparkContext.getCheckpointDir().replace("file:", ""))
    before = set(checkpoint_root.glob("rdd-*"))
    model = ALS(rank=2, max_iter=12, checkpoint_interval=3, seed=1).fit(ratings)
    assert len(model.history.iterations) == 12
    # The checkpoints of iterations 3, 6 and 9 are deleted; what remains are the model's final user and item
    # factor blocks, checkpointed so that a lost executor cannot make the model unreadable. (Its bias
    # baseline, with checkpoints of its own, is fitted on first use.)
    assert len(set(checkpoint_root.glob("rdd-*")) - before) == 2
    # The model's frames read the kept final factor blocks, not the deleted checkpoints or the released layout.
    assert model.user_factors.count() == 9 and model.item_factors.count() == 7


def test_nonnegative_factors_fit_well(spark):
    rows, mask, dense, *_ = small_ratings(seed=3)
    model = ALS(rank=3, max_iter=5, reg=0.01, nonnegative=True).fit(spark.createDataFrame(rows, RATINGS_SCHEMA))
    features = [value for frame in (model.user_factors, model.item_factors)
                for value in frame.select(F.explode("features")).toPandas().iloc[:, 0]]
    assert min(features) >= 0.0 and max(features) > 0.1  # nonnegative, and not the all-zero solution
    global_mean_rmse = dense[mask].std()  # RMSE of predicting every training rating by their mean
    assert model.history.iterations[-1].train_rmse < 0.5 * global_mean_rmse


def test_cold_start_strategies(spark):
    rows, *_ = small_ratings(seed=4)
    ratings = spark.createDataFrame(rows, RATINGS_SCHEMA)
    model = ALS(rank=2, max_iter=2).fit(ratings)  # the strategy is an argument of predict only
    pairs = spark.createDataFrame([(3, 2), (999, 2), (3, 999)], "user_id int, movie_id int")
    nan = {(r.user_id, r.movie_id): r.prediction for r in model.predict(pairs, "nan").collect()}
    assert not math.isnan(nan[(3, 2)]) and math.isnan(nan[(999, 2)]) and math.isnan(nan[(3, 999)])
    assert [(r.user_id, r.movie_id) for r in model.predict(pairs, "drop").collect()] == [(3, 2)]
    base = {(r.user_id, r.movie_id): r.prediction for r in model.predict(pairs, "baseline").collect()}
    expected = model.baseline.predict(pairs.where("user_id = 999"))
    assert base[(999, 2)] == pytest.approx(expected.first().prediction)
    assert base[(3, 2)] == pytest.approx(nan[(3, 2)], rel=1e-6)


def test_a_plain_fit_defers_the_bias_baseline_until_a_model_uses_it(spark, monkeypatch):
    from mfspark.models.als import estimator
    from mfspark.models.bias import BiasModel, BiasParams

    fitted = []
    monkeypatch.setattr(estimator, "fit_biases", lambda *args: fitted.append(args) or _fit_biases(*args))
    rows, *_ = small_ratings(seed=4)
    ratings = spark.createDataFrame(rows, RATINGS_SCHEMA)
    plain = ALS(rank=2, max_iter=2).fit(ratings)
    assert fitted == []  # a plain fit trains without it
    assert plain.baseline.mu == pytest.approx(np.mean([r[2] for r in rows]))
    assert plain.baseline is plain.baseline and len(fitted) == 1  # fitted once, on first use
    p = plain.params  # the same baseline as a biased fit's: the model's bias regs and sweeps
    expected = BiasModel.fit(ratings, BiasParams(p.bias_reg_user, p.bias_reg_item, p.bias_sweeps, p.min_rating,
                                                 p.max_rating))
    assert plain.baseline.user_biases.orderBy("user_id").collect() == \
        expected.user_biases.orderBy("user_id").collect()
    ALS(rank=2, max_iter=2, biases=True).fit(ratings)
    assert len(fitted) == 2  # a biased fit trains on its residuals


def test_biased_model_predicts_baseline_plus_dot_product(spark):
    rows, *_ = small_ratings(seed=5)
    model = ALS(rank=2, max_iter=3, biases=True, bias_reg_user=2.0, bias_reg_item=3.0).fit(
        spark.createDataFrame(rows, RATINGS_SCHEMA))
    pair = spark.createDataFrame([(3, 13)], "user_id int, movie_id int")
    got = model.predict(pair).first().prediction
    b_u = model.baseline.user_biases.where("user_id = 3").first().bias
    b_i = model.baseline.movie_biases.where("movie_id = 13").first().bias
    x = np.array(model.user_factors.where("id = 3").first().features)
    y = np.array(model.item_factors.where("id = 13").first().features)
    assert got == pytest.approx(min(5.0, max(0.5, model.baseline.mu + b_u + b_i + x @ y)), rel=1e-6)


def test_save_and_load_round_trip(spark, tmp_path):
    rows, *_ = small_ratings(seed=6)
    ratings = spark.createDataFrame(rows, RATINGS_SCHEMA)
    model = ALS(rank=2, max_iter=2, biases=True).fit(ratings)
    model.save(str(tmp_path / "model"))
    loaded = ALSModel.load(spark, str(tmp_path / "model"))
    assert loaded.params == model.params
    assert loaded.history.iterations == model.history.iterations
    before = sorted(model.predict(ratings).select("user_id", "movie_id", "prediction").collect())
    after = sorted(loaded.predict(ratings).select("user_id", "movie_id", "prediction").collect())
    assert before == after


def test_planted_low_rank_data_is_recovered_to_the_noise_floor(spark):
    rng = np.random.default_rng(7)
    n_users, n_items, rank, noise = 120, 80, 3, 0.1
    truth = rng.standard_normal((n_users, rank)) @ rng.standard_normal((rank, n_items))
    mask = rng.random((n_users, n_items)) < 0.5
    observed = truth + noise * rng.standard_normal(truth.shape)
    rows = [(int(u) + 1, int(i) + 1, float(observed[u, i])) for u, i in zip(*np.nonzero(mask))]
    # The planted ratings are not on a 0.5..5 scale: no clipping.
    model = ALS(rank=rank, reg=0.001, max_iter=15, seed=3, min_rating=None, max_rating=None).fit(
        spark.createDataFrame(rows, RATINGS_SCHEMA))
    held_out = [(int(u) + 1, int(i) + 1, float(truth[u, i])) for u, i in zip(*np.nonzero(~mask))]
    scored = model.predict(spark.createDataFrame(held_out, RATINGS_SCHEMA))
    rmse = scored.select(F.sqrt(F.avg((F.col("rating") - F.col("prediction")) ** 2))).first()[0]
    assert model.history.iterations[-1].train_rmse < 1.1 * noise
    assert rmse < 0.1  # error against the noiseless truth on unseen cells


def test_mapinarrow_fallback_builds_the_same_model(spark, monkeypatch):
    from mfspark.runtime import spark_internals

    rows, *_ = small_ratings(seed=3, n_users=12, n_items=9)
    ratings = spark.createDataFrame(rows, RATINGS_SCHEMA)
    fast = ALS(rank=3, max_iter=2, seed=4).fit(ratings)
    monkeypatch.setattr(spark_internals, "USE_ARROW_BATCH_RDD", False)
    fallback = ALS(rank=3, max_iter=2, seed=4).fit(ratings)
    a, b = factors_by_id(fast.user_factors), factors_by_id(fallback.user_factors)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_null_ratings_are_refused_with_a_clear_error(spark):
    ratings = spark.createDataFrame([(1, 10, 4.0), (2, 10, None)], RATINGS_SCHEMA)
    with pytest.raises(Exception, match="null rating"):
        ALS(rank=2, max_iter=1).fit(ratings)


def test_cold_start_is_not_a_fit_parameter_and_old_metadata_still_loads():
    from mfspark.errors import ConfigError
    from mfspark.models.als.estimator import ALSParams

    with pytest.raises(ConfigError, match="chosen at prediction time"):
        ALS(rank=2, cold_start="baseline")
    assert ALSParams.from_dict({"rank": 4, "biases": True, "cold_start": "nan"}) == ALSParams(rank=4, biases=True)


@pytest.mark.parametrize(("max_iter", "interval", "ends"), [
    (10, 10, [10]), (12, 3, [3, 6, 9, 12]), (10, 4, [4, 8, 10]), (5, 0, [5]), (0, 3, [])])
def test_one_job_per_checkpoint_interval(max_iter, interval, ends):
    from mfspark.models.als.estimator import _segment_ends

    assert _segment_ends(max_iter, interval) == ends


def test_block_counts_are_validated():
    from mfspark.errors import ConfigError

    with pytest.raises(ConfigError, match=r"num_item_blocks \(--item-blocks\) must be 1 or more, got 0"):
        ALS(num_item_blocks=0)


def test_zero_iterations_give_the_seeded_starting_factors(spark):
    ratings = spark.createDataFrame([(1, 10, 4.0), (2, 10, 3.0), (2, 20, 5.0)], RATINGS_SCHEMA)
    model = ALS(rank=3, max_iter=0, seed=7).fit(ratings)
    users = factors_by_id(model.user_factors)
    np.testing.assert_allclose(users[2], initial_factors(np.array([2]), 3, 7)[0], rtol=1e-6)
    assert sorted(factors_by_id(model.item_factors)) == [10, 20]
    assert model.history.iterations == []


def test_a_nondeterministic_input_is_refused_not_mixed_up(spark):
    import random

    from pyspark.sql import functions as F

    # sparse, so that the two sides' reads also disagree on which ids each block pair exchanges
    rows, *_ = small_ratings(seed=4, n_users=200, n_items=150, density=0.02)
    # SystemRandom: workers forked from one daemon share the `random` module's state, so two reads could agree.
    keep = F.udf(lambda: random.SystemRandom().random() < 0.6, "boolean").asNondeterministic()
    ratings = spark.createDataFrame(rows, RATINGS_SCHEMA).where(keep())
    with pytest.raises(Exception, match="nondeterministic"):
        ALS(rank=2, max_iter=1).fit(ratings)


def test_worker_heap_is_frozen_in_tasks_and_never_on_the_driver(spark):
    before = gc.get_freeze_count()
    blocks._freeze_worker_heap_once()
    assert gc.get_freeze_count() == before
    in_task = spark.sparkContext.parallelize([0], 1).map(
        lambda _: (blocks._freeze_worker_heap_once(), gc.get_freeze_count())[1]).collect()
    assert in_task[0] > 0


def dense_learned_bias_als(mask, dense, user_ids, item_ids, rank, reg, bias_reg_user, bias_reg_item, weight,
                           iterations, seed, both=False, scale_reg=True):
    """Reference ALS with learned biases (and the rated-indicator matrix when weight > 0) in plain numpy.

    Each entity's [factors, bias] is one stacked least-squares problem; rows travel as float32, as in the fit.
    `both`: the items also fit their indicator columns against implicit user factors v (0 at the start);
    `scale_reg` False: every factor penalty is reg, not reg * count. Returns mu, x, y, z, v.
    """
    mu = dense[mask].mean()

    def as_shipped(a):
        return a.astype(np.float32).astype(np.float64)

    x = np.hstack([as_shipped(initial_factors(user_ids, rank, seed)), np.zeros((len(user_ids), 1))])
    n_items = len(item_ids)
    y, z, v = np.zeros((n_items, rank + 1)), np.zeros((n_items, rank)), np.zeros((len(user_ids), rank))

    def shift(count):
        return reg * count if scale_reg else reg

    def solve(m, r, src, other_bias, bias_reg, implicit):
        out = []
        for e, rated in enumerate(m):
            design = [np.hstack([src[rated, :rank], np.ones((rated.sum(), 1))])]
            targets = [r[e, rated] - mu - other_bias[rated]]
            if implicit is not None:  # every other entity's indicator cell of this one
                design.append(np.sqrt(weight) * np.hstack([implicit, np.zeros((len(implicit), 1))]))
                targets.append(np.sqrt(weight) * rated)
            penalties = np.sqrt([shift(rated.sum())] * rank + [bias_reg])
            a, b = np.vstack([*design, np.diag(penalties)]), np.concatenate([*targets, np.zeros(rank + 1)])
            out.append(np.linalg.lstsq(a, b, rcond=None)[0])
        return as_shipped(np.array(out))

    def rated_factors(m, src):
        gram = weight * src[:, :rank].T @ src[:, :rank]
        return as_shipped(np.array([np.linalg.solve(gram + shift(rated.sum()) * np.eye(rank),
                                                    weight * src[rated, :rank].sum(0)) for rated in m]))

    for _ in range(iterations):
        y = solve(mask.T, dense.T, x, x[:, rank], bias_reg_item, v if weight and both else None)
        if weight:
            z = rated_factors(mask.T, x)
        x = solve(mask, dense, y, y[:, rank], bias_reg_user, z if weight else None)
        if weight and both:
            v = rated_factors(mask, y)
    return mu, x, y, z, v


def bias_by_id(frame, key):
    return {row[key]: row.bias for row in frame.collect()}


@pytest.mark.parametrize("weight", [0.0, 0.4])
def test_learned_biases_fit_equals_dense_numpy_reference(spark, weight):
    rows, mask, dense, user_ids, item_ids = small_ratings(seed=8, n_users=11, n_items=8)
    ratings = spark.createDataFrame(rows, RATINGS_SCHEMA)
    model = ALS(rank=3, reg=0.05, max_iter=4, num_user_blocks=3, num_item_blocks=2, seed=5, biases=True,
                bias_fit="learned", bias_reg_user=2.0, bias_reg_item=3.0, rated_weight=weight).fit(ratings)
    mu, x, y, z, _ = dense_learned_bias_als(mask, dense, user_ids, item_ids, 3, 0.05, 2.0, 3.0, weight, 4, seed=5)
    users, items = factors_by_id(model.user_factors), factors_by_id(model.item_factors)
    learned = model.learned_biases
    user_bias, item_bias = bias_by_id(learned.user_biases, "user_id"), bias_by_id(learned.movie_biases, "movie_id")
    assert learned.mu == pytest.approx(mu)
    np.testing.assert_allclose([np.append(users[u], user_bias[u]) for u in user_ids], x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([np.append(items[i], item_bias[i]) for i in item_ids], y, rtol=1e-4, atol=1e-5)
    if weight:
        implicit = factors_by_id(model.rated_factors)
        np.testing.assert_allclose([implicit[i] for i in item_ids], z, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(model.rated_gram, z.T @ z, rtol=1e-5, atol=1e-6)
    prediction = mu + x[:, 3:] + y[:, 3][None, :] + x[:, :3] @ y[:, :3].T
    error = (np.where(mask, dense - prediction, 0.0) ** 2).sum()
    objective = error + 0.05 * ((mask.sum(1) * (x[:, :3] ** 2).sum(1)).sum() + (mask.sum(0) * (y[:, :3] ** 2).sum(1)
                                                                                 + mask.sum(0) * (z**2).sum(1)).sum())
    objective += 2.0 * (x[:, 3] ** 2).sum() + 3.0 * (y[:, 3] ** 2).sum() + weight * ((mask - x[:, :3] @ z.T) ** 2).sum()
    last = model.history.iterations[-1]
    assert last.train_rmse == pytest.approx(math.sqrt(error / mask.sum()), rel=1e-4)
    assert last.objective == pytest.approx(objective, rel=1e-4)
    objectives = [it.objective for it in model.history.iterations]
    assert objectives == sorted(objectives, reverse=True)


@pytest.mark.parametrize("scale_reg", [True, False])
def test_implicit_information_on_both_sides_fit_equals_dense_numpy_reference(spark, scale_reg):
    rows, mask, dense, user_ids, item_ids = small_ratings(seed=8, n_users=11, n_items=8)
    reg = 0.05 if scale_reg else 0.4
    model = ALS(rank=3, reg=reg, max_iter=4, num_user_blocks=3, num_item_blocks=2, seed=5, biases=True,
                bias_fit="learned", bias_reg_user=2.0, bias_reg_item=3.0, rated_weight=0.4, rated_sides="both",
                scale_reg=scale_reg).fit(spark.createDataFrame(rows, RATINGS_SCHEMA))
    mu, x, y, z, v = dense_learned_bias_als(mask, dense, user_ids, item_ids, 3, reg, 2.0, 3.0, 0.4, 4, seed=5,
                                            both=True, scale_reg=scale_reg)
    assert np.abs(v).max() > 0.01  # the items' solve did use implicit user factors
    users, items = factors_by_id(model.user_factors), factors_by_id(model.item_factors)
    learned = model.learned_biases
    user_bias, item_bias = bias_by_id(learned.user_biases, "user_id"), bias_by_id(learned.movie_biases, "movie_id")
    np.testing.assert_allclose([np.append(users[u], user_bias[u]) for u in user_ids], x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([np.append(items[i], item_bias[i]) for i in item_ids], y, rtol=1e-4, atol=1e-5)
    implicit = factors_by_id(model.rated_factors)
    np.testing.assert_allclose([implicit[i] for i in item_ids], z, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.rated_gram, z.T @ z, rtol=1e-5, atol=1e-6)
    # Fold-in solves as the fit's last half-step did (with its reg scaling).
    folded = model.folded_user([(r[1], r[2]) for r in rows if r[0] == user_ids[0]])
    np.testing.assert_allclose(np.append(folded.factors, folded.bias), x[0], rtol=1e-4, atol=1e-5)


def test_rated_sides_and_constant_reg_are_validated():
    from mfspark.errors import ConfigError

    with pytest.raises(ConfigError, match=r"rated_sides \(--implicit-sides\) must be one of users, both, got 'it"):
        ALS(biases=True, bias_fit="learned", rated_weight=0.3, rated_sides="items")
    with pytest.raises(ConfigError, match="constant reg"):
        ALS(biases=True, scale_reg=False)


@pytest.mark.parametrize("weight", [0.0, 0.3])
def test_learned_bias_models_fold_in_a_user_to_the_fitted_row_and_fall_back_to_the_baseline(spark, tmp_path, weight):
    rows, *_ = small_ratings(seed=9, n_users=10, n_items=8)
    ratings = spark.createDataFrame(rows, RATINGS_SCHEMA)
    model = ALS(rank=2, reg=0.05, max_iter=3, biases=True, bias_fit="learned", rated_weight=weight).fit(ratings)
    model.save(str(tmp_path / "model"))
    loaded = ALSModel.load(spark, str(tmp_path / "model"))
    if weight:
        np.testing.assert_array_equal(loaded.rated_gram, model.rated_gram)
    pairs = spark.createDataFrame([(3, 13), (999, 13)], "user_id int, movie_id int")
    got = {r.user_id: r.prediction for r in loaded.predict(pairs).collect()}
    mu, b_i = model.learned_biases.mu, bias_by_id(model.learned_biases.movie_biases, "movie_id")[13]
    b_u = bias_by_id(model.learned_biases.user_biases, "user_id")[3]
    x, y = factors_by_id(model.user_factors)[3], factors_by_id(model.item_factors)[13]
    assert got[3] == pytest.approx(min(5.0, max(0.5, mu + b_u + b_i + x @ y)), rel=1e-6)
    # An unknown user gets the pre-fitted baseline (the cold-start path), not the learned biases.
    assert got[999] == pytest.approx(model.baseline.predict(pairs.where("user_id = 999")).first().prediction)
    # The last half-step solved the users, so folding user 3's training ratings in gives its fitted row back
    # (a movie the model does not know is ignored).
    folded = loaded.folded_user([(r[1], r[2]) for r in rows if r[0] == 3] + [(999_999, 5.0)])
    assert folded.used == sum(r[0] == 3 for r in rows)
    np.testing.assert_allclose(folded.factors, x, rtol=1e-5, atol=1e-6)
    assert folded.bias == pytest.approx(b_u, rel=1e-5, abs=1e-6)
