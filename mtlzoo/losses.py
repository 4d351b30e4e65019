"""Per-task losses that skip missing labels.

Every loss here is a `keras.losses.Loss` whose call returns the mean over the
*valid* label elements of the batch. A label element is invalid when it holds
the task's missing value (see each class); a per-example `sample_weight` of 0
removes the whole example. A batch with no valid element gives a loss of 0
(never NaN) and no gradient.

Missing-label conventions (also in docs/tasks.md):
- segmentation / classification: class id `-1`;
- multi-label (scene tags): entry `-1`;
- depth: value `<= 0` (invalid pixel, e.g. sky or no lidar return);
- detection: a CenterNet target whose center-indicator channel is `-1`
  (an all `-1` target, see `mtlzoo.heads.centernet_targets`);
- regression: `ignore_value` if given, else every value counts.
"""

from __future__ import annotations

import keras
from keras import ops

from mtlzoo.registry import LOSSES


def broadcast_weight(sample_weight, like):
    """[B] sample weights broadcast to the rank of `like` ([B, ...])."""
    w = ops.cast(ops.convert_to_tensor(sample_weight), like.dtype)
    while len(w.shape) < len(like.shape):
        w = ops.expand_dims(w, -1)
    return w


class MaskedLoss(keras.losses.Loss):
    """Base class: subclasses implement `elementwise(y_true, y_pred) -> (values, valid)`.

    `values` and `valid` have the same shape [B, ...]; `values` may be anything
    where `valid` is 0 (it is zeroed before summing, and subclasses sanitise
    their inputs there so gradients stay finite).
    """

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name or self.__class__.__name__, reduction=reduction, dtype=dtype)

    def elementwise(self, y_true, y_pred):
        raise NotImplementedError

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.cast(y_pred, "float32")
        values, valid = self.elementwise(y_true, y_pred)
        valid = ops.cast(valid, "float32")
        if sample_weight is not None:
            valid = valid * broadcast_weight(sample_weight, valid)
        values = ops.where(valid > 0, values, ops.zeros_like(values))
        total = ops.sum(values * valid)
        count = ops.sum(valid)
        return ops.divide_no_nan(total, count)

    def call(self, y_true, y_pred):  # Keras API compatibility; per-example values.
        values, valid = self.elementwise(y_true, ops.cast(y_pred, "float32"))
        valid = ops.cast(valid, "float32")
        axes = list(range(1, len(values.shape)))
        if not axes:
            return values * valid
        return ops.divide_no_nan(ops.sum(values * valid, axis=axes), ops.sum(valid, axis=axes))


@LOSSES.register("masked_sparse_categorical_crossentropy")
@keras.saving.register_keras_serializable(package="mtlzoo")
class MaskedSparseCategoricalCrossentropy(MaskedLoss):
    """Softmax cross-entropy from logits over valid class ids (`-1` = missing).

    Works for image-level ([B]) and per-pixel ([B, H, W]) labels.

    Args:
        ignore_class: int. Label value to skip. Defaults to -1.

    Example:
    ```python
    loss = mtlzoo.losses.MaskedSparseCategoricalCrossentropy()
    ```
    """

    def __init__(self, ignore_class=-1, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_class = int(ignore_class)

    def elementwise(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        if len(y_true.shape) == len(y_pred.shape):  # [..., 1] labels
            y_true = ops.squeeze(y_true, -1)
        valid = ops.not_equal(y_true, self.ignore_class)
        safe = ops.where(valid, y_true, ops.zeros_like(y_true))
        # logsumexp(logits) - logit[label], with the label picked by a one-hot product: on CPUs TensorFlow's fused
        # SparseSoftmaxCrossEntropyWithLogits is 2x slower than this for per-pixel labels (forward and backward).
        picked = ops.sum(y_pred * ops.one_hot(safe, ops.shape(y_pred)[-1], dtype=y_pred.dtype), axis=-1)
        values = ops.logsumexp(y_pred, axis=-1) - picked
        return values, valid

    def get_config(self):
        return {**super().get_config(), "ignore_class": self.ignore_class}


@LOSSES.register("masked_binary_crossentropy")
@keras.saving.register_keras_serializable(package="mtlzoo")
class MaskedBinaryCrossentropy(MaskedLoss):
    """Sigmoid cross-entropy from logits per label entry (`-1` = missing).

    For multi-label classification such as scene tags.

    Example:
    ```python
    loss = mtlzoo.losses.MaskedBinaryCrossentropy()
    ```
    """

    def elementwise(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        valid = ops.greater_equal(y_true, 0.0)
        safe = ops.where(valid, y_true, ops.zeros_like(y_true))
        # Numerically stable BCE with logits.
        values = ops.maximum(y_pred, 0.0) - y_pred * safe + ops.log1p(ops.exp(-ops.abs(y_pred)))
        return values, valid


@LOSSES.register("depth_l1")
@keras.saving.register_keras_serializable(package="mtlzoo")
class DepthL1(MaskedLoss):
    """Mean absolute depth error over valid pixels (label `<= 0` = invalid).

    Args:
        relative: bool. Divide each error by the true depth (abs-rel loss).
            Defaults to False.

    Example:
    ```python
    loss = mtlzoo.losses.DepthL1()
    ```
    """

    def __init__(self, relative=False, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.relative = bool(relative)

    def elementwise(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        if len(y_true.shape) == len(y_pred.shape) - 1:
            y_true = ops.expand_dims(y_true, -1)
        valid = ops.greater(y_true, 0.0)
        safe = ops.where(valid, y_true, ops.ones_like(y_true))
        values = ops.abs(y_pred - safe)
        if self.relative:
            values = values / safe
        return values, valid

    def get_config(self):
        return {**super().get_config(), "relative": self.relative}


@LOSSES.register("normal_cosine")
@keras.saving.register_keras_serializable(package="mtlzoo")
class NormalCosine(MaskedLoss):
    """`1 − cos(n, n*)` per pixel, averaged over valid pixels (a zero label vector = invalid).

    Both vectors are normalised first, so the loss is the angular error's
    cosine form used for NYUv2 surface normals in the MTL literature.

    Example:
    ```python
    loss = mtlzoo.losses.NormalCosine()
    ```

    Reference:
        Liu et al., "End-to-End Multi-Task Learning with Attention", CVPR 2019.
    """

    def elementwise(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        norm_true = ops.sqrt(ops.sum(ops.square(y_true), axis=-1))
        valid = ops.greater(norm_true, 1e-6)
        safe_true = y_true / ops.expand_dims(ops.where(valid, norm_true, ops.ones_like(norm_true)), -1)
        norm_pred = ops.sqrt(ops.maximum(ops.sum(ops.square(y_pred), axis=-1), 1e-12))
        cosine = ops.sum(safe_true * y_pred, axis=-1) / norm_pred
        return 1.0 - cosine, valid


@LOSSES.register("masked_mse")
@keras.saving.register_keras_serializable(package="mtlzoo")
class MaskedMeanSquaredError(MaskedLoss):
    """Mean squared error over label entries not equal to `ignore_value`.

    Args:
        ignore_value: float or None. Label value to skip; None keeps all.
            Defaults to None.

    Example:
    ```python
    loss = mtlzoo.losses.MaskedMeanSquaredError(ignore_value=-1.0)
    ```
    """

    def __init__(self, ignore_value=None, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_value = None if ignore_value is None else float(ignore_value)

    def elementwise(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        if len(y_true.shape) == len(y_pred.shape) - 1:
            y_true = ops.expand_dims(y_true, -1)
        if self.ignore_value is None:
            valid = ops.ones_like(y_true)
        else:
            valid = ops.not_equal(y_true, self.ignore_value)
        safe = ops.where(ops.cast(valid, "bool"), y_true, ops.zeros_like(y_true))
        return ops.square(y_pred - safe), valid

    def get_config(self):
        return {**super().get_config(), "ignore_value": self.ignore_value}


@LOSSES.register("centernet")
@keras.saving.register_keras_serializable(package="mtlzoo")
class CenterNetLoss(MaskedLoss):
    """CenterNet detection loss: focal loss on heatmaps + L1 on size and offset.

    `y_pred` is the head output [B, h, w, C + 4] (sigmoid heatmaps, size,
    offset); `y_true` the target [B, h, w, C + 5] of
    `mtlzoo.heads.centernet_targets`. The focal term is normalised by the number
    of objects in the batch (at least one), the size and offset terms by the
    number of center cells, as in the paper. An example whose target is all
    `-1` contributes nothing.

    Args:
        num_classes: int. Number of heatmap channels C.
        alpha: float. Focal exponent on the prediction. Defaults to 2.0.
        beta: float. Exponent of the penalty reduction near centers. Defaults to 4.0.
        size_weight: float. Weight of the size L1 term. Defaults to 0.1.
        offset_weight: float. Weight of the offset L1 term. Defaults to 1.0.

    Example:
    ```python
    loss = mtlzoo.losses.CenterNetLoss(num_classes=4)
    ```

    Reference:
        Zhou et al., "Objects as Points", arXiv:1904.07850, 2019.
    """

    def __init__(self, num_classes, alpha=2.0, beta=4.0, size_weight=0.1, offset_weight=1.0, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.size_weight = float(size_weight)
        self.offset_weight = float(offset_weight)

    def __call__(self, y_true, y_pred, sample_weight=None):
        total, count = self.sum_and_count(y_true, y_pred, sample_weight)
        return total / ops.maximum(count, 1.0)

    def sum_and_count(self, y_true, y_pred, sample_weight=None):
        """The loss's numerator and its object count: loss = sum / max(count, 1).

        Under tf.distribute the count is summed over replicas before dividing
        (`mtlzoo.distribute.replica_task_loss`), so every object of the global
        batch weighs the same, as on one device.
        """
        c = self.num_classes
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        present = ops.cast(ops.greater_equal(y_true[..., c + 4 : c + 5], 0.0), "float32")  # [B,h,w,1]
        present = ops.min(present, axis=(1, 2, 3), keepdims=True)  # per example
        if sample_weight is not None:
            present = present * broadcast_weight(sample_weight, present)
        heat_t = ops.clip(y_true[..., :c], 0.0, 1.0)
        heat_p = ops.clip(y_pred[..., :c], 1e-4, 1.0 - 1e-4)
        center = ops.clip(y_true[..., c + 4 : c + 5], 0.0, 1.0) * present
        is_peak = ops.cast(ops.greater_equal(heat_t, 1.0 - 1e-6), "float32")
        pos = -ops.power(1.0 - heat_p, self.alpha) * ops.log(heat_p) * is_peak
        neg = -ops.power(1.0 - heat_t, self.beta) * ops.power(heat_p, self.alpha) * ops.log(1.0 - heat_p) * (1.0 - is_peak)
        focal = ops.sum((pos + neg) * present)
        size_err = ops.sum(ops.abs(y_pred[..., c : c + 2] - y_true[..., c : c + 2]) * center)
        off_err = ops.sum(ops.abs(y_pred[..., c + 2 : c + 4] - y_true[..., c + 2 : c + 4]) * center)
        return focal + self.size_weight * size_err + self.offset_weight * off_err, ops.sum(center)

    def call(self, y_true, y_pred):
        raise NotImplementedError("CenterNetLoss is reduced over the batch; call the loss object directly.")

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "alpha": self.alpha,
            "beta": self.beta,
            "size_weight": self.size_weight,
            "offset_weight": self.offset_weight,
        }


def get(identifier):
    """Returns a loss object from a registered name, a config dict or a Loss instance."""
    if isinstance(identifier, keras.losses.Loss):
        return identifier
    if isinstance(identifier, dict):
        config = dict(identifier)
        name = config.pop("name")
        return LOSSES.get(name)(**config)
    if isinstance(identifier, str):
        if identifier in LOSSES:
            return LOSSES.get(identifier)()
        try:
            return keras.losses.get(identifier)
        except ValueError:
            LOSSES.get(identifier)  # raises with near matches
    raise TypeError(f"Cannot interpret {identifier!r} as a loss: give a name, a config dict or a keras Loss.")
