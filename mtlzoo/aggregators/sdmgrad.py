"""SDMGrad: stochastic direction-oriented multi-objective gradient descent."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators import qp
from mtlzoo.aggregators.base import Aggregator, check_int, check_range, safe_divide
from mtlzoo.registry import AGGREGATORS


@tf.function(autograph=False)
def sdmgrad_weights(gram, lmbda, max_iter):
    """(w [T] float64, converged): the exact solution of min_{w in simplex} ||G^T w + lmbda g0||^2.

    g0 = G^T b is the mean gradient (b = 1/T), so the objective is
    w^T K w + 2 lmbda w^T K b + const with K the Gram matrix: a simplex QP,
    solved by `qp.simplex_qp` (primal active set in float64, at most
    `max_iter` active-set changes). The Gram matrix is divided by the squared
    mean gradient norm, mean_t ||g_t|| (the authors' scaling, without their
    +1e-4; the minimiser does not depend on it).
    """
    gram = tf.cast(gram, tf.float64)
    scale = tf.reduce_mean(tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0)))
    k = safe_divide(gram, scale * scale)
    return qp.simplex_qp(k, lmbda * tf.reduce_mean(k, axis=1), max_iter)


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
    is solved exactly (a simplex QP, by the active-set method of
    `mtlzoo.aggregators.qp`, see `sdmgrad_weights`) instead of by SGD with
    learning rate 10 and momentum 0.5 warm-started from the previous step's
    w (so the method is stateless: one call's weights do not depend on
    earlier calls; past the `max_iter` cap the step uses equal weights and
    prints a warning); (2) the paper's stochastic
    algorithm estimates the gradient of the inner objective from two
    independent mini-batches (double sampling, for an unbiased estimate);
    here one batch's gradients are used for both, as in most ports; (3) no
    1e-4 is added inside the norm (the direction is exactly
    scale-equivariant).

    Args:
        lmbda: float. Regularisation towards the mean gradient, >= 0.
            Defaults to 0.3 (LibMTL's default, which ports the authors' code).
        max_iter: int. Cap on the active-set changes of the inner solver
            (>= 1); it stops earlier, at the exact solution (typically after
            about T changes). Defaults to 100.

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
    float64_gram = True

    def __init__(self, lmbda: float = 0.3, max_iter: int = 100):
        super().__init__()
        self.lmbda = check_range("SDMGrad", "lmbda", lmbda, low=0.0)
        self.max_iter = check_int("SDMGrad", "max_iter", max_iter, low=1)

    def _weights(self, grads, gram, losses, finite):
        t = grads.shape[0]
        w, converged = sdmgrad_weights(gram, self.lmbda, self.max_iter)
        qp.warn_unless(converged, "SDMGrad")
        w = tf.where(converged, w, tf.fill([t], tf.constant(1.0 / t, tf.float64)))
        return (w + self.lmbda / t) / (1.0 + self.lmbda)
