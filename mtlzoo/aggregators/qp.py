"""Exact solvers for the small quadratic programs of the gradient aggregators.

The QP-based aggregators (UPGrad, MGDA, CAGrad, SDMGrad) reduce to convex
quadratic programs over T task weights with a [T, T] Gram matrix G:

- `nonneg_qp`: min_x 1/2 x^T G x + q^T x subject to x >= 0 (a batch of them,
  one per row of q; UPGrad's dual-cone projections);
- `simplex_qp`: the same subject to x >= 0, sum(x) = 1 (MGDA's min-norm point,
  SDMGrad's inner problem, and CAGrad's inner problem for a fixed norm level).

Both run a primal active-set method (Nocedal & Wright, "Numerical
Optimization", Alg. 16.3) in float64: every iteration solves the
equality-constrained problem on the current free set exactly (a [T+1, T+1]
linear solve), then either takes the full step and frees the variable with
the most negative Lagrange multiplier (or stops: all multipliers >= 0 is the
KKT certificate of the exact optimum), or stops at the first blocking bound
and fixes it. Each iteration changes the active set by one index, so it
terminates after a few changes (typically about the size of the support);
`max_iter` caps the changes. The answer is exact up to float64 round-off.

Conditioning: G is Jacobi-scaled first, Ĝ = D^-1/2 G D^-1/2 with D = diag(G)
(unit diagonal, so gradient norms differing by 1e4 or more cost no accuracy;
for unit-free problems this also is "scaling by the largest diagonal"), and
only rank deficiency is regularised: RIDGE = 1e-14 times the identity is added
to Ĝ, which makes duplicated or zero task gradients (singular G) solvable. It
changes the objective by at most RIDGE times the largest squared gradient norm:
norms of combinations are resolved down to about 1e-7 of the largest gradient
norm (smaller min-norm points come out as "about zero"). Zero gradients keep
D_tt = 1.

A solver that reaches `max_iter` without the KKT certificate returns
`converged = False`; the aggregators then fall back to a safe answer (their
equal-weight direction) and print a warning (`warn_unless`; not under XLA,
which cannot print), never a silently wrong direction.
"""

from __future__ import annotations

import sys

import tensorflow as tf

#: Ridge added to the Jacobi-scaled Gram matrix (unit diagonal): regularises only rank deficiency.
RIDGE = 1e-14
#: A multiplier >= -MULTIPLIER_TOL (on the scaled problem) counts as non-negative.
MULTIPLIER_TOL = 1e-13

F64 = tf.float64


def _scaling(gram):
    """(Ĝ + RIDGE I, s) with Ĝ = diag(s) G diag(s), s = 1/sqrt(diag G) (1 where the diagonal is 0)."""
    gram = tf.cast(gram, F64)
    gram = 0.5 * (gram + tf.transpose(gram))
    diag = tf.linalg.diag_part(gram)
    ok = diag > 0.0
    s = tf.where(ok, tf.math.rsqrt(tf.where(ok, diag, tf.ones_like(diag))), tf.ones_like(diag))
    g_hat = s[:, None] * gram * s[None, :]
    return g_hat + RIDGE * tf.eye(gram.shape[0], dtype=F64), s


def _active_set(g, q, c, x0, free0, max_iter):
    """Primal active-set method for min 1/2 x^T g x + q_b^T x, x >= 0 (and c^T x = 1 when c is not None).

    Args:
        g: [T, T] float64, symmetric positive definite.
        q: [B, T] float64, one linear term per problem.
        c: [T] float64 or None. The equality constraint c^T x = 1.
        x0: [B, T] float64 feasible starting points.
        free0: [B, T] bool, the variables not fixed at 0 (x0 is 0 outside).
        max_iter: int. Cap on active-set changes.

    Returns:
        (x [B, T], converged [B] bool).
    """
    b, t = q.shape
    eye = tf.eye(t, dtype=F64)

    def eqp(free):
        """Minimiser on the free set, with the fixed variables at 0; and the equality's multiplier."""
        pair = tf.logical_and(free[:, :, None], free[:, None, :])
        m = tf.where(pair, g[None], eye[None])
        rhs = tf.where(free, -q, tf.zeros_like(q))
        if c is None:
            return tf.linalg.solve(m, rhs[..., None])[..., 0], tf.zeros([b], F64)
        col = tf.where(free, tf.broadcast_to(c, [b, t]), tf.zeros([b, t], F64))
        top = tf.concat([m, col[:, :, None]], axis=2)
        bottom = tf.concat([col[:, None, :], tf.zeros([b, 1, 1], F64)], axis=2)
        sol = tf.linalg.solve(tf.concat([top, bottom], axis=1), tf.concat([rhs, tf.ones([b, 1], F64)], 1)[..., None])
        return sol[:, :t, 0], sol[:, t, 0]

    def body(k, x, free, done):
        xs, nu = eqp(free)
        p = xs - x
        shrinking = tf.logical_and(free, p < 0.0)
        # Step length to each shrinking variable's bound (2, i.e. none, elsewhere).
        ratio = tf.where(shrinking, x / tf.where(shrinking, -p, tf.ones_like(p)), tf.constant(2.0, F64))
        block = tf.argmin(ratio, axis=1, output_type=tf.int32)
        alpha = tf.minimum(tf.reduce_min(ratio, axis=1), 1.0)
        full = alpha >= 1.0
        # Multipliers of the bounds x_i >= 0 at the full-step point xs.
        lam = tf.linalg.matmul(xs, g) + q
        if c is not None:
            lam = lam + nu[:, None] * c[None, :]
        lam = tf.where(free, tf.fill([b, t], tf.constant(float("inf"), F64)), lam)
        worst = tf.argmin(lam, axis=1, output_type=tf.int32)
        optimal = tf.logical_and(full, tf.reduce_min(lam, axis=1) >= -MULTIPLIER_TOL)
        step_x = tf.where(full[:, None], tf.maximum(xs, 0.0), x + alpha[:, None] * p)
        blocked = tf.logical_and(tf.logical_not(full)[:, None], tf.one_hot(block, t, on_value=True, off_value=False))
        step_x = tf.where(blocked, tf.zeros_like(step_x), step_x)
        freed = tf.logical_and(
            tf.logical_and(full, tf.logical_not(optimal))[:, None], tf.one_hot(worst, t, on_value=True, off_value=False)
        )
        step_free = tf.logical_and(tf.logical_or(free, freed), tf.logical_not(blocked))
        keep = done[:, None]
        return (
            k + 1,
            tf.where(keep, x, step_x),
            tf.where(keep, free, step_free),
            tf.logical_or(done, optimal),
        )

    def cond(k, x, free, done):
        return tf.logical_and(k < max_iter, tf.logical_not(tf.reduce_all(done)))

    init = (tf.constant(0), x0, free0, tf.zeros([b], tf.bool))
    _, x, _, done = tf.while_loop(cond, body, init, maximum_iterations=max_iter + 1)
    return x, done


def nonneg_qp(gram, linear, max_iter):
    """Solves min_x 1/2 x^T G x + q^T x subject to x >= 0, for each row q of `linear`, exactly.

    Args:
        gram: [T, T] positive semi-definite matrix (any float dtype).
        linear: [B, T] linear terms, one problem per row.
        max_iter: int. Cap on active-set changes (about T are typical).

    Returns:
        (x [B, T] float64, converged [B] bool). x is the minimiser of the
        problem with G + RIDGE * diag(G) (see the module docstring).
    """
    g, s = _scaling(gram)
    q = tf.cast(linear, F64) * s[None, :]
    b, t = q.shape
    y, ok = _active_set(g, q, None, tf.zeros([b, t], F64), tf.zeros([b, t], tf.bool), max_iter)
    return y * s[None, :], ok


def simplex_qp(gram, linear, max_iter, start=None):
    """Solves min_w 1/2 w^T G w + q^T w subject to w >= 0, sum(w) = 1, exactly.

    Args:
        gram: [T, T] positive semi-definite matrix (any float dtype).
        linear: [T] linear term q (zeros for the min-norm point).
        max_iter: int. Cap on active-set changes (about T are typical).
        start: [T] feasible starting point (on the simplex) or None for the
            best vertex.

    Returns:
        (w [T] float64 on the simplex, converged scalar bool).
    """
    g, s = _scaling(gram)
    q = tf.cast(linear, F64) * s
    t = q.shape[0]
    if start is None:  # the best vertex e_k: objective 1/2 G_kk + q_k
        k = tf.argmin(0.5 * tf.linalg.diag_part(g) / (s * s) + q / s, output_type=tf.int32)
        y0 = tf.one_hot(k, t, dtype=F64) / tf.gather(s, k)
    else:
        y0 = tf.cast(start, F64) / s
    y, ok = _active_set(g, q[None], s, y0[None], (y0 > 0.0)[None], max_iter)
    w = tf.maximum(y[0] * s, 0.0)
    return w / tf.reduce_sum(w), ok[0]


def _in_xla_function():
    """True while tracing a function compiled with XLA (`jit_compile=True`), which has no print op."""
    if tf.executing_eagerly():
        return False
    try:  # TensorFlow has no public API for this; it enters an XLA control-flow context while tracing.
        from tensorflow.python.ops import control_flow_util

        return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
    except (ImportError, AttributeError):
        return False


def warn_unless(converged, method):
    """Prints a warning (to stderr, from inside the graph) when an exact solver did not converge.

    Under XLA (`jit_compile=True`), which cannot print, the fallback still
    happens but without the message.
    """
    if _in_xla_function():
        return tf.reduce_all(converged)

    def warn():
        tf.print(
            f"WARNING: {method}: the exact QP solver hit its iteration cap; using the equal-weight "
            f"fallback for this step (raise `max_iter`).",
            output_stream=sys.stderr,
        )
        return tf.constant(True)

    return tf.cond(tf.reduce_all(converged), lambda: tf.constant(True), warn)


def simplex_qp_on_support(gram, linear, support):
    """The affine family w(u) = z0 + u z1 solving min 1/2 w^T G w + u q^T w, sum(w) = 1, on `support` (w = 0 off it).

    The equality-constrained problem of `simplex_qp` on a fixed support, for
    every scale u of the linear term at once (used by CAGrad to find the
    scale at which the norm condition holds exactly).

    Args:
        gram: [T, T] positive semi-definite matrix.
        linear: [T] linear term q.
        support: [T] bool, the free variables (at least one True).

    Returns:
        (z0 [T], z1 [T]) float64.
    """
    g, s = _scaling(gram)
    q = tf.cast(linear, F64) * s
    t = q.shape[0]
    pair = tf.logical_and(support[:, None], support[None, :])
    m = tf.where(pair, g, tf.eye(t, dtype=F64))
    col = tf.where(support, s, tf.zeros_like(s))
    a = tf.concat([tf.concat([m, col[:, None]], 1), tf.concat([col[None, :], tf.zeros([1, 1], F64)], 1)], 0)
    rhs = tf.stack([tf.concat([tf.zeros([t], F64), tf.ones([1], F64)], 0),
                    tf.concat([tf.where(support, -q, tf.zeros_like(q)), tf.zeros([1], F64)], 0)], axis=1)
    z = tf.linalg.solve(a, rhs)[:t]
    return z[:, 0] * s, z[:, 1] * s
