"""Anchor-free CenterNet-style detection head."""

import keras

from mtlzoo import losses, metrics
from mtlzoo.heads.base import OUTPUT_DTYPE, Head, conv_bn_relu
from mtlzoo.heads.centernet_targets import decode_centernet, encode_centernet_targets
from mtlzoo.registry import HEADS
from mtlzoo.validation import as_int


@HEADS.register("detection")
class DetectionHead(Head):
    """Class heatmaps, box size and center offset at stride 4.

    The output is one tensor [B, H/4, W/4, C + 4]: sigmoid heatmaps (C), box
    (height, width) in stride-4 cells (2) and sub-cell center offset (2).
    Labels are the dense targets of `mtlzoo.heads.centernet_targets`
    ([H/4, W/4, C + 5]; all `-1` = missing); `decode` turns outputs into boxes.

    Args:
        num_classes: int. Number of object classes.
        channels: int. Width of the shared conv block. Defaults to 64.
        prior: float. Initial heatmap probability (focal-loss bias init). Defaults to 0.01.

    Example:
    ```python
    head = mtlzoo.heads.get("detection", num_classes=4)
    boxes, scores, classes = head.decode(outputs["detection"][0])
    ```

    Reference:
        Zhou et al., "Objects as Points", arXiv:1904.07850, 2019.
    """

    kind = "detection"
    stride = 4

    def __init__(self, num_classes, channels=64, prior=0.01):
        if as_int("detection head", "num_classes", num_classes) < 1:
            raise ValueError(f"detection: num_classes must be >= 1, got {num_classes}.")
        if not 0.0 < float(prior) < 1.0:
            raise ValueError(f"detection: prior must be in (0, 1), got {prior}.")
        self.num_classes = as_int("detection head", "num_classes", num_classes)
        self.channels = as_int("detection head", "channels", channels)
        self.prior = float(prior)

    def __call__(self, features, name):
        import math

        x = conv_bn_relu(features[0], self.channels, f"{name}__block0")
        bias = -math.log((1 - self.prior) / self.prior)
        heat = keras.layers.Conv2D(
            self.num_classes, 1, activation="sigmoid",
            bias_initializer=keras.initializers.Constant(bias), name=f"{name}__heatmap",
        )(x)
        size = keras.layers.Conv2D(2, 1, name=f"{name}__size")(x)
        offset = keras.layers.Conv2D(2, 1, activation="sigmoid", name=f"{name}__offset")(x)
        return keras.layers.Concatenate(axis=-1, name=name, dtype=OUTPUT_DTYPE)([heat, size, offset])

    def loss(self):
        return losses.CenterNetLoss(self.num_classes)

    def metrics(self):
        return [metrics.CenterRecall(self.num_classes)]

    def label_spec(self, input_shape):
        return (input_shape[0] // self.stride, input_shape[1] // self.stride, self.num_classes + 5), "float"

    def encode(self, boxes, classes, image_shape):
        """Dense target for one image's boxes (see `encode_centernet_targets`)."""
        return encode_centernet_targets(boxes, classes, image_shape, self.num_classes, self.stride)

    def decode(self, prediction, **kwargs):
        """Boxes, scores and classes from one image's output (see `decode_centernet`)."""
        return decode_centernet(prediction, self.num_classes, self.stride, **kwargs)
