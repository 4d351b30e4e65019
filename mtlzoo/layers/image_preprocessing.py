"""Image normalisation at the model's input."""

import keras
from keras import ops

_MODES = {
    # mode: (reverse channels, mean, std) applied to [0, 255] RGB input.
    "unit": (False, (0.0, 0.0, 0.0), (255.0, 255.0, 255.0)),
    "symmetric": (False, (127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
    "caffe": (True, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0)),
    "torch": (False, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "none": (False, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


@keras.saving.register_keras_serializable(package="mtlzoo")
class ImagePreprocessing(keras.layers.Layer):
    """Maps [0, 255] RGB images to what a backbone expects.

    mtlzoo models take float RGB images in [0, 255]; each backbone normalises
    them inside the model so exported files need no separate preprocessing.

    Args:
        mode: str. `"unit"` (x / 255), `"symmetric"` (x / 127.5 - 1), `"caffe"`
            (RGB to BGR, ImageNet mean subtracted; ResNet), `"torch"` (ImageNet
            mean and std) or `"none"`. Defaults to `"unit"`.

    Example:
    ```python
    x = mtlzoo.layers.ImagePreprocessing("caffe")(images)
    ```
    """

    def __init__(self, mode="unit", **kwargs):
        super().__init__(**kwargs)
        if mode not in _MODES:
            raise ValueError(f"ImagePreprocessing mode must be one of {sorted(_MODES)}, got {mode!r}.")
        self.mode = mode

    def call(self, inputs):
        reverse, mean, std = _MODES[self.mode]
        x = ops.cast(inputs, self.compute_dtype)
        if reverse:
            x = ops.flip(x, axis=-1)
        if self.mode == "none":
            return x
        mean = ops.convert_to_tensor(mean, dtype=x.dtype)
        std = ops.convert_to_tensor(std, dtype=x.dtype)
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode})
        return config
