"""IMTL-G: impartial multi-task learning, gradient balance part."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators.base import Aggregator, safe_divide
from mtlzoo.registry import AGGREGATORS


@AGGREGATORS.register("imtl_g", aliases=("imtl-g", "imtlg"))
class IMTLG(Aggregator):
    """IMTL-G: the combination of task gradients with equal projections on every task.

    Finds weights alpha (summing to 1) such that d = sum_t alpha_t g_t has the
    same projection d.u_t = c onto every unit task gradient u_t = g_t / ||g_t||.
    The paper's closed form eliminates c with task 1 as reference
    (alpha_{2..T} = g_1 U^T (D U^T)^-1, D = [g_1 - g_t], U = [u_1 - u_t]);
    here the equivalent symmetric (T+1) x (T+1) linear system
    [u_i . g_j, -1; 1^T, 0] [alpha; c] = [0; 1] is built from the [T, T] Gram
    matrix and solved with a pseudo-inverse (`tf.linalg.pinv`).

    Convention: the weights sum to 1 (as in the paper and LibMTL, the direction
    is not rescaled), so identical task gradients are returned unchanged
    (`identical_scale` 1). Degenerate cases differ from the reference's
    matrix inverse (which fails there): linearly dependent gradients get the
    minimum-norm solution, and a task with an exactly zero gradient is left
    out of the equal-projection constraint (its weight is 0) instead of
    forcing every projection, hence the update, to 0. Only the gradient part
    (IMTL-G) is implemented; the loss scale part (IMTL-L) is a loss
    weighting, not an aggregator.

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("imtl_g")
    d = agg([[2.0, 0.0], [0.0, 1.0]])   # d.u_1 == d.u_2
    ```

    Reference:
        Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021.
        https://openreview.net/forum?id=IMPnRXEWpvr
    """

    name = "imtl_g"
    weight_based = True

    def __init__(self):
        super().__init__()

    def _weights(self, grads, gram, losses, finite):
        t = grads.shape[0]
        if t == 1:
            return tf.ones([1])
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
        nonzero = norms > 0.0
        # a[i, j] = u_i . g_j; the rows of zero gradients become "alpha_i = 0".
        # Divided by the largest norm: alpha is scale-invariant and pinv's cutoff is relative.
        a = safe_divide(gram, tf.broadcast_to(norms[:, None] * tf.reduce_max(norms), [t, t]))
        a = tf.where(nonzero[:, None], a, tf.eye(t))
        minus_c = -tf.cast(nonzero, tf.float32)[:, None]
        system = tf.concat(
            [tf.concat([a, minus_c], axis=1), tf.concat([tf.ones([1, t]), tf.zeros([1, 1])], axis=1)], axis=0
        )
        rhs = tf.concat([tf.zeros([t]), [1.0]], axis=0)
        return tf.linalg.matvec(tf.linalg.pinv(system), rhs)[:t]
