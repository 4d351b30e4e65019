"""UPGrad: unconflicting projection of gradients (Jacobian descent)."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators import qp
from mtlzoo.aggregators.base import Aggregator, check_int, check_range, safe_divide
from mtlzoo.registry import AGGREGATORS


@tf.function(autograph=False)
def dual_cone_weights(gram, max_iter, ridge=0.0):
    """Weights V [T, T] float64 (row i solves min_{v >= e_i} v^T gram v) and a converged flag [T].

    J^T v_i is the projection of the row g_i of J onto the dual cone
    {x : J x >= 0} of the rows (Quinton & Rey, Prop. 1). With v = e_i + u the
    T problems are the non-negative QPs min_{u >= 0} 1/2 u^T G u + (G e_i)^T u,
    solved together and exactly by `qp.nonneg_qp` (primal active set in
    float64 on the Jacobi-scaled Gram matrix, at most `max_iter` active-set
    changes each). The Gram matrix is first divided by its mean diagonal (the
    solution is invariant to that scale) and `ridge` times the identity is
    added.
    """
    t = gram.shape[0]
    g = tf.cast(gram, tf.float64)
    g = safe_divide(g, tf.reduce_mean(tf.linalg.diag_part(g))) + ridge * tf.eye(t, dtype=tf.float64)
    u, converged = qp.nonneg_qp(g, g, max_iter)
    return tf.eye(t, dtype=tf.float64) + u, converged


@AGGREGATORS.register("upgrad")
class UPGrad(Aggregator):
    """UPGrad: the mean of the projections of each task gradient onto the dual cone.

    Each task gradient g_i is projected onto the dual cone of all task
    gradients, {x : g_t . x >= 0 for all t}, i.e. the closest vector that
    conflicts with no task; the direction is the mean of these projections.
    The projection of g_i is J^T v_i with v_i = argmin_{v >= e_i} v^T (J J^T) v
    (a small QP on the Gram matrix, solved exactly by an active-set method in
    float64, see `dual_cone_weights` and `mtlzoo.aggregators.qp`); the task
    weights are mean_i v_i. If the solver hits `max_iter` for some task, the
    step falls back to the mean gradient (uniform weights) and prints a
    warning.

    Convention: the mean of the projections (torchjd's default uniform
    preference), so identical task gradients are returned unchanged
    (`identical_scale` 1). torchjd normalises the Gramian and adds 1e-4 times
    the identity before calling a QP solver; here the Gram matrix is divided
    by its mean diagonal and `ridge` (default 0, no regularisation) is added
    (the exact solver itself only adds 1e-14 on its Jacobi-scaled matrix,
    for duplicated or zero gradients, see `mtlzoo.aggregators.qp`).

    Args:
        max_iter: int. Cap on the active-set changes per projection (>= 1);
            the solver stops earlier, at the exact solution (typically after
            about as many changes as tasks). Defaults to 100.
        ridge: float. Added to the diagonal of the normalised Gram matrix, in
            [0, 1). Defaults to 0.0.

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("upgrad")
    d = agg([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])   # ~[0.29, 1.90, 1.90]
    ```

    Reference:
        Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization",
        2024. https://arxiv.org/abs/2406.16232 (library: torchjd)
    """

    name = "upgrad"
    weight_based = True
    float64_gram = True

    def __init__(self, max_iter: int = 100, ridge: float = 0.0):
        super().__init__()
        self.max_iter = check_int("UPGrad", "max_iter", max_iter, low=1)
        self.ridge = check_range("UPGrad", "ridge", ridge, low=0.0, high=1.0, high_open=True)

    def _weights(self, grads, gram, losses, finite):
        t = grads.shape[0]
        v, converged = dual_cone_weights(gram, self.max_iter, self.ridge)
        qp.warn_unless(converged, "UPGrad")
        uniform = tf.fill([t], tf.constant(1.0 / t, tf.float64))
        return tf.where(tf.reduce_all(converged), tf.reduce_mean(v, axis=0), uniform)
