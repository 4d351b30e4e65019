"""Multi-label classification head (e.g. scene tags)."""

from mtlzoo import losses, metrics
from mtlzoo.heads.base import Head, dense_output
from mtlzoo.registry import HEADS
from mtlzoo.validation import as_int


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
        if as_int("multilabel head", "num_classes", num_classes) < 1:
            raise ValueError(f"multilabel: num_classes must be >= 1, got {num_classes}.")
        self.num_classes = as_int("multilabel head", "num_classes", num_classes)
        self.hidden = as_int("multilabel head", "hidden", hidden)
        self.dropout = float(dropout)

    def __call__(self, features, name):
        return dense_output(features, name, self.num_classes, self.hidden, self.dropout)

    def loss(self):
        return losses.MaskedBinaryCrossentropy()

    def metrics(self):
        return [metrics.MultiLabelF1()]

    def label_spec(self, input_shape):
        return (self.num_classes,), "float"
