"""Vector regression head."""

from mtlzoo import losses, metrics
from mtlzoo.heads.base import Head, dense_output
from mtlzoo.registry import HEADS
from mtlzoo.validation import as_int


@HEADS.register("regression")
class RegressionHead(Head):
    """`units` real outputs per example, from a vector or a pooled map.

    Labels: float [units]; entries equal to `ignore_value` are missing (None:
    use a zero `sample_weight` to drop an example).

    Args:
        units: int. Number of outputs. Defaults to 1.
        hidden: int. Width of the hidden layer (0 for none). Defaults to 0.
        ignore_value: float or None. Missing-label value. Defaults to None.

    Example:
    ```python
    head = mtlzoo.heads.get("regression", units=2)
    ```
    """

    kind = "regression"

    def __init__(self, units=1, hidden=0, ignore_value=None):
        if as_int("regression head", "units", units) < 1:
            raise ValueError(f"regression: units must be >= 1, got {units}.")
        self.units = as_int("regression head", "units", units)
        self.hidden = as_int("regression head", "hidden", hidden)
        self.ignore_value = None if ignore_value is None else float(ignore_value)

    def __call__(self, features, name):
        return dense_output(features, name, self.units, self.hidden)

    def loss(self):
        return losses.MaskedMeanSquaredError(ignore_value=self.ignore_value)

    def metrics(self):
        return [metrics.MaskedMeanAbsoluteError(ignore_value=self.ignore_value)]

    def label_spec(self, input_shape):
        return (self.units,), "float"
