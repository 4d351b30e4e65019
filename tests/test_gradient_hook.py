"""Gradient aggregators inside the compiled train step."""

import keras
import numpy as np
import pytest

import mtlzoo
import mtlzoo.aggregators
from mtlzoo.gradient_hook import AggregatorHook, flatten, unflatten

# Three tasks on an MLP: cheap to trace, enough tasks for every method to matter.
VECTOR = {
    "name": "vector3", "input_shape": [12], "backbone": "mlp", "backbone_args": {"units": [32, 32]},
    "tasks": {"a": {"kind": "classification", "num_classes": 3}, "b": {"kind": "regression"},
              "c": {"kind": "regression", "units": 2}},
}
TINY = dict(backbone="tiny", backbone_args={"width": 4}, neck_channels=8, input_shape=(32, 64, 3),
            tasks=["segmentation", "depth", "scene"])


def _one_sgd_step(batch_factory, eager=False, **overrides):
    model = mtlzoo.build("driving_perception_lite", **TINY, **overrides)
    # keeps the aggregator hook the recipe installed
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=eager)
    x, y = batch_factory(model, n=4)
    before = [np.array(v) for v in model.trainable_variables]
    model.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    return model, [np.array(v) - b for v, b in zip(model.trainable_variables, before)]


@pytest.fixture(scope="module")
def plain_step():
    """The plain step's updates, computed once (eagerly: the reference, not the code under test)."""
    from conftest import random_inputs, random_labels

    return _one_sgd_step(lambda model, n=4, seed=0: (random_inputs(model, n, seed), random_labels(model, n, seed)),
                         eager=True)


@pytest.mark.parametrize("representation", [False, True])
def test_sum_aggregator_reproduces_the_plain_step(batch_factory, plain_step, representation):
    _, plain = plain_step
    model, summed = _one_sgd_step(batch_factory, aggregator="sum", aggregator_args={"representation": representation})
    assert isinstance(model._hooks.gradient, AggregatorHook)
    for a, b in zip(plain, summed):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_mean_aggregator_scales_only_the_shared_update(batch_factory, plain_step):
    model, plain = plain_step
    _, mean = _one_sgd_step(batch_factory, aggregator="mean")
    shared_ids = {id(v) for v in model.variable_groups()[0]}
    t = len(model.task_names)
    for v, a, b in zip(model.trainable_variables, plain, mean):
        if id(v) in shared_ids:
            np.testing.assert_allclose(b, a / t, rtol=1e-3, atol=1e-6)
        else:
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", mtlzoo.aggregators.list())
def test_every_aggregator_trains_inside_fit(name, batch_factory):
    model = mtlzoo.build(VECTOR, aggregator=name)
    x, y = batch_factory(model, n=16)
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    assert history["nonfinite_steps"] == [0.0, 0.0, 0.0]
    assert history["loss"][-1] < history["loss"][0]


@pytest.mark.parametrize("name", ["mgda", "aligned_mtl"])
def test_representation_level_variant(name, batch_factory):
    model = mtlzoo.build("driving_perception_lite", aggregator=name, aggregator_args={"representation": True}, **TINY)
    trunk, heads = model.shared_representation_model()
    x, y = batch_factory(model, n=2)
    direct, split = model.predict_on_batch(x), heads(trunk(x))
    for t in model.task_names:
        np.testing.assert_allclose(direct[t], np.asarray(split[t]), rtol=1e-5, atol=1e-5)
    history = model.fit(x, y, epochs=3, batch_size=2, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]


def test_representation_needs_weight_based_method():
    with pytest.raises(ValueError, match="weight-based"):
        AggregatorHook(mtlzoo.aggregators.get("pcgrad"), representation=True)


def test_aggregator_survives_save_and_load(tmp_path):
    model = mtlzoo.build("driving_perception_lite", aggregator="pcgrad", aggregator_args={"seed": 1}, **TINY)
    model.save(tmp_path / "m.keras")
    reloaded = mtlzoo.load(tmp_path / "m.keras")
    assert type(reloaded._hooks.gradient.aggregator).__name__ == "PCGrad"


def test_soft_sharing_has_nothing_to_aggregate(batch_factory):
    with pytest.warns(UserWarning, match="no shared parameters"):
        model = mtlzoo.build(VECTOR, sharing="soft_l2", aggregator="mgda")
    x, y = batch_factory(model, n=2)
    assert np.isfinite(model.fit(x, y, epochs=1, verbose=0).history["loss"]).all()


def test_flatten_round_trip():
    import tensorflow as tf

    like = [tf.Variable(np.zeros((2, 3))), tf.Variable(np.zeros(4))]
    grads = [np.arange(6.0).reshape(2, 3), None]
    flat = flatten(grads, like)
    assert flat.shape == (10,)
    back = unflatten(flat, like)
    np.testing.assert_array_equal(back[0], grads[0])
    np.testing.assert_array_equal(back[1], np.zeros(4))


def test_hook_conflicts_are_errors():
    model = mtlzoo.build("tabular_demo", aggregator="pcgrad")

    class Combine:
        def combine(self, model, task_losses):
            return sum(task_losses.values())

    with pytest.raises(ValueError, match="cannot be combined"):
        model.set_step_hook(AggregatorHook(mtlzoo.aggregators.get("mgda")))
    model.set_step_hook(None)
    model.set_step_hook(Combine())
    with pytest.raises(ValueError, match="cannot be combined"):
        model.set_step_hook(AggregatorHook(mtlzoo.aggregators.get("mgda")))


@pytest.mark.benchmark  # runs `mtlzoo bench step` in a fresh process: on demand
def test_bench_step_reports_time_and_memory_ratios():
    """`mtlzoo bench step` in a fresh process: every candidate timed against equal and T backward passes,
    with the step's peak memory from the BFC allocator statistics."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
    proc = subprocess.run(
        [sys.executable, "-m", "mtlzoo.cli", "bench", "step", "steps=1", "rounds=1", "warmup=1",
         "methods=[pcgrad, mgda_ub]", "batch_size=2",
         "overrides={backbone: tiny, backbone_args: {width: 4}, neck_channels: 16, input_shape: [32, 64, 3]}"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {}
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] and not cells[0].startswith(("method", "---")):
            rows[cells[0]] = cells
    assert {"equal", "t_backward", "aggregator:pcgrad", "aggregator:mgda_ub"} <= set(rows), proc.stdout
    assert rows["equal"][2] == "1.00" and rows["t_backward"][3] == "1.00"
    assert all(float(r[1]) > 0 and float(r[4]) > 0 for r in rows.values())  # step ms, peak MB measured
    assert "[T, P] gradient matrix of the shared parameters" in proc.stdout
