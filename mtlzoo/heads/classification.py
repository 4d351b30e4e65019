"""Single-label classification head."""

from mtlzoo import losses, metrics
from mtlzoo.heads.base import Head, dense_output
from mtlzoo.registry import HEADS
from mtlzoo.validation import as_int


@HEADS.register("classification")
class ClassificationHead(Head):
    """Class logits for one label per example, from a vector or a pooled map.

    Labels: int class id (shape [] per example), `-1` = missing.

    Args:
        num_classes: int. Number of classes.
        hidden: int. Width of the hidden layer (0 for none). Defaults to 0.
        dropout: float. Dropout before the logits. Defaults to 0.0.

    Example:
    ```python
    head = mtlzoo.heads.get("classification", num_classes=3)
    ```
    """

    kind = "classification"

    def __init__(self, num_classes, hidden=0, dropout=0.0):
        if as_int("classification head", "num_classes", num_classes) < 2:
            raise ValueError(f"classification: num_classes must be >= 2, got {num_classes}.")
        self.num_classes = as_int("classification head", "num_classes", num_classes)
        self.hidden = as_int("classification head", "hidden", hidden)
        self.dropout = float(dropout)

    def __call__(self, features, name):
        return dense_output(features, name, self.num_classes, self.hidden, self.dropout)

    def loss(self):
        return losses.MaskedSparseCategoricalCrossentropy()

    def metrics(self):
        return [metrics.MaskedAccuracy()]

    def label_spec(self, input_shape):
        return (), "int"
