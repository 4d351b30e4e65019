"""Equal weighting baselines: the mean (`mean`) and the sum (`sum`) of the task gradients."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators.base import Aggregator
from mtlzoo.registry import AGGREGATORS


@AGGREGATORS.register("mean")
class Mean(Aggregator):
    """Equal weighting: the mean of the task gradients (the baseline).

    The direction is `mean_t g_t`, i.e. task weights `1/T`. Identical task
    gradients are returned unchanged (`identical_scale` 1).

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("mean")
    d = agg([[1.0, 0.0], [0.0, 1.0]])    # [0.5, 0.5]
    ```

    Reference:
        The usual "equal weighting" (EW) baseline of the multi-task optimisation
        literature, e.g. Lin et al., "Reasonable Effectiveness of Random
        Weighting", TMLR 2022.
    """

    name = "mean"
    weight_based = True

    def __init__(self):
        super().__init__()

    def _weights(self, grads, gram, losses, finite):
        t = grads.shape[0]
        return tf.fill([t], 1.0 / t)


@AGGREGATORS.register("sum")
class Sum(Aggregator):
    """Unweighted sum of the task gradients (the gradient of the summed losses).

    The direction is `sum_t g_t`, i.e. task weights 1. Identical task
    gradients g give `T * g` (`identical_scale` T).

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("sum")
    d = agg([[1.0, 0.0], [0.0, 1.0]])    # [1.0, 1.0]
    ```

    Reference:
        The plain sum of the task losses, the default objective of joint
        multi-task training (e.g. Caruana, "Multitask Learning", 1997).
    """

    name = "sum"
    weight_based = True

    def __init__(self):
        super().__init__()

    def identical_scale(self, num_tasks):
        return float(num_tasks)

    def _weights(self, grads, gram, losses, finite):
        return tf.ones([grads.shape[0]])
