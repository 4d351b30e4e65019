"""FairGrad: alpha-fair allocation of the update among the tasks."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators.base import Aggregator, check_int, check_range, safe_divide
from mtlzoo.registry import AGGREGATORS

# Step lengths tried by the backtracking line search of `fairgrad_weights` (1, 1/2, ..., 2^-29).
_STEPS = [2.0 ** -j for j in range(30)]


def _barrier(w, p):
    """Sum over tasks of phi(w_t), with phi'(w) = -w^-p (w > 0)."""
    if p == 1.0:
        return -tf.reduce_sum(tf.math.log(w), axis=-1)
    return -tf.reduce_sum(tf.pow(w, 1.0 - p), axis=-1) / (1.0 - p)


@tf.function(autograph=False)
def fairgrad_weights(gram, alpha, max_iter, ridge):
    """Solves K w = w^(-1/alpha), w > 0, for K = gram / ||gram||_F + ridge I.

    This is the optimality condition of FairGrad: with d = sum_t w_t g_t, every
    task gets the "utility" g_t . d = w_t^(-1/alpha). The solution minimises
    the strictly convex f(w) = 1/2 w^T K w + sum_t phi(w_t) with
    phi'(w) = -w^(-1/alpha) (phi = -log for alpha = 1), found by Newton's
    method for exactly `max_iter` iterations from the best multiple of the
    all-ones vector. Each Newton system (K + diag(h)) dx = grad, h = phi''(w),
    is solved as a (a K a + I)^-1 a grad with a = h^-1/2 (eigenvalues >= 1,
    a safe Cholesky); the step length is the largest of 1, 1/2, ..., 2^-29
    that keeps w > 0 and decreases f (Armijo), otherwise w is kept. The
    `ridge` guarantees a solution even at a Pareto-stationary point.

    Args:
        gram: [T, T] float32 Gram matrix of the task gradients.
        alpha: Python float > 0.
        max_iter: Python int >= 1.
        ridge: Python float >= 0.

    Returns:
        (w [T], scale): the weights for the normalised Gram matrix and
        ||gram||_F (weights for the raw Gram matrix are
        w * scale^(-alpha / (1 + alpha))).
    """
    t = gram.shape[0]
    p = 1.0 / alpha
    scale = tf.norm(gram)
    k = safe_divide(gram, scale) + ridge * tf.eye(t)
    k = 0.5 * (k + tf.transpose(k))
    s = tf.reduce_sum(k)
    a0 = tf.pow(safe_divide(tf.cast(t, tf.float32), s), 1.0 / (1.0 + p))
    a0 = tf.where(s > 0.0, tf.clip_by_value(a0, 1e-3, 1e3), 1.0)
    w0 = tf.fill([t], a0)
    eye = tf.eye(t)
    steps = tf.constant(_STEPS)

    def objective(w):  # w: [..., T]
        return 0.5 * tf.reduce_sum(w * tf.linalg.matvec(k, w), axis=-1) + _barrier(w, p)

    def body(i, w):
        grad = tf.linalg.matvec(k, w) - tf.pow(w, -p)
        a = tf.math.rsqrt(p * tf.pow(w, -p - 1.0))
        m = a[:, None] * k * a[None, :] + eye
        m = tf.where(tf.math.is_finite(m), m, eye)
        step = a * tf.linalg.cholesky_solve(tf.linalg.cholesky(m), (a * grad)[:, None])[:, 0]
        cand = w[None, :] - steps[:, None] * step[None, :]
        positive = tf.reduce_all(cand > 0.0, axis=1)
        f_c = objective(tf.where(positive[:, None], cand, tf.ones_like(cand)))
        armijo = f_c <= objective(w) - 1e-4 * steps * tf.tensordot(grad, step, 1)
        ok = positive & armijo & tf.math.is_finite(f_c)
        first = tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32)
        new = tf.where(tf.reduce_any(ok), cand[first], w)
        return i + 1, new

    _, w = tf.while_loop(lambda i, w: i < max_iter, body, (tf.constant(0), w0), maximum_iterations=max_iter)
    return w, scale


@AGGREGATORS.register("fairgrad")
class FairGrad(Aggregator):
    """FairGrad: the update that allocates an alpha-fair share of progress to every task.

    FairGrad chooses d to maximise sum_t u_alpha(g_t . d) within a small ball,
    with the alpha-fair utility u_alpha(x) = x^(1 - alpha) / (1 - alpha)
    (log x for alpha = 1). Its optimality condition gives d = sum_t w_t g_t
    with weights w > 0 solving G G^T w = w^(-1/alpha) element-wise, i.e.
    g_t . d = w_t^(-1/alpha). alpha -> 0 favours the total (utilitarian,
    the sum of the gradients), alpha = 1 is proportional fairness (the
    Nash-MTL condition w_t (g_t . d) = 1), alpha = 2 minimum potential delay
    fairness, alpha -> inf max-min fairness. Solved without an external
    solver by Newton's method with a backtracking line search (see
    `fairgrad_weights`): exactly `max_iter` iterations on the [T, T] Gram
    matrix.

    Difference from the authors' code (which calls
    `scipy.optimize.least_squares` on the raw Gram matrix): with
    `normalize_gram=True` (default) the equation is solved for
    G G^T / ||G G^T||_F, like Nash-MTL's code. This gives the SAME direction
    (the solution for the raw matrix is the normalised one times
    ||G G^T||_F^(-alpha / (1 + alpha))) but a step length that scales with the
    gradients (the direction is scale-equivariant, as for every other
    aggregator here); identical task gradients g then give T * g
    (`identical_scale`). `normalize_gram=False` returns the authors' step
    length (`identical_scale` is then undefined: NaN). The tiny `ridge`
    (the authors have none) keeps the equation solvable when the gradients
    are linearly dependent. As FairGrad keeps no state, the weights also
    serve representation-level gradients (`task_weights`).

    Args:
        alpha: float. Fairness parameter alpha > 0. Defaults to 1.0 (the
            LibMTL default; the FairGrad paper tunes alpha per benchmark,
            e.g. 2.0 on QM9 in the authors' scripts).
        max_iter: int. Newton iterations (>= 1). Defaults to 30, which
            solves alpha in [0.02, 5] to float32 accuracy in our tests; for
            large alpha (e.g. 50) a task whose weight tends to 0 needs more
            (200).
        ridge: float. Added to the diagonal of the normalised Gram matrix, in
            [0, 1). Defaults to 1e-6.
        normalize_gram: bool. Solve on the Frobenius-normalised Gram matrix
            (scale-equivariant step). Defaults to True.

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("fairgrad", alpha=1.0)
    w = agg.task_weights([[1.0, 0.0], [0.5, 1.0]])
    d = agg([[1.0, 0.0], [0.5, 1.0]])
    ```

    Reference:
        Ban & Ji, "Fair Resource Allocation in Multi-Task Learning", ICML 2024.
        https://arxiv.org/abs/2402.15638
    """

    name = "fairgrad"
    weight_based = True

    def __init__(self, alpha: float = 1.0, max_iter: int = 30, ridge: float = 1e-6, normalize_gram: bool = True):
        super().__init__()
        self.alpha = check_range("FairGrad", "alpha", alpha, low=0.0, low_open=True)
        self.max_iter = check_int("FairGrad", "max_iter", max_iter, low=1)
        self.ridge = check_range("FairGrad", "ridge", ridge, low=0.0, high=1.0, high_open=True)
        if not isinstance(normalize_gram, bool):
            raise ValueError(f"FairGrad: `normalize_gram` must be True or False, got {normalize_gram!r}.")
        self.normalize_gram = normalize_gram

    def identical_scale(self, num_tasks):
        return float(num_tasks) if self.normalize_gram else float("nan")

    def _weights(self, grads, gram, losses, finite):
        w, scale = fairgrad_weights(gram, self.alpha, self.max_iter, self.ridge)
        if self.normalize_gram:
            return w
        factor = tf.pow(tf.maximum(scale, 1e-30), -self.alpha / (1.0 + self.alpha))
        return tf.where(scale > 0.0, w * factor, w)
