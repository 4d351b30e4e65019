"""Detection metrics: streaming center recall (Keras); box IoU, AP@0.5 per class and mAP (NumPy)."""

from __future__ import annotations

import numpy as np
import keras
from keras import ops

from mtlzoo.metrics.base import MaskedMeanMetric
from mtlzoo.registry import METRICS

__all__ = ["box_iou", "boxes_from_centernet_target", "CenterRecall", "detection_average_precision"]


def box_iou(boxes_a, boxes_b):
    """IoU matrix [N, M] of (ymin, xmin, ymax, xmax) boxes (continuous pixel coordinates).

    Example:
    ```python
    from mtlzoo.metrics import box_iou
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
    from mtlzoo.metrics import detection_average_precision
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
    from mtlzoo.metrics import boxes_from_centernet_target
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


@METRICS.register("center_recall")
@keras.saving.register_keras_serializable(package="mtlzoo")
class CenterRecall(MaskedMeanMetric):
    """Fraction of object centers whose class heatmap reaches `threshold` there.

    A cheap training-time proxy for detection recall (mAP is computed by
    `mtlzoo.evaluate` on decoded boxes).

    Args:
        num_classes: int. Number of heatmap channels.
        threshold: float. Heatmap score counted as a hit. Defaults to 0.3.

    Example:
    ```python
    metric = mtlzoo.metrics.CenterRecall(num_classes=4)
    ```
    """

    default_name = "center_recall"

    def __init__(self, num_classes, threshold=0.3, name=None, dtype="float32"):
        self.num_classes = int(num_classes)
        self.threshold = float(threshold)
        super().__init__(name=name, dtype=dtype)

    def values_and_valid(self, y_true, y_pred):
        c = self.num_classes
        y_true = ops.cast(y_true, "float32")
        peak_class = ops.cast(y_true[..., :c] >= 1.0 - 1e-6, "float32")
        hit = ops.sum(peak_class * ops.cast(y_pred[..., :c] >= self.threshold, "float32"), axis=-1)
        center = y_true[..., c + 4]
        return ops.minimum(hit, 1.0), ops.cast(center > 0, "float32")

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "threshold": self.threshold}
