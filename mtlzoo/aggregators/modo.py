"""MoDo: multi-objective gradient descent with double sampling."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators.base import Aggregator, check_range, project_simplex, safe_divide
from mtlzoo.registry import AGGREGATORS


def modo_lambda_step(gram, lam, gamma, rho, normalize_gram=True):
    """One MoDo step on the task weights: Pi_simplex(lam - gamma (K + rho I) lam).

    K is the Gram matrix of the task gradients (of two independent batches in
    the paper, K = G1 G2^T), divided by its mean diagonal when
    `normalize_gram`. The result always lies on the probability simplex.
    """
    if normalize_gram:
        gram = safe_divide(gram, tf.reduce_mean(tf.linalg.diag_part(gram)))
    return project_simplex(lam - gamma * (tf.linalg.matvec(gram, lam) + rho * lam))


@AGGREGATORS.register("modo")
class MoDo(Aggregator):
    """MoDo: one projected gradient step on MGDA's task weights per training step.

    MoDo keeps task weights lam on the simplex between steps and, at every
    step, moves them one step towards the min-norm (MGDA) weights,
    lam <- Pi_simplex(lam - gamma (G1 G2^T + rho I) lam), then updates the
    model along d = G3^T lam. lam starts uniform (1/T). The direction is a
    convex combination of the current gradients with the weights `agg.lam`
    after the step (identical task gradients are returned unchanged,
    `identical_scale` 1). Because every call advances lam, the class offers
    no `task_weights` (`weight_based` is False: that contract expects
    repeated calls to give the same weights), so it runs on parameter-level
    gradients only. The paper's analysis trades off optimisation,
    generalisation and conflict avoidance through gamma and rho.

    Differences from the paper and the authors' code: (1) double sampling —
    the paper draws three independent mini-batches (two for the unbiased
    lam update, one for the model update) — is approximated by the one batch
    of the train step, so G1 = G2 = G3 = G (the Gram estimate is then
    biased by the gradient noise); (2) with `normalize_gram=True` (default)
    G G^T is divided by its mean diagonal, so gamma is a dimensionless step
    and the direction is scale-equivariant (the authors' update uses the raw
    product: `normalize_gram=False`; gamma must then be tuned to the gradient
    scale). The authors' port updates the model with the sum of the two
    batches' gradients; with one batch that is d up to the learning rate.
    lam lives in a `tf.Variable`; non-finite input leaves it untouched.

    Args:
        gamma: float. Step size of the lam update, >= 0. Defaults to 1e-3
            (LibMTL's default for MoDo). On the normalised Gram matrix
            (entries of order 1) lam then moves by about 1e-3 per step, so
            it drifts from uniform over thousands of steps; larger values
            (0.1) track the min-norm weights within tens of steps.
        rho: float. Regularisation of the lam sub-problem, >= 0. Defaults to 0.1.
        normalize_gram: bool. Divide G G^T by its mean diagonal. Defaults to True.

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("modo", gamma=1e-3, rho=0.1)
    d = agg([[1.0, 0.0], [-0.5, 1.0]])
    agg.lam.numpy()                       # the task weights after the step
    ```

    Reference:
        Chen, Fernando, Ying, Chen, "Three-Way Trade-Off in Multi-Objective
        Learning: Optimization, Generalization and Conflict-Avoidance",
        NeurIPS 2023. https://arxiv.org/abs/2305.20057
    """

    name = "modo"
    stateful = True

    def __init__(self, gamma: float = 1e-3, rho: float = 0.1, normalize_gram: bool = True):
        super().__init__()
        self.gamma = check_range("MoDo", "gamma", gamma, low=0.0)
        self.rho = check_range("MoDo", "rho", rho, low=0.0)
        if not isinstance(normalize_gram, bool):
            raise ValueError(f"MoDo: `normalize_gram` must be True or False, got {normalize_gram!r}.")
        self.normalize_gram = normalize_gram

    def _build_state(self, num_tasks, num_params):
        self.lam = tf.Variable(tf.fill([num_tasks], 1.0 / num_tasks), trainable=False, name="modo_lambda")

    def _reset_state(self):
        self.lam.assign(tf.fill(tf.shape(self.lam), 1.0 / self.lam.shape[0]))

    def _aggregate(self, grads, losses, finite):
        old = self.lam.read_value()
        gram = tf.matmul(grads, grads, transpose_b=True)
        lam = modo_lambda_step(gram, old, self.gamma, self.rho, self.normalize_gram)
        ok = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(lam)))
        self.lam.assign(tf.where(ok, lam, old))
        return tf.linalg.matvec(grads, lam, transpose_a=True)
