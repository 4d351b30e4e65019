"""Evaluation of multi-task models: task metrics in NumPy, Δm against single-task baselines, cost.

The training-time Keras metrics are running estimates meant for progress
bars; this module computes the numbers reported in papers, over a whole
dataset, in NumPy:

- segmentation: mean IoU (over classes that occur in the labels or the
  predictions) and pixel accuracy, from one confusion matrix; label `-1` is
  ignored;
- depth: absolute error, absolute relative error and the share of pixels with
  δ = max(d/d*, d*/d) < 1.25, over valid pixels (label > 0);
- detection: AP at IoU 0.5 per class and their mean (mAP@0.5), with COCO-style
  greedy matching by score and all-point interpolated AP, on boxes decoded by
  the detection head;
- scene tags (multi-label): mean over tags of the average precision of the
  tag's ranking, micro F1 and macro F1 at probability 0.5; `-1` entries are
  ignored;
- classification: accuracy; regression: mean absolute error;
- surface normals (NYUv2-style `normal` labels): mean and median angle error
  and the share of pixels within 11.25°, 22.5° and 30° (`normal_errors`).

Shares and accuracies are fractions in [0, 1] (papers print them ×100); Δm is
unaffected because it is relative.

`evaluate(model, data, baselines)` runs a model over a dataset and returns an
`EvaluationReport`: the metrics per task, Δm against the stored single-task
baselines (lower is better), and the cost of the multi-task model (parameters,
FLOPs, measured inference step time) against the sum of the single-task
models. `baselines(recipe, ...)` trains those single-task models (one per
task, same backbone and budget) and stores their metrics and costs in
`baselines.json`.

Example:
```python
import mtlzoo
from mtlzoo.evaluation import baselines, evaluate
stl = baselines("driving_perception_lite", epochs=5, out_dir="runs/stl")
result = mtlzoo.train("driving_perception_lite", epochs=5, out_dir="runs/mtl")
report = evaluate(result.model, "synthetic_driving", baselines="runs/stl/baselines.json")
print(report.table())
report.delta_m          # percent; negative = better than the single-task models
```

Reference:
    Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge",
    IJCV 2010 (all-point interpolated AP); Lin et al., "Microsoft COCO: Common
    Objects in Context", ECCV 2014 (greedy matching by score); Eigen et al.,
    "Depth Map Prediction from a Single Image using a Multi-Scale Deep
    Network", NeurIPS 2014 (depth errors); Eigen and Fergus, "Predicting
    Depth, Surface Normals and Semantic Labels with a Common Multi-Scale
    Convolutional Architecture", ICCV 2015 (normal errors); Maninis et al.,
    "Attentive Single-Tasking of Multiple Tasks", CVPR 2019 (Δm).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import numpy as np

__all__ = [
    "HIGHER_IS_BETTER",
    "EvaluationReport",
    "average_precision",
    "baselines",
    "box_iou",
    "boxes_from_centernet_target",
    "confusion_matrix",
    "depth_errors",
    "detection_average_precision",
    "evaluate",
    "measure_step_time",
    "multilabel_metrics",
    "normal_errors",
    "segmentation_metrics",
]

BASELINES_FORMAT = "mtlzoo-baselines/1"

#: Whether a higher value is better, for every headline metric name.
HIGHER_IS_BETTER = {
    "miou": True,
    "pixel_acc": True,
    "abs_err": False,
    "abs_rel": False,
    "delta1": True,
    "map50": True,
    "map": True,
    "f1": True,
    "macro_f1": True,
    "accuracy": True,
    "mae": False,
    "mean_angle": False,
    "median_angle": False,
    "within_11_25": True,
    "within_22_5": True,
    "within_30": True,
}

#: The headline metrics of each head kind, in table order (these enter Δm).
HEADLINE = {
    "segmentation": ("miou", "pixel_acc"),
    "depth": ("abs_err", "abs_rel", "delta1"),
    "detection": ("map50",),
    "multilabel": ("map", "f1"),
    "classification": ("accuracy",),
    "regression": ("mae",),
    "normal": ("mean_angle", "median_angle", "within_11_25", "within_22_5", "within_30"),
}


# ============================================================================ metric functions
def confusion_matrix(labels, predictions, num_classes):
    """Confusion matrix [true, predicted] over labelled pixels (`labels` outside [0, C) are skipped).

    Args:
        labels: int array of class ids; -1 (or any id outside [0, C)) = unlabelled.
        predictions: int array of predicted ids, same shape.
        num_classes: int. C.

    Returns:
        int64 array [C, C].

    Example:
    ```python
    from mtlzoo.evaluation import confusion_matrix
    confusion_matrix([0, 1, -1], [0, 0, 1], 2)    # [[1, 0], [1, 0]]
    ```
    """
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    predictions = np.asarray(predictions).reshape(-1).astype(np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"confusion_matrix: {labels.size} labels but {predictions.size} predictions.")
    valid = (labels >= 0) & (labels < num_classes) & (predictions >= 0) & (predictions < num_classes)
    index = labels[valid] * num_classes + predictions[valid]
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_metrics(confusion):
    """Mean IoU, pixel accuracy and per-class IoU from a confusion matrix.

    The mean runs over the classes that occur in the labels or the predictions
    (union > 0), as in the training-time `MeanIoU`.

    Args:
        confusion: array [C, C], rows true class, columns predicted.

    Returns:
        dict: `miou`, `pixel_acc` (NaN when nothing is labelled) and `iou`
        (list of C values, NaN for absent classes).

    Example:
    ```python
    from mtlzoo.evaluation import confusion_matrix, segmentation_metrics
    segmentation_metrics(confusion_matrix([0, 0, 1, 1], [0, 1, 1, 1], 2))
    # {'miou': 0.583, 'pixel_acc': 0.75, 'iou': [0.5, 0.667]}
    ```
    """
    cm = np.asarray(confusion, np.float64)
    tp = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)
    present = union > 0
    total = cm.sum()
    return {
        "miou": float(iou[present].mean()) if present.any() else float("nan"),
        "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
        "iou": [float(v) for v in iou],
    }


class _DepthSums:
    def __init__(self):
        self.abs_err = self.abs_rel = self.delta1 = 0.0
        self.count = 0

    def update(self, prediction, target):
        pred = np.asarray(prediction, np.float64).reshape(-1)
        true = np.asarray(target, np.float64).reshape(-1)
        if pred.size != true.size:
            raise ValueError(f"depth: {pred.size} predicted values for {true.size} labels.")
        valid = true > 0
        pred, true = pred[valid], true[valid]
        diff = np.abs(pred - true)
        safe = np.maximum(pred, 1e-6)
        self.abs_err += float(diff.sum())
        self.abs_rel += float((diff / true).sum())
        self.delta1 += float((np.maximum(safe / true, true / safe) < 1.25).sum())
        self.count += int(valid.sum())

    def result(self):
        if self.count == 0:
            return {"abs_err": float("nan"), "abs_rel": float("nan"), "delta1": float("nan"), "valid_pixels": 0}
        n = self.count
        return {"abs_err": self.abs_err / n, "abs_rel": self.abs_rel / n, "delta1": self.delta1 / n,
                "valid_pixels": n}


def depth_errors(prediction, target):
    """Depth errors over valid pixels (label > 0).

    Args:
        prediction: float array of predicted depths (metres).
        target: float array of the same size; values <= 0 are invalid.

    Returns:
        dict: `abs_err` = mean |d − d*|, `abs_rel` = mean |d − d*| / d*,
        `delta1` = share of pixels with max(d/d*, d*/d) < 1.25, and
        `valid_pixels`. NaN when no pixel is valid.

    Example:
    ```python
    from mtlzoo.evaluation import depth_errors
    depth_errors([2.0, 4.0, 9.0], [2.0, 5.0, 0.0])   # abs_err 0.5, abs_rel 0.1, delta1 0.5 (4/5 is not < 1.25)
    ```

    Reference:
        Eigen et al., "Depth Map Prediction from a Single Image using a
        Multi-Scale Deep Network", NeurIPS 2014.
    """
    sums = _DepthSums()
    sums.update(prediction, target)
    return sums.result()


def box_iou(boxes_a, boxes_b):
    """IoU matrix [N, M] of (ymin, xmin, ymax, xmax) boxes (continuous pixel coordinates).

    Example:
    ```python
    from mtlzoo.evaluation import box_iou
    box_iou([[0, 0, 10, 10]], [[0, 5, 10, 15]])   # [[0.333]]
    ```
    """
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    top = np.maximum(a[:, None, 0], b[None, :, 0])
    left = np.maximum(a[:, None, 1], b[None, :, 1])
    bottom = np.minimum(a[:, None, 2], b[None, :, 2])
    right = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(bottom - top, 0, None) * np.clip(right - left, 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _interpolated_ap(recall, precision):
    """All-point interpolated AP: area under the precision envelope over recall."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def detection_average_precision(detections, ground_truths, num_classes, iou_threshold=0.5):
    """Per-class AP and mAP of detections at one IoU threshold.

    Matching (COCO style): per class, the detections of all images are taken
    in decreasing score order (ties keep their input order); each is matched
    to the unmatched ground-truth box of its image and class with the highest
    IoU, if that IoU is >= `iou_threshold` (a true positive), and is a false
    positive otherwise. AP is the area under the precision-recall curve with
    all-point interpolation (precision made monotone from the right, summed
    over every recall change). Classes without ground truth get AP NaN and are
    left out of the mean.

    Args:
        detections: list with one `(boxes [K, 4], scores [K], classes [K])`
            per image, boxes (ymin, xmin, ymax, xmax) in pixels.
        ground_truths: list with one `(boxes [M, 4], classes [M])` per image.
        num_classes: int. Number of classes.
        iou_threshold: float. Defaults to 0.5.

    Returns:
        dict: `map` (mean AP over classes with ground truth; NaN if none),
        `ap` (list of C values), `num_gt` (list of C counts),
        `num_detections` (list of C counts).

    Example:
    ```python
    import numpy as np
    from mtlzoo.evaluation import detection_average_precision
    gt = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([0, 0]))]
    det = [(np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]]),
            np.array([0.9, 0.8, 0.7]), np.array([0, 0, 0]))]
    detection_average_precision(det, gt, num_classes=1)["map"]    # 0.8333
    ```

    Reference:
        Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge",
        IJCV 2010; Lin et al., "Microsoft COCO: Common Objects in Context",
        ECCV 2014.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(
            f"detection_average_precision: {len(detections)} images of detections but "
            f"{len(ground_truths)} of ground truth."
        )
    aps, num_gt, num_det = [], [], []
    gts = [(np.asarray(b, np.float64).reshape(-1, 4), np.asarray(c).reshape(-1).astype(np.int64))
           for b, c in ground_truths]
    dets = [(np.asarray(b, np.float64).reshape(-1, 4), np.asarray(s, np.float64).reshape(-1),
             np.asarray(c).reshape(-1).astype(np.int64)) for b, s, c in detections]
    for cls in range(num_classes):
        gt_boxes = [boxes[classes == cls] for boxes, classes in gts]
        n_gt = int(sum(len(b) for b in gt_boxes))
        image_ids, scores, boxes = [], [], []
        for i, (b, s, c) in enumerate(dets):
            keep = c == cls
            image_ids.extend([i] * int(keep.sum()))
            scores.append(s[keep])
            boxes.append(b[keep])
        scores = np.concatenate(scores) if scores else np.zeros(0)
        boxes = np.concatenate(boxes) if boxes else np.zeros((0, 4))
        image_ids = np.asarray(image_ids, np.int64)
        num_gt.append(n_gt)
        num_det.append(len(scores))
        if n_gt == 0:
            aps.append(float("nan"))
            continue
        order = np.argsort(-scores, kind="stable")
        matched = [np.zeros(len(b), bool) for b in gt_boxes]
        tp = np.zeros(len(order))
        for rank, d in enumerate(order):
            img = image_ids[d]
            candidates = gt_boxes[img]
            if len(candidates) == 0:
                continue
            ious = box_iou(boxes[d:d + 1], candidates)[0]
            ious[matched[img]] = -1.0
            best = int(np.argmax(ious))
            if ious[best] >= iou_threshold:
                matched[img][best] = True
                tp[rank] = 1.0
        ctp = np.cumsum(tp)
        cfp = np.cumsum(1.0 - tp)
        recall = ctp / n_gt
        precision = ctp / np.maximum(ctp + cfp, 1e-12)
        aps.append(_interpolated_ap(recall, precision) if len(order) else 0.0)
    valid = [a for a, n in zip(aps, num_gt) if n > 0]
    return {"map": float(np.mean(valid)) if valid else float("nan"), "ap": aps, "num_gt": num_gt,
            "num_detections": num_det}


def average_precision(scores, labels):
    """Average precision of a ranking: Σ_n (R_n − R_{n−1}) P_n over score thresholds.

    Equal scores form one threshold (as in scikit-learn's
    `average_precision_score`). Entries with label < 0 are ignored.

    Args:
        scores: float array [N], higher = more likely positive.
        labels: array [N] of 1 (positive), 0 (negative) or -1 (unknown).

    Returns:
        float. NaN when there is no positive.

    Example:
    ```python
    from mtlzoo.evaluation import average_precision
    average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])    # (1 + 2/3) / 2 = 0.8333
    ```
    """
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels, np.float64).reshape(-1)
    keep = labels >= 0
    scores, labels = scores[keep], labels[keep] > 0.5
    n_pos = int(labels.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_group = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    tp = np.cumsum(labels)[last_of_group]
    predicted = last_of_group + 1
    precision = tp / predicted
    recall = tp / n_pos
    previous = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - previous) * precision))


class _MultiLabelSums:
    def __init__(self, num_classes):
        self.num_classes = num_classes
        self.scores = []
        self.labels = []

    def update(self, logits, labels):
        logits = np.asarray(logits, np.float64).reshape(-1, self.num_classes)
        labels = np.asarray(labels, np.float64).reshape(-1, self.num_classes)
        self.scores.append(logits)
        self.labels.append(labels)

    def result(self):
        if not self.scores:
            nan = float("nan")
            return {"map": nan, "f1": nan, "macro_f1": nan, "ap": [nan] * self.num_classes,
                    "tag_f1": [nan] * self.num_classes}
        return multilabel_metrics(np.concatenate(self.labels), np.concatenate(self.scores))


def multilabel_metrics(labels, logits, threshold=0.0):
    """Tag mAP (mean per-tag AP), micro F1 and macro F1 of multi-label predictions.

    Args:
        labels: array [N, T] of 1, 0 or -1 (unknown, ignored).
        logits: array [N, T] of scores (logits; any monotone score works for
            AP). A tag is predicted when its logit > `threshold`.
        threshold: float. Logit threshold for F1 (0.0 = probability 0.5).

    Returns:
        dict: `map` (mean over tags with a positive), `f1` (micro: pooled
        counts), `macro_f1` (mean over tags with a positive or a prediction),
        `ap` and `tag_f1` (lists per tag).

    Example:
    ```python
    from mtlzoo.evaluation import multilabel_metrics
    multilabel_metrics([[1, 0], [0, 1]], [[2.0, -1.0], [0.5, 3.0]])   # map 1.0, f1 0.8
    ```
    """
    labels = np.asarray(labels, np.float64)
    logits = np.asarray(logits, np.float64)
    if labels.shape != logits.shape or labels.ndim != 2:
        raise ValueError(f"multilabel_metrics: labels {labels.shape} and logits {logits.shape} must both be [N, T].")
    aps, f1s = [], []
    tp_all = fp_all = fn_all = 0.0
    for t in range(labels.shape[1]):
        known = labels[:, t] >= 0
        y = labels[known, t] > 0.5
        p = logits[known, t] > threshold
        aps.append(average_precision(logits[known, t], y.astype(np.float64)))
        tp, fp, fn = float((p & y).sum()), float((p & ~y).sum()), float((~p & y).sum())
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        f1s.append(2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else float("nan"))
    valid_ap = [a for a in aps if not math.isnan(a)]
    valid_f1 = [f for f in f1s if not math.isnan(f)]
    denom = 2 * tp_all + fp_all + fn_all
    return {
        "map": float(np.mean(valid_ap)) if valid_ap else float("nan"),
        "f1": 2 * tp_all / denom if denom > 0 else float("nan"),
        "macro_f1": float(np.mean(valid_f1)) if valid_f1 else float("nan"),
        "ap": aps,
        "tag_f1": f1s,
    }


_ANGLE_BINS = 18000  # 0.01° bins for the streaming median


class _NormalSums:
    def __init__(self):
        self.sum = 0.0
        self.count = 0
        self.within = {11.25: 0, 22.5: 0, 30.0: 0}
        self.histogram = np.zeros(_ANGLE_BINS, np.int64)

    def update(self, prediction, target, mask=None):
        angles = _angles(prediction, target, mask)
        self.sum += float(angles.sum())
        self.count += int(angles.size)
        for t in self.within:
            self.within[t] += int((angles < t).sum())
        bins = np.minimum((angles / 180.0 * _ANGLE_BINS).astype(np.int64), _ANGLE_BINS - 1)
        self.histogram += np.bincount(bins, minlength=_ANGLE_BINS)

    def result(self):
        if self.count == 0:
            nan = float("nan")
            return {"mean_angle": nan, "median_angle": nan, "within_11_25": nan, "within_22_5": nan,
                    "within_30": nan, "valid_pixels": 0}
        cumulative = np.cumsum(self.histogram)
        # The middle value (odd count) or the mean of the two middle values (even count), as np.median.
        ranks = ((self.count + 1) // 2, self.count // 2 + 1)
        middle = [int(np.searchsorted(cumulative, r)) for r in ranks]
        return {
            "mean_angle": self.sum / self.count,
            "median_angle": (np.mean(middle) + 0.5) * 180.0 / _ANGLE_BINS,
            "within_11_25": self.within[11.25] / self.count,
            "within_22_5": self.within[22.5] / self.count,
            "within_30": self.within[30.0] / self.count,
            "valid_pixels": self.count,
        }


def _angles(prediction, target, mask=None):
    pred = np.asarray(prediction, np.float64).reshape(-1, 3)
    true = np.asarray(target, np.float64).reshape(-1, 3)
    if pred.shape != true.shape:
        raise ValueError(f"normal_errors: {pred.shape[0]} predicted normals for {true.shape[0]} labels.")
    true_norm = np.linalg.norm(true, axis=1)
    pred_norm = np.linalg.norm(pred, axis=1)
    valid = true_norm > 1e-6
    if mask is not None:
        valid &= np.asarray(mask, bool).reshape(-1)
    cos = np.sum(pred[valid] * true[valid], axis=1) / (np.maximum(pred_norm[valid], 1e-12) * true_norm[valid])
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def normal_errors(prediction, target, mask=None):
    """Angle errors of predicted surface normals, over valid pixels.

    Both fields are normalised to unit length first; a zero label vector marks
    an invalid pixel (as in NYUv2's `normal` files), as does `mask` == False.

    Args:
        prediction: array [..., 3] of predicted normals.
        target: array [..., 3] of true normals (zero vector = invalid).
        mask: optional bool array [...] of pixels to use.

    Returns:
        dict: `mean_angle`, `median_angle` (degrees), `within_11_25`,
        `within_22_5`, `within_30` (shares of pixels with an error below
        that angle) and `valid_pixels`.

    Example:
    ```python
    import numpy as np
    from mtlzoo.evaluation import normal_errors
    up = np.array([[0.0, 0.0, 1.0]])
    tilted = np.array([[0.0, np.sin(np.radians(20)), np.cos(np.radians(20))]])
    normal_errors(tilted, up)     # mean 20.0, within_11_25 0.0, within_22_5 1.0
    ```

    Reference:
        Eigen and Fergus, "Predicting Depth, Surface Normals and Semantic
        Labels with a Common Multi-Scale Convolutional Architecture", ICCV 2015.
    """
    angles = _angles(prediction, target, mask)
    if angles.size == 0:
        return _NormalSums().result()
    return {
        "mean_angle": float(angles.mean()),
        "median_angle": float(np.median(angles)),
        "within_11_25": float((angles < 11.25).mean()),
        "within_22_5": float((angles < 22.5).mean()),
        "within_30": float((angles < 30.0).mean()),
        "valid_pixels": int(angles.size),
    }


def boxes_from_centernet_target(target, num_classes, stride=4):
    """Ground-truth boxes read back from one image's CenterNet target [h, w, C + 5].

    Used when a dataset has no raw boxes: each center cell gives its class
    (the heatmap channel at peak 1), box size and sub-cell offset, so boxes
    come back exactly as encoded (clipped to the image). Two objects whose
    centers fall in one cell come back as one. An all -1 (missing) target
    gives None.

    Returns:
        (boxes [M, 4] in pixels, classes [M]) or None.

    Example:
    ```python
    from mtlzoo.heads.centernet_targets import encode_centernet_targets
    from mtlzoo.evaluation import boxes_from_centernet_target
    t = encode_centernet_targets([[8, 8, 24, 40]], [1], (32, 64), num_classes=2)
    boxes_from_centernet_target(t, 2)     # ([[8, 8, 24, 40]], [1])
    ```
    """
    target = np.asarray(target, np.float64)
    if np.all(target == -1.0):
        return None
    c = num_classes
    iy, ix = np.nonzero(target[..., c + 4] > 0.5)
    if len(iy) == 0:
        return np.zeros((0, 4)), np.zeros((0,), np.int64)
    heat = target[iy, ix, :c]
    classes = np.argmax(heat, axis=-1)
    h, w = target[iy, ix, c], target[iy, ix, c + 1]
    cy, cx = iy + target[iy, ix, c + 2], ix + target[iy, ix, c + 3]
    boxes = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=-1) * stride
    return boxes, classes.astype(np.int64)


# ============================================================================ evaluators
class _TaskEvaluator:
    """Streams one task's labels and predictions into its metric sums."""

    def __init__(self, task, kind, head, image_shape, detection_kwargs=None):
        self.task, self.kind, self.head = task, kind, head
        self.image_shape = tuple(image_shape)
        self.seen = 0
        if kind == "segmentation":
            self.confusion = np.zeros((head.num_classes, head.num_classes), np.int64)
        elif kind == "depth":
            self.sums = _DepthSums()
        elif kind == "multilabel":
            self.sums = _MultiLabelSums(head.num_classes)
        elif kind == "detection":
            self.detections, self.ground_truths = [], []
            self.from_targets = False
            self.detection_kwargs = {"score_threshold": 0.01, "max_detections": 100, **(detection_kwargs or {})}
        elif kind == "classification":
            self.correct = self.count = 0
        elif kind == "regression":
            self.abs_sum = 0.0
            self.count = 0
        elif kind == "normal":
            self.sums = _NormalSums()
        else:
            raise ValueError(f"evaluate: no metrics for task kind {kind!r} (task {self.task!r}).")

    def update(self, prediction, labels):
        label = np.asarray(labels[self.task])
        prediction = np.asarray(prediction)
        self.seen += len(prediction)
        if self.kind == "segmentation":
            if label.ndim == prediction.ndim:
                label = label[..., 0]
            self.confusion += confusion_matrix(label, np.argmax(prediction, -1), self.head.num_classes)
        elif self.kind == "depth":
            self.sums.update(prediction, label.reshape(prediction.shape))
        elif self.kind == "multilabel":
            self.sums.update(prediction, label)
        elif self.kind == "classification":
            label = label.reshape(-1).astype(np.int64)
            valid = label >= 0
            self.correct += int((np.argmax(prediction, -1).reshape(-1)[valid] == label[valid]).sum())
            self.count += int(valid.sum())
        elif self.kind == "regression":
            label = label.reshape(prediction.shape).astype(np.float64)
            valid = np.ones_like(label, bool) if self.head.ignore_value is None else label != self.head.ignore_value
            self.abs_sum += float(np.abs(prediction - label)[valid].sum())
            self.count += int(valid.sum())
        elif self.kind == "normal":
            self.sums.update(prediction, label)
        elif self.kind == "detection":
            self._update_detection(prediction, labels, label)

    def _update_detection(self, prediction, labels, target):
        height, width = self.image_shape[:2]
        raw = "boxes" in labels and "box_classes" in labels
        if not raw:
            self.from_targets = True
        for i in range(len(prediction)):
            if np.all(target[i] == -1.0):
                continue  # detection label missing for this image
            if raw:
                n = int(np.asarray(labels["num_boxes"])[i]) if "num_boxes" in labels else None
                boxes = np.asarray(labels["boxes"][i], np.float64)
                classes = np.asarray(labels["box_classes"][i]).astype(np.int64)
                if n is not None:
                    boxes, classes = boxes[:n], classes[:n]
                keep = classes >= 0
                boxes, classes = boxes[keep], classes[keep]
                boxes = np.clip(boxes, 0, [height, width, height, width])
                area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                boxes, classes = boxes[area > 0], classes[area > 0]
            else:
                boxes, classes = boxes_from_centernet_target(target[i], self.head.num_classes, self.head.stride)
            self.ground_truths.append((boxes, classes))
            self.detections.append(self.head.decode(prediction[i], **self.detection_kwargs))

    def result(self):
        """(headline metrics dict, details dict)."""
        if self.kind == "segmentation":
            m = segmentation_metrics(self.confusion)
            return {"miou": m["miou"], "pixel_acc": m["pixel_acc"]}, {"iou": m["iou"]}
        if self.kind == "depth":
            m = self.sums.result()
            return {k: m[k] for k in HEADLINE["depth"]}, {"valid_pixels": m["valid_pixels"]}
        if self.kind == "multilabel":
            m = self.sums.result()
            return {"map": m["map"], "f1": m["f1"]}, {"macro_f1": m["macro_f1"], "ap": m["ap"], "tag_f1": m["tag_f1"]}
        if self.kind == "classification":
            return {"accuracy": self.correct / self.count if self.count else float("nan")}, {"count": self.count}
        if self.kind == "regression":
            return {"mae": self.abs_sum / self.count if self.count else float("nan")}, {"count": self.count}
        if self.kind == "normal":
            m = self.sums.result()
            return {k: m[k] for k in HEADLINE["normal"]}, {"valid_pixels": m["valid_pixels"]}
        m = detection_average_precision(self.detections, self.ground_truths, self.head.num_classes)
        details = {"ap50": m["ap"], "num_gt": m["num_gt"], "num_detections": m["num_detections"],
                   "images": len(self.ground_truths),
                   "ground_truth": "centernet_targets" if self.from_targets else "raw_boxes"}
        return {"map50": m["map"]}, details


# ============================================================================ report
def _clean(value):
    """JSON-safe copy: NaN/inf -> None, numpy -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _fmt(value, digits=4):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return f"{value:.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def _fmt_count(n):
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


@dataclasses.dataclass
class EvaluationReport:
    """The result of `evaluate`.

    Attributes:
        model: str. Model name.
        data: str. Description of the evaluation data.
        num_examples: int. Examples evaluated.
        tasks: dict task -> head kind.
        metrics: dict task -> {metric: value} (headline metrics).
        details: dict task -> per-class values and counts.
        higher_is_better: dict task -> {metric: bool}.
        baseline_metrics: dict task -> {metric: value} of the single-task
            models, or None without baselines.
        delta_m: float or None. Δm in percent over every headline metric with
            a non-zero baseline (lower is better; negative beats the baselines).
        delta_m_per_task: dict task -> Δm over that task's metrics.
        cost: dict: `params`, `flops` (per example), `step_time_s`
            (inference, one batch of `batch_size`), `batch_size`.
        baseline_cost: dict with the same keys summed over the single-task
            models (plus `train_step_s` when stored), or None.
        cost_ratio: dict key -> multi-task / sum of single-task, or None.
        notes: list of str. Metrics skipped and why.
    """

    model: str
    data: str
    num_examples: int
    tasks: dict
    metrics: dict
    details: dict
    higher_is_better: dict
    cost: dict
    baseline_metrics: dict | None = None
    delta_m: float | None = None
    delta_m_per_task: dict = dataclasses.field(default_factory=dict)
    baseline_cost: dict | None = None
    cost_ratio: dict | None = None
    notes: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-safe dict (NaN -> None)."""
        return _clean(dataclasses.asdict(self))

    def to_json(self, path) -> None:
        """Writes `to_dict()` as JSON to `path`."""
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    def table(self) -> str:
        """The per-task table (metric, value, baseline, relative change), Δm and cost, as text."""
        rows = []
        for task, values in self.metrics.items():
            for name, value in values.items():
                base = (self.baseline_metrics or {}).get(task, {}).get(name)
                change = "-"
                if base not in (None, 0) and value is not None and not math.isnan(value) and not math.isnan(base):
                    sign = 1 if self.higher_is_better[task][name] else -1
                    change = f"{sign * (value - base) / abs(base) * 100:+.1f}%"
                arrow = "↑" if self.higher_is_better[task][name] else "↓"
                rows.append([task, f"{name} {arrow}", _fmt(value), _fmt(base), change])
        headers = ["task", "metric", "value", "single-task", "better by"]
        if self.baseline_metrics is None:
            headers, rows = headers[:3], [r[:3] for r in rows]
        widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
        line = lambda r: "  ".join(str(v).ljust(w) if i < 2 else str(v).rjust(w)  # noqa: E731
                                   for i, (v, w) in enumerate(zip(r, widths)))
        out = [f"{self.model} on {self.data} ({self.num_examples} examples)",
               line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]
        if self.delta_m is not None:
            per_task = ", ".join(f"{t} {v:+.2f}%" for t, v in self.delta_m_per_task.items())
            out.append(f"Δm = {self.delta_m:+.2f}% (lower is better; per task: {per_task})")
        c = self.cost
        cost = (f"cost: {_fmt_count(c.get('params'))} params, {_fmt_count(c.get('flops'))} FLOPs/example, "
                f"{c.get('step_time_s', float('nan')) * 1000:.1f} ms/batch of {c.get('batch_size')}")
        out.append(cost)
        if self.baseline_cost:
            b, r = self.baseline_cost, self.cost_ratio or {}
            out.append(
                f"single-task models together: {_fmt_count(b.get('params'))} params, {_fmt_count(b.get('flops'))} "
                f"FLOPs, {b.get('step_time_s', float('nan')) * 1000:.1f} ms/batch -> ratio "
                + ", ".join(f"{k} {v:.2f}x" for k, v in r.items() if v is not None)
            )
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)

    def __str__(self):
        return self.table()


# ============================================================================ evaluate
def _load_model(model_or_path):
    import keras

    if isinstance(model_or_path, keras.Model):
        return model_or_path
    import mtlzoo

    if not isinstance(model_or_path, (str, os.PathLike)):
        raise TypeError(
            f"evaluate needs a Keras model or the path of a .keras file; got {type(model_or_path).__name__}."
        )
    path = os.fspath(model_or_path)
    if os.path.isdir(path):
        for name in ("best.keras", "last.keras"):
            if os.path.exists(os.path.join(path, name)):
                return mtlzoo.load(os.path.join(path, name), compile=False)
        if any(os.path.exists(os.path.join(path, f)) for f in ("saved_model.pb", "mtlzoo_export.json")):
            raise ValueError(
                f"{path!r} is an export folder or SavedModel; evaluate reads Keras models (a .keras file or an "
                "mtlzoo.train out_dir): evaluate the .keras model it was exported from."
            )
        raise FileNotFoundError(f"{path} holds no best.keras or last.keras (an mtlzoo.train out_dir).")
    return mtlzoo.load(path, compile=False)  # a .keras file (read in safe mode) or zoo:NAME


def _model_tasks(model):
    return {t: model.tasks[t]["kind"] for t in model.task_names}


def _model_recipe(model):
    from mtlzoo.recipe import Recipe

    data = getattr(model, "metadata", {}).get("recipe")
    return Recipe.from_dict(data) if data else None


def _eval_dataset(model, data, split, num_examples, batch_size, data_dir):
    """(dataset, description) for evaluation."""
    import tensorflow as tf

    from mtlzoo.training import load_split

    if isinstance(data, tf.data.Dataset):
        return data, "the given dataset"
    recipe = _model_recipe(model)
    config = dict(recipe.data) if recipe is not None else {}
    if isinstance(data, str):
        config = config if config.get("name") == data else {"name": data}
    elif isinstance(data, dict):
        config = {**config, **data}
    elif data is not None:
        raise TypeError(
            f"evaluate: data must be a dataset name, a dict, a tf.data.Dataset or None, got {type(data).__name__}."
        )
    if data_dir is not None:
        config["data_dir"] = data_dir
    if num_examples is not None:
        config["num_examples" if split == "train" else "num_validation_examples"] = int(num_examples)
    if batch_size is None:
        batch_size = int((recipe.training.get("batch_size") if recipe else None) or 8)
    tasks = _model_tasks(model)
    ds = load_split(config, split, image_size=tuple(model.input_shape[1:3]), batch_size=batch_size,
                    seed=int(recipe.seed) if recipe else 0, tasks=list(tasks), training=False,
                    with_boxes="detection" in tasks.values())
    return ds, f"{config.get('name')}/{split}"


def measure_step_time(model, inputs, repeats=10, warmup=2):
    """Median seconds of one inference call `model(inputs, training=False)` (compiled with tf.function).

    Args:
        model: a Keras model.
        inputs: one batch of inputs.
        repeats: int. Timed calls. Defaults to 10.
        warmup: int. Untimed calls first (tracing). Defaults to 2.

    Returns:
        float seconds.

    Example:
    ```python
    from mtlzoo.evaluation import measure_step_time
    measure_step_time(model, images)     # e.g. 0.012
    ```
    """
    import tensorflow as tf

    def forward(x):
        return model(x, training=False)

    fn = tf.function(forward, autograph=False)
    x = tf.convert_to_tensor(inputs)
    for _ in range(max(1, warmup)):
        tf.nest.map_structure(lambda t: t.numpy(), fn(x))
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn(x))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def model_cost(model, inputs=None, repeats=10):
    """dict `params`, `flops` (per example) and, given a batch, `step_time_s` and `batch_size`.

    Args:
        model: a Keras model.
        inputs: one batch of inputs, or None to skip the timing.
        repeats: int. Timed inference calls. Defaults to 10.

    Example:
    ```python
    import numpy as np, mtlzoo
    from mtlzoo.evaluation import model_cost
    model = mtlzoo.build("driving_perception_lite")
    model_cost(model, np.zeros((16, 128, 256, 3), "float32"))
    ```
    """
    from mtlzoo.flops import count_flops

    out = {"params": int(model.count_params()), "flops": int(count_flops(model))}
    if inputs is not None:
        out["step_time_s"] = measure_step_time(model, inputs, repeats=repeats)
        out["batch_size"] = int(np.shape(inputs)[0])
    return out


def _read_baselines(baselines):
    if baselines is None:
        return None, None
    if isinstance(baselines, dict):
        return baselines, None
    from mtlzoo import zoo

    if zoo.is_zoo_spec(baselines):  # a shipped model's stored single-task baselines
        baselines = zoo.resolve(baselines, default_file="baselines.json")
    path = os.fspath(baselines)
    if os.path.isdir(path):
        path = os.path.join(path, "baselines.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No baselines file at {path!r}; create one with `mtlzoo baselines RECIPE --out DIR`.")
    try:
        with open(path) as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path!r} is not valid JSON ({e}): the baselines file is damaged (truncated?); "
            "write it again with `mtlzoo baselines RECIPE --out DIR`."
        ) from e
    if not isinstance(data, dict) or data.get("format") != BASELINES_FORMAT:
        data = data if isinstance(data, dict) else {}
        raise ValueError(
            f"{path} is not an mtlzoo baselines file (format {data.get('format')!r}, expected {BASELINES_FORMAT!r})."
        )
    return data, os.path.dirname(os.path.abspath(path))


def _delta_m(metrics, higher, base_metrics, notes):
    from mtlzoo.metrics_delta import delta_m

    mtl_all, stl_all, hib_all, per_task = {}, {}, {}, {}
    for task, values in metrics.items():
        base = base_metrics.get(task)
        if base is None:
            notes.append(f"no single-task baseline for task {task!r}: left out of Δm")
            continue
        mtl, stl, hib = {}, {}, {}
        for name, value in values.items():
            b = base.get(name)
            if b is None or value is None or not math.isfinite(value) or not math.isfinite(b):
                notes.append(f"{task}/{name}: value or baseline undefined, left out of Δm")
                continue
            if b == 0:
                notes.append(
                    f"{task}/{name}: the single-task baseline is 0, left out of Δm (relative change undefined)"
                )
                continue
            mtl[name], stl[name], hib[name] = value, b, higher[task][name]
        if mtl:
            per_task[task] = delta_m(mtl, stl, hib)
            for name in mtl:
                key = f"{task}/{name}"
                mtl_all[key], stl_all[key], hib_all[key] = mtl[name], stl[name], hib[name]
    overall = delta_m(mtl_all, stl_all, hib_all) if mtl_all else None
    return overall, per_task


def evaluate(model_or_path, data=None, baselines=None, *, split="validation", num_examples=None, batch_size=None,
             data_dir=None, max_batches=None, detection_kwargs=None, timing_repeats=10,
             remeasure_baselines=True) -> EvaluationReport:
    """Evaluates a multi-task model over a dataset, against single-task baselines when given.

    Args:
        model_or_path: a `MultiTaskModel`, a `.keras` file, or an
            `mtlzoo.train` out_dir (its `best.keras`, else `last.keras`).
        data: a dataset name (its `split` is loaded at the model's input size,
            with raw boxes for detection), a dict of data settings, a
            `tf.data.Dataset` of (image, labels) batches, or None for the
            dataset named in the model's recipe.
        baselines: None, a `baselines.json` path (or its folder; `zoo:NAME`
            for a shipped model's), or the dict
            returned by `baselines()`.
        split: str. Split to load by name. Defaults to "validation".
        num_examples: int or None. Examples to load by name (None: the
            dataset's default).
        batch_size: int or None. Defaults to the recipe's batch size.
        data_dir: str or None. Data folder for datasets read from disk.
        max_batches: int or None. Stop after this many batches.
        detection_kwargs: dict. Decoding options (default score_threshold
            0.01, max_detections 100).
        timing_repeats: int. Timed inference calls for the step time.
        remeasure_baselines: bool. Time the stored single-task models again
            on this machine and batch (when their files exist) instead of
            using the stored times. Defaults to True.

    Returns:
        An `EvaluationReport`.

    Example:
    ```python
    from mtlzoo.evaluation import evaluate
    report = evaluate("runs/lite", "synthetic_driving", baselines="runs/stl", num_examples=100)
    print(report.table())
    ```

    Reference:
        Maninis et al., "Attentive Single-Tasking of Multiple Tasks", CVPR 2019 (Δm).
    """
    model = _load_model(model_or_path)
    dataset, description = _eval_dataset(model, data, split, num_examples, batch_size, data_dir)
    tasks = _model_tasks(model)
    image_shape = tuple(model.input_shape[1:])
    evaluators = {t: _TaskEvaluator(t, k, model.heads[t], image_shape, detection_kwargs) for t, k in tasks.items()}
    import tensorflow as tf

    def forward(x):
        return model(x, training=False)

    predict = tf.function(forward, autograph=False, reduce_retracing=True)
    notes, first_inputs, count, missing = [], None, 0, set()
    for b, element in enumerate(dataset):
        if max_batches is not None and b >= max_batches:
            break
        inputs, labels = element[0], element[1]
        if not isinstance(labels, dict):
            labels = {next(iter(tasks)): labels} if len(tasks) == 1 else {}
        if first_inputs is None:
            first_inputs = inputs
        outputs = predict(inputs)
        labels_np = {k: np.asarray(v) for k, v in labels.items()}
        count += int(np.shape(inputs)[0])
        for task, ev in evaluators.items():
            if task not in labels_np:
                missing.add(task)
                continue
            ev.update(np.asarray(outputs[task]), labels_np)
    if count == 0:
        from mtlzoo.training import DataCheckError

        raise DataCheckError(f"evaluate: {description} yielded no batch; check the split name and num_examples.")
    metrics, details, higher = {}, {}, {}
    for task, ev in evaluators.items():
        if task in missing:
            notes.append(f"the data has no {task!r} labels: task not evaluated")
            continue
        metrics[task], details[task] = ev.result()
        higher[task] = {name: HIGHER_IS_BETTER[name] for name in metrics[task]}
        if tasks[task] == "detection" and details[task]["ground_truth"] == "centernet_targets":
            notes.append(
                f"{task}: no raw boxes in the data; ground-truth boxes were read back from the CenterNet targets"
            )
    cost = model_cost(model, first_inputs, repeats=timing_repeats)
    report = EvaluationReport(model=model.name, data=description, num_examples=count, tasks=tasks, metrics=metrics,
                              details=details, higher_is_better=higher, cost=cost, notes=notes)
    stored, folder = _read_baselines(baselines)
    if stored is not None:
        base_tasks = stored.get("tasks", {})
        report.baseline_metrics = {t: dict(v.get("metrics", {})) for t, v in base_tasks.items() if t in tasks}
        report.delta_m, report.delta_m_per_task = _delta_m(metrics, higher, report.baseline_metrics, notes)
        report.baseline_cost, report.cost_ratio = _baseline_cost(
            base_tasks, tasks, cost, first_inputs, folder, remeasure_baselines, timing_repeats, notes)
    return report


def _baseline_cost(base_tasks, tasks, cost, inputs, folder, remeasure, repeats, notes):
    covered = [t for t in tasks if t in base_tasks]
    if not covered:
        return None, None
    if len(covered) < len(tasks):
        notes.append(f"cost: no single-task model for {sorted(set(tasks) - set(covered))}; sums cover {covered}")
    total = {"params": 0, "flops": 0, "step_time_s": 0.0, "batch_size": cost.get("batch_size")}
    train_steps = []
    remeasured = True
    for t in covered:
        entry = base_tasks[t].get("cost", {})
        total["params"] += int(entry.get("params", 0))
        total["flops"] += int(entry.get("flops", 0))
        step = None
        path = base_tasks[t].get("model")
        if remeasure and path and folder and inputs is not None:
            full = path if os.path.isabs(path) else os.path.join(folder, path)
            if os.path.exists(full):
                step = measure_step_time(_load_model(full), inputs, repeats=repeats)
        if step is None:
            remeasured = False
            step = entry.get("step_time_s")
            if entry.get("batch_size") not in (None, cost.get("batch_size")):
                notes.append(f"cost: the stored step time of {t!r} is for batch {entry.get('batch_size')}")
        total["step_time_s"] += float(step) if step is not None else float("nan")
        if entry.get("train_step_s") is not None:
            train_steps.append(float(entry["train_step_s"]))
    if len(train_steps) == len(covered):
        total["train_step_s"] = float(sum(train_steps))
    if not remeasured:
        notes.append("cost: single-task step times are the stored ones (measured when the baselines were trained)")
    ratio = {}
    for key in ("params", "flops", "step_time_s"):
        m, s = cost.get(key), total.get(key)
        ratio[key] = (m / s) if m is not None and s and math.isfinite(s) else None
    return total, ratio


# ============================================================================ baselines
def baselines(recipe, data=None, epochs=None, out_dir="baselines", *, tasks=None, evaluation_data=None,
              split="validation", num_examples=None, verbose="auto", **train_kwargs) -> dict:
    """Trains one single-task model per task and stores their metrics and costs as JSON.

    Each single-task model is the recipe restricted to one task
    (`mtlzoo.build(recipe, tasks=[t])`) with hard sharing (one backbone, one
    head: for a cross-stitch recipe, one of its columns), loss weight 1, no
    loss weighting or gradient aggregation, and the recipe's backbone, data,
    optimizer, seed and training budget. Each is trained with
    `mtlzoo.train` into `out_dir/<task>/`, then evaluated like `evaluate`
    does. The results go to `out_dir/baselines.json`, which `evaluate` reads.

    Args:
        recipe: str, path or `Recipe`.
        data: as for `mtlzoo.train` (None: the recipe's dataset).
        epochs: int or None. Overrides `training.epochs`.
        out_dir: str. Output folder. Defaults to "baselines".
        tasks: list of task names, or None for every task of the recipe.
        evaluation_data: what `evaluate` gets as `data` (None: the recipe's
            dataset by name, `split` split).
        split: str. Split to evaluate on. Defaults to "validation".
        num_examples: int or None. Evaluation examples (by name).
        verbose: as for `fit`.
        **train_kwargs: passed to `mtlzoo.train` (e.g. `steps_per_epoch`,
            `validation_data`, recipe overrides).

    Returns:
        The stored dict: `format`, `recipe`, `epochs`, `data`, `tasks`
        (task -> `metrics`, `details`, `cost`, `model`), `higher_is_better`.

    Example:
    ```python
    from mtlzoo.evaluation import baselines
    stl = baselines("driving_perception_lite", epochs=5, out_dir="runs/stl")
    stl["tasks"]["depth"]["metrics"]["abs_err"]
    ```
    """
    from mtlzoo.recipe import get_recipe
    from mtlzoo.training import train

    overrides = {k: train_kwargs.pop(k) for k in list(train_kwargs)
                 if k not in ("strategy", "callbacks", "seed", "steps_per_epoch", "validation_data")}
    base = get_recipe(recipe, **overrides)
    names = list(base.tasks) if tasks is None else list(tasks)
    for t in names:
        if t not in base.tasks:
            from mtlzoo.registry import suggestion

            raise ValueError(f"baselines: recipe {base.name!r} has no task {t!r}.{suggestion(t, list(base.tasks))}")
    os.makedirs(out_dir, exist_ok=True)
    stored = {"format": BASELINES_FORMAT, "recipe": base.name, "data": _clean(dict(base.data)),
              "tasks": {}, "higher_is_better": {}}
    for t in names:
        single = base.override(**{"tasks": [t], "sharing": "hard", "weighting": "fixed", "aggregator": None,
                                  f"tasks.{t}.loss_weight": 1.0})
        task_dir = os.path.join(out_dir, t)
        result = train(single, data=data, epochs=epochs, out_dir=task_dir, verbose=verbose, **train_kwargs)
        stored["epochs"] = result.epochs
        model_path = result.last_path  # the weights evaluated below (result.model)
        report = evaluate(result.model, evaluation_data, split=split, num_examples=num_examples,
                          batch_size=int(single.training.get("batch_size") or 8))
        cost = dict(report.cost)
        cost["train_step_s"] = result.timing.get("train_step_s")
        cost["train_total_s"] = result.timing.get("total_s")
        stored["tasks"][t] = {
            "metrics": report.metrics.get(t, {}),
            "details": report.details.get(t, {}),
            "cost": cost,
            "model": os.path.relpath(model_path, out_dir) if model_path else None,
            "epochs_run": len(next(iter(result.history.values()), [])),
            "stopped_reason": result.stopped_reason,
        }
        stored["higher_is_better"][t] = report.higher_is_better.get(t, {})
        stored["evaluation_data"] = report.data
        stored["evaluation_examples"] = report.num_examples
    stored = _clean(stored)
    with open(os.path.join(out_dir, "baselines.json"), "w") as f:
        json.dump(stored, f, indent=2)
    return stored
