"""A tiny CNN backbone for tests and quick experiments."""

import keras

from mtlzoo.backbones.base import check_image_shape, check_weights
from mtlzoo.layers import ImagePreprocessing
from mtlzoo.registry import BACKBONES


@BACKBONES.register("tiny")
def tiny(input_shape, prefix="backbone_", weights=None, width=8):
    """Four conv stages at strides 4, 8, 16, 32 with widths (1, 2, 4, 8) × `width`.

    Args:
        input_shape: tuple. (H, W, 3), H and W divisible by 32.
        prefix: str. Prefix of the stage model names.
        weights: str or None. Local weights file for the stages (loaded by the
            caller through the whole model); None for random init.
        width: int. Channels of the first stage. Defaults to 8.

    Returns:
        A list of four `keras.Model` stages.

    Example:
    ```python
    stages = mtlzoo.backbones.get("tiny")((64, 64, 3))
    ```
    """
    check_image_shape(input_shape, "tiny")
    check_weights(weights, "tiny")
    stages = []
    channels = [width, 2 * width, 4 * width, 8 * width]
    inp = keras.Input(input_shape, name=f"{prefix}image")
    x = ImagePreprocessing("unit", name=f"{prefix}preprocess")(inp)
    for i, ch in enumerate(channels):
        start = x if i == 0 else keras.Input(x.shape[1:], name=f"{prefix}stage{i}_input")
        y = start
        for j, stride in enumerate([2, 2] if i == 0 else [2]):
            y = keras.layers.Conv2D(ch, 3, strides=stride, padding="same", use_bias=False, name=f"s{i}_conv{j}")(y)
            y = keras.layers.BatchNormalization(name=f"s{i}_bn{j}")(y)
            y = keras.layers.ReLU(name=f"s{i}_relu{j}")(y)
        y = keras.layers.Conv2D(ch, 3, padding="same", use_bias=False, name=f"s{i}_conv_out")(y)
        y = keras.layers.BatchNormalization(name=f"s{i}_bn_out")(y)
        y = keras.layers.ReLU(name=f"s{i}_relu_out")(y)
        stages.append(keras.Model(inp if i == 0 else start, y, name=f"{prefix}stage{i}"))
        x = y
    return stages
