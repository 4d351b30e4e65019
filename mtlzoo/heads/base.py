"""The task-head interface."""

from __future__ import annotations

import inspect

import keras

from mtlzoo import losses as losses_lib
from mtlzoo import metrics as metrics_lib


#: The dtype of every task output (the layer named after the task). Under a mixed-precision recipe
#: (`precision: mixed_bfloat16`) the trunk and heads compute in bfloat16 and the output layer casts back, so
#: losses, metrics, exports and users always see float32 (Keras's mixed-precision rule for the last layer).
OUTPUT_DTYPE = "float32"


def conv_bn_relu(x, channels, name, kernel_size=3, strides=1):
    """Conv2D -> BatchNorm -> ReLU with layer names derived from `name`."""
    x = keras.layers.Conv2D(channels, kernel_size, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


class Head:
    """A task head: builds the task's layers and owns its loss, metrics and label format.

    Subclasses set `kind` and implement `__call__(features, name)`, `loss()`,
    `metrics()` and `label_spec(input_shape)`. Hyperparameters are constructor
    arguments; `get_config()` returns them. Every layer a head creates is named
    `f"{name}__..."` and its output layer is named exactly `name` (the task), so
    outputs, logs (`{task}_loss`) and task-specific variables line up.

    `features` is the list of neck outputs: for images [P2, P3, P4, P5] at
    strides 4, 8, 16 and 32; for vector inputs a one-element list.
    """

    kind: str = ""
    #: Where the head reads its input: "fine" (stride-4 map), "coarse" (last map).
    missing_label: str = ""

    def __call__(self, features, name: str):
        raise NotImplementedError

    def loss(self) -> keras.losses.Loss:
        raise NotImplementedError

    def metrics(self) -> list:
        return []

    def label_spec(self, input_shape) -> tuple[tuple, str]:
        """(label shape without batch, dtype kind: "int" or "float") for validation."""
        raise NotImplementedError

    def get_config(self) -> dict:
        params = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in params if k != "self" and k != "kwargs"}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def resolve_loss(spec):
    return losses_lib.get(spec)


def resolve_metric(spec):
    return metrics_lib.get(spec)


def pooled(features, name):
    """Global average pooling of the last feature map, or the vector itself."""
    x = features[-1]
    if len(x.shape) == 4:
        x = keras.layers.GlobalAveragePooling2D(name=f"{name}__pool")(x)
    elif len(x.shape) != 2:
        raise ValueError(f"Task {name!r}: cannot pool a feature of shape {x.shape}.")
    return x


def dense_logits(x, name, channels, depth, out_channels):
    """`depth` conv blocks of `channels`, then a 1×1 conv to `out_channels` named `{name}__logits` (dense heads)."""
    for i in range(depth):
        x = conv_bn_relu(x, channels, f"{name}__block{i}")
    return keras.layers.Conv2D(out_channels, 1, name=f"{name}__logits")(x)


def dense_output(features, name, units, hidden=0, dropout=0.0):
    """Pooled feature -> optional hidden ReLU layer -> optional dropout -> Dense(units) named `name`."""
    x = pooled(features, name)
    if hidden:
        x = keras.layers.Dense(hidden, activation="relu", name=f"{name}__hidden")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{name}__dropout")(x)
    return keras.layers.Dense(units, name=name, dtype=OUTPUT_DTYPE)(x)
