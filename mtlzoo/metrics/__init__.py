"""Per-task metrics that skip missing labels (same conventions as `mtlzoo.losses`).

Each metric accepts `sample_weight` [B] (0 = example missing) and ignores label
elements that hold the task's missing value, so partially labelled batches give
the metric over the labelled part only.
"""

from mtlzoo.metrics.base import MaskedMeanMetric, get
from mtlzoo.metrics.classification import MaskedAccuracy
from mtlzoo.metrics.delta import delta_m
from mtlzoo.metrics.depth import DepthError, DepthSums, depth_errors
from mtlzoo.metrics.detection import (CenterRecall, box_iou, boxes_from_centernet_target,
                                      detection_average_precision)
from mtlzoo.metrics.headline import HEADLINE, HIGHER_IS_BETTER
from mtlzoo.metrics.multilabel import MultiLabelF1, MultiLabelSums, average_precision, multilabel_metrics
from mtlzoo.metrics.normal import NormalAngle, NormalSums, normal_errors
from mtlzoo.metrics.regression import MaskedMeanAbsoluteError
from mtlzoo.metrics.segmentation import MeanIoU, PixelAccuracy, confusion_matrix, segmentation_metrics

__all__ = [
    "HEADLINE", "HIGHER_IS_BETTER", "CenterRecall", "DepthError", "DepthSums", "MaskedAccuracy",
    "MaskedMeanAbsoluteError", "MaskedMeanMetric", "MeanIoU", "MultiLabelF1", "MultiLabelSums", "NormalAngle",
    "NormalSums", "PixelAccuracy", "average_precision", "box_iou", "boxes_from_centernet_target",
    "confusion_matrix", "delta_m", "depth_errors", "detection_average_precision", "get", "multilabel_metrics",
    "normal_errors", "segmentation_metrics",
]
