"""GradVac: gradient vaccine, aligning task gradients to EMA cosine targets."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators.base import (
    Aggregator,
    check_range,
    check_seed,
    new_generator,
    random_permutations,
    reset_generator,
    safe_divide,
)
from mtlzoo.registry import AGGREGATORS


def gradvac_step(gram, perm, targets, beta):
    """One GradVac pass on the Gram matrix.

    Returns (C, new_targets): the adjusted gradients are g_i' = sum_k C_ik g_k,
    and new_targets [T, T] the EMA-updated cosine targets. `perm[i, :T-1]` is
    the order of the other tasks j != i for task i.
    """
    t = gram.shape[0]
    norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
    rows = tf.range(t)
    c = tf.eye(t)
    new_targets = targets
    for k in range(t - 1):
        j = perm[:, k]
        cg = tf.matmul(c, gram)
        dots = tf.gather(cg, j, axis=1, batch_dims=1)
        norm_i = tf.sqrt(tf.maximum(tf.reduce_sum(cg * c, axis=1), 0.0))
        norm_j = tf.gather(norms, j)
        phi = tf.clip_by_value(safe_divide(dots, norm_i * norm_j), -1.0, 1.0)
        idx = tf.stack([rows, j], axis=1)
        target = tf.gather_nd(targets, idx)
        sin_t = tf.sqrt(tf.maximum(1.0 - target**2, 0.0))
        sin_phi = tf.sqrt(tf.maximum(1.0 - phi**2, 0.0))
        coef = safe_divide(norm_i * (target * sin_phi - phi * sin_t), norm_j * sin_t)
        coef = tf.where(phi < target, coef, tf.zeros_like(coef))
        c = c + coef[:, None] * tf.one_hot(j, t)
        new_targets = tf.tensor_scatter_nd_update(new_targets, idx, (1.0 - beta) * target + beta * phi)
    return c, new_targets


@AGGREGATORS.register("gradvac")
class GradVac(Aggregator):
    """Gradient Vaccine: raise pairwise gradient cosines to adaptive EMA targets.

    For each task i and, in a random order, each other task j: with
    phi = cos(g_i', g_j) and the target phi_hat_ij, if phi < phi_hat_ij then
    g_i' += g_j * ||g_i'|| (phi_hat sqrt(1 - phi^2) - phi sqrt(1 - phi_hat^2))
    / (||g_j|| sqrt(1 - phi_hat^2)), which makes cos(g_i', g_j) = phi_hat_ij.
    Then phi_hat_ij <- (1 - beta) phi_hat_ij + beta phi (every pair, every
    call; targets start at 0). Pairs that are already aligned (phi >= target)
    are left unchanged.

    Convention: like the authors' method and LibMTL, the adjusted gradients are
    SUMMED (identical task gradients g give `T * g`, `identical_scale` T), and
    a single target per task pair is used for the whole flattened gradient
    (LibMTL's "whole model" granularity; the paper also has per-layer targets).
    The targets live in a [T, T] `tf.Variable` and the random orders in a
    `tf.random.Generator`; `reset_state()` zeroes the targets and re-seeds.
    Non-finite inputs leave the targets untouched. Unlike the reference, no
    1e-8 is added to the norms in the cosine and in the update (the method is
    then exactly invariant to the gradient scale); a zero gradient has cosine
    0, and a target of exactly +-1 triggers no update.

    Args:
        beta: float. EMA rate of the cosine targets, in [0, 1]. Defaults to 0.01.
        seed: int or None. Seed of the random task orders; None draws a
            non-deterministic seed. Defaults to None.

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("gradvac", beta=0.01, seed=0)
    agg.build(num_tasks=2)
    d = agg([[1.0, 0.0], [-0.5, 1.0]])
    ```

    Reference:
        Wang et al., "Gradient Vaccine: Investigating and Improving Multi-task
        Optimization in Massively Multilingual Models", ICLR 2021.
        https://arxiv.org/abs/2010.05874
    """

    name = "gradvac"
    stateful = True

    def __init__(self, beta: float = 0.01, seed: int | None = None):
        super().__init__()
        self.beta = check_range("GradVac", "beta", beta, low=0.0, high=1.0)
        self.seed = check_seed("GradVac", seed)

    def identical_scale(self, num_tasks):
        return float(num_tasks)

    def _build_state(self, num_tasks, num_params):
        self.targets = tf.Variable(tf.zeros([num_tasks, num_tasks]), trainable=False, name="gradvac_targets")
        self._generator = new_generator(self.seed)

    def _reset_state(self):
        self.targets.assign(tf.zeros_like(self.targets))
        reset_generator(self._generator, self.seed)

    def _aggregate(self, grads, losses, finite):
        t = grads.shape[0]
        perm = random_permutations(self._generator, t, exclude_self=True)
        old = self.targets.read_value()
        c, new_targets = gradvac_step(tf.matmul(grads, grads, transpose_b=True), perm, old, self.beta)
        ok = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(new_targets)))
        self.targets.assign(tf.where(ok, new_targets, old))
        return tf.linalg.matvec(grads, tf.reduce_sum(c, axis=0), transpose_a=True)
