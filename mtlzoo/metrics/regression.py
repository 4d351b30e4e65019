"""Regression metrics: streaming mean absolute error over valid labels (Keras)."""

from __future__ import annotations

import keras
from keras import ops

from mtlzoo.metrics.base import MaskedMeanMetric
from mtlzoo.registry import METRICS


@METRICS.register("mae")
@keras.saving.register_keras_serializable(package="mtlzoo")
class MaskedMeanAbsoluteError(MaskedMeanMetric):
    """Mean absolute error over entries not equal to `ignore_value`.

    Args:
        ignore_value: float or None. Label value to skip. Defaults to None.

    Example:
    ```python
    metric = mtlzoo.metrics.MaskedMeanAbsoluteError()
    ```
    """

    default_name = "mae"

    def __init__(self, ignore_value=None, name=None, dtype="float32"):
        self.ignore_value = None if ignore_value is None else float(ignore_value)
        super().__init__(name=name, dtype=dtype)

    def values_and_valid(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        if len(y_true.shape) == len(y_pred.shape) - 1:
            y_true = ops.expand_dims(y_true, -1)
        valid = ops.ones_like(y_true) if self.ignore_value is None else ops.not_equal(y_true, self.ignore_value)
        return ops.abs(y_pred - y_true), valid

    def get_config(self):
        return {**super().get_config(), "ignore_value": self.ignore_value}
