"""CAGrad: conflict-averse gradient descent."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators.base import (
    EPS, Aggregator, check_choice, check_int, check_range, safe_divide, simplex_descent,
)
from mtlzoo.registry import AGGREGATORS


@tf.function(autograph=False)
def cagrad_dual_weights(gram, c, max_iter):
    """Solves min_{w in simplex} w^T G b + c ||g0|| sqrt(w^T G w), b = 1/T.

    This is the dual of CAGrad's max_d min_i g_i.d s.t. ||d - g0|| <= c ||g0||.
    The Gram matrix is first divided by its mean diagonal (the minimiser is
    invariant to that scale). Projected gradient descent on the simplex for
    exactly `max_iter` iterations, starting from the uniform weights (the
    reference's start), with an adaptive step 1/L: a step is accepted when the
    usual sufficient-decrease test holds (then L <- 0.7 L), otherwise it is
    rejected and L <- 2 L (so the objective never increases). ||g_w|| is
    smoothed as sqrt(w^T G w + 1e-8) on the normalised scale, like the
    reference's +1e-8.
    """
    t = gram.shape[0]
    scale = tf.reduce_mean(tf.linalg.diag_part(gram))
    g = safe_divide(gram, scale)
    b = tf.fill([t], 1.0 / t)
    gb = tf.linalg.matvec(g, b)
    r = c * tf.sqrt(tf.maximum(tf.tensordot(b, gb, 1), 0.0))

    def f_and_grad(w):
        gw = tf.linalg.matvec(g, w)
        norm = tf.sqrt(tf.maximum(tf.tensordot(w, gw, 1), 0.0) + EPS)
        return tf.tensordot(w, gb, 1) + r * norm, gb + r * gw / norm

    return simplex_descent(f_and_grad, b, max_iter, tf.constant(1.0))


@AGGREGATORS.register("cagrad")
class CAGrad(Aggregator):
    """CAGrad: maximise the worst task improvement near the average gradient.

    Finds d maximising min_i g_i.d within the ball ||d - g0|| <= c ||g0|| around
    the mean gradient g0, through its dual over task weights w (see
    `cagrad_dual_weights`; fixed `max_iter` projected-gradient iterations on
    the [T, T] Gram matrix), then d = g0 + c ||g0|| g_w / ||g_w||, with
    g_w = sum_t w_t g_t. Unlike the reference, no 1e-8 is added to these two
    norms (so the direction is exactly scale-equivariant); if g_w = 0 the
    correction term is dropped.

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
        max_iter: int. Projected-gradient iterations of the dual solver (>= 1).
            Defaults to 100.

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
        b = tf.fill([t], 1.0 / t)
        if self.c == 0.0:
            return b
        w = cagrad_dual_weights(gram, self.c, self.max_iter)
        g0_norm = tf.sqrt(tf.maximum(tf.tensordot(b, tf.linalg.matvec(gram, b), 1), 0.0))
        gw_norm = tf.sqrt(tf.maximum(tf.tensordot(w, tf.linalg.matvec(gram, w), 1), 0.0))
        lam = safe_divide(self.c * g0_norm, gw_norm)
        return (b + lam * w) / self._divisor()
