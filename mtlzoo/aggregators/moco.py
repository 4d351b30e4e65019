"""MoCo: multi-objective gradient correction with tracked task gradients."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators.base import Aggregator, check_range, project_simplex, safe_divide
from mtlzoo.registry import AGGREGATORS


def moco_step(tracked, grads, lam, step, beta, beta_sigma, gamma, gamma_sigma, rho, normalize_gram=True):
    """One MoCo step; returns (new tracked gradients [T, P], new weights [T], direction [P]).

    At step k = `step` (1, 2, ...): y <- y - beta_k (y - g) with
    beta_k = beta / k^beta_sigma; lam <- Pi_simplex(lam - gamma_k (Y Y^T + rho I) lam)
    with gamma_k = gamma / k^gamma_sigma; d = Y^T lam (new Y and lam).
    """
    beta_k = beta / tf.pow(step, beta_sigma)
    gamma_k = gamma / tf.pow(step, gamma_sigma)
    y = tracked - beta_k * (tracked - grads)
    gram = tf.matmul(y, y, transpose_b=True)
    if normalize_gram:
        gram = safe_divide(gram, tf.reduce_mean(tf.linalg.diag_part(gram)))
    lam = project_simplex(lam - gamma_k * (tf.linalg.matvec(gram, lam) + rho * lam))
    return y, lam, tf.linalg.matvec(y, lam, transpose_a=True)


@AGGREGATORS.register("moco")
class MoCo(Aggregator):
    """MoCo: MGDA-style weights on tracked (bias-corrected) task gradients.

    Stochastic MGDA is biased: its weights depend on noisy gradients. MoCo
    tracks each task gradient with a moving average y_t and moves the task
    weights lam one projected step per training step towards the min-norm
    weights of the tracked gradients:

        y_t <- y_t - beta_k (y_t - g_t),          beta_k = beta / k^beta_sigma
        lam <- Pi_simplex(lam - gamma_k (Y Y^T + rho I) lam),  gamma_k = gamma / k^gamma_sigma
        d = Y^T lam

    at step k = 1, 2, ...; y starts at 0 (so a fresh aggregator returns
    `beta * g` for identical gradients g, `identical_scale`), lam uniform.
    On a constant gradient sequence y converges to the true gradients
    geometrically. The [T, P] tracked gradients are a `tf.Variable` (P fixed at
    the first call or by `build(T, P)`); non-finite input leaves the state
    untouched. The direction is not a combination of the current gradients,
    so MoCo is not weight-based.

    Differences from the authors' code (LibMTL's MoCo): (1) lam is updated
    by the paper's Euclidean projection onto the simplex, where LibMTL takes
    a softmax of the stepped weights; (2) LibMTL rescales each gradient to
    norm L_t before tracking (g_t / ||g_t|| * L_t); here the raw gradients
    are tracked, as in the paper; (3) with `normalize_gram=True` (default)
    Y Y^T is divided by its mean diagonal, so gamma is a dimensionless step
    and the direction is scale-equivariant (`normalize_gram=False` gives the
    paper's raw update, where gamma must match the gradient scale).

    Args:
        beta: float. Tracking rate of the gradients, in (0, 1]. Defaults to 0.5.
        beta_sigma: float. Decay exponent of the tracking rate, >= 0.
            Defaults to 0.5.
        gamma: float. Step size of the lam update, >= 0. Defaults to 0.1.
        gamma_sigma: float. Decay exponent of the lam step, >= 0. Defaults to 0.5.
        rho: float. Regularisation of the lam sub-problem, >= 0. Defaults to 0.0.
        normalize_gram: bool. Divide Y Y^T by its mean diagonal. Defaults to True.
        (Defaults: LibMTL's, which ports the authors' implementation.)

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("moco", beta=0.5, gamma=0.1)
    agg.build(num_tasks=2, num_params=2)
    d = agg([[1.0, 0.0], [-0.5, 1.0]])
    ```

    Reference:
        Fernando, Shen, Liu, Chaudhury, Murugesan, Chen, "Mitigating Gradient
        Bias in Multi-objective Learning: A Provably Convergent Approach",
        ICLR 2023. https://arxiv.org/abs/2210.12624
    """

    name = "moco"
    stateful = True

    def __init__(self, beta: float = 0.5, beta_sigma: float = 0.5, gamma: float = 0.1, gamma_sigma: float = 0.5,
                 rho: float = 0.0, normalize_gram: bool = True):
        super().__init__()
        self.beta = check_range("MoCo", "beta", beta, low=0.0, high=1.0, low_open=True)
        self.beta_sigma = check_range("MoCo", "beta_sigma", beta_sigma, low=0.0)
        self.gamma = check_range("MoCo", "gamma", gamma, low=0.0)
        self.gamma_sigma = check_range("MoCo", "gamma_sigma", gamma_sigma, low=0.0)
        self.rho = check_range("MoCo", "rho", rho, low=0.0)
        if not isinstance(normalize_gram, bool):
            raise ValueError(f"MoCo: `normalize_gram` must be True or False, got {normalize_gram!r}.")
        self.normalize_gram = normalize_gram
        self.tracked = None

    def identical_scale(self, num_tasks):
        return self.beta

    def build(self, num_tasks, num_params=None):
        super().build(num_tasks, num_params)
        if self.tracked is None and num_params is not None:
            with tf.init_scope():
                self.tracked = tf.Variable(tf.zeros([num_tasks, int(num_params)]), trainable=False,
                                           name="moco_tracked_gradients")

    def _build_state(self, num_tasks, num_params):
        self.lam = tf.Variable(tf.fill([num_tasks], 1.0 / num_tasks), trainable=False, name="moco_lambda")
        self.step = tf.Variable(0.0, trainable=False, name="moco_step")

    def _reset_state(self):
        self.lam.assign(tf.fill(tf.shape(self.lam), 1.0 / self.lam.shape[0]))
        self.step.assign(0.0)
        if self.tracked is not None:
            self.tracked.assign(tf.zeros_like(self.tracked))

    def _maybe_build(self, grads):
        super()._maybe_build(grads)
        num_params = grads.shape[1]
        if self.tracked is None:
            if num_params is None:
                raise ValueError(
                    "MoCo keeps a [T, P] buffer of tracked gradients and needs a static P: "
                    "call agg.build(T, P) before tracing, or pass gradients of static shape."
                )
            self.build(grads.shape[0], num_params)
        elif num_params is not None and num_params != self.tracked.shape[1]:
            raise ValueError(f"MoCo was built for gradients of length {self.tracked.shape[1]}, got {num_params}.")

    def _aggregate(self, grads, losses, finite):
        old_y, old_lam, old_step = self.tracked.read_value(), self.lam.read_value(), self.step.read_value()
        y, lam, d = moco_step(old_y, grads, old_lam, old_step + 1.0, self.beta, self.beta_sigma, self.gamma,
                              self.gamma_sigma, self.rho, self.normalize_gram)
        ok = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(y)) & tf.reduce_all(tf.math.is_finite(lam)))
        self.tracked.assign(tf.where(ok, y, old_y))
        self.lam.assign(tf.where(ok, lam, old_lam))
        self.step.assign(tf.where(ok, old_step + 1.0, old_step))
        return d
