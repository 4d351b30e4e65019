"""The base of the streaming metrics (a masked running mean) and `get` (a metric by name or config)."""

from __future__ import annotations

import keras
from keras import ops

from mtlzoo.registry import METRICS

__all__ = ["example_weight", "get", "MaskedMeanMetric"]


def example_weight(sample_weight, like):
    if sample_weight is None:
        return ops.ones_like(like)
    w = ops.cast(ops.convert_to_tensor(sample_weight), like.dtype)
    while len(w.shape) < len(like.shape):
        w = ops.expand_dims(w, -1)
    return ops.broadcast_to(w, ops.shape(like))


class MaskedMeanMetric(keras.metrics.Metric):
    """Base: running mean of `values` over valid elements.

    Subclasses implement `values_and_valid(y_true, y_pred) -> (values, valid)`.
    """

    def __init__(self, name=None, dtype="float32"):
        super().__init__(name=name or self.default_name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    default_name = "masked_mean"

    def values_and_valid(self, y_true, y_pred):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        values, valid = self.values_and_valid(y_true, ops.cast(y_pred, "float32"))
        valid = ops.cast(valid, "float32") * example_weight(sample_weight, ops.cast(valid, "float32"))
        values = ops.where(valid > 0, values, ops.zeros_like(values))
        self.total.assign_add(ops.sum(values * valid))
        self.count.assign_add(ops.sum(valid))

    def result(self):
        return ops.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def get(identifier, **kwargs):
    """A metric object from a registered name, a config dict or a Metric instance."""
    if isinstance(identifier, keras.metrics.Metric):
        return identifier
    if isinstance(identifier, dict):
        config = dict(identifier)
        return METRICS.get(config.pop("name"))(**config)
    if isinstance(identifier, str):
        if identifier in METRICS:
            return METRICS.get(identifier)(**kwargs)
        try:
            return keras.metrics.get(identifier)
        except ValueError:
            METRICS.get(identifier)
    raise TypeError(f"Cannot interpret {identifier!r} as a metric: give a name, a config dict or a keras Metric.")
