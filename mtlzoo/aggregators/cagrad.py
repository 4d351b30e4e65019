"""CAGrad: conflict-averse gradient descent."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators import qp
from mtlzoo.aggregators.base import Aggregator, check_choice, check_int, check_range, safe_divide
from mtlzoo.registry import AGGREGATORS


#: |1 - ||g_w||^2 / tau^2| below this is CAGrad's convergence certificate.
NORM_TOL = 1e-11


@tf.function(autograph=False)
def cagrad_dual_weights(gram, c, max_iter):
    """(w [T] float64, converged, degenerate): min_{w in simplex} w^T G b + r ||g_w||, r = c ||g0||, b = 1/T.

    This is the dual of CAGrad's max_d min_i g_i.d s.t. ||d - g0|| <= c ||g0||
    (||g_w||^2 = w^T G w). Exact method: since r ||x|| = min_{tau > 0}
    r (||x||^2 / tau + tau) / 2, the minimiser is w(tau*), where w(tau) solves
    the simplex QP min 1/2 w^T G w + (tau / r) w^T G b (`qp.simplex_qp`) and
    tau* is the root of psi(tau) = 1 - ||g_w(tau)||^2 / tau^2, non-decreasing in
    tau (the joint objective is convex), in [m, M] (m the min-norm, M the
    largest gradient norm). On the support of w(tau) the QP solution is affine
    in tau (`qp.simplex_qp_on_support`), so psi = 0 there is a quadratic
    equation: its root is the next tau, safeguarded by bisection (in log tau)
    of the bracket. Stops when |psi| <= NORM_TOL (at most `max_iter` QPs; an
    exact support gives the answer in two or three). If psi > 0 already at
    tau = 1e-6 M, the optimum has g_w = 0 (zero is in the convex hull and no
    combination beats it: the primal optimum is not unique) and `degenerate`
    is True (also when g0 = 0 or every gradient is 0). The Gram matrix is
    first divided by its mean diagonal.
    """
    t = gram.shape[0]
    f64 = tf.float64
    gram = tf.cast(gram, f64)
    g = safe_divide(gram, tf.reduce_mean(tf.linalg.diag_part(gram)))
    b = tf.fill([t], tf.constant(1.0 / t, f64))
    a = tf.linalg.matvec(g, b)
    r = c * tf.sqrt(tf.maximum(tf.tensordot(b, a, 1), 0.0))
    no_ball = r <= 0.0  # g0 = 0: the ball is the point {0}
    r = tf.where(no_ball, tf.ones_like(r), r)
    sq = lambda w: tf.maximum(tf.tensordot(w, tf.linalg.matvec(g, w), 1), 0.0)  # noqa: E731
    hi = tf.sqrt(tf.reduce_max(tf.linalg.diag_part(g)))
    w_min, ok_min = qp.simplex_qp(g, tf.zeros([t], f64), max_iter)
    small = tf.sqrt(sq(w_min)) <= 1e-6 * hi
    lo = tf.maximum(tf.sqrt(sq(w_min)), 1e-6 * hi)
    w_lo, ok_lo = qp.simplex_qp(g, (lo / r) * a, max_iter, start=w_min)
    psi_lo = 1.0 - sq(w_lo) / (lo * lo)
    # psi(m) <= 0 always: psi(lo) ~ 0 there means the root is m (e.g. identical gradients);
    # psi(1e-9 M) > 0 means g_w = 0 is optimal (or all gradients are zero).
    degenerate = tf.logical_or(tf.logical_or(hi <= 0.0, no_ball), tf.logical_and(small, psi_lo >= 0.0))
    at_lo = tf.logical_and(tf.logical_not(small), psi_lo >= -NORM_TOL)

    def body(k, lo, hi, tau, w, ok, done):
        w, ok_k = qp.simplex_qp(g, (tau / r) * a, max_iter, start=w)
        psi = 1.0 - sq(w) / (tau * tau)
        lo = tf.where(psi < 0.0, tau, lo)
        hi = tf.where(psi < 0.0, hi, tau)
        # psi = 0 on the current support: (A - r^2) u^2 + 2 B u + C = 0 with u = tau / r.
        z0, z1 = qp.simplex_qp_on_support(g, a, w > 0.0)
        big_a, big_b, big_c = tf.tensordot(z1, tf.linalg.matvec(g, z1), 1), tf.tensordot(
            z0, tf.linalg.matvec(g, z1), 1), tf.tensordot(z0, tf.linalg.matvec(g, z0), 1)
        quad = big_a - r * r
        disc = tf.sqrt(tf.maximum(big_b * big_b - quad * big_c, 0.0))
        lin_root = -big_c / tf.where(big_b != 0.0, 2.0 * big_b, tf.ones_like(big_b))
        safe_quad = tf.where(tf.abs(quad) > 1e-14, quad, tf.ones_like(quad))
        roots = tf.stack([(-big_b + disc) / safe_quad, (-big_b - disc) / safe_quad, lin_root]) * r
        inside = tf.logical_and(roots > lo, roots < hi)
        inside = tf.logical_and(inside, tf.constant([True, True, False]) == (tf.abs(quad) > 1e-14))
        cand = tf.reduce_min(tf.where(inside, roots, tf.fill([3], tf.constant(float("inf"), f64))))
        new_tau = tf.where(tf.math.is_finite(cand), cand, tf.sqrt(lo * hi))
        converged = tf.logical_and(ok_k, tf.abs(psi) <= NORM_TOL)
        return k + 1, lo, hi, tf.where(converged, tau, new_tau), w, tf.logical_and(ok, ok_k), converged

    def cond(k, lo, hi, tau, w, ok, done):
        return tf.logical_and(k < max_iter, tf.logical_not(done))

    done = tf.logical_or(degenerate, at_lo)
    init = (tf.constant(0), lo, hi, tf.sqrt(lo * hi), w_lo, tf.logical_and(ok_min, ok_lo), done)
    _, _, _, _, w, ok, done = tf.while_loop(cond, body, init, maximum_iterations=max_iter)
    w = tf.where(degenerate, w_min, w)
    return w, tf.logical_and(ok, done), degenerate


@AGGREGATORS.register("cagrad")
class CAGrad(Aggregator):
    """CAGrad: maximise the worst task improvement near the average gradient.

    Finds d maximising min_i g_i.d within the ball ||d - g0|| <= c ||g0|| around
    the mean gradient g0, through its dual over task weights w (see
    `cagrad_dual_weights`: solved exactly in float64 on the [T, T] Gram
    matrix through a few simplex QPs of `mtlzoo.aggregators.qp`), then
    d = g0 + c ||g0|| g_w / ||g_w||, with g_w = sum_t w_t g_t. Unlike the
    reference, no 1e-8 is added to these norms (so the direction is exactly
    scale-equivariant); if the optimum has g_w = 0 (zero in the convex hull
    of the gradients and no better combination: the primal optimum is then
    not unique) the correction term is dropped. If the solver hits its cap
    the step uses the uniform w (the reference's start) and prints a warning.

    Convention (rescale): like the authors' code and LibMTL, `rescale=1`
    (default) divides d by (1 + c^2); `rescale=2` by (1 + c); `rescale=0` keeps
    it. With c = 0 the direction is exactly the mean gradient. For identical
    task gradients g the direction is `s * g` with s = (1 + c) / (1 + c^2),
    1, or 1 + c for rescale 1, 2, 0 (`identical_scale`). The direction is a
    linear combination of the gradients with weights `1/T + lambda * w`,
    lambda = c ||g0|| / ||g_w|| (then rescaled), returned by `task_weights`.

    Args:
        c: float. Radius of the ball relative to ||g0||, >= 0 (the paper uses
            [0, 1)). Defaults to 0.5.
        rescale: int. Output rescaling, 0, 1 or 2 as above. Defaults to 1.
        max_iter: int. Cap on the active-set changes of each QP and on the
            number of QPs (>= 1); the solver stops earlier, at the exact
            solution. Defaults to 100.

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("cagrad", c=0.5)
    d = agg([[1.0, 0.0], [-0.5, 1.0]])
    ```

    Reference:
        Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning",
        NeurIPS 2021. https://arxiv.org/abs/2110.14048
    """

    name = "cagrad"
    weight_based = True
    float64_gram = True

    def __init__(self, c: float = 0.5, rescale: int = 1, max_iter: int = 100):
        super().__init__()
        self.c = check_range("CAGrad", "c", c, low=0.0)
        self.rescale = check_choice("CAGrad", "rescale", rescale, (0, 1, 2))
        self.max_iter = check_int("CAGrad", "max_iter", max_iter, low=1)

    def _divisor(self):
        return {0: 1.0, 1: 1.0 + self.c**2, 2: 1.0 + self.c}[self.rescale]

    def identical_scale(self, num_tasks):
        return (1.0 + self.c) / self._divisor()

    def _weights(self, grads, gram, losses, finite):
        t = grads.shape[0]
        b = tf.fill([t], tf.constant(1.0 / t, tf.float64))
        if self.c == 0.0:
            return b
        w, converged, degenerate = cagrad_dual_weights(gram, self.c, self.max_iter)
        qp.warn_unless(converged, "CAGrad")
        w = tf.where(converged, w, b)
        g0_norm = tf.sqrt(tf.maximum(tf.tensordot(b, tf.linalg.matvec(gram, b), 1), 0.0))
        gw_norm = tf.sqrt(tf.maximum(tf.tensordot(w, tf.linalg.matvec(gram, w), 1), 0.0))
        lam = tf.where(degenerate, tf.constant(0.0, tf.float64), safe_divide(self.c * g0_norm, gw_norm))
        return (b + lam * w) / self._divisor()
