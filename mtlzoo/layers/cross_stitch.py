"""The cross-stitch unit."""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="mtlzoo")
class CrossStitch(keras.layers.Layer):
    """Mixes T same-shaped task feature maps with a learnable T×T matrix.

    Output `i` is `sum_j alpha[i, j] * x_j`. With `mode="per_channel"` every
    channel has its own T×T matrix (alpha has shape [T, T, C]); with
    `mode="per_layer"` one T×T matrix is shared by all channels. The matrix
    starts near the identity: `alpha_self` on the diagonal and
    `(1 - alpha_self) / (T - 1)` off it, so each task starts mostly on its own
    column (rows sum to one). `alpha_self=1.0` makes the columns independent.

    Args:
        mode: str. `"per_channel"` or `"per_layer"`. Defaults to `"per_channel"`.
        alpha_self: float. Initial diagonal value in [0, 1]. Defaults to 0.9.
        lr_multiplier: float > 0. Makes the unit learn `lr_multiplier` times faster than the layers around it under
            Adam-type optimizers (whose step size does not depend on the gradient's scale): the layer stores
            `alpha / lr_multiplier` and multiplies it back. Under plain SGD the effective multiplier is its
            square. Defaults to 1.0 (alpha stored as is).

    Example:
    ```python
    unit = mtlzoo.layers.CrossStitch(mode="per_layer")
    seg_x, depth_x = unit([seg_features, depth_features])
    ```

    Reference:
        Misra et al., "Cross-stitch Networks for Multi-task Learning", CVPR 2016.
    """

    def __init__(self, mode="per_channel", alpha_self=0.9, lr_multiplier=1.0, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("per_channel", "per_layer"):
            raise ValueError(f"CrossStitch mode must be 'per_channel' or 'per_layer', got {mode!r}.")
        if not 0.0 <= float(alpha_self) <= 1.0:
            raise ValueError(f"CrossStitch alpha_self must be in [0, 1], got {alpha_self}.")
        if not float(lr_multiplier) > 0.0:
            raise ValueError(f"CrossStitch lr_multiplier must be > 0, got {lr_multiplier}.")
        self.mode = mode
        self.alpha_self = float(alpha_self)
        self.lr_multiplier = float(lr_multiplier)

    def build(self, input_shape):
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) < 2:
            raise ValueError("CrossStitch takes a list of at least two feature maps (one per task).")
        shapes = [tuple(s) for s in input_shape]
        if any(s[1:] != shapes[0][1:] for s in shapes):
            raise ValueError(f"CrossStitch needs feature maps of one shape, got {shapes}.")
        t = len(shapes)
        off = (1.0 - self.alpha_self) / (t - 1)
        eye = [[self.alpha_self if i == j else off for j in range(t)] for i in range(t)]
        if self.mode == "per_channel":
            channels = shapes[0][-1]
            init = [[[v] * channels for v in row] for row in eye]
            shape = (t, t, channels)
        else:
            init, shape = eye, (t, t)
        if self.lr_multiplier != 1.0:
            init = (np.asarray(init, "float32") / self.lr_multiplier).tolist()
        self.alpha = self.add_weight(
            name="alpha", shape=shape, initializer=keras.initializers.Constant(init), trainable=True
        )

    def mixing_matrix(self):
        """The T×T (per layer) or T×T×C (per channel) mixing weights alpha, as a tensor."""
        return self.alpha if self.lr_multiplier == 1.0 else self.alpha * self.lr_multiplier

    def call(self, inputs):
        stacked = ops.stack(inputs, axis=0)  # [T, B, ..., C]
        rank = len(inputs[0].shape)
        mixing = self.mixing_matrix()
        if self.mode == "per_channel":
            alpha = ops.reshape(mixing, self.alpha.shape[:2] + (1,) * (rank - 1) + self.alpha.shape[2:])
        else:
            alpha = ops.reshape(mixing, self.alpha.shape + (1,) * rank)
        outputs = []
        for i in range(len(inputs)):
            outputs.append(ops.sum(alpha[i] * stacked, axis=0))
        return outputs

    def compute_output_shape(self, input_shape):
        return [tuple(s) for s in input_shape]

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "alpha_self": self.alpha_self, "lr_multiplier": self.lr_multiplier})
        return config
