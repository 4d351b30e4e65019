"""An MLP trunk for vector (tabular) inputs."""

import keras

from mtlzoo.backbones.base import check_weights
from mtlzoo.registry import BACKBONES


@BACKBONES.register("mlp")
def mlp(input_shape, prefix="backbone_", weights=None, units=(64, 64), dropout=0.0):
    """Dense layers with ReLU for vector inputs; one stage.

    Args:
        input_shape: tuple. (D,).
        prefix: str. Prefix of the stage model name.
        weights: None (accepted for a uniform interface).
        units: tuple of int. Widths of the hidden layers. Defaults to (64, 64).
        dropout: float. Dropout after each hidden layer. Defaults to 0.0.

    Returns:
        A one-element list with the trunk model.

    Example:
    ```python
    stages = mtlzoo.backbones.get("mlp")((16,), units=(32,))
    ```
    """
    if len(input_shape) != 1:
        raise ValueError(f"Backbone 'mlp' takes vectors (D,); got input_shape={tuple(input_shape)}.")
    check_weights(weights, "mlp")
    inp = keras.Input(input_shape, name=f"{prefix}features")
    x = inp
    for i, u in enumerate(units):
        x = keras.layers.Dense(int(u), activation="relu", name=f"dense{i}")(x)
        if dropout:
            x = keras.layers.Dropout(float(dropout), name=f"dropout{i}")(x)
    return [keras.Model(inp, x, name=f"{prefix}stage0")]
