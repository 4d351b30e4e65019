"""Missing labels: masked elements, examples and whole tasks contribute nothing."""

import numpy as np
import pytest

import mtlzoo
from mtlzoo import losses
from mtlzoo.testing import TINY_IMAGE

TINY = TINY_IMAGE


@pytest.fixture(scope="module")
def model():
    return mtlzoo.build("driving_perception_lite", **TINY)


def _head_weights(model, task):
    return [np.array(v) for name in model.task_layers[task] for v in model.get_layer(name).trainable_variables]


def test_task_with_all_labels_missing_gives_zero_loss_and_unchanged_head(model, batch_factory):
    x, y = batch_factory(model, n=4)
    y["depth"] = np.zeros_like(y["depth"])  # depth <= 0: invalid everywhere
    y["scene"] = -np.ones_like(y["scene"])
    y["detection"] = -np.ones_like(y["detection"])
    before = {t: _head_weights(model, t) for t in model.task_names}
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    for task in ("depth", "scene", "detection"):
        assert history.history[f"{task}_loss"] == [0.0, 0.0]
        for a, b in zip(before[task], _head_weights(model, task)):
            np.testing.assert_array_equal(a, b)
    assert all(np.isfinite(history.history["loss"]))
    assert history.history["segmentation_loss"][0] > 0
    changed = any(not np.array_equal(a, b) for a, b in zip(before["segmentation"], _head_weights(model, "segmentation")))
    assert changed


def test_absent_task_key_contributes_nothing(model, batch_factory):
    x, y = batch_factory(model, n=2)
    preds = model(x, training=False)
    only_seg = {"segmentation": y["segmentation"]}
    task_losses = model.compute_task_losses(only_seg, preds)
    assert float(task_losses["depth"]) == 0.0 and float(task_losses["segmentation"]) > 0


def test_masked_pixels_match_loss_on_valid_subset():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    labels = rng.integers(0, 3, (2, 4, 4))
    masked = labels.copy()
    masked[0] = -1  # first example unlabelled
    masked[1, :2] = -1  # half of the second
    loss = losses.MaskedSparseCategoricalCrossentropy()
    got = float(loss(masked, logits))
    # Reference: mean cross-entropy over the valid pixels only.
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    valid = masked >= 0
    ref = -np.take_along_axis(logp, np.where(valid, masked, 0)[..., None], -1)[..., 0][valid].mean()
    assert got == pytest.approx(ref, rel=1e-5)


def test_zero_sample_weight_removes_an_example():
    rng = np.random.default_rng(1)
    pred = rng.uniform(1, 10, (3, 4, 4, 1)).astype("float32")
    true = rng.uniform(1, 10, (3, 4, 4, 1)).astype("float32")
    loss = losses.DepthL1()
    full = float(loss(true[:2], pred[:2]))
    weighted = float(loss(true, pred, sample_weight=np.array([1.0, 1.0, 0.0])))
    assert weighted == pytest.approx(full, rel=1e-6)


@pytest.mark.parametrize("loss,y_true,y_pred", [
    (losses.MaskedSparseCategoricalCrossentropy(), -np.ones((2, 4, 4)), np.zeros((2, 4, 4, 3))),
    (losses.DepthL1(), np.zeros((2, 4, 4, 1)), np.ones((2, 4, 4, 1))),
    (losses.MaskedBinaryCrossentropy(), -np.ones((2, 5)), np.zeros((2, 5))),
    (losses.CenterNetLoss(num_classes=2), -np.ones((2, 4, 4, 7)), np.full((2, 4, 4, 6), 0.5)),
    (losses.MaskedMeanSquaredError(ignore_value=-1.0), -np.ones((2, 3)), np.zeros((2, 3))),
])
def test_fully_missing_batch_is_zero_not_nan_with_finite_gradient(loss, y_true, y_pred):
    import tensorflow as tf

    y_pred = tf.Variable(np.asarray(y_pred, "float32"))
    with tf.GradientTape() as tape:
        value = loss(np.asarray(y_true, "float32"), y_pred)
    grad = tape.gradient(value, y_pred)
    assert float(value) == 0.0
    assert grad is None or np.all(np.asarray(grad) == 0.0)


def test_metrics_skip_missing_labels():
    from mtlzoo import metrics

    m = metrics.MeanIoU(num_classes=2)
    y_true = np.array([[0, 1, -1, -1]])
    logits = np.array([[[5.0, 0.0], [0.0, 5.0], [5.0, 0.0], [0.0, 5.0]]])
    m.update_state(y_true, logits)
    assert float(m.result()) == pytest.approx(1.0)
    d = metrics.DepthError("abs_err")
    d.update_state(np.array([[2.0, 0.0]])[..., None], np.array([[3.0, 50.0]])[..., None])
    assert float(d.result()) == pytest.approx(1.0)
    f1 = metrics.MultiLabelF1()
    f1.update_state(np.array([[1.0, -1.0, 0.0]]), np.array([[2.0, 2.0, -2.0]]))
    assert float(f1.result()) == pytest.approx(1.0)
