"""Unit-length vectors along the last axis."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mtlzoo")
class UnitNormalization(keras.layers.Layer):
    """Divides each vector along the last axis by its L2 norm (surface normals).

    Uses `x · rsqrt(max(Σx², ε))`, builtin TFLite ops only.

    Args:
        epsilon: float. Lower bound of the squared norm. Defaults to 1e-12.

    Example:
    ```python
    normal = mtlzoo.layers.UnitNormalization(name="normal")(logits)   # [B, H, W, 3], unit length
    ```
    """

    def __init__(self, epsilon=1e-12, **kwargs):
        super().__init__(**kwargs)
        if float(epsilon) <= 0:
            raise ValueError(f"UnitNormalization epsilon must be positive, got {epsilon}.")
        self.epsilon = float(epsilon)

    def call(self, inputs):
        squared = ops.sum(ops.square(inputs), axis=-1, keepdims=True)
        return inputs * ops.rsqrt(ops.maximum(squared, self.epsilon))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config
