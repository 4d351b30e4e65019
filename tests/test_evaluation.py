"""Tests of mtlzoo.evaluation: metrics on hand-made data with known answers, Δm wiring, baselines, CLI."""

import json
import math
import os

import numpy as np
import pytest

from mtlzoo import evaluation as ev
from mtlzoo.heads.centernet_targets import encode_centernet_targets
from mtlzoo.metrics_delta import delta_m
from mtlzoo.testing import TINY_IMAGE

TINY = {
    **TINY_IMAGE,
    "data.num_examples": 16,
    "data.num_validation_examples": 16,
    "training.batch_size": 8,
}


def _boxes(*rows):
    return np.asarray(rows, np.float64).reshape(-1, 4)


# ----------------------------------------------------------------------------- detection mAP
def test_map_two_gt_one_false_positive_between_hits():
    # Scores 0.9 (hit), 0.8 (miss), 0.7 (hit): precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1.
    # All-point AP = 0.5 * 1 + 0.5 * 2/3 = 5/6.
    gt = [(_boxes([0, 0, 10, 10], [20, 20, 30, 30]), [0, 0])]
    det = [(_boxes([0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]), [0.9, 0.8, 0.7], [0, 0, 0])]
    result = ev.detection_average_precision(det, gt, num_classes=1)
    assert result["map"] == pytest.approx(5 / 6)
    assert result["num_gt"] == [2] and result["num_detections"] == [3]


def test_map_perfect_and_empty_detections():
    gt = [(_boxes([0, 0, 10, 10]), [0]), (_boxes([5, 5, 15, 25]), [1])]
    perfect = [(_boxes([0, 0, 10, 10]), [0.5], [0]), (_boxes([5, 5, 15, 25]), [0.6], [1])]
    assert ev.detection_average_precision(perfect, gt, 2)["ap"] == [1.0, 1.0]
    nothing = [(np.zeros((0, 4)), [], []), (np.zeros((0, 4)), [], [])]
    assert ev.detection_average_precision(nothing, gt, 2)["map"] == 0.0


def test_map_duplicate_wrong_class_and_low_iou_are_false_positives():
    gt = [(_boxes([0, 0, 10, 10]), [0])]
    # Duplicate of the same object (score 0.8) after the hit -> FP; does not lower AP (recall already 1).
    dup = [(_boxes([0, 0, 10, 10], [0, 0, 10, 10]), [0.9, 0.8], [0, 0])]
    assert ev.detection_average_precision(dup, gt, 1)["map"] == pytest.approx(1.0)
    # The duplicate ranked first: FP then TP -> precision 1/2 at recall 1 -> AP 0.5.
    dup_first = [(_boxes([0, 0, 10, 10], [0, 0, 10, 10]), [0.8, 0.9], [0, 0])]
    assert ev.detection_average_precision(dup_first, gt, 1)["map"] == pytest.approx(1.0)
    shifted = [(_boxes([0, 5, 10, 15], [0, 0, 10, 10]), [0.9, 0.8], [0, 0])]  # IoU 1/3 first, then a hit
    assert ev.detection_average_precision(shifted, gt, 1)["map"] == pytest.approx(0.5)
    wrong_class = [(_boxes([0, 0, 10, 10]), [0.9], [1])]
    result = ev.detection_average_precision(wrong_class, gt, 2)
    assert result["ap"][0] == 0.0
    assert math.isnan(result["ap"][1])  # class 1 has no ground truth: left out of the mean
    assert result["map"] == 0.0


def test_map_iou_threshold_is_inclusive_at_half():
    gt = [(_boxes([0, 0, 10, 10]), [0])]
    # [0, 0, 10, 15] vs [0, 0, 10, 10]: IoU = 100 / 150 = 2/3; [0, 0, 10, 20]: 1/2 exactly.
    half = [(_boxes([0, 0, 10, 20]), [0.9], [0])]
    assert ev.box_iou(half[0][0], gt[0][0])[0, 0] == pytest.approx(0.5)
    assert ev.detection_average_precision(half, gt, 1)["map"] == 1.0
    assert ev.detection_average_precision(half, gt, 1, iou_threshold=0.51)["map"] == 0.0


def test_map_greedy_matching_takes_the_best_unmatched_ground_truth():
    # Two overlapping objects A=[0,0,10,10], B=[0,2,10,12] (IoU 2/3 with each other).
    # Detection 1 (0.9) = A. Detection 2 (0.8) = [0,1,10,11]: IoU 9/11 with A (taken) and 9/11 with B.
    # COCO-style greedy matching gives it B -> both hits -> AP 1.
    gt = [(_boxes([0, 0, 10, 10], [0, 2, 10, 12]), [0, 0])]
    det = [(_boxes([0, 0, 10, 10], [0, 1, 10, 11]), [0.9, 0.8], [0, 0])]
    assert ev.detection_average_precision(det, gt, 1)["map"] == pytest.approx(1.0)


def test_map_pools_detections_over_images_by_score():
    # Image 0: one object, hit at 0.6. Image 1: one object, a miss at 0.9 and a hit at 0.3.
    # Ranked: 0.9 FP, 0.6 TP, 0.3 TP -> precision 0, 1/2, 2/3 at recall 0, 1/2, 1.
    # Envelope: 2/3 for recall (0, 1] -> AP = 2/3.
    gt = [(_boxes([0, 0, 10, 10]), [0]), (_boxes([0, 0, 10, 10]), [0])]
    det = [(_boxes([0, 0, 10, 10]), [0.6], [0]), (_boxes([30, 30, 40, 40], [0, 0, 10, 10]), [0.9, 0.3], [0, 0])]
    assert ev.detection_average_precision(det, gt, 1)["map"] == pytest.approx(2 / 3)


def test_boxes_read_back_from_centernet_targets():
    boxes = [[8, 8, 24, 40], [0, 44, 12, 60]]
    target = encode_centernet_targets(boxes, [1, 0], (32, 64), num_classes=2)
    got, classes = ev.boxes_from_centernet_target(target, 2)
    order = np.argsort(classes)[::-1]
    np.testing.assert_allclose(got[order], boxes, atol=1e-5)
    assert list(classes[order]) == [1, 0]
    assert ev.boxes_from_centernet_target(np.full_like(target, -1.0), 2) is None


# ----------------------------------------------------------------------------- other metrics
def test_segmentation_miou_and_pixel_accuracy_ignore_unlabelled():
    labels = np.array([[0, 0, 1, 1, -1, 2]])
    pred = np.array([[0, 1, 1, 1, 2, 0]])
    cm = ev.confusion_matrix(labels, pred, 3)
    result = ev.segmentation_metrics(cm)
    # class 0: tp 1, union 3 (1 + 1 missed + 1 false 0 from class 2) -> 1/3; class 1: tp 2, union 3 -> 2/3;
    # class 2: tp 0, union 1 -> 0. The -1 pixel counts nowhere.
    assert result["iou"] == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert result["miou"] == pytest.approx(1 / 3)
    assert result["pixel_acc"] == pytest.approx(3 / 5)
    # A class absent from labels and predictions is left out of the mean.
    assert ev.segmentation_metrics(ev.confusion_matrix([0, 1], [0, 1], 4))["miou"] == 1.0


def test_depth_errors_on_valid_pixels():
    result = ev.depth_errors([2.0, 4.0, 9.0, 11.0], [2.0, 5.0, 0.0, 10.0])
    assert result["valid_pixels"] == 3
    assert result["abs_err"] == pytest.approx((0 + 1 + 1) / 3)
    assert result["abs_rel"] == pytest.approx((0 + 0.2 + 0.1) / 3)
    assert result["delta1"] == pytest.approx(2 / 3)  # 5/4 = 1.25 is not < 1.25
    assert math.isnan(ev.depth_errors([1.0], [0.0])["abs_err"])


def test_average_precision_known_values_and_ties():
    assert ev.average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)
    # -1 entries are ignored; no positive -> NaN.
    assert ev.average_precision([0.9, 0.8, 0.7], [-1, 1, 0]) == pytest.approx(1.0)
    assert math.isnan(ev.average_precision([0.5, 0.4], [0, 0]))
    # Tied scores form one threshold: 2 of 4 positive at the single threshold -> AP 0.5.
    assert ev.average_precision([0.5] * 4, [1, 0, 1, 0]) == pytest.approx(0.5)
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores, labels = np.round(rng.random(200), 1), rng.integers(0, 2, 200)
    assert ev.average_precision(scores, labels) == pytest.approx(sklearn.average_precision_score(labels, scores))


def test_multilabel_map_and_f1():
    labels = np.array([[1, 0, -1], [0, 1, 1], [1, 1, 0]], np.float32)
    logits = np.array([[2.0, -1.0, 5.0], [0.5, 3.0, 1.0], [-0.5, 2.0, 2.0]])
    result = ev.multilabel_metrics(labels, logits)
    # tag 0: scores 2 (pos), 0.5 (neg), -0.5 (pos) -> AP (1 + 2/3) / 2; tag 1: perfect; tag 2: 1 (pos) < 2 (neg) -> 1/2.
    assert result["ap"] == pytest.approx([5 / 6, 1.0, 0.5])
    assert result["map"] == pytest.approx((5 / 6 + 1 + 0.5) / 3)
    # predictions (logit > 0), -1 ignored: tp = 1 + 2 + 1 = 4, fp = 1 + 0 + 1 = 2, fn = 1 + 0 + 0 = 1.
    assert result["f1"] == pytest.approx(8 / 11)


def test_normal_errors_angles_and_invalid_pixels():
    angles = np.radians([5.0, 15.0, 25.0, 40.0])
    pred = np.stack([np.zeros(4), np.sin(angles), np.cos(angles)], -1) * 3.0  # length does not matter
    gt = np.tile([0.0, 0.0, 2.0], (4, 1))
    gt_with_invalid = np.concatenate([gt, [[0.0, 0.0, 0.0]]])
    pred_with_invalid = np.concatenate([pred, [[1.0, 0.0, 0.0]]])
    result = ev.normal_errors(pred_with_invalid.reshape(1, 5, 3), gt_with_invalid.reshape(1, 5, 3))
    assert result["valid_pixels"] == 4
    assert result["mean_angle"] == pytest.approx(21.25)
    assert result["median_angle"] == pytest.approx(20.0)
    assert result["within_11_25"] == 0.25 and result["within_22_5"] == 0.5 and result["within_30"] == 0.75
    masked = ev.normal_errors(pred, gt, mask=[True, False, False, False])
    assert masked["mean_angle"] == pytest.approx(5.0)
    # The streaming version (used by evaluate) agrees, median to 0.01 degrees.
    sums = ev._NormalSums()
    sums.update(pred[:2], gt[:2])
    sums.update(pred[2:], gt[2:])
    streamed = sums.result()
    assert streamed["mean_angle"] == pytest.approx(21.25)
    assert streamed["median_angle"] == pytest.approx(20.0, abs=0.01)  # mean of the two middle values
    assert streamed["within_22_5"] == 0.5


# ----------------------------------------------------------------------------- evaluate, Δm, cost
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from mtlzoo.training import train

    out = tmp_path_factory.mktemp("mtl")
    # bn_momentum None: the one-epoch model these tests were written against (its scene F1 is above 0, which the
    # Δm arithmetic below needs); the recipe's 0.9 gives another, equally valid, tiny model.
    return train("driving_perception_lite", epochs=1, out_dir=str(out), verbose=0, bn_momentum=None, **TINY)


def test_evaluate_matches_keras_metrics_and_reports_cost(trained):
    report = ev.evaluate(trained.model, "synthetic_driving", num_examples=16, timing_repeats=2)
    assert report.num_examples == 16
    assert set(report.metrics) == {"segmentation", "depth", "detection", "scene"}
    assert set(report.metrics["detection"]) == {"map50"}
    assert report.details["detection"]["ground_truth"] == "raw_boxes"
    # The NumPy metrics agree with the training-time Keras metrics on the same validation data.
    keras_miou = trained.history["val_segmentation_miou"][-1]
    assert report.metrics["segmentation"]["miou"] == pytest.approx(keras_miou, rel=1e-4)
    assert report.metrics["depth"]["abs_err"] == pytest.approx(trained.history["val_depth_abs_err"][-1], rel=1e-4)
    assert report.cost["params"] == trained.model.count_params()
    assert report.cost["flops"] > 0 and report.cost["step_time_s"] > 0
    text = report.table()
    assert "miou" in text and "map50" in text and "params" in text


def test_evaluate_reads_a_saved_run_and_a_dataset_without_boxes(trained):
    import mtlzoo.data

    data = mtlzoo.data.load("synthetic_driving", split="validation", image_size=(32, 64), batch_size=8,
                            num_examples=8)
    report = ev.evaluate(trained.out_dir, data, timing_repeats=1)
    assert report.details["detection"]["ground_truth"] == "centernet_targets"
    assert any("CenterNet" in n for n in report.notes)


def test_delta_m_and_cost_ratio_against_a_baselines_file(trained, tmp_path):
    report = ev.evaluate(trained.model, "synthetic_driving", num_examples=16, timing_repeats=1)
    m = report.metrics
    stored = {
        "format": ev.BASELINES_FORMAT,
        "tasks": {
            "segmentation": {"metrics": {"miou": m["segmentation"]["miou"] * 2,
                                         "pixel_acc": m["segmentation"]["pixel_acc"]},
                             "cost": {"params": 1000, "flops": 10, "step_time_s": 0.5}},
            "depth": {"metrics": {"abs_err": m["depth"]["abs_err"] / 2, "abs_rel": m["depth"]["abs_rel"],
                                  "delta1": m["depth"]["delta1"]},
                      "cost": {"params": 3000, "flops": 30, "step_time_s": 0.5}},
            "scene": {"metrics": {"map": 0.0, "f1": m["scene"]["f1"]},
                      "cost": {"params": 0, "flops": 0, "step_time_s": 0.0}},
        },
    }
    path = tmp_path / "baselines.json"
    path.write_text(json.dumps(stored))
    with_base = ev.evaluate(trained.model, "synthetic_driving", baselines=str(path), num_examples=16,
                            timing_repeats=1)
    # segmentation: miou half the baseline (+50), pixel_acc equal (0) -> +25; depth: abs_err twice (+100) -> +33.3.
    assert with_base.delta_m_per_task["segmentation"] == pytest.approx(25.0, rel=1e-4)
    assert with_base.delta_m_per_task["depth"] == pytest.approx(100 / 3, rel=1e-4)
    assert with_base.delta_m_per_task["scene"] == pytest.approx(0.0, abs=1e-6)  # map left out (baseline 0)
    assert any("scene/map" in n and "baseline is 0" in n for n in with_base.notes)
    assert any("'detection'" in n for n in with_base.notes)  # no baseline for detection
    expected = delta_m(
        [m["segmentation"]["miou"], m["segmentation"]["pixel_acc"], m["depth"]["abs_err"], m["depth"]["abs_rel"],
         m["depth"]["delta1"], m["scene"]["f1"]],
        [m["segmentation"]["miou"] * 2, m["segmentation"]["pixel_acc"], m["depth"]["abs_err"] / 2,
         m["depth"]["abs_rel"], m["depth"]["delta1"], m["scene"]["f1"]],
        [True, True, False, False, True, True],
    )
    assert with_base.delta_m == pytest.approx(expected, rel=1e-6)
    assert with_base.delta_m == pytest.approx((50 + 100) / 6, rel=1e-4)
    assert with_base.baseline_cost["params"] == 4000
    assert with_base.cost_ratio["params"] == pytest.approx(trained.model.count_params() / 4000)
    assert with_base.cost_ratio["step_time_s"] == pytest.approx(with_base.cost["step_time_s"] / 1.0)
    assert "Δm" in with_base.table()
    saved = tmp_path / "report.json"
    with_base.to_json(saved)
    assert json.loads(saved.read_text())["delta_m"] == pytest.approx(with_base.delta_m)


def test_cli_train_baselines_evaluate_end_to_end(tmp_path, capsys):
    import argparse

    from mtlzoo import cli_training

    parser = argparse.ArgumentParser(prog="mtlzoo")
    cli_training.register(parser.add_subparsers(dest="command", required=True))
    overrides = ["backbone=tiny", "backbone_args={width: 4}", "neck_channels=16", "input_shape=[32, 64, 3]",
                 "tasks=[depth, scene]", "data.num_examples=16", "data.num_validation_examples=8",
                 "training.batch_size=8"]

    def run(argv):
        args = parser.parse_args(argv)
        return args.func(args)

    mtl_dir, stl_dir = tmp_path / "mtl", tmp_path / "stl"
    assert run(["train", "driving_perception_lite", *overrides, "--epochs", "1", "--out", str(mtl_dir),
                "--verbose", "0"]) == 0
    assert (mtl_dir / "best.keras").exists() and (mtl_dir / "history.csv").exists()
    assert run(["baselines", "driving_perception_lite", *overrides, "--epochs", "1", "--out", str(stl_dir),
                "--verbose", "0"]) == 0
    stored = json.loads((stl_dir / "baselines.json").read_text())
    assert set(stored["tasks"]) == {"depth", "scene"} and stored["epochs"] == 1
    for task, entry in stored["tasks"].items():
        assert (stl_dir / entry["model"]).exists()
        assert (stl_dir / task / "history.csv").exists()
        assert entry["cost"]["params"] > 0 and entry["cost"]["train_step_s"] > 0
    assert set(stored["tasks"]["depth"]["metrics"]) == {"abs_err", "abs_rel", "delta1"}
    assert stored["higher_is_better"]["depth"] == {"abs_err": False, "abs_rel": False, "delta1": True}
    capsys.readouterr()
    report_path = tmp_path / "report.json"
    assert run(["evaluate", str(mtl_dir), "--data", "synthetic_driving", "--baselines", str(stl_dir),
                "--num-examples", "8", "--json", str(report_path)]) == 0
    out = capsys.readouterr().out
    assert "Δm" in out and "abs_err" in out and "single-task models together" in out
    report = json.loads(report_path.read_text())
    assert report["delta_m"] is not None
    # One shared trunk instead of two: the multi-task model is smaller than the two single-task models.
    assert report["cost_ratio"]["params"] < 1.0
    assert report["baseline_cost"]["params"] == sum(e["cost"]["params"] for e in stored["tasks"].values())


def test_cli_reports_bad_data_with_exit_code_2(tmp_path, capsys):
    import argparse

    from mtlzoo import cli_training

    parser = argparse.ArgumentParser(prog="mtlzoo")
    cli_training.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", "driving_perception_lite", "data.name=synthetic_drivng", "--out",
                              str(tmp_path / "x")])
    assert args.func(args) == 2
    assert "Did you mean 'synthetic_driving'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x" / "last.keras")
