"""Hard, cross-stitch and soft (L2) sharing."""

import keras
import numpy as np
import pytest

import mtlzoo
from mtlzoo.layers import CrossStitch
from mtlzoo.testing import predict_eager

TINY = dict(backbone="tiny", backbone_args={"width": 4}, neck_channels=8, input_shape=(32, 64, 3),
            tasks=["segmentation", "depth"])


def _copy_by_layer_name(src, dst, skip=()):
    """Copies weights of equally named layers, recursing into nested models."""
    def walk(model):
        out = {}
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                for k, v in walk(layer).items():
                    out[f"{layer.name}/{k}"] = v
            elif layer.weights:
                out[layer.name] = layer
        return out

    s, d = walk(src), walk(dst)
    copied = 0
    for name, layer in d.items():
        if name in s and not name.startswith(tuple(skip)):
            layer.set_weights(s[name].get_weights())
            copied += 1
    return copied


def test_cross_stitch_at_identity_equals_independent_columns(batch_factory):
    stitched = mtlzoo.build("driving_perception", sharing="cross_stitch", sharing_args={"alpha_self": 1.0}, compile=False, **TINY)
    columns = mtlzoo.build("driving_perception", sharing="soft_l2", compile=False, **TINY)
    assert _copy_by_layer_name(stitched, columns) > 10
    x, _ = batch_factory(stitched, n=2)
    a, b = predict_eager(stitched, x), predict_eager(columns, x)
    for t in ("segmentation", "depth"):
        np.testing.assert_allclose(a[t], b[t], rtol=1e-5, atol=1e-5)
    # Away from the identity the columns mix, and outputs differ.
    mixed = mtlzoo.build("driving_perception", sharing="cross_stitch", sharing_args={"alpha_self": 0.5}, compile=False, **TINY)
    _copy_by_layer_name(stitched, mixed, skip=("cross_stitch",))
    for layer in mixed.layers:
        if isinstance(layer, CrossStitch):
            assert float(np.asarray(layer.alpha)[0, 1, 0]) == pytest.approx(0.5)
    c = predict_eager(mixed, x)
    assert not np.allclose(a["segmentation"], c["segmentation"], atol=1e-4)


def test_cross_stitch_layer_math_and_config():
    unit = CrossStitch(mode="per_layer", alpha_self=0.8)
    a, b = np.ones((1, 2, 2, 3), "float32"), np.full((1, 2, 2, 3), 3.0, "float32")
    out_a, out_b = unit([a, b])
    np.testing.assert_allclose(out_a, 0.8 * a + 0.2 * b)
    np.testing.assert_allclose(out_b, 0.2 * a + 0.8 * b)
    three = CrossStitch(mode="per_channel", alpha_self=0.9)
    three([a, a, b])
    np.testing.assert_allclose(np.asarray(three.alpha)[0, 1], 0.05)
    assert three.alpha.shape == (3, 3, 3)
    clone = CrossStitch.from_config(unit.get_config())
    assert clone.mode == "per_layer" and clone.alpha_self == 0.8
    with pytest.raises(ValueError, match="per_channel"):
        CrossStitch(mode="bogus")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CrossStitch(alpha_self=1.5)


def test_soft_l2_penalty_zero_for_identical_columns_and_positive_otherwise():
    model = mtlzoo.build("driving_perception", sharing="soft_l2", sharing_args={"weight": 0.1}, **TINY)
    penalty = float(model.penalty_losses()["soft_l2"])
    assert penalty > 0  # independently initialised columns differ
    # Make the depth column identical to the segmentation column.
    for name in [layer.name for layer in model.layers if layer.name.startswith("segmentation__col_")]:
        twin = model.get_layer(name.replace("segmentation__", "depth__"))
        twin.set_weights(model.get_layer(name).get_weights())
    assert float(model.penalty_losses()["soft_l2"]) == pytest.approx(0.0, abs=1e-12)
    # The penalty is λ Σ ||θ_i - θ_j||²: doubling λ doubles it.
    model.get_layer("depth__col_stage0").trainable_variables[0].assign_add(1.0)
    p1 = float(model.penalty_losses()["soft_l2"])
    model.penalties[0]["weight"] = 0.2
    assert float(model.penalty_losses()["soft_l2"]) == pytest.approx(2 * p1, rel=1e-6)


def test_soft_l2_penalty_is_logged_and_pulls_columns_together(batch_factory):
    model = mtlzoo.build("driving_perception", sharing="soft_l2", sharing_args={"weight": 1.0}, **TINY)
    x, y = batch_factory(model, n=2)
    y = {k: -np.ones_like(v) if k != "depth" else np.zeros_like(v) for k, v in y.items()}  # only the penalty trains
    h = model.fit(x, y, epochs=3, batch_size=2, verbose=0).history
    assert h["soft_l2_penalty"][-1] < h["soft_l2_penalty"][0]


def test_variable_groups_per_sharing_mode():
    hard = mtlzoo.build("driving_perception", compile=False, **TINY)
    shared, by_task = hard.variable_groups()
    assert shared and all(by_task.values())
    stitched = mtlzoo.build("driving_perception", sharing="cross_stitch", compile=False, **TINY)
    shared, by_task = stitched.variable_groups()
    assert any("alpha" in v.path for v in shared)  # units and columns are shared
    soft = mtlzoo.build("driving_perception", sharing="soft_l2", compile=False, **TINY)
    shared, by_task = soft.variable_groups()
    assert shared == []  # every column belongs to its task
