"""Semantic segmentation head."""

import keras

from mtlzoo import losses, metrics
from mtlzoo.heads.base import OUTPUT_DTYPE, Head, dense_logits
from mtlzoo.registry import HEADS
from mtlzoo.validation import as_int


@HEADS.register("segmentation")
class SegmentationHead(Head):
    """Per-pixel class logits at input resolution.

    Reads the finest neck feature (stride 4), applies `depth` conv blocks, a
    1×1 classifier and a bilinear ×4 upsampling. Labels: int class ids
    [H, W], `-1` = unlabelled pixel (an all `-1` map = missing label).

    Args:
        num_classes: int. Number of classes.
        channels: int. Width of the conv blocks. Defaults to 64.
        depth: int. Number of 3×3 conv blocks. Defaults to 1.

    Example:
    ```python
    head = mtlzoo.heads.get("segmentation", num_classes=10)
    ```

    Reference:
        Kirillov et al., "Panoptic Feature Pyramid Networks", CVPR 2019.
    """

    kind = "segmentation"

    def __init__(self, num_classes, channels=64, depth=1):
        if as_int("segmentation head", "num_classes", num_classes) < 2:
            raise ValueError(f"segmentation: num_classes must be >= 2, got {num_classes}.")
        self.num_classes = as_int("segmentation head", "num_classes", num_classes)
        self.channels = as_int("segmentation head", "channels", channels)
        self.depth = as_int("segmentation head", "depth", depth)

    def __call__(self, features, name):
        x = dense_logits(features[0], name, self.channels, self.depth, self.num_classes)
        stride = self._stride
        return keras.layers.UpSampling2D(stride, interpolation="bilinear", name=name, dtype=OUTPUT_DTYPE)(x)

    _stride = 4

    def loss(self):
        return losses.MaskedSparseCategoricalCrossentropy()

    def metrics(self):
        return [metrics.MeanIoU(self.num_classes), metrics.PixelAccuracy()]

    def label_spec(self, input_shape):
        return tuple(input_shape[:2]), "int"
