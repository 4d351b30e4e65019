"""GLS: the geometric mean of the task losses as the training objective."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mtlzoo.registry import WEIGHTINGS
from mtlzoo.weighting.base import LossWeighting, stack_losses


def geometric_mean_loss(losses):
    """`(Π_t L_t)^{1/n}` over the n tasks with a positive loss (0 when there are none).

    Args:
        losses: tf tensor [K] of task losses.

    Returns:
        A scalar tf tensor, differentiable in the losses.
    """
    losses = tf.cast(losses, tf.float32)
    present = losses > 0
    logs = tf.where(present, tf.math.log(tf.where(present, losses, 1.0)), 0.0)
    count = tf.reduce_sum(tf.cast(present, tf.float32))
    mean_log = tf.reduce_sum(logs) / tf.maximum(count, 1.0)
    return tf.where(count > 0, tf.exp(mean_log), 0.0)


@WEIGHTINGS.register("gls")
class GLS(LossWeighting):
    """GLS: minimise the geometric mean of the task losses.

    The total loss is `G = (Π_t L_t)^{1/K}` (through the model's `combine`
    hook), which is invariant to the scale of each loss: its gradient is
    `Σ_t G/(K·L_t)·∇L_t`, so each task is weighted by the inverse of its own
    loss. Tasks with no label in a batch (loss 0) are left out of that
    batch's mean. The logged `{task}_weight` (also assigned to
    `model.loss_weights`) is that effective weight `G/(K·L_t)` evaluated at the
    epoch-mean losses. No hyperparameters.

    Example:
    ```python
    import mtlzoo.weighting
    cb = mtlzoo.weighting.get("gls")
    model.fit(x, y, epochs=10, callbacks=[cb])
    ```

    Reference:
        Chennupati, Sistu, Yogamani, Rawashdeh, "MultiNet++: Multi-Stream
        Feature Aggregation and Geometric Loss Strategy for Multi-Task
        Learning", CVPR Workshops 2019 (the geometric loss strategy, GLS).
    """

    name = "gls"
    uses_combine = True

    def __init__(self):
        super().__init__()

    def step_combine(self, model, task_losses):
        return geometric_mean_loss(stack_losses(model, task_losses))

    def epoch_update(self, epoch, logs):
        losses = self._read_losses(logs)
        if losses is None:
            return None
        g = float(np.exp(np.mean(np.log(losses))))
        weights = g / (len(losses) * losses)
        self.assign_weights(weights.astype(np.float32))
        return dict(zip(self.tasks, weights.tolist()))
