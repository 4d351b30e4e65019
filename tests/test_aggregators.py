"""Tests of mtlzoo.aggregators: the common interface of every registered method
(parametrized over `aggregators.list()`, so new methods are covered) and
known answers per method. Tiny shapes only; the whole file runs in seconds."""

import inspect

import numpy as np
import pytest
import tensorflow as tf

import mtlzoo.aggregators as aggregators
from mtlzoo.registry import AGGREGATORS, UnknownNameError

NAMES = aggregators.list()
T, P = 3, 7
LOSSES = np.array([0.5, 1.0, 2.0], np.float32)

# Out-of-range hyperparameters per method: (kwargs, argument name that the message must mention).
BAD_HYPERPARAMETERS = {
    "fairgrad": [({"alpha": 0.0}, "alpha"), ({"max_iter": 0}, "max_iter"), ({"ridge": 1.0}, "ridge"),
                 ({"normalize_gram": "yes"}, "normalize_gram")],
    "sdmgrad": [({"lmbda": -0.1}, "lmbda"), ({"max_iter": 0}, "max_iter")],
    "moco": [({"beta": 0.0}, "beta"), ({"beta": 1.5}, "beta"), ({"gamma": -0.1}, "gamma"), ({"rho": -1.0}, "rho")],
    "modo": [({"gamma": -0.1}, "gamma"), ({"rho": -0.1}, "rho")],
    "mgda": [({"normalization": "bogus"}, "normalization"), ({"max_iter": 0}, "max_iter")],
    "pcgrad": [({"seed": -1}, "seed"), ({"seed": 1.5}, "seed")],
    "cagrad": [({"c": -0.1}, "c"), ({"rescale": 3}, "rescale"), ({"max_iter": 0}, "max_iter")],
    "gradvac": [({"beta": -0.1}, "beta"), ({"beta": 1.5}, "beta"), ({"seed": -2}, "seed")],
    "aligned_mtl": [({"rtol": 0.0}, "rtol"), ({"rtol": 1.0}, "rtol")],
    "nash_mtl": [({"max_iter": 0}, "max_iter"), ({"ridge": -1e-3}, "ridge")],
    "upgrad": [({"max_iter": 0}, "max_iter"), ({"ridge": 1.0}, "ridge")],
    "graddrop": [({"leak": -0.5}, "leak"), ({"leak": 2.0}, "leak"), ({"seed": -1}, "seed")],
    "db_mtl": [({"beta": 1.0}, "beta"), ({"beta": -0.1}, "beta"), ({"beta_sigma": -1.0}, "beta_sigma")],
}


def hyperparameter_names(name):
    cls = AGGREGATORS.get(name)
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def make(name, **kwargs):
    """A fresh aggregator; seeded where the method is random."""
    if "seed" in hyperparameter_names(name):
        kwargs.setdefault("seed", 0)
    return aggregators.get(name, **kwargs)


def rand_grads(t=T, p=P, seed=0):
    return np.random.default_rng(seed).normal(size=(t, p)).astype(np.float32)


def state_variables(agg):
    return {k: v.numpy().copy() for k, v in vars(agg).items() if isinstance(v, tf.Variable)}


# --------------------------------------------------------------- registry
def test_all_methods_registered():
    expected = {"mean", "sum", "mgda", "pcgrad", "cagrad", "gradvac", "imtl_g", "aligned_mtl",
                "nash_mtl", "upgrad", "graddrop", "db_mtl"}
    assert expected <= set(NAMES)
    assert NAMES == sorted(NAMES)
    for name in NAMES:
        assert isinstance(aggregators.get(name), aggregators.Aggregator)


def test_unknown_name_lists_near_match():
    with pytest.raises(UnknownNameError, match="pcgrad"):
        aggregators.get("pcgard")
    with pytest.raises(KeyError):  # UnknownNameError is also a KeyError
        aggregators.get("nope")


def test_unknown_hyperparameter_and_aliases():
    with pytest.raises(TypeError, match="'c'"):
        aggregators.get("cagrad", cc=0.5)
    assert isinstance(aggregators.get("IMTL-G"), aggregators.IMTLG)
    assert isinstance(aggregators.get("Nash-MTL"), aggregators.NashMTL)


# ------------------------------------------------- every registered method
@pytest.mark.parametrize("name", NAMES)
def test_shape_numpy_and_tf_function_agree(name):
    agg = make(name)
    grads = rand_grads()
    d = agg(grads, LOSSES)
    assert isinstance(d, tf.Tensor) and d.shape == (P,) and d.dtype == tf.float32
    assert np.all(np.isfinite(d.numpy()))
    if agg.stateful:
        agg.reset_state()
        d = agg(grads.tolist(), LOSSES.tolist())  # plain lists work too
        agg.reset_state()
    fn = tf.function(lambda g, l: agg(g, l))
    d_graph = fn(tf.constant(grads), tf.constant(LOSSES))
    np.testing.assert_allclose(d_graph.numpy(), d.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_dtype_single_task_and_build_before_trace(name):
    agg = make(name)
    d64 = agg(rand_grads().astype(np.float64), LOSSES)
    assert d64.dtype == tf.float64 and d64.shape == (P,)
    d1 = make(name)(rand_grads(t=1), LOSSES[:1])
    assert d1.shape == (P,) and np.all(np.isfinite(d1.numpy()))
    # The documented train-step path: build, then trace with a dynamic batch of calls.
    agg = make(name)
    agg.build(T, P)
    fn = tf.function(lambda g, l: agg(g, l))
    assert np.all(np.isfinite(fn(tf.constant(rand_grads()), tf.constant(LOSSES)).numpy()))
    if agg.stateful:
        with pytest.raises(ValueError, match="tasks"):
            agg(rand_grads(t=T + 1), np.ones(T + 1, np.float32))


@pytest.mark.parametrize("name", NAMES)
def test_identical_gradients_return_documented_scale(name):
    agg = make(name)
    g = rand_grads(t=1, seed=3)[0]
    d = agg(np.tile(g, (T, 1)), np.ones(T, np.float32))
    np.testing.assert_allclose(d.numpy(), agg.identical_scale(T) * g, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_task_weights_reproduce_direction(name):
    agg = make(name)
    grads = rand_grads(seed=1)
    if not agg.weight_based:
        with pytest.raises(TypeError, match="weight-based"):
            agg.task_weights(grads, LOSSES)
        return
    w = agg.task_weights(grads, LOSSES)
    assert w.shape == (T,)
    agg.reset_state()
    np.testing.assert_allclose(agg(grads, LOSSES).numpy(), w.numpy() @ grads, rtol=1e-4, atol=1e-5)
    w_graph = tf.function(lambda g, l: agg.task_weights(g, l))(tf.constant(grads), tf.constant(LOSSES))
    np.testing.assert_allclose(w_graph.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_get_config_round_trip(name):
    agg = make(name)
    config = agg.get_config()
    assert set(config) == set(hyperparameter_names(name))
    clone = type(agg)(**config)
    assert clone.get_config() == config
    assert aggregators.get(name, **config).get_config() == config
    grads = rand_grads(seed=2)
    np.testing.assert_allclose(clone(grads, LOSSES).numpy(), agg(grads, LOSSES).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_out_of_range_hyperparameters_raise(name):
    if not hyperparameter_names(name):
        assert name not in BAD_HYPERPARAMETERS
        return
    assert name in BAD_HYPERPARAMETERS, f"add out-of-range cases for {name!r} to BAD_HYPERPARAMETERS"
    for kwargs, arg in BAD_HYPERPARAMETERS[name]:
        with pytest.raises(ValueError) as info:
            aggregators.get(name, **kwargs)
        message = str(info.value)
        assert f"`{arg}`" in message and repr(kwargs[arg]) in message


@pytest.mark.parametrize("name", NAMES)
def test_non_finite_input_gives_nan_and_keeps_state(name):
    agg = make(name)
    grads = rand_grads(seed=4)
    agg(grads, LOSSES)  # one normal step so that the state is non-trivial
    before = state_variables(agg)
    bad = grads.copy()
    bad[1, 2] = np.nan
    d = agg(bad, LOSSES)
    assert d.shape == (P,) and not np.any(np.isfinite(d.numpy()))
    if agg.requires_losses:
        d = agg(grads, np.array([1.0, np.inf, 1.0], np.float32))
        assert not np.any(np.isfinite(d.numpy()))
    after = state_variables(agg)
    assert before.keys() == after.keys()
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])
    assert np.all(np.isfinite(agg(grads, LOSSES).numpy()))
    if agg.weight_based:
        assert not np.any(np.isfinite(agg.task_weights(bad, LOSSES).numpy()))


def test_losses_required():
    with pytest.raises(ValueError, match="losses"):
        aggregators.get("db_mtl")(rand_grads())
    with pytest.raises(ValueError, match="losses"):
        aggregators.get("mgda", normalization="loss")(rand_grads())
    with pytest.raises(ValueError, match="shape"):
        aggregators.get("mean")(np.ones(3, np.float32))


# ------------------------------------------------------------ known answers
def test_mgda_orthogonal_and_two_task_closed_form():
    agg = aggregators.get("mgda")
    np.testing.assert_allclose(agg.task_weights([[1.0, 0.0], [0.0, 1.0]]).numpy(), [0.5, 0.5], atol=1e-6)
    g1, g2 = np.array([1.0, 0.0, 2.0], np.float32), np.array([-0.5, 1.0, 0.3], np.float32)
    gamma = np.clip(np.dot(g2, g2 - g1) / np.dot(g1 - g2, g1 - g2), 0.0, 1.0)
    np.testing.assert_allclose(agg(np.stack([g1, g2])).numpy(), gamma * g1 + (1 - gamma) * g2, atol=1e-5)
    # Min-norm point at a vertex: g2 = 3 * g1 + tiny -> all weight on g1.
    np.testing.assert_allclose(agg.task_weights([[1.0, 0.0], [3.0, 0.1]]).numpy(), [1.0, 0.0], atol=1e-6)
    # l2 normalisation: weights from unit gradients, applied to the raw gradients.
    d = aggregators.get("mgda", normalization="l2")([[2.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(d.numpy(), [1.0, 0.5], atol=1e-6)


def test_mgda_min_norm_optimality_for_three_tasks():
    grads = rand_grads(t=4, p=5, seed=5)
    d = aggregators.get("mgda")(grads).numpy()
    w = aggregators.get("mgda").task_weights(grads).numpy()
    assert np.all(w >= -1e-7) and abs(w.sum() - 1) < 1e-5
    # KKT: g_t . d >= ||d||^2 for every task, with equality on the support.
    dots = grads @ d
    assert np.all(dots >= d @ d - 1e-4)
    np.testing.assert_allclose(dots[w > 1e-4], d @ d, rtol=1e-3, atol=1e-5)


def test_pcgrad_conflicting_pair():
    grads = np.array([[1.0, 0.0], [-1.0, 1.0]], np.float32)
    d = aggregators.get("pcgrad", seed=1)(grads).numpy()
    np.testing.assert_allclose(d, [0.5, 1.5], atol=1e-6)  # sum of the two projections
    rng = np.random.default_rng(6)
    for _ in range(5):
        g = rng.normal(size=(2, 6)).astype(np.float32)
        if g[0] @ g[1] > 0:
            g[1] -= 2 * (g[0] @ g[1]) / (g[0] @ g[0]) * g[0]
        d = aggregators.get("pcgrad", seed=0)(g).numpy()
        assert d @ g[0] >= -1e-5 and d @ g[1] >= -1e-5
    g = np.array([[1.0, 0.2], [0.5, 1.0]], np.float32)  # no conflict: plain sum
    np.testing.assert_allclose(aggregators.get("pcgrad")(g).numpy(), g.sum(0), atol=1e-6)


def test_cagrad_c_zero_is_mean_and_solution_is_optimal():
    grads = rand_grads(seed=7)
    for rescale in (0, 1, 2):
        d = aggregators.get("cagrad", c=0.0, rescale=rescale)(grads)
        np.testing.assert_allclose(d.numpy(), grads.mean(0), rtol=1e-5, atol=1e-6)
    # rescale=0: d maximises min_i g_i.d over the ball ||d - g0|| <= c ||g0||.
    c = 0.5
    grads = np.array([[1.0, 0.0, 0.2], [-0.8, 1.0, 0.1], [0.1, -0.6, 1.0]], np.float32)
    d = aggregators.get("cagrad", c=c, rescale=0)(grads).numpy().astype(np.float64)
    g0 = grads.mean(0).astype(np.float64)
    radius = c * np.linalg.norm(g0)
    assert np.linalg.norm(d - g0) <= radius * (1 + 1e-4)
    rng = np.random.default_rng(0)
    u = rng.normal(size=(4000, 3))
    u = u / np.linalg.norm(u, axis=1, keepdims=True) * radius * rng.uniform(0, 1, size=(4000, 1)) ** (1 / 3)
    best_sampled = np.min((g0 + u) @ grads.T.astype(np.float64), axis=1).max()
    assert np.min(grads @ d) >= best_sampled - 1e-4
    # Default rescale=1 divides by 1 + c^2.
    np.testing.assert_allclose(aggregators.get("cagrad", c=c)(grads).numpy(), d / (1 + c**2), rtol=1e-4, atol=1e-5)


def test_upgrad_known_answer_and_no_conflict():
    d = aggregators.get("upgrad")([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
    np.testing.assert_allclose(d.numpy(), [0.2929, 1.9004, 1.9004], atol=1e-3)
    grads = rand_grads(t=4, p=5, seed=8)
    d = aggregators.get("upgrad")(grads).numpy()
    assert np.all(grads @ d >= -1e-4)  # the mean of dual-cone projections conflicts with no task


def test_nash_mtl_first_order_condition():
    grads = rand_grads(t=3, p=10, seed=9) + 0.5  # well conditioned
    alpha = aggregators.get("nash_mtl").task_weights(grads).numpy().astype(np.float64)
    gram = grads.astype(np.float64) @ grads.T
    gram = gram / np.linalg.norm(gram)  # the documented Frobenius normalisation
    assert np.all(alpha > 0)
    np.testing.assert_allclose(gram @ alpha, 1.0 / alpha, rtol=1e-4)


def test_imtl_g_equal_projections():
    for t in (2, 3, 4):
        grads = rand_grads(t=t, p=6, seed=10 + t)
        d = aggregators.get("imtl_g")(grads).numpy()
        units = grads / np.linalg.norm(grads, axis=1, keepdims=True)
        proj = units @ d
        np.testing.assert_allclose(proj, proj[0], rtol=1e-4, atol=1e-5)
        w = aggregators.get("imtl_g").task_weights(grads).numpy()
        assert abs(w.sum() - 1) < 1e-5


def test_aligned_mtl_orthogonal_known_answer():
    # M = diag(9, 1): B = sqrt(1) * diag(1/3, 1), weights = column sums of B.
    agg = aggregators.get("aligned_mtl")
    np.testing.assert_allclose(agg.task_weights([[3.0, 0.0], [0.0, 1.0]]).numpy(), [1 / 3, 1.0], atol=1e-6)
    grads = rand_grads(t=3, p=5, seed=11)
    d = agg(grads).numpy().astype(np.float64)
    lam, vec = np.linalg.eigh(grads.astype(np.float64) @ grads.T)
    b = np.sqrt(lam.min()) * (vec / np.sqrt(lam)) @ vec.T
    np.testing.assert_allclose(d, b.sum(0) @ grads, rtol=1e-3, atol=1e-4)


def test_gradvac_aligned_unchanged_and_target_reached():
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    aligned = np.array([[1.0, 0.0], [0.6, 0.8]], np.float32)  # cosine 0.6
    np.testing.assert_allclose(aggregators.get("gradvac", seed=0)(aligned).numpy(), aligned.sum(0), atol=1e-6)
    agg = aggregators.get("gradvac", beta=1.0, seed=0)  # beta=1: targets become the observed similarity
    agg(aligned)
    np.testing.assert_allclose(agg.targets.numpy(), [[0.0, 0.6], [0.6, 0.0]], atol=1e-6)
    np.testing.assert_allclose(agg(aligned).numpy(), aligned.sum(0), atol=1e-6)
    less = np.array([[1.0, 0.0], [0.4, 2.0]], np.float32)  # cosine ~0.196 < 0.6: both get adjusted
    d = agg(less).numpy()
    expected = []
    for i, j in ((0, 1), (1, 0)):
        gi, gj = less[i].astype(np.float64), less[j].astype(np.float64)
        phi = cos(gi, gj)
        a = np.linalg.norm(gi) * (0.6 * np.sqrt(1 - phi**2) - phi * 0.8) / (np.linalg.norm(gj) * 0.8)
        expected.append(gi + a * gj)
        assert abs(cos(expected[-1], gj) - 0.6) < 1e-6
    np.testing.assert_allclose(d, expected[0] + expected[1], rtol=1e-5, atol=1e-5)


def test_graddrop_sign_selection():
    grads = np.array([[1.0, -2.0, 0.5, 0.0], [1.0, 3.0, -0.5, 0.0], [2.0, 1.0, -1.0, 0.0]], np.float32)
    np.testing.assert_allclose(aggregators.get("graddrop", leak=1.0, seed=0)(grads).numpy(), grads.sum(0))
    pos, neg = np.where(grads > 0, grads, 0).sum(0), np.where(grads < 0, grads, 0).sum(0)
    agg = aggregators.get("graddrop", seed=0)
    for _ in range(5):
        d = agg(grads).numpy()
        assert d[0] == pytest.approx(4.0) and d[3] == 0.0  # unanimous signs are always kept
        for p in (1, 2):
            assert d[p] == pytest.approx(pos[p]) or d[p] == pytest.approx(neg[p])


def test_db_mtl_matches_reference_recursion():
    grads = [rand_grads(t=2, p=4, seed=s) for s in (12, 13)]
    losses = [np.array([0.5, 2.0], np.float32), np.array([0.4, 1.5], np.float32)]
    beta, sigma = 0.9, 0.5
    agg = aggregators.get("db_mtl", beta=beta, beta_sigma=sigma)
    buf = np.zeros((2, 4))
    for step, (g, l) in enumerate(zip(grads, losses), start=1):
        log_g = g / (l[:, None] + 1e-8)
        rate = beta / step**sigma
        buf = log_g + rate * (buf - log_g)
        norms = np.linalg.norm(buf, axis=1)
        expected = (norms.max() / norms) @ buf
        np.testing.assert_allclose(agg(g, l).numpy(), expected, rtol=1e-5, atol=1e-6)
    # beta = 0: no buffer, weight-based, every log-gradient rescaled to the largest norm.
    agg0 = aggregators.get("db_mtl", beta=0.0)
    assert agg0.weight_based and not agg0.stateful
    log_g = grads[0] / losses[0][:, None]
    norms = np.linalg.norm(log_g, axis=1)
    np.testing.assert_allclose(agg0(grads[0], losses[0]).numpy(), (norms.max() / norms) @ log_g, rtol=1e-5)


def test_stateful_reset_and_lazy_build_in_tf_function():
    for name in ("gradvac", "db_mtl", "pcgrad", "graddrop"):
        agg = make(name)  # not built: the first trace builds through tf.init_scope
        fn = tf.function(lambda g, l: agg(g, l))
        grads, g2 = tf.constant(rand_grads(seed=14)), tf.constant(rand_grads(seed=15))
        first = fn(grads, tf.constant(LOSSES)).numpy()
        fn(g2, tf.constant(LOSSES))
        agg.reset_state()
        np.testing.assert_allclose(fn(grads, tf.constant(LOSSES)).numpy(), first, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_direction_is_equivariant_to_gradient_scale(name):
    grads = rand_grads(seed=16)
    reference = make(name)(grads, LOSSES).numpy()
    for scale in (1e-3, 1e3):
        d = make(name)(grads * scale, LOSSES).numpy()
        np.testing.assert_allclose(d / scale, reference, rtol=2e-3, atol=1e-5)


def test_imtl_g_ignores_zero_gradient_task():
    grads = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]], np.float32)
    agg = aggregators.get("imtl_g")
    d = agg(grads).numpy()
    units = grads[[0, 2]] / np.linalg.norm(grads[[0, 2]], axis=1, keepdims=True)
    assert np.linalg.norm(d) > 0.1
    np.testing.assert_allclose(units @ d, (units @ d)[0], rtol=1e-4)
    np.testing.assert_allclose(agg.task_weights(grads).numpy()[1], 0.0, atol=1e-5)
