"""Static loss weights: equal weighting (EW) and user-given constant weights."""

from __future__ import annotations

import math
import numbers

from mtlzoo.registry import WEIGHTINGS
from mtlzoo.weighting.base import LossWeighting, check_task_names


@WEIGHTINGS.register("equal", aliases=("ew",))
class Equal(LossWeighting):
    """Equal weighting (EW): every task loss weighted 1 for the whole training.

    The baseline of the loss-weighting literature: the total is `Σ_t L_t`.
    The weights are assigned at the start of `fit` (replacing the recipe's
    loss weights) and logged as `{task}_weight`.

    Example:
    ```python
    import mtlzoo.weighting
    model.fit(x, y, epochs=3, callbacks=[mtlzoo.weighting.get("equal")])
    ```
    """

    name = "equal"

    def __init__(self):
        super().__init__()

    def begin(self, model):
        self.assign_weights({t: 1.0 for t in model.task_names})


@WEIGHTINGS.register("static")
class Fixed(LossWeighting):
    """Static (constant) loss weights given by the user.

    Unlike the recipe value `weighting: fixed` (no callback; the recipe's
    `loss_weight`s stay in the model), `static` assigns its own weights at the
    start of `fit` and logs them as `{task}_weight`.

    Args:
        weights: dict task -> float >= 0, or a list of floats in the model's
            task order. Tasks missing from a dict keep their current weight.
            Defaults to None (keep every current weight; only log them).

    Example:
    ```python
    import mtlzoo.weighting
    cb = mtlzoo.weighting.get("static", weights={"segmentation": 1.0, "depth": 0.1})
    ```
    """

    name = "static"
    positive_weights = False

    def __init__(self, weights=None):
        super().__init__()
        if weights is None:
            self.weights = None
        elif isinstance(weights, dict):
            self.weights = {str(t): _check_weight(f"weights[{t!r}]", w) for t, w in weights.items()}
        elif isinstance(weights, (list, tuple)):
            self.weights = [_check_weight(f"weights[{i}]", w) for i, w in enumerate(weights)]
        else:
            raise ValueError(f"Fixed: weights must be a dict task -> float >= 0 or a list of floats, got {weights!r}.")

    def build(self, model):
        w = self.weights
        if isinstance(w, dict):
            check_task_names("Fixed", w, model)
        elif isinstance(w, list) and len(w) != len(model.task_names):
            raise ValueError(f"Fixed: got {len(w)} weights for {len(model.task_names)} tasks {model.task_names}.")

    def begin(self, model):
        w = self.weights
        if isinstance(w, list):
            w = dict(zip(model.task_names, w))
        if w:
            self.assign_weights(w)


def _check_weight(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) or value < 0:
        raise ValueError(f"Fixed: {name} must be a finite number in [0, inf), got {value!r}.")
    return float(value)
