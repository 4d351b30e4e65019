"""The PyTorch reference of `mtlzoo bench step compare=torch` is the same model with the same losses."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import mtlzoo  # noqa: E402
from mtlzoo.bench import torch_reference as tr  # noqa: E402
from mtlzoo.bench.torch_reference_losses import min_norm_weights, pcgrad  # noqa: E402
from mtlzoo.testing import random_inputs, random_labels  # noqa: E402

pytestmark = pytest.mark.benchmark

SHAPE = [64, 128, 3]


@pytest.fixture(scope="module")
def keras_model():
    return mtlzoo.get_recipe("driving_perception_lite", input_shape=SHAPE).build()


def _reference(seed=0):
    return tr.TorchReference.from_recipe(mtlzoo.get_recipe("driving_perception_lite", input_shape=SHAPE), seed=seed,
                                         threads=1)  # 2 OpenMP threads on 2 busy cores can be 100x slower


def _randomise(model, seed=0):
    """Non-trivial weights and BatchNorm statistics (a fresh BN model gives near-constant outputs)."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        if v.dtype != "float32":
            continue
        name, shape = v.path.split("/")[-1], tuple(v.shape)
        if name == "moving_variance":
            v.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif name in ("gamma",):
            v.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif name in ("beta", "bias", "moving_mean"):
            v.assign(rng.normal(0.0, 0.1, shape).astype("float32"))


def _nhwc(t):
    t = t.detach().numpy()
    return t.transpose(0, 2, 3, 1) if t.ndim == 4 else t


def test_parameter_counts_match_keras_per_part(keras_model):
    shared, by_task = keras_model.variable_groups()
    size = lambda vs: int(sum(np.prod(v.shape) for v in vs))  # noqa: E731
    keras_counts = {"backbone": size([v for v in shared if not v.path.startswith("neck")]),
                    "neck": size([v for v in shared if v.path.startswith("neck")]),
                    **{t: size(vs) for t, vs in by_task.items()}, "total": size(keras_model.trainable_variables)}
    assert tr.part_parameter_counts(_reference()) == keras_counts
    assert 0.9e6 < keras_counts["total"] < 0.95e6


def test_outputs_have_keras_shapes(keras_model):
    ref = _reference()
    x = random_inputs(keras_model, 2)
    xt, _ = ref.batch(x, random_labels(keras_model, 2))
    outputs = ref.model(xt)
    for t, out in keras_model(x, training=False).items():
        assert _nhwc(outputs[t]).shape == tuple(out.shape), t


def test_copied_weights_give_keras_outputs_losses_and_gradients(keras_model):
    import tensorflow as tf

    _randomise(keras_model)
    ref = _reference()
    assert tr.copy_keras_weights(keras_model, ref) == 103
    x, y = random_inputs(keras_model, 2, seed=1), random_labels(keras_model, 2, seed=1)
    xt, yt = ref.batch(x, y)
    ref.model.eval()
    with torch.no_grad():
        outputs = ref.model(xt)
    expected = keras_model(x, training=False)
    for t, out in expected.items():
        out = np.asarray(out)
        assert np.std(out) > 1e-3, f"{t}: near-constant output proves nothing"
        np.testing.assert_allclose(_nhwc(outputs[t]), out, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(out).max()))
    keras_losses = keras_model.compute_task_losses(y, expected)
    torch_losses = ref.task_losses(outputs, yt)
    for t in keras_losses:
        np.testing.assert_allclose(float(torch_losses[t]), float(keras_losses[t]), rtol=1e-5, err_msg=t)

    # Training mode (BatchNorm on batch statistics): same weighted total and same gradients.
    variables = keras_model.trainable_variables
    with tf.GradientTape() as tape:
        total = keras_model.combine_task_losses(keras_model.compute_task_losses(y, keras_model(x, training=True)))
    grads = tape.gradient(total, variables)
    ref.model.train()
    torch_total = ref.total(ref.task_losses(ref.model(xt), yt))
    torch_total.backward()
    np.testing.assert_allclose(float(torch_total.detach()), float(total), rtol=1e-5)
    for v, g in zip(variables, grads):  # the Keras gradients, laid out as PyTorch parameters
        v.assign(g)
    as_torch = _reference()
    tr.copy_keras_weights(keras_model, as_torch)
    pairs = [(name, p.grad.numpy(), e.detach().numpy())
             for (name, p), (_, e) in zip(ref.model.named_parameters(), as_torch.model.named_parameters())]
    largest = max(float(np.linalg.norm(e)) for _, _, e in pairs)
    for name, actual, wanted in pairs:  # relative error per tensor; a tensor whose true gradient is ~0
        # (a BatchNorm bias feeding straight into another BatchNorm) is float noise, held to the global scale
        err = float(np.linalg.norm(actual - wanted))
        assert err <= 1e-3 * float(np.linalg.norm(wanted)) + 1e-5 * largest, (name, err, float(np.linalg.norm(wanted)))

@pytest.mark.parametrize("method", tr.METHODS)
def test_train_steps_reduce_the_loss(keras_model, method):
    ref = _reference()
    xt, yt = ref.batch(random_inputs(keras_model, 2), random_labels(keras_model, 2))
    losses = [float(ref.train_step(xt, yt, method)) for _ in range(8)]
    assert losses[-1] < 0.85 * losses[0], losses


def test_pcgrad_and_min_norm_solver_on_known_cases():
    g = torch.Generator().manual_seed(0)
    np.testing.assert_allclose(pcgrad(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]), g).numpy(), [0.5, 1.5], atol=1e-6)
    same = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    np.testing.assert_allclose(pcgrad(same, g).numpy(), [2.0, 4.0], atol=1e-6)  # no conflict: the plain sum
    w = min_norm_weights(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    np.testing.assert_allclose(w.numpy(), [0.5, 0.5], atol=1e-4)
    gram = torch.tensor([[4.0, 1.0, 0.0], [1.0, 1.0, 0.5], [0.0, 0.5, 9.0]], dtype=torch.float64)
    w = min_norm_weights(gram, max_iter=2000, tol=1e-10)
    # Brute force over a fine simplex grid.
    a, b = np.meshgrid(np.linspace(0, 1, 401), np.linspace(0, 1, 401))
    pts = np.stack([a.ravel(), b.ravel(), 1 - a.ravel() - b.ravel()], 1)
    pts = pts[pts[:, 2] >= 0]
    best = np.einsum("ni,ij,nj->n", pts, gram.numpy(), pts).min()
    assert float(w @ gram @ w) <= best + 1e-4
    assert abs(float(w.sum()) - 1.0) < 1e-9 and float(w.min()) >= 0


def test_unsupported_recipe_names_the_problem():
    with pytest.raises(ValueError, match="sharing=hard on backbone=mobilenetv3_small"):
        tr.TorchReference.from_recipe(mtlzoo.get_recipe("driving_perception_lite", sharing="mmoe"))


def test_compare_without_torch_names_the_install(monkeypatch):
    import sys

    import mtlzoo.bench
    from mtlzoo.bench import step

    monkeypatch.setitem(sys.modules, "torch", None)  # as if PyTorch were not installed
    for name in ("torch_reference", "torch_reference_losses"):
        monkeypatch.delitem(sys.modules, f"mtlzoo.bench.{name}", raising=False)
        monkeypatch.delattr(mtlzoo.bench, name, raising=False)
    with pytest.raises(ImportError, match=r"pip install 'mtlzoo\[compare\]'"):
        step.run({"compare": "torch"})
    with pytest.raises(ValueError, match="compare=torch"):
        step.run({"compare": "jax"})
