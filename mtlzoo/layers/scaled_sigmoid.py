"""A bounded positive output activation."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mtlzoo")
class ScaledSigmoid(keras.layers.Layer):
    """`scale * sigmoid(x)`: a positive output bounded by `scale`.

    Used by the depth head (metric depth in (0, max_depth)); sigmoid is a
    builtin TFLite op and quantises well, unlike softplus.

    Args:
        scale: float. Upper bound of the output. Defaults to 100.0.

    Example:
    ```python
    depth = mtlzoo.layers.ScaledSigmoid(80.0, name="depth")(logits)
    ```
    """

    def __init__(self, scale=100.0, **kwargs):
        super().__init__(**kwargs)
        if float(scale) <= 0:
            raise ValueError(f"ScaledSigmoid scale must be positive, got {scale}.")
        self.scale = float(scale)

    def call(self, inputs):
        return self.scale * ops.sigmoid(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale})
        return config
