"""SDMGrad: stochastic direction-oriented multi-objective gradient descent."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators.base import (
    Aggregator, check_int, check_range, project_simplex, safe_divide, simplex_descent,
)
from mtlzoo.registry import AGGREGATORS


@tf.function(autograph=False)
def sdmgrad_weights(gram, w0, lmbda, max_iter):
    """Projected gradient descent on min_{w in simplex} ||G^T w + lmbda g0||^2.

    g0 = G^T b is the mean gradient (b = 1/T). Works on the Gram matrix divided
    by the squared mean gradient norm, mean_t ||g_t|| (the authors' scaling,
    without their +1e-4), so the weights do not depend on the gradient scale.
    Exactly `max_iter` steps from `w0` (projected onto the simplex), with an adaptive step 1/L: a step is
    accepted when the sufficient-decrease test holds (then L <- 0.7 L),
    otherwise rejected and L <- 2 L, so the objective never increases.

    Returns:
        w [T] on the simplex.
    """
    scale = tf.reduce_mean(tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0)))
    k = safe_divide(gram, scale * scale)
    kb = tf.reduce_mean(k, axis=1)  # K b

    def f_and_grad(w):
        kw = tf.linalg.matvec(k, w)
        f = tf.tensordot(w, kw, 1) + 2.0 * lmbda * tf.tensordot(w, kb, 1)
        return f, 2.0 * (kw + lmbda * kb)

    lip0 = tf.maximum(2.0 * tf.reduce_max(tf.linalg.diag_part(k)), 1e-4)
    return simplex_descent(f_and_grad, project_simplex(w0), max_iter, lip0)


@AGGREGATORS.register("sdmgrad")
class SDMGrad(Aggregator):
    """SDMGrad: the MGDA direction regularised towards the average gradient.

    Solves min_{w in simplex} ||G^T w + lmbda g0||^2 (g0 the mean gradient)
    and moves along d = (G^T w + lmbda g0) / (1 + lmbda): lmbda = 0 is the
    min-norm (MGDA) direction, lmbda -> inf the mean gradient; in between d
    stays close to g0 while avoiding conflicts. d is a convex combination of
    the task gradients with weights (w + lmbda / T) / (1 + lmbda), returned by
    `task_weights`, so identical task gradients are returned unchanged
    (`identical_scale` 1).

    Like the authors' code, the Gram matrix is divided by the squared mean
    gradient norm. Differences from the authors' code: (1) the inner problem
    takes `max_iter` projected-gradient steps with an adaptive step size and
    sufficient-decrease test (the objective never increases) instead of SGD
    with learning rate 10 and momentum 0.5, and starts every call from the
    uniform weights, where the authors warm-start from the previous step's w
    (so the method is stateless: one call's weights do not depend on earlier
    calls; raise `max_iter` if the inner problem needs more steps); (2) the paper's stochastic
    algorithm estimates the gradient of the inner objective from two
    independent mini-batches (double sampling, for an unbiased estimate);
    here one batch's gradients are used for both, as in most ports; (3) no
    1e-4 is added inside the norm (the direction is exactly
    scale-equivariant).

    Args:
        lmbda: float. Regularisation towards the mean gradient, >= 0.
            Defaults to 0.3 (LibMTL's default, which ports the authors' code).
        max_iter: int. Inner projected-gradient steps per call (>= 1).
            Defaults to 20 (the authors' `niter`).

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("sdmgrad", lmbda=0.3)
    d = agg([[1.0, 0.0], [-0.5, 1.0]])
    ```

    Reference:
        Xiao, Ban, Ji, "Direction-oriented Multi-objective Learning: Simple
        and Provable Stochastic Algorithms", NeurIPS 2023.
        https://arxiv.org/abs/2305.18409
    """

    name = "sdmgrad"
    weight_based = True

    def __init__(self, lmbda: float = 0.3, max_iter: int = 20):
        super().__init__()
        self.lmbda = check_range("SDMGrad", "lmbda", lmbda, low=0.0)
        self.max_iter = check_int("SDMGrad", "max_iter", max_iter, low=1)

    def _weights(self, grads, gram, losses, finite):
        t = grads.shape[0]
        w = sdmgrad_weights(gram, tf.fill([t], 1.0 / t), self.lmbda, self.max_iter)
        return (w + self.lmbda / t) / (1.0 + self.lmbda)
