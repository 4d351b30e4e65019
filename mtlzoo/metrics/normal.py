"""Surface-normal metrics: streaming angle error (Keras); mean/median angle, shares within 11.25/22.5/30° (NumPy)."""

from __future__ import annotations

import numpy as np
import keras
from keras import ops

from mtlzoo.metrics.base import MaskedMeanMetric
from mtlzoo.registry import METRICS

__all__ = ["normal_errors", "NormalAngle", "NormalSums"]


_ANGLE_BINS = 18000  # 0.01° bins for the streaming median


class NormalSums:
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
    from mtlzoo.metrics import normal_errors
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
        return NormalSums().result()
    return {
        "mean_angle": float(angles.mean()),
        "median_angle": float(np.median(angles)),
        "within_11_25": float((angles < 11.25).mean()),
        "within_22_5": float((angles < 22.5).mean()),
        "within_30": float((angles < 30.0).mean()),
        "valid_pixels": int(angles.size),
    }


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
