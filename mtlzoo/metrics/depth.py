"""Depth metrics: streaming errors (Keras); absolute error, absolute relative error, δ < 1.25 (NumPy)."""

from __future__ import annotations

import numpy as np
import keras
from keras import ops

from mtlzoo.metrics.base import MaskedMeanMetric
from mtlzoo.registry import METRICS

__all__ = ["depth_errors", "DepthError", "DepthSums"]


class DepthSums:
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
    from mtlzoo.metrics import depth_errors
    depth_errors([2.0, 4.0, 9.0], [2.0, 5.0, 0.0])   # abs_err 0.5, abs_rel 0.1, delta1 0.5 (4/5 is not < 1.25)
    ```

    Reference:
        Eigen et al., "Depth Map Prediction from a Single Image using a
        Multi-Scale Deep Network", NeurIPS 2014.
    """
    sums = DepthSums()
    sums.update(prediction, target)
    return sums.result()


@METRICS.register("depth_error")
@keras.saving.register_keras_serializable(package="mtlzoo")
class DepthError(MaskedMeanMetric):
    """Depth error over valid pixels (label `<= 0` = invalid).

    Args:
        kind: str. `"abs_err"` (mean |d - d*| in metres), `"abs_rel"`
            (mean |d - d*| / d*) or `"delta1"` (fraction with
            max(d/d*, d*/d) < 1.25). Defaults to `"abs_err"`.

    Example:
    ```python
    metric = mtlzoo.metrics.DepthError("abs_rel")
    ```

    Reference:
        Eigen et al., "Depth Map Prediction from a Single Image using a
        Multi-Scale Deep Network", NeurIPS 2014.
    """

    def __init__(self, kind="abs_err", name=None, dtype="float32"):
        if kind not in ("abs_err", "abs_rel", "delta1"):
            raise ValueError(f"DepthError kind must be 'abs_err', 'abs_rel' or 'delta1', got {kind!r}.")
        self.kind = kind
        super().__init__(name=name or kind, dtype=dtype)

    def values_and_valid(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        if len(y_true.shape) == len(y_pred.shape) - 1:
            y_true = ops.expand_dims(y_true, -1)
        valid = y_true > 0
        safe = ops.where(valid, y_true, ops.ones_like(y_true))
        if self.kind == "abs_err":
            values = ops.abs(y_pred - safe)
        elif self.kind == "abs_rel":
            values = ops.abs(y_pred - safe) / safe
        else:
            pred = ops.maximum(y_pred, 1e-6)
            values = ops.cast(ops.maximum(pred / safe, safe / pred) < 1.25, "float32")
        return values, valid

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}
