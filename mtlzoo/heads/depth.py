"""Dense depth regression head."""

import keras

from mtlzoo import losses, metrics
from mtlzoo.heads.base import OUTPUT_DTYPE, Head, dense_logits
from mtlzoo.layers import ScaledSigmoid
from mtlzoo.registry import HEADS
from mtlzoo.validation import as_int


@HEADS.register("depth")
class DepthHead(Head):
    """Metric depth per pixel at input resolution, in (0, max_depth).

    Reads the stride-4 neck feature; the output is `max_depth * sigmoid(z)`, a
    positive bounded value that quantises well. Labels: float [H, W, 1] in
    metres; values `<= 0` are invalid pixels (sky, no return, missing label).

    Args:
        max_depth: float. Largest representable depth in metres. Defaults to 100.0.
        channels: int. Width of the conv blocks. Defaults to 64.
        depth: int. Number of 3×3 conv blocks. Defaults to 1.

    Example:
    ```python
    head = mtlzoo.heads.get("depth", max_depth=80.0)
    ```

    Reference:
        Eigen et al., "Depth Map Prediction from a Single Image using a
        Multi-Scale Deep Network", NeurIPS 2014.
    """

    kind = "depth"

    def __init__(self, max_depth=100.0, channels=64, depth=1):
        if float(max_depth) <= 0:
            raise ValueError(f"depth: max_depth must be positive, got {max_depth}.")
        self.max_depth = float(max_depth)
        self.channels = as_int("depth head", "channels", channels)
        self.depth = as_int("depth head", "depth", depth)

    def __call__(self, features, name):
        x = dense_logits(features[0], name, self.channels, self.depth, 1)
        x = keras.layers.UpSampling2D(4, interpolation="bilinear", name=f"{name}__upsample")(x)
        return ScaledSigmoid(self.max_depth, name=name, dtype=OUTPUT_DTYPE)(x)

    def loss(self):
        return losses.DepthL1()

    def metrics(self):
        return [metrics.DepthError("abs_err"), metrics.DepthError("abs_rel"), metrics.DepthError("delta1")]

    def label_spec(self, input_shape):
        return tuple(input_shape[:2]) + (1,), "float"
