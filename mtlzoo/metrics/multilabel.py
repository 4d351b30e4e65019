"""Multi-label (scene tag) metrics: streaming F1 (Keras); AP per tag, micro and macro F1 (NumPy)."""

from __future__ import annotations

import math

import numpy as np
import keras
from keras import ops

from mtlzoo.metrics.base import example_weight
from mtlzoo.registry import METRICS

__all__ = ["average_precision", "multilabel_metrics", "MultiLabelF1", "MultiLabelSums"]


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
    from mtlzoo.metrics import average_precision
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


class MultiLabelSums:
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
    from mtlzoo.metrics import multilabel_metrics
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


@METRICS.register("multilabel_f1")
@keras.saving.register_keras_serializable(package="mtlzoo")
class MultiLabelF1(keras.metrics.Metric):
    """Micro-averaged F1 of multi-label predictions (logits > 0) over labelled entries (`-1` = missing).

    Example:
    ```python
    metric = mtlzoo.metrics.MultiLabelF1()
    ```
    """

    def __init__(self, name="f1", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.tp = self.add_variable(shape=(), initializer="zeros", name="tp")
        self.fp = self.add_variable(shape=(), initializer="zeros", name="fp")
        self.fn = self.add_variable(shape=(), initializer="zeros", name="fn")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "float32")
        valid = ops.cast(y_true >= 0, "float32") * example_weight(sample_weight, y_true)
        pred = ops.cast(ops.cast(y_pred, "float32") > 0, "float32")
        self.tp.assign_add(ops.sum(pred * y_true * valid))
        self.fp.assign_add(ops.sum(pred * (1 - y_true) * valid))
        self.fn.assign_add(ops.sum((1 - pred) * y_true * valid))

    def result(self):
        return ops.divide_no_nan(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def reset_state(self):
        for v in (self.tp, self.fp, self.fn):
            v.assign(0.0)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
