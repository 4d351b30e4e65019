"""GradDrop: gradient sign dropout."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators.base import Aggregator, check_range, check_seed, new_generator, reset_generator
from mtlzoo.registry import AGGREGATORS


@AGGREGATORS.register("graddrop")
class GradDrop(Aggregator):
    """GradDrop: keep, per coordinate, only the gradients of one randomly chosen sign.

    Per coordinate p, the sign purity P = (1 + sum_t g_tp / sum_t |g_tp|) / 2
    (0.5 where all gradients are 0) is compared with U ~ Uniform[0, 1): the
    positive gradients are kept where P > U, the negative ones where P < U.
    With leak l, task t contributes (l + (1 - l) * mask_t) * g_t.

    Convention: applied element-wise to the flattened gradients of the shared
    parameters (as LibMTL does; the paper applies it to the gradients at a
    shared activation layer, optionally multiplied by the sign of the input),
    and the masked gradients are SUMMED, so identical task gradients g give
    `T * g` (`identical_scale` T, exact since P is then 0 or 1). One leak for
    all tasks. Random numbers come from a seeded `tf.random.Generator`;
    `reset_state()` re-seeds it. Not a linear combination of the gradients.

    Args:
        leak: float. Fraction of every task gradient always kept, in [0, 1].
            Defaults to 0.0 (leak = 1 recovers the plain sum).
        seed: int or None. Seed of the random thresholds; None draws a
            non-deterministic seed. Defaults to None.

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("graddrop", leak=0.0, seed=0)
    d = agg([[1.0, -2.0], [1.0, 3.0]])   # first coordinate: 2.0
    ```

    Reference:
        Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with
        Gradient Sign Dropout", NeurIPS 2020. https://arxiv.org/abs/2010.06808
    """

    name = "graddrop"
    stateful = True

    def __init__(self, leak: float = 0.0, seed: int | None = None):
        super().__init__()
        self.leak = check_range("GradDrop", "leak", leak, low=0.0, high=1.0)
        self.seed = check_seed("GradDrop", seed)

    def identical_scale(self, num_tasks):
        return float(num_tasks)

    def _build_state(self, num_tasks, num_params):
        self._generator = new_generator(self.seed)

    def _reset_state(self):
        reset_generator(self._generator, self.seed)

    def _aggregate(self, grads, losses, finite):
        total = tf.reduce_sum(grads, axis=0)
        total_abs = tf.reduce_sum(tf.abs(grads), axis=0)
        ok = total_abs > 0.0
        purity = 0.5 * (1.0 + tf.where(ok, total / tf.where(ok, total_abs, tf.ones_like(total_abs)), 0.0))
        u = self._generator.uniform(tf.shape(purity))
        mask = tf.logical_or(
            tf.logical_and((purity > u)[None, :], grads > 0.0),
            tf.logical_and((purity < u)[None, :], grads < 0.0),
        )
        keep = self.leak + (1.0 - self.leak) * tf.cast(mask, grads.dtype)
        return tf.reduce_sum(keep * grads, axis=0)
