"""GradDrop: gradient sign dropout."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators.base import (
    Aggregator, check_choice, check_range, check_seed, new_generator, reset_generator,
)
from mtlzoo.registry import AGGREGATORS


LEVELS = ("representation", "parameters")


@AGGREGATORS.register("graddrop")
class GradDrop(Aggregator):
    """GradDrop: keep, per coordinate, only the gradients of one randomly chosen sign.

    Per coordinate p, the sign purity P = (1 + sum_t g_tp / sum_t |g_tp|) / 2
    (0.5 where all gradients are 0) is compared with U ~ Uniform[0, 1): the
    positive gradients are kept where P > U, the negative ones where P < U.
    With leak l, task t contributes (l + (1 - l) * mask_t) * g_t.

    Level: as the paper defines it, the rule acts on the gradients of the
    task losses w.r.t. the shared activations (`level="representation"`, the
    default): in the train step the per-task gradients of the shared feature
    maps (where the heads read them, `MultiTaskModel.shared_representation_model`)
    are the rows, the rule is applied per activation element (batch element,
    position and channel), and the combined activation gradient is
    backpropagated once through the trunk; each head gets its own task's
    gradient unchanged. Cost: one backward pass through the trunk plus one
    per head, like an ordinary step. `level="parameters"` applies the same
    rule to the flattened gradients of the shared parameters instead (this
    library's earlier form; T backward passes through the trunk). The
    level only tells the train step which gradients to pass; called directly,
    `agg(grads)` applies the rule to whatever [T, N] matrix it is given. On
    models whose shared layers also sit after task layers (e.g. cross-stitch
    units), the train step uses the parameter level. The paper's
    sign(input) correction for batch-separated inputs is not applied: all
    tasks here see the same batch.

    Convention: the masked gradients are SUMMED, so identical task gradients
    g give `T * g` (`identical_scale` T, exact since P is then 0 or 1). One
    leak for all tasks. Random numbers come from a seeded
    `tf.random.Generator`; `reset_state()` re-seeds it (under
    `tf.distribute`, the representation level draws on each replica for its
    own batch elements). Not a linear combination of the gradients.

    Args:
        leak: float. Fraction of every task gradient always kept, in [0, 1].
            Defaults to 0.0 (leak = 1 recovers the plain sum).
        seed: int or None. Seed of the random thresholds; None draws a
            non-deterministic seed. Defaults to None.
        level: str. "representation" (the shared activations' gradients, as
            in the paper) or "parameters" (the shared parameters'
            gradients). Defaults to "representation".

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("graddrop", leak=0.0, seed=0)
    d = agg([[1.0, -2.0], [1.0, 3.0]])   # first coordinate: 2.0
    model = mtlzoo.build("driving_perception_lite", aggregator="graddrop")   # representation level
    ```

    Reference:
        Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with
        Gradient Sign Dropout", NeurIPS 2020. https://arxiv.org/abs/2010.06808
    """

    name = "graddrop"
    stateful = True

    def __init__(self, leak: float = 0.0, seed: int | None = None, level: str = "representation"):
        super().__init__()
        self.leak = check_range("GradDrop", "leak", leak, low=0.0, high=1.0)
        self.seed = check_seed("GradDrop", seed)
        self.level = check_choice("GradDrop", "level", level, LEVELS)

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
