"""MTAN sharing: one attention module per task and stage on a shared trunk; training, saving, export."""

import json

import keras
import numpy as np
import pytest

import mtlzoo
import mtlzoo.data
from mtlzoo.edge import Runner
from mtlzoo.export import export
from mtlzoo.layers import TaskAttention
from mtlzoo.sharing.mtan import attention_layer_name, attention_masks
from mtlzoo.testing import TINY_IMAGE, predict_eager

RECIPE = "driving_perception_mtan"
NUM_STAGES = 4


def _stage_models(model):
    return [layer for layer in model.layers if layer.name.startswith("backbone_stage")]


def test_task_attention_layer_math_and_config():
    rng = np.random.default_rng(0)
    shared = rng.normal(size=(2, 4, 6, 5)).astype("float32")
    previous = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    layer = TaskAttention(return_mask=True, name="t__att_1")
    attended, mask = layer([shared, previous])
    # Recompute by hand: concat [shared, maxpool2x2(previous)] -> 1x1 conv, BN, ReLU -> 1x1 conv, BN, sigmoid.
    pooled = previous.reshape(2, 4, 2, 6, 2, 3).max(axis=(2, 4))
    x = np.concatenate([shared, pooled], axis=-1)
    eps = layer.mask_bn1.epsilon  # inference-mode BN with initial statistics: x / sqrt(1 + eps)
    x = np.maximum(x @ layer.mask_conv1.kernel.numpy()[0, 0] / np.sqrt(1 + eps), 0)
    expected = 1 / (1 + np.exp(-(x @ layer.mask_conv2.kernel.numpy()[0, 0]) / np.sqrt(1 + eps)))
    np.testing.assert_allclose(np.asarray(mask), expected, rtol=1e-4, atol=1e-5)
    assert attended.shape == shared.shape
    again = TaskAttention.from_config(json.loads(json.dumps(layer.get_config())))
    assert again.get_config() == layer.get_config()
    # Vectors: dense layers, elementwise mask over units.
    vec = TaskAttention(return_mask=True)(np.ones((3, 7), "float32"))
    assert [tuple(v.shape) for v in vec] == [(3, 7), (3, 7)]
    with pytest.raises(ValueError, match="both be feature maps or both vectors"):
        TaskAttention()([shared, np.ones((2, 3), "float32")])


@pytest.mark.parametrize("recipe,overrides", [
    ("tabular_demo", {"aggregator": "pcgrad"}),  # vector MTAN: dense attention, elementwise over units
    (RECIPE, {"aggregator": "mgda", "aggregator_args": {"representation": True}, "tasks": ["depth", "scene"],
              **TINY_IMAGE}),  # MGDA-UB differentiates at the four shared stage outputs
], ids=["pcgrad-vector", "mgda_ub-image"])
def test_trains_with_gradient_and_representation_level_aggregators(recipe, overrides, batch_factory):
    model = mtlzoo.build(recipe, sharing="mtan", **overrides)
    assert sum(isinstance(layer, TaskAttention) for layer in model.layers) > 0
    x, y = batch_factory(model, n=8)
    history = model.fit(x, y, epochs=4, batch_size=8, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["nonfinite_steps"] == [0.0] * 4
    assert history["loss"][-1] < history["loss"][0], history["loss"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny MTAN model trained with DWA on synthetic scenes (so BatchNorm statistics are not trivial), saved."""
    model = mtlzoo.build(RECIPE, tasks=["depth", "scene"], weighting="dwa", **TINY_IMAGE)
    ds = mtlzoo.data.load("synthetic_driving", split="train", batch_size=8, image_size=(32, 64),
                          num_examples=32, tasks=model.task_names, cache=True)
    history = model.fit(ds, epochs=4, verbose=0).history
    path = tmp_path_factory.mktemp("mtan") / "m.keras"
    model.save(path)
    x = next(iter(mtlzoo.data.load("synthetic_driving", split="validation", batch_size=8, image_size=(32, 64),
                                   num_examples=8, tasks=model.task_names)))[0].numpy()
    return model, history, path, x


def test_trains_with_dwa(trained):
    _, history, _, _ = trained
    assert np.isfinite(history["loss"]).all()
    assert history["loss"][-1] < history["loss"][0], history["loss"]
    # DWA ran: from the third epoch on, the weights follow the loss ratios and leave 1.
    assert history["depth_weight"][0] == history["scene_weight"][0] == 1.0
    assert history["depth_weight"][-1] != 1.0
    assert history["depth_weight"][-1] + history["scene_weight"][-1] == pytest.approx(2.0, rel=1e-5)


def test_one_attention_module_per_task_and_stage_on_a_shared_trunk(trained):
    model, _, _, x = trained
    tasks = model.task_names
    attention = [layer for layer in model.layers if isinstance(layer, TaskAttention)]
    assert sorted(layer.name for layer in attention) == sorted(
        attention_layer_name(t, j) for t in tasks for j in range(NUM_STAGES))
    for t in tasks:
        names = set(model.task_layers[t])
        assert {attention_layer_name(t, j) for j in range(NUM_STAGES)} | {f"{t}__neck"} <= names
        assert all(n == t or n.startswith(t + "__") for n in names)
    # The trunk runs once: its stages are called once, and their parameters are the shared group, counted once.
    stages = _stage_models(model)
    assert len(stages) == NUM_STAGES and all(len(s._inbound_nodes) == 1 for s in stages)
    trunk = sum(int(np.prod(v.shape)) for s in stages for v in s.trainable_variables)
    summary = model.parameter_summary()
    assert summary["shared"] == trunk
    shared, by_task = model.variable_groups()
    assert {id(v) for s in stages for v in s.trainable_variables} == {id(v) for v in shared}
    owned = [id(v) for vs in by_task.values() for v in vs]
    assert len(owned) == len(set(owned)) and not set(owned) & {id(v) for v in shared}
    # Masks (on synthetic scenes): one per task and stage, shaped like the stage output, strictly inside (0, 1).
    masks = attention_masks(model, x)
    assert list(masks) == tasks
    for t in tasks:
        assert [m.shape[1:] for m in masks[t]] == [tuple(s.output.shape[1:]) for s in stages]
        for m in masks[t]:
            assert 0.0 < m.min() and m.max() < 1.0
    # The representation split (for the *_ub aggregators) sits exactly at the shared stage outputs.
    trunk_model, heads = model.shared_representation_model()
    assert len(trunk_model.outputs) == NUM_STAGES
    assert not {id(v) for v in heads.trainable_variables} & {id(v) for v in shared}
    direct, split = model(x, training=False), heads(trunk_model(x, training=False), training=False)
    for t in tasks:
        np.testing.assert_allclose(np.asarray(split[t]), np.asarray(direct[t]), rtol=1e-5, atol=1e-5)


def test_keras_round_trip_in_safe_mode(trained):
    model, _, path, x = trained
    reloaded = keras.saving.load_model(path, safe_mode=True)
    assert sum(isinstance(layer, TaskAttention) for layer in reloaded.layers) == 2 * NUM_STAGES
    before, after = predict_eager(model, x), predict_eager(reloaded, x)
    for t in model.task_names:
        np.testing.assert_array_equal(after[t], before[t])
    masks, masks_again = attention_masks(model, x), attention_masks(reloaded, x)
    for t in model.task_names:
        for m, m2 in zip(masks[t], masks_again[t]):
            np.testing.assert_array_equal(m, m2)


def test_a_closed_mask_changes_only_its_task(trained):
    _, _, path, x = trained
    model = mtlzoo.load(path, compile=False)  # a private copy to edit
    before = predict_eager(model, x)
    layer = model.get_layer(attention_layer_name("depth", 0))
    # mask_bn2 output = beta when gamma = 0: sigmoid(-30) ~ 1e-13, a saturated 0 mask.
    layer.mask_bn2.gamma.assign(np.zeros(layer.mask_bn2.gamma.shape, "float32"))
    layer.mask_bn2.beta.assign(np.full(layer.mask_bn2.beta.shape, -30.0, "float32"))
    after = predict_eager(model, x)
    assert attention_masks(model, x)["depth"][0].max() < 1e-12
    np.testing.assert_array_equal(after["scene"], before["scene"])
    change = np.abs(after["depth"] - before["depth"]).max()
    assert change > 1e-2 * max(1.0, float(np.abs(before["depth"]).max())), change


def test_tflite_export_has_builtin_ops_only_and_matches_keras(trained, tmp_path):
    model, _, _, x = trained
    result = export(model, tmp_path / "mtan", formats=["tflite"], verify_data=x, postprocessed=False)
    assert result.passed and result.report["formats"]["tflite"]["passed"]
    ops = result.report["formats"]["tflite"]["ops"]
    assert not any(op.startswith("Flex") or op in ("CUSTOM", "DELEGATE") for op in ops), ops
    # The attention survives conversion: the tiny trunk has strided convs only, so MAX_POOL_2D is the pooled
    # previous attended feature entering the next mask.
    assert {"LOGISTIC", "MUL", "CONCATENATION", "MAX_POOL_2D"} <= set(ops), ops
    runner = Runner(result.paths["tflite"])
    assert not runner.uses_flex()
    ref = model(x[:4], training=False)
    outs = runner(x[:4])
    assert list(outs) == model.task_names
    for t in model.task_names:
        scale = max(1.0, float(np.abs(np.asarray(ref[t])).max()))
        assert np.abs(outs[t] - np.asarray(ref[t])).max() <= 1e-4 * scale, t
