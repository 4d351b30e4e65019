"""MGDA: the minimum-norm point of the convex hull of the task gradients."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators.base import TINY, Aggregator, check_choice, check_int, safe_divide
from mtlzoo.registry import AGGREGATORS

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def _line_search(v1v1, v1v2, v2v2):
    """argmin over gamma in [0, 1] of ||gamma * x1 + (1 - gamma) * x2||^2.

    Takes the Gram entries x1.x1, x1.x2, x2.x2 (any broadcastable shapes) and
    returns gamma, the weight of x1 (the closed form of Sener & Koltun, Alg. 1).
    """
    denom = v1v1 + v2v2 - 2.0 * v1v2
    gamma = safe_divide(v2v2 - v1v2, denom)
    gamma = tf.where(denom > TINY, gamma, 0.5 * tf.ones_like(gamma))
    return tf.clip_by_value(gamma, 0.0, 1.0)


@tf.function(autograph=False)
def min_norm_weights(gram, max_iter):
    """Frank-Wolfe solver of min_{w in simplex} w^T gram w for a [T, T] Gram matrix.

    Starts from the best pair of tasks (closed form for every pair, as in
    Sener & Koltun's `MinNormSolver`), then runs exactly `max_iter` (none for
    T = 2) pairwise Frank-Wolfe steps: weight moves from the "away" vertex (the support task
    with the largest (gram w)_t) to the Frank-Wolfe vertex (the smallest), with
    the exact line search. Unlike the plain Frank-Wolfe steps of the paper
    (sublinear, O(1/k)), pairwise steps converge linearly on the simplex
    (Lacoste-Julien & Jaggi, NeurIPS 2015). For T = 2 the start is already the
    exact optimum. Cost O(T^2) per iteration.
    """
    t = gram.shape[0]
    if t == 1:
        return tf.ones([1])
    diag = tf.linalg.diag_part(gram)
    # Best pair: gamma_ij weighs task i, (1 - gamma_ij) task j.
    gamma = _line_search(diag[:, None], gram, diag[None, :])
    cost = (gamma**2) * diag[:, None] + ((1.0 - gamma) ** 2) * diag[None, :] + 2.0 * gamma * (1.0 - gamma) * gram
    cost = tf.where(tf.eye(t, dtype=tf.bool), tf.fill([t, t], float("inf")), cost)
    flat = tf.argmin(tf.reshape(cost, [-1]), output_type=tf.int32)
    i, j = flat // t, flat % t
    g_ij = tf.reshape(tf.gather(tf.reshape(gamma, [-1]), flat), [])
    w0 = g_ij * tf.one_hot(i, t) + (1.0 - g_ij) * tf.one_hot(j, t)
    if t == 2:  # the best pair is the exact solution
        return w0

    def body(k, w):
        gw = tf.linalg.matvec(gram, w)
        s = tf.argmin(gw, output_type=tf.int32)
        # Away vertex: the support vertex with the largest (gram w)_t.
        a = tf.argmax(tf.where(w > 0.0, gw, tf.fill([t], -float("inf"))), output_type=tf.int32)
        curv = diag[s] + diag[a] - 2.0 * gram[s, a]
        step = tf.clip_by_value(safe_divide(gw[a] - gw[s], curv), 0.0, w[a])
        step = tf.where(curv > TINY, step, tf.where(gw[a] > gw[s], w[a], 0.0))
        return k + 1, w + step * (tf.one_hot(s, t) - tf.one_hot(a, t))

    _, w = tf.while_loop(lambda k, w: k < max_iter, body, (tf.constant(0), w0), maximum_iterations=max_iter)
    return w


@AGGREGATORS.register("mgda")
class MGDA(Aggregator):
    """MGDA: the minimum-norm convex combination of the task gradients.

    Solves `min_{w in simplex} ||sum_t w_t g_t / n_t||^2` with Frank-Wolfe
    (Sener & Koltun's Algorithm 2 with pair initialisation and exact line
    search, in its linearly convergent pairwise variant; exactly `max_iter`
    iterations on the [T, T] Gram matrix, see `min_norm_weights`), where the
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
        max_iter: int. Number of Frank-Wolfe iterations (>= 1). Defaults to 250
            (the authors' MAX_ITER). Enough for typical cases; many (T >= 8)
            nearly dependent gradients may need ~1000 for 1e-6 accuracy.

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

    def __init__(self, normalization: str = "none", max_iter: int = 250):
        super().__init__()
        self.normalization = check_choice("MGDA", "normalization", normalization, NORMALIZATIONS)
        self.max_iter = check_int("MGDA", "max_iter", max_iter, low=1)
        self.requires_losses = normalization in ("loss", "loss+")

    def _weights(self, grads, gram, losses, finite):
        t = grads.shape[0]
        if self.normalization == "none":
            gn = tf.ones([t])
        else:
            norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0))
            if self.normalization == "l2":
                gn = norms
            elif self.normalization == "loss":
                gn = losses
            else:
                gn = losses * norms
            gn = tf.where(gn > 0, gn, tf.ones_like(gn))
        scaled = gram / (gn[:, None] * gn[None, :])
        return min_norm_weights(scaled, self.max_iter)
