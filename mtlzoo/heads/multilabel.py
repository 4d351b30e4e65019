"""Multi-label classification head (e.g. scene tags)."""

import keras

from mtlzoo import losses, metrics
from mtlzoo.heads.base import Head, pooled
from mtlzoo.registry import HEADS


@HEADS.register("multilabel")
class MultiLabelHead(Head):
    """Independent presence logits for `num_classes` tags.

    Global-average-pools the coarsest feature, one hidden layer, one logit per
    tag (apply a sigmoid for probabilities). Labels: float multi-hot [C], `-1`
    entries are unknown (an all `-1` vector = missing label).

    Args:
        num_classes: int. Number of tags.
        hidden: int. Width of the hidden layer (0 for none). Defaults to 64.
        dropout: float. Dropout before the logits. Defaults to 0.0.

    Example:
    ```python
    head = mtlzoo.heads.get("multilabel", num_classes=5)
    ```
    """

    kind = "multilabel"

    def __init__(self, num_classes, hidden=64, dropout=0.0):
        if int(num_classes) < 1:
            raise ValueError(f"multilabel: num_classes must be >= 1, got {num_classes}.")
        self.num_classes = int(num_classes)
        self.hidden = int(hidden)
        self.dropout = float(dropout)

    def __call__(self, features, name):
        x = pooled(features, name)
        if self.hidden:
            x = keras.layers.Dense(self.hidden, activation="relu", name=f"{name}__hidden")(x)
        if self.dropout:
            x = keras.layers.Dropout(self.dropout, name=f"{name}__dropout")(x)
        return keras.layers.Dense(self.num_classes, name=name)(x)

    def loss(self):
        return losses.MaskedBinaryCrossentropy()

    def metrics(self):
        return [metrics.MultiLabelF1()]

    def label_spec(self, input_shape):
        return (self.num_classes,), "float"
