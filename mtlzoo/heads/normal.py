"""Dense surface-normal head."""

import keras

from mtlzoo import losses, metrics
from mtlzoo.heads.base import OUTPUT_DTYPE, Head, dense_logits
from mtlzoo.layers import UnitNormalization
from mtlzoo.registry import HEADS
from mtlzoo.validation import as_int


@HEADS.register("normal")
class NormalHead(Head):
    """Unit surface normals per pixel at input resolution.

    Reads the stride-4 neck feature; three output channels normalised to unit
    length. Labels: float [H, W, 3] normals (any length, normalised in the
    loss); an all-zero vector marks an invalid pixel, as in the NYUv2 files
    of the MTL benchmark. Loss `1 − cos` over valid pixels; metrics mean angle
    error and the share within 11.25°, 22.5° and 30° (`mtlzoo.evaluation`
    adds the median angle).

    Args:
        channels: int. Width of the conv blocks. Defaults to 64.
        depth: int. Number of 3×3 conv blocks. Defaults to 1.

    Example:
    ```python
    model = mtlzoo.build("nyuv2_seg_depth_normal")   # tasks segmentation, depth, normal
    head = mtlzoo.heads.get("normal", channels=32)
    ```

    Reference:
        Eigen & Fergus, "Predicting Depth, Surface Normals and Semantic Labels
        with a Common Multi-Scale Convolutional Architecture", ICCV 2015.
    """

    kind = "normal"

    def __init__(self, channels=64, depth=1):
        if as_int("normal head", "channels", channels) < 1 or as_int("normal head", "depth", depth) < 0:
            raise ValueError(f"normal: channels must be >= 1 and depth >= 0, got {channels} and {depth}.")
        self.channels = as_int("normal head", "channels", channels)
        self.depth = as_int("normal head", "depth", depth)

    def __call__(self, features, name):
        x = dense_logits(features[0], name, self.channels, self.depth, 3)
        x = keras.layers.UpSampling2D(4, interpolation="bilinear", name=f"{name}__upsample")(x)
        return UnitNormalization(name=name, dtype=OUTPUT_DTYPE)(x)

    def loss(self):
        return losses.NormalCosine()

    def metrics(self):
        return [metrics.NormalAngle("mean_angle"), metrics.NormalAngle("within_11_25")]

    def label_spec(self, input_shape):
        return tuple(input_shape[:2]) + (3,), "float"
