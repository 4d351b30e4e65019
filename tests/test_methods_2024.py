"""Property tests of the 2023-2024 loss-balancing methods (issue 14, part 4):
FairGrad, SDMGrad, MoCo, MoDo (gradient aggregators) and STCH, ExcessMTL
(loss weightings). Each test checks a property its paper states, on tiny
NumPy/TF inputs; the last ones train each method for one epoch of the tabular
demo inside the compiled train step."""

import warnings

import numpy as np
import pytest
import tensorflow as tf
from scipy.optimize import least_squares

import mtlzoo
import mtlzoo.aggregators as aggregators
import mtlzoo.weighting as weighting
from mtlzoo.weighting.excess_mtl import excess_mtl_update, excess_risk_estimates
from mtlzoo.weighting.stch import stch_value, stch_weights

AGGREGATORS_2024 = ["fairgrad", "sdmgrad", "moco", "modo"]
WEIGHTINGS_2024 = ["stch", "excess_mtl"]


def grads_matrix(t=3, p=6, seed=0):
    return np.random.default_rng(seed).normal(size=(t, p)).astype(np.float32)


def min_norm(gram):
    """Reference min_{w in simplex} w^T gram w (scipy SLSQP)."""
    from scipy.optimize import minimize

    t = gram.shape[0]
    res = minimize(lambda w: w @ gram @ w, np.full(t, 1.0 / t), jac=lambda w: 2 * gram @ w,
                   bounds=[(0, 1)] * t, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
                   method="SLSQP", options={"ftol": 1e-14, "maxiter": 500})
    return res.x, res.fun


# ------------------------------------------------------------------ FairGrad
def test_fairgrad_alpha_one_is_proportional_fairness():
    g = grads_matrix(seed=1).astype(np.float64)
    gram = g @ g.T
    # Authors' scale (raw Gram matrix): (G G^T w)_i = 1 / w_i, i.e. w_i (g_i . d) = 1.
    w = aggregators.get("fairgrad", alpha=1.0, normalize_gram=False).task_weights(g).numpy()
    assert np.all(w > 0)
    np.testing.assert_allclose(gram @ w, 1.0 / w, rtol=2e-3)
    d = aggregators.get("fairgrad", alpha=1.0, normalize_gram=False)(g).numpy()
    np.testing.assert_allclose(w * (g @ d), 1.0, rtol=2e-3)
    # Default (normalised Gram): same direction, scale-equivariant length.
    d_norm = aggregators.get("fairgrad", alpha=1.0)(g).numpy()
    cos = d @ d_norm / np.linalg.norm(d) / np.linalg.norm(d_norm)
    assert cos > 1 - 1e-5


@pytest.mark.parametrize("alpha", [0.5, 2.0, 5.0])
def test_fairgrad_matches_least_squares_reference(alpha):
    g = grads_matrix(seed=2).astype(np.float64)
    gram = g @ g.T
    res = least_squares(lambda x: gram @ x - np.power(1.0 / x, 1.0 / alpha), np.full(3, 1.0 / 3),
                        bounds=(1e-12, np.inf), xtol=1e-15, ftol=1e-15, gtol=1e-15)
    ours = aggregators.get("fairgrad", alpha=alpha, normalize_gram=False).task_weights(g).numpy()
    np.testing.assert_allclose(ours, res.x, rtol=5e-3)


def test_fairgrad_small_alpha_is_utilitarian_and_every_task_improves():
    """alpha -> 0 maximises the total utility: the direction of the sum of the gradients."""
    g = np.array([[3.0, 0.0, 0.2], [0.0, 1.0, 0.1], [0.5, 0.4, 0.3]], np.float32)
    d = aggregators.get("fairgrad", alpha=0.02)(g).numpy()
    total = g.sum(axis=0)
    assert d @ total / np.linalg.norm(d) / np.linalg.norm(total) > 0.999
    for alpha in (0.5, 1.0, 2.0, 5.0):
        d = aggregators.get("fairgrad", alpha=alpha)(g).numpy()
        assert np.all(g @ d > 0)  # g_t . d = w_t^(-1/alpha) > 0: no task is harmed


# ------------------------------------------------------------------ SDMGrad
def test_sdmgrad_large_lambda_is_the_mean_and_zero_is_mgda():
    g = grads_matrix(seed=3)
    d = aggregators.get("sdmgrad", lmbda=1e5)(g).numpy()
    np.testing.assert_allclose(d, g.mean(axis=0), rtol=1e-3, atol=1e-4)
    w = aggregators.get("sdmgrad", lmbda=0.0, max_iter=500).task_weights(g).numpy()
    _, best = min_norm((g @ g.T).astype(np.float64))
    np.testing.assert_allclose(w.sum(), 1.0, atol=1e-5)
    assert float(w @ (g @ g.T) @ w) <= best * (1 + 1e-3) + 1e-6


def test_sdmgrad_solves_its_inner_problem():
    g = grads_matrix(t=4, p=8, seed=4).astype(np.float64)
    lam = 0.3
    agg = aggregators.get("sdmgrad", lmbda=lam, max_iter=200)
    weights = agg.task_weights(g).numpy()
    w = weights * (1 + lam) - lam / 4  # recover the inner solution
    from scipy.optimize import minimize

    g0 = g.mean(axis=0)
    obj = lambda v: np.sum((g.T @ v + lam * g0) ** 2)  # noqa: E731
    ref = minimize(obj, np.full(4, 0.25), bounds=[(0, 1)] * 4, method="SLSQP",
                   constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1}], options={"ftol": 1e-14})
    assert np.all(w >= -1e-6) and abs(w.sum() - 1) < 1e-5
    assert obj(w) <= ref.fun * (1 + 1e-3) + 1e-9


# ------------------------------------------------------------------ MoCo
def test_moco_tracked_gradients_converge_on_a_constant_sequence():
    g = grads_matrix(seed=5)
    agg = aggregators.get("moco", gamma=0.5, gamma_sigma=0.0)
    agg.build(3, 6)
    step = tf.function(lambda x: agg(x))
    errors = []
    for _ in range(200):
        d = step(tf.constant(g))
        errors.append(np.linalg.norm(agg.tracked.numpy() - g))
    assert errors[-1] < 1e-3 * np.linalg.norm(g) and errors[-1] < errors[10] < errors[0]
    # The weights then reach the min-norm (MGDA) solution of the true gradients.
    _, best = min_norm((g @ g.T).astype(np.float64))
    lam = agg.lam.numpy()
    assert abs(lam.sum() - 1) < 1e-5 and np.all(lam >= 0)
    np.testing.assert_allclose(np.sum(d.numpy() ** 2), best, rtol=2e-2)
    assert agg.step.numpy() == 200.0


# ------------------------------------------------------------------ MoDo
def test_modo_lambda_stays_on_the_simplex_and_reaches_mgda():
    rng = np.random.default_rng(6)
    agg = aggregators.get("modo", gamma=2.0, rho=0.0)
    for _ in range(30):  # noisy steps with a large step size
        agg(rng.normal(size=(4, 5)).astype(np.float32) * rng.uniform(0.01, 100.0))
        lam = agg.lam.numpy()
        assert np.all(lam >= 0) and abs(lam.sum() - 1) < 1e-5
    g = grads_matrix(t=4, p=5, seed=7)
    agg = aggregators.get("modo", gamma=0.2, rho=0.0)
    step = tf.function(lambda x: agg(x))
    for _ in range(400):
        d = step(tf.constant(g))
    _, best = min_norm((g @ g.T).astype(np.float64))
    np.testing.assert_allclose(np.sum(d.numpy() ** 2), best, rtol=2e-2)
    np.testing.assert_allclose(d.numpy(), agg.lam.numpy() @ g, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ STCH
def test_stch_limits_in_mu():
    losses = tf.constant([0.7, 2.0, 1.1])
    lam = tf.constant([0.5, 0.2, 0.3])
    z = tf.constant([0.1, 0.5, 0.0])
    a = (lam * (losses - z)).numpy()
    # mu -> 0: the Tchebycheff scalarisation max_t lam_t (L_t - z_t); always in [max, max + mu log K].
    for mu in (1e-1, 1e-2, 1e-3):
        v = float(stch_value(losses, mu, lam, z))
        assert a.max() <= v <= a.max() + mu * np.log(3) + 1e-6
    assert abs(float(stch_value(losses, 1e-3, lam, z)) - a.max()) < 1e-3
    # mu large: the mean of lam_t (L_t - z_t) plus mu log K.
    mu = 1e4
    np.testing.assert_allclose(float(stch_value(losses, mu, lam, z)) - mu * np.log(3), a.mean(), atol=1e-2)
    # The effective weights are the gradient of the value; mu -> 0 puts all weight on the worst task.
    with tf.GradientTape() as tape:
        tape.watch(losses)
        v = stch_value(losses, 0.3, lam, z)
    np.testing.assert_allclose(tape.gradient(v, losses).numpy(), stch_weights(losses, 0.3, lam, z).numpy(),
                               rtol=1e-5)
    w = stch_weights(losses, 1e-3, lam, z).numpy()
    np.testing.assert_allclose(w, np.eye(3)[np.argmax(a)] * lam.numpy(), atol=1e-6)


def test_stch_leaves_out_absent_tasks_and_trains(tmp_path):
    np.testing.assert_allclose(float(stch_value(tf.constant([0.0, 2.0]), 1.0)), 1.0, rtol=1e-6)
    assert stch_weights(tf.constant([0.0, 2.0]), 1.0).numpy()[0] == 0.0
    with pytest.raises(ValueError, match=r"preference\['a'\]"):
        weighting.get("stch", preference={"a": 0.0})
    model = mtlzoo.build("tabular_demo")
    x, y = _tabular_data()
    cb = weighting.get("stch", mu=0.05)
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[cb]).history
    assert np.isfinite(history["loss"]).all()
    # Small mu: the task with the larger loss takes (nearly) all the weight; weights sum to <= max lambda.
    weights = np.array([history[f"{t}_weight"][0] for t in model.task_names])
    assert np.all(weights >= 0) and weights.sum() <= 0.5 + 1e-5


# ------------------------------------------------------------------ ExcessMTL
def test_excess_mtl_weights_the_task_with_larger_excess_risk():
    rng = np.random.default_rng(8)
    base = rng.normal(size=(2, 10)).astype(np.float32)
    squared = tf.zeros([2, 10])
    weights = tf.ones([2])
    initial = tf.zeros([2])
    for k in range(50):
        # Task 0 stays far from its optimum (gradient does not shrink); task 1 converges.
        g = base * np.array([[1.0], [0.8 ** k]], np.float32)
        est, squared = excess_risk_estimates(g, squared)
        initial = tf.where(initial > 0, initial, est)
        weights = excess_mtl_update(weights, est, initial, step_size=0.1)
        np.testing.assert_allclose(float(tf.reduce_sum(weights)), 2.0, rtol=1e-5)
    w = weights.numpy()
    assert w[0] > 1.2 and w[1] < 0.8, w
    # The estimate is g^T diag(1/sqrt(S)) g with S the running sum of squares.
    g = base
    est, s = excess_risk_estimates(g, tf.ones([2, 10]))
    np.testing.assert_allclose(est.numpy(), np.sum(g**2 / np.sqrt(1 + g**2 + 1e-7), axis=1), rtol=1e-5)


def test_excess_mtl_trains_and_updates_its_state():
    model = mtlzoo.build("tabular_demo")
    x, y = _tabular_data()
    cb = weighting.get("excess_mtl", step_size=0.5)
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[cb]).history
    w = np.array(list(model.get_loss_weights().values()))
    assert np.isfinite(history["loss"]).all()
    np.testing.assert_allclose(w.sum(), len(w), rtol=1e-5)
    assert not np.allclose(w, 1.0)  # three steps moved the weights
    assert np.all(cb._initial.numpy() > 0) and np.all(cb._squared_sum.numpy() >= 0)


# ------------------------------------------------------------------ compiled step, config
def _tabular_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype("float32")
    y = {"label": (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32"),
         "target": (x[:, :1] * 2.0 + 0.1 * rng.normal(size=(n, 1))).astype("float32")}
    return x, y


@pytest.mark.parametrize("name", AGGREGATORS_2024)
def test_aggregator_runs_in_the_compiled_step(name):
    model = mtlzoo.build("tabular_demo", aggregator=name)
    x, y = _tabular_data()
    before = [np.array(v) for v in model.trainable_variables]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(x, y, epochs=1, batch_size=16, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["nonfinite_steps"] == [0.0]
    assert any(not np.allclose(b, np.array(v)) for b, v in zip(before, model.trainable_variables))


@pytest.mark.parametrize("name, bad, arg", [
    ("fairgrad", {"alpha": 0.0}, "alpha"), ("fairgrad", {"normalize_gram": "yes"}, "normalize_gram"),
    ("sdmgrad", {"lmbda": -1.0}, "lmbda"), ("sdmgrad", {"max_iter": 0}, "max_iter"),
    ("moco", {"beta": 0.0}, "beta"), ("moco", {"gamma": -0.1}, "gamma"), ("moco", {"rho": -1.0}, "rho"),
    ("modo", {"gamma": -1.0}, "gamma"), ("modo", {"rho": -0.5}, "rho"),
])
def test_out_of_range_hyperparameters(name, bad, arg):
    with pytest.raises(ValueError, match=f"`{arg}`"):
        aggregators.get(name, **bad)


@pytest.mark.parametrize("name, bad, arg", [
    ("stch", {"mu": 0.0}, "mu"), ("stch", {"ideal_point": [0.0]}, "ideal_point"),
    ("excess_mtl", {"step_size": -1.0}, "step_size"),
])
def test_out_of_range_weighting_hyperparameters(name, bad, arg):
    with pytest.raises(ValueError, match=arg):
        weighting.get(name, **bad)


def test_registered_under_their_names():
    assert set(AGGREGATORS_2024) <= set(aggregators.list())
    assert set(WEIGHTINGS_2024) <= set(weighting.list())
    assert isinstance(aggregators.get("fairgrad", alpha=1.0), aggregators.FairGrad)
    assert isinstance(weighting.get("ExcessMTL"), weighting.ExcessMTL)
