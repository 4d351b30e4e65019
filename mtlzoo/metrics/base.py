"""Per-task metrics that skip missing labels (same conventions as `mtlzoo.losses`).

Each metric accepts `sample_weight` [B] (0 = example missing) and ignores label
elements that hold the task's missing value, so partially labelled batches give
the metric over the labelled part only.
"""

from __future__ import annotations

import keras
from keras import ops

from mtlzoo.registry import METRICS


def _example_weight(sample_weight, like):
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
        valid = ops.cast(valid, "float32") * _example_weight(sample_weight, ops.cast(valid, "float32"))
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


@METRICS.register("pixel_accuracy")
@keras.saving.register_keras_serializable(package="mtlzoo")
class PixelAccuracy(MaskedMeanMetric):
    """Fraction of labelled pixels (or examples) whose argmax class is right (`-1` = missing).

    Example:
    ```python
    metric = mtlzoo.metrics.PixelAccuracy()
    ```
    """

    default_name = "pixel_acc"

    def values_and_valid(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        if len(y_true.shape) == len(y_pred.shape):
            y_true = ops.squeeze(y_true, -1)
        pred = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        return ops.cast(ops.equal(pred, y_true), "float32"), ops.greater_equal(y_true, 0)


@METRICS.register("accuracy")
@keras.saving.register_keras_serializable(package="mtlzoo")
class MaskedAccuracy(PixelAccuracy):
    """Classification accuracy over labelled examples (`-1` = missing).

    Example:
    ```python
    metric = mtlzoo.metrics.MaskedAccuracy()
    ```
    """

    default_name = "acc"


@METRICS.register("mean_iou")
@keras.saving.register_keras_serializable(package="mtlzoo")
class MeanIoU(keras.metrics.Metric):
    """Mean intersection-over-union over classes present in labels or predictions.

    Accumulates a confusion matrix over labelled pixels (`-1` = missing);
    classes that never occur in labels nor predictions are left out of the mean.

    Args:
        num_classes: int. Number of classes.

    Example:
    ```python
    metric = mtlzoo.metrics.MeanIoU(num_classes=10)
    ```
    """

    def __init__(self, num_classes, name="miou", dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        self.confusion = self.add_variable(
            shape=(self.num_classes, self.num_classes), initializer="zeros", name="confusion"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        if len(y_true.shape) == len(y_pred.shape):
            y_true = ops.squeeze(y_true, -1)
        pred = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        weight = ops.cast(ops.greater_equal(y_true, 0), "float32") * _example_weight(
            sample_weight, ops.cast(y_true, "float32")
        )
        safe_true = ops.where(y_true >= 0, y_true, ops.zeros_like(y_true))
        index = ops.reshape(safe_true * self.num_classes + pred, (-1,))
        counts = ops.segment_sum(ops.reshape(weight, (-1,)), index, num_segments=self.num_classes**2)
        self.confusion.assign_add(ops.reshape(counts, (self.num_classes, self.num_classes)))

    def result(self):
        cm = self.confusion
        tp = ops.diagonal(cm)
        union = ops.sum(cm, axis=0) + ops.sum(cm, axis=1) - tp
        present = ops.cast(union > 0, "float32")
        iou = ops.divide_no_nan(tp, union)
        return ops.divide_no_nan(ops.sum(iou * present), ops.sum(present))

    def reset_state(self):
        self.confusion.assign(ops.zeros_like(self.confusion))

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "num_classes": self.num_classes}


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


@METRICS.register("normal_angle")
@keras.saving.register_keras_serializable(package="mtlzoo")
class NormalAngle(MaskedMeanMetric):
    """Surface-normal angle error over valid pixels (a zero label vector = invalid).

    Args:
        kind: str. `"mean_angle"` (mean angle in degrees) or `"within_N"`
            for N in 11.25, 22.5, 30 (fraction of pixels under N degrees,
            written `within_11_25`, `within_22_5`, `within_30`). The median
            angle needs all pixels at once: `mtlzoo.evaluation` reports it.
            Defaults to `"mean_angle"`.

    Example:
    ```python
    metric = mtlzoo.metrics.NormalAngle("within_11_25")
    ```

    Reference:
        Eigen & Fergus, "Predicting Depth, Surface Normals and Semantic Labels
        with a Common Multi-Scale Convolutional Architecture", ICCV 2015.
    """

    _THRESHOLDS = {"within_11_25": 11.25, "within_22_5": 22.5, "within_30": 30.0}

    def __init__(self, kind="mean_angle", name=None, dtype="float32"):
        if kind != "mean_angle" and kind not in self._THRESHOLDS:
            raise ValueError(
                f"NormalAngle kind must be 'mean_angle' or one of {', '.join(self._THRESHOLDS)}, got {kind!r}."
            )
        self.kind = kind
        super().__init__(name=name or kind, dtype=dtype)

    def values_and_valid(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        norm_true = ops.sqrt(ops.sum(ops.square(y_true), axis=-1))
        valid = norm_true > 1e-6
        safe = ops.where(valid, norm_true, ops.ones_like(norm_true))
        norm_pred = ops.sqrt(ops.maximum(ops.sum(ops.square(y_pred), axis=-1), 1e-12))
        cosine = ops.clip(ops.sum(y_true * y_pred, axis=-1) / (safe * norm_pred), -1.0, 1.0)
        degrees = ops.arccos(cosine) * (180.0 / 3.141592653589793)
        if self.kind == "mean_angle":
            return degrees, valid
        return ops.cast(degrees < self._THRESHOLDS[self.kind], "float32"), valid

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


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
        valid = ops.cast(y_true >= 0, "float32") * _example_weight(sample_weight, y_true)
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
