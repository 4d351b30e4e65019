"""Random Loss Weighting (RLW)."""

from __future__ import annotations

import keras
import tensorflow as tf

from mtlzoo.registry import WEIGHTINGS
from mtlzoo.weighting.base import LossWeighting, check_choice, check_int, run_once

_DISTRIBUTIONS = ("normal", "uniform")


@WEIGHTINGS.register("rlw")
class RLW(LossWeighting):
    """Random Loss Weighting: fresh random task weights at every training step.

    The weights are `λ = K · softmax(z)` with `z ~ N(0, I)` ("normal", the
    paper's main choice) or `z ~ U(0, 1)^K` ("uniform"), so they are positive
    and sum to K. A new draw is made after every training step for the next
    one (the first step uses a draw made at the start of `fit`), inside the
    compiled step: no extra forward or backward pass. The logged
    `{task}_weight` is the draw used by the epoch's last step;
    `model.get_loss_weights()` holds the draw for the next step.

    Args:
        distribution: str. "normal" or "uniform". Defaults to "normal".
        seed: int >= 0 or None. Seed of the draws. Defaults to None.

    Example:
    ```python
    import mtlzoo.weighting
    cb = mtlzoo.weighting.get("rlw", distribution="normal", seed=0)
    ```

    Reference:
        Lin, Ye, Zhang, Tsang, "Reasonable Effectiveness of Random Weighting:
        A Litmus Test for Multi-Task Learning", TMLR 2022.
    """

    name = "rlw"
    uses_gradients = True

    def __init__(self, distribution="normal", seed=None):
        super().__init__()
        self.distribution = check_choice("RLW", "distribution", distribution, _DISTRIBUTIONS)
        self.seed = check_int("RLW", "seed", seed, low=0, allow_none=True)
        self._generator = None

    def build(self, model):
        self._generator = keras.random.SeedGenerator(self.seed)
        self.track_used_weights(model)

    def sample(self):
        """One draw of the K weights (a tf tensor)."""
        k = len(self.tasks)
        if self.distribution == "normal":
            z = keras.random.normal((k,), seed=self._generator)
        else:
            z = keras.random.uniform((k,), seed=self._generator)
        return k * tf.nn.softmax(tf.cast(z, tf.float32))

    def begin(self, model):
        self.assign_weights(self.sample())

    def step_gradients(self, model, tape, task_losses, total, extra, base):
        grads = base()

        def update():
            # Once per step (cross-replica under a strategy): one draw for all replicas.
            self.remember_used_weights(model)
            self.assign_weights(self.sample())

        run_once(update)
        return grads
