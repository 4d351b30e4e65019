"""MGDA: the minimum-norm point of the convex hull of the task gradients."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators import qp
from mtlzoo.aggregators.base import Aggregator, check_choice, check_int
from mtlzoo.registry import AGGREGATORS

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


@tf.function(autograph=False)
def min_norm_weights(gram, max_iter):
    """(w [T] float64, converged): the exact solution of min_{w in simplex} w^T gram w.

    `qp.simplex_qp` (primal active set in float64 on the Jacobi-scaled Gram
    matrix, starting from the best vertex; at most `max_iter` active-set
    changes). For T = 1 the answer is [1].
    """
    t = gram.shape[0]
    if t == 1:
        return tf.ones([1], tf.float64), tf.constant(True)
    return qp.simplex_qp(gram, tf.zeros([t], tf.float64), max_iter)


@AGGREGATORS.register("mgda")
class MGDA(Aggregator):
    """MGDA: the minimum-norm convex combination of the task gradients.

    Solves `min_{w in simplex} ||sum_t w_t g_t / n_t||^2` exactly (an
    active-set method in float64 on the [T, T] Gram matrix, see
    `min_norm_weights` and `mtlzoo.aggregators.qp`; Sener & Koltun use
    Frank-Wolfe, which only approaches the optimum), where the
    n_t are the optional gradient normalisers of the authors' code ("none": 1,
    "l2": ||g_t||, "loss": L_t, "loss+": L_t * ||g_t||; non-positive
    normalisers are replaced by 1). Called on the gradients w.r.t. the shared
    representation (through `task_weights`), this is the paper's MGDA-UB.

    Convention: like the authors' code (which rescales the raw losses with the
    solution), the weights w are applied to the *unnormalised* gradients:
    the direction is `sum_t w_t g_t`, a convex combination (weights sum to 1),
    so identical task gradients are returned unchanged (`identical_scale` 1).
    (LibMTL instead combines the normalised gradients.) For normalisation
    "none" the direction is the min-norm point itself. With "loss"/"loss+"
    the instance has `requires_losses = True`.

    Args:
        normalization: str. Gradient normalisation, one of "none", "l2",
            "loss", "loss+". Defaults to "none".
        max_iter: int. Cap on the active-set changes (>= 1); the solver stops
            earlier, at the exact solution (typically after about T changes).
            Past the cap the step uses equal weights and prints a warning.
            Defaults to 250.

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("mgda", normalization="l2")
    d = agg([[1.0, 0.0], [0.0, 1.0]])          # [0.5, 0.5]
    w = agg.task_weights([[1.0, 0.0], [0.0, 1.0]])   # [0.5, 0.5]
    ```

    Reference:
        Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization",
        NeurIPS 2018. https://arxiv.org/abs/1810.04650
    """

    name = "mgda"
    weight_based = True
    float64_gram = True

    def __init__(self, normalization: str = "none", max_iter: int = 250):
        super().__init__()
        self.normalization = check_choice("MGDA", "normalization", normalization, NORMALIZATIONS)
        self.max_iter = check_int("MGDA", "max_iter", max_iter, low=1)
        self.requires_losses = normalization in ("loss", "loss+")

    def _weights(self, grads, gram, losses, finite):
        t = grads.shape[0]
        if self.normalization == "none":
            gn = tf.ones([t], tf.float64)
        else:
            norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
            losses = None if losses is None else tf.cast(losses, tf.float64)
            if self.normalization == "l2":
                gn = norms
            elif self.normalization == "loss":
                gn = losses
            else:
                gn = losses * norms
            gn = tf.where(gn > 0, gn, tf.ones_like(gn))
        scaled = gram / (gn[:, None] * gn[None, :])
        w, converged = min_norm_weights(scaled, self.max_iter)
        qp.warn_unless(converged, "MGDA")
        return tf.where(converged, w, tf.fill([t], tf.constant(1.0 / t, tf.float64)))
