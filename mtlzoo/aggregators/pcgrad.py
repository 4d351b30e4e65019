"""PCGrad: project each task gradient off the gradients it conflicts with."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators.base import (
    Aggregator,
    check_seed,
    new_generator,
    random_permutations,
    reset_generator,
    safe_divide,
)
from mtlzoo.registry import AGGREGATORS


def pcgrad_coefficients(gram, perm):
    """Coefficients C [T, T] with projected gradient g_i' = sum_k C_ik g_k.

    For each task i (all rows at once) and j in the order perm[i], if
    g_i'.g_j < 0: g_i' <- g_i' - (g_i'.g_j / ||g_j||^2) g_j. Works on the Gram
    matrix only: g_i'.g_j = (C gram)_ij. `perm` rows may include i itself
    (a no-op unless g_i' has turned against g_i), as in the reference code.
    """
    t = gram.shape[0]
    diag = tf.linalg.diag_part(gram)
    c = tf.eye(t)
    for k in range(perm.shape[1]):
        j = perm[:, k]
        dots = tf.gather(tf.matmul(c, gram), j, axis=1, batch_dims=1)
        coef = safe_divide(tf.minimum(dots, 0.0), tf.gather(diag, j))
        c = c - coef[:, None] * tf.one_hot(j, t)
    return c


@AGGREGATORS.register("pcgrad")
class PCGrad(Aggregator):
    """PCGrad ("gradient surgery"): projects away pairwise conflicting components.

    Each task gradient g_i is, in a random order of the tasks (a fresh order per
    task and per call), projected onto the normal plane of every g_j it
    conflicts with (g_i'.g_j < 0). The order includes the task itself, as in
    the reference implementations, where it has no effect in practice.

    Convention: returns the SUM of the projected gradients, like the authors'
    code and LibMTL, so identical task gradients g give `T * g`
    (`identical_scale` T). Divide by T (or lower the learning rate) for the
    scale of the mean. Computed from the [T, T] Gram matrix: O(T^2 P + T^3).
    The random orders come from a `tf.random.Generator` (state in a
    `tf.Variable`, works inside `tf.function`); `reset_state()` re-seeds it.

    Args:
        seed: int or None. Seed of the random task orders; None draws a
            non-deterministic seed. Defaults to None.

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("pcgrad", seed=0)
    d = agg([[1.0, 0.0], [-1.0, 1.0]])     # [0.5, 1.5]
    ```

    Reference:
        Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020.
        https://arxiv.org/abs/2001.06782
    """

    name = "pcgrad"
    stateful = True

    def __init__(self, seed: int | None = None):
        super().__init__()
        self.seed = check_seed("PCGrad", seed)

    def identical_scale(self, num_tasks):
        return float(num_tasks)

    def _build_state(self, num_tasks, num_params):
        self._generator = new_generator(self.seed)

    def _reset_state(self):
        reset_generator(self._generator, self.seed)

    def _aggregate(self, grads, losses, finite):
        t = grads.shape[0]
        perm = random_permutations(self._generator, t)
        c = pcgrad_coefficients(tf.matmul(grads, grads, transpose_b=True), perm)
        return tf.linalg.matvec(grads, tf.reduce_sum(c, axis=0), transpose_a=True)
