"""Classification metrics: streaming accuracy over labelled examples (Keras)."""

from __future__ import annotations

import keras

from mtlzoo.metrics.segmentation import PixelAccuracy
from mtlzoo.registry import METRICS


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
