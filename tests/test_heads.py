"""Task heads: registry, configs, label specs, CenterNet encode/decode and losses."""

import numpy as np
import pytest

import mtlzoo.heads
from mtlzoo import losses
from mtlzoo.heads.centernet_targets import decode_centernet, encode_centernet_targets, missing_centernet_target

CONFIGS = {
    "segmentation": {"num_classes": 5},
    "depth": {"max_depth": 80.0},
    "detection": {"num_classes": 3},
    "multilabel": {"num_classes": 4},
    "classification": {"num_classes": 3},
    "regression": {"units": 2},
    "normal": {"channels": 16},
}


@pytest.mark.parametrize("kind", mtlzoo.heads.list())
def test_every_head_kind_has_config_loss_metrics_and_label_spec(kind):
    assert kind in CONFIGS, f"add a config for the new head kind {kind!r} to CONFIGS"
    head = mtlzoo.heads.get(kind, **CONFIGS[kind])
    clone = type(head).from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    assert head.loss() is not None
    assert isinstance(head.metrics(), list)
    shape, dtype = head.label_spec((64, 128, 3))
    assert dtype in ("int", "float") and isinstance(shape, tuple)


def test_unknown_head_kind_and_bad_arguments():
    with pytest.raises(KeyError, match="Did you mean 'depth'"):
        mtlzoo.heads.get("dept")
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        mtlzoo.heads.get("segmentation", num_classes=1)
    with pytest.raises(ValueError, match="max_depth must be positive"):
        mtlzoo.heads.get("depth", max_depth=0)


def test_centernet_encode_decode_round_trip():
    boxes = np.array([[8.0, 12.0, 40.0, 60.0], [30.0, 70.0, 58.0, 118.0]])
    classes = np.array([0, 2])
    target = encode_centernet_targets(boxes, classes, (64, 128), num_classes=3, stride=4)
    assert target.shape == (16, 32, 8)
    assert target[..., 7].sum() == 2  # two centers
    assert target[..., 0].max() == pytest.approx(1.0) and target[..., 1].max() == 0.0
    prediction = target[..., :7]  # a perfect head output: heatmaps, size, offset
    got_boxes, scores, got_classes = decode_centernet(prediction, num_classes=3, stride=4)
    order = np.argsort(got_classes)
    np.testing.assert_allclose(got_boxes[order], boxes, atol=1e-4)
    np.testing.assert_array_equal(got_classes[order], classes)
    np.testing.assert_allclose(scores, 1.0)


def test_centernet_target_validation_and_missing():
    with pytest.raises(ValueError, match="class id 5"):
        encode_centernet_targets([[0, 0, 10, 10]], [5], (32, 32), num_classes=2)
    with pytest.raises(ValueError, match="2 boxes but 1 class"):
        encode_centernet_targets([[0, 0, 10, 10], [1, 1, 5, 5]], [0], (32, 32), num_classes=2)
    empty = encode_centernet_targets(np.zeros((0, 4)), [], (32, 32), num_classes=2)
    assert not empty.any()
    assert (missing_centernet_target((32, 32), 2) == -1).all()


def test_centernet_loss_prefers_the_right_prediction():
    target = encode_centernet_targets([[8.0, 8.0, 24.0, 24.0]], [1], (32, 32), num_classes=2)[None]
    loss = losses.CenterNetLoss(num_classes=2)
    perfect = np.clip(target[..., :6], 1e-4, 1 - 1e-4)
    wrong = perfect.copy()
    wrong[..., :2] = 0.5
    assert float(loss(target, perfect)) < 0.1 * float(loss(target, wrong))
    # Missing examples add nothing: a batch of [real, missing] equals the real one.
    batch = np.concatenate([target, -np.ones_like(target)])
    preds = np.concatenate([wrong, wrong])
    assert float(loss(batch, preds)) == pytest.approx(float(loss(target, wrong)), rel=1e-6)


def test_detection_head_decode_helper():
    head = mtlzoo.heads.get("detection", num_classes=2)
    target = head.encode([[4.0, 4.0, 20.0, 28.0]], [1], (32, 32))
    boxes, scores, classes = head.decode(target[..., :6])
    assert classes.tolist() == [1]
    np.testing.assert_allclose(boxes[0], [4.0, 4.0, 20.0, 28.0], atol=1e-4)


def test_normal_loss_and_angle_metric_known_answers():
    from mtlzoo.layers import UnitNormalization
    from mtlzoo.metrics import NormalAngle

    true = np.zeros((1, 1, 4, 3), np.float32)
    true[0, 0, 0] = [0, 0, 2]      # same direction as the prediction (length does not matter)
    true[0, 0, 1] = [1, 0, 0]      # orthogonal: 90 degrees, 1 - cos = 1
    true[0, 0, 2] = [0, 0, -1]     # opposite: 180 degrees, 1 - cos = 2
    # true[0, 0, 3] stays zero: an invalid pixel, whatever the prediction
    pred = np.zeros((1, 1, 4, 3), np.float32)
    pred[..., 2] = 3.0
    pred[0, 0, 3] = [np.nan, 0, 0]
    loss = float(losses.NormalCosine()(true, pred))
    np.testing.assert_allclose(loss, (0 + 1 + 2) / 3, rtol=1e-6)
    angle = NormalAngle("mean_angle")
    angle.update_state(true, pred)
    np.testing.assert_allclose(float(angle.result()), (0 + 90 + 180) / 3, rtol=1e-4)
    within = NormalAngle("within_11_25")
    within.update_state(true, pred)
    np.testing.assert_allclose(float(within.result()), 1 / 3, rtol=1e-6)
    unit = np.asarray(UnitNormalization()(np.array([[3.0, 4.0, 0.0]], np.float32)))
    np.testing.assert_allclose(unit, [[0.6, 0.8, 0.0]], rtol=1e-6)
    with pytest.raises(ValueError, match="within_11_25"):
        NormalAngle("within_10")
