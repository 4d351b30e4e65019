"""Streams one task's labels and predictions into that task kind's metric sums."""

from __future__ import annotations

import numpy as np

from mtlzoo.metrics.depth import DepthSums
from mtlzoo.metrics.detection import boxes_from_centernet_target, detection_average_precision
from mtlzoo.metrics.headline import HEADLINE
from mtlzoo.metrics.multilabel import MultiLabelSums
from mtlzoo.metrics.normal import NormalSums
from mtlzoo.metrics.segmentation import confusion_matrix, segmentation_metrics

__all__ = ["TaskEvaluator"]


# ============================================================================ evaluators
class TaskEvaluator:
    """Streams one task's labels and predictions into its metric sums."""

    def __init__(self, task, kind, head, image_shape, detection_kwargs=None):
        self.task, self.kind, self.head = task, kind, head
        self.image_shape = tuple(image_shape)
        self.seen = 0
        if kind == "segmentation":
            self.confusion = np.zeros((head.num_classes, head.num_classes), np.int64)
        elif kind == "depth":
            self.sums = DepthSums()
        elif kind == "multilabel":
            self.sums = MultiLabelSums(head.num_classes)
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
            self.sums = NormalSums()
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
