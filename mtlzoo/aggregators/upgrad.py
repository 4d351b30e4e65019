"""UPGrad: unconflicting projection of gradients (Jacobian descent)."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators.base import Aggregator, check_int, check_range, safe_divide
from mtlzoo.registry import AGGREGATORS


@tf.function(autograph=False)
def dual_cone_weights(gram, max_iter, ridge=0.0):
    """Weights V [T, T]: row i solves min_{v >= e_i} v^T gram v.

    J^T v_i is the projection of the row g_i of J onto the dual cone
    {x : J x >= 0} of the rows (Quinton & Rey, Prop. 1). The T box-constrained
    QPs are solved together by projected successive over-relaxation (cyclic
    coordinate descent: minimisation along each coordinate over-relaxed by
    omega = 1.5, then clipping at the bound; converges for 0 < omega < 2 and
    is faster than omega = 1 on ill-conditioned cases) for exactly `max_iter`
    sweeps over the T coordinates. For T <= 2 a single plain (omega = 1)
    sweep is exact, because the bound v_i >= 1 is active at the optimum. The
    Gram matrix is first divided by its mean diagonal (the solution is
    invariant to that scale) and `ridge` times the identity is added. Coordinates of zero gradients are left at their
    bound. Cost O(max_iter * T^3).
    """
    t = gram.shape[0]
    g = safe_divide(gram, tf.reduce_mean(tf.linalg.diag_part(gram))) + ridge * tf.eye(t)
    diag = tf.linalg.diag_part(g)
    lower = tf.eye(t)
    if t <= 2:  # the own bound is active, so one exact sweep solves T = 2
        max_iter, omega = 1, 1.0
    else:
        omega = 1.5

    def sweep(k, v):
        for j in range(t):
            gv_j = tf.linalg.matvec(v, g[:, j])  # (G v_i)_j for every problem i
            new = tf.maximum(lower[:, j], v[:, j] - omega * safe_divide(gv_j, diag[j]))
            v = v + (new - v[:, j])[:, None] * tf.one_hot(j, t)[None, :]
        return k + 1, v

    _, v = tf.while_loop(lambda k, v: k < max_iter, sweep, (tf.constant(0), lower), maximum_iterations=max_iter)
    return v


@AGGREGATORS.register("upgrad")
class UPGrad(Aggregator):
    """UPGrad: the mean of the projections of each task gradient onto the dual cone.

    Each task gradient g_i is projected onto the dual cone of all task
    gradients, {x : g_t . x >= 0 for all t}, i.e. the closest vector that
    conflicts with no task; the direction is the mean of these projections.
    The projection of g_i is J^T v_i with v_i = argmin_{v >= e_i} v^T (J J^T) v
    (a small QP on the Gram matrix, solved by projected coordinate descent
    (over-relaxed) with a fixed number of sweeps, see `dual_cone_weights`);
    the task weights are mean_i v_i.

    Convention: the mean of the projections (torchjd's default uniform
    preference), so identical task gradients are returned unchanged
    (`identical_scale` 1). torchjd normalises the Gramian and adds 1e-4 times
    the identity before calling a QP solver; here the Gram matrix is divided
    by its mean diagonal and `ridge` (default 0, no regularisation) is added.

    Args:
        max_iter: int. Coordinate-descent sweeps (>= 1). Defaults to 100
            (converged to float32 precision on non-degenerate cases; when
            the dual cone is nearly {0} convergence is slower).
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

    def __init__(self, max_iter: int = 100, ridge: float = 0.0):
        super().__init__()
        self.max_iter = check_int("UPGrad", "max_iter", max_iter, low=1)
        self.ridge = check_range("UPGrad", "ridge", ridge, low=0.0, high=1.0, high_open=True)

    def _weights(self, grads, gram, losses, finite):
        return tf.reduce_mean(dual_cone_weights(gram, self.max_iter, self.ridge), axis=0)
