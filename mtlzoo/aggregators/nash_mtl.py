"""Nash-MTL: the Nash bargaining solution over task gradients."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators import qp
from mtlzoo.aggregators.base import Aggregator, check_int, check_range, safe_divide
from mtlzoo.registry import AGGREGATORS


#: Squared Newton decrement below which Nash-MTL's Newton method has converged (about 1e-10 relative error).
DECREMENT_TOL = 1e-20


@tf.function(autograph=False)
def nash_weights(gram, max_iter, ridge):
    """(alpha [T] float64, converged): solves K alpha = 1 / alpha, alpha > 0, for K = gram / ||gram||_F (+ ridge I).

    alpha minimises the strictly convex, self-concordant function
    f(alpha) = 1/2 alpha^T K alpha - sum_t log(alpha_t), whose stationarity
    condition is K alpha = 1/alpha. Damped Newton method in float64
    (Nesterov's step 1 / (1 + Newton decrement), which keeps alpha > 0 and
    converges globally, quadratically near the solution) from the best
    multiple of the all-ones vector, until the squared Newton decrement is
    below DECREMENT_TOL (the certificate) or `max_iter` iterations. The Newton
    system (K + diag(alpha)^-2) dx = grad is solved as
    dx = A (A K A + I)^-1 A grad, A = diag(alpha), whose matrix has all
    eigenvalues >= 1 (a safe Cholesky). The small `ridge` guarantees that a
    solution exists even when a non-negative combination of the gradients
    vanishes (a Pareto-stationary point, e.g. a zero task gradient), where
    the weights are then large.
    """
    t = gram.shape[0]
    f64 = tf.float64
    gram = tf.cast(gram, f64)
    norm = tf.norm(gram)
    k = safe_divide(gram, norm) + ridge * tf.eye(t, dtype=f64)
    k = 0.5 * (k + tf.transpose(k))
    s = tf.reduce_sum(k)
    a0 = tf.sqrt(safe_divide(tf.cast(t, f64), s))
    a0 = tf.where(s > 0.0, tf.clip_by_value(a0, 1e-3, 1e3), 1.0)
    alpha0 = tf.fill([t], a0)
    eye = tf.eye(t, dtype=f64)

    def body(i, alpha, dec2):
        grad = tf.linalg.matvec(k, alpha) - 1.0 / alpha
        m = alpha[:, None] * k * alpha[None, :] + eye
        m = tf.where(tf.math.is_finite(m), m, eye)
        chol = tf.linalg.cholesky(m)
        step = alpha * tf.linalg.cholesky_solve(chol, (alpha * grad)[:, None])[:, 0]
        dec2 = tf.maximum(tf.tensordot(grad, step, 1), 0.0)
        new = alpha - step / (1.0 + tf.sqrt(dec2))
        ok = tf.reduce_all(tf.math.is_finite(new)) & tf.reduce_all(new > 0.0)
        return i + 1, tf.where(ok, new, alpha), tf.where(ok, dec2, tf.constant(float("inf"), f64))

    def cond(i, alpha, dec2):
        return tf.logical_and(i < max_iter, dec2 > DECREMENT_TOL)

    init = (tf.constant(0), alpha0, tf.constant(float("inf"), f64))
    _, alpha, dec2 = tf.while_loop(cond, body, init, maximum_iterations=max_iter)
    converged = dec2 <= DECREMENT_TOL
    return tf.where(converged, alpha, alpha0), converged


@AGGREGATORS.register("nash_mtl", aliases=("nash-mtl", "nashmtl"))
class NashMTL(Aggregator):
    """Nash-MTL: weights from the Nash bargaining solution of the tasks.

    The weights alpha > 0 solve G G^T alpha = 1 / alpha (element-wise), the
    optimality condition of the bargaining game, so the direction
    d = sum_t alpha_t g_t satisfies alpha_t (g_t . d) = 1 for every task.
    Solved without an external convex solver by a damped Newton method on
    log-barrier form (see `nash_weights`) in float64 on the [T, T] Gram
    matrix, until its convergence certificate (Newton decrement) or
    `max_iter` iterations; alpha stays positive by construction. If the cap
    is hit the step uses the equal weights of the starting point (a multiple
    of the all-ones vector) and prints a warning.

    Convention: like the authors' code, the Gram matrix is divided by its
    Frobenius norm first, so alpha solves (G G^T / ||G G^T||_F) alpha = 1/alpha
    and is invariant to a global rescaling of the gradients; identical task
    gradients then get alpha = 1 each and are summed (`identical_scale` T).
    The authors' code also clips the norm of the final update to 1
    (`max_norm`) and can reuse the weights for several steps; neither is done
    here (use the optimizer's `clipnorm` for the former). The method is
    stateless (no warm start), so the weights of one call do not depend on
    earlier calls.

    Args:
        max_iter: int. Cap on the damped Newton iterations (>= 1); it stops
            earlier, at convergence. Defaults to 100.
        ridge: float. Added to the diagonal of the normalised Gram matrix, in
            [0, 1). Defaults to 1e-6.

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("nash_mtl")
    w = agg.task_weights([[1.0, 0.0], [0.5, 1.0]])
    ```

    Reference:
        Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022.
        https://arxiv.org/abs/2202.01017
    """

    name = "nash_mtl"
    weight_based = True
    float64_gram = True

    def __init__(self, max_iter: int = 100, ridge: float = 1e-6):
        super().__init__()
        self.max_iter = check_int("NashMTL", "max_iter", max_iter, low=1)
        self.ridge = check_range("NashMTL", "ridge", ridge, low=0.0, high=1.0, high_open=True)

    def identical_scale(self, num_tasks):
        return float(num_tasks)

    def _weights(self, grads, gram, losses, finite):
        alpha, converged = nash_weights(gram, self.max_iter, self.ridge)
        qp.warn_unless(converged, "Nash-MTL")
        return alpha
