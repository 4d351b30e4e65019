"""DB-MTL: dual balancing (log losses + normalised EMA gradients)."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators.base import EPS, Aggregator, check_range, safe_divide
from mtlzoo.registry import AGGREGATORS


@AGGREGATORS.register("db_mtl", aliases=("db-mtl", "dbmtl"))
class DBMTL(Aggregator):
    """DB-MTL: balance loss scales with a log transform and gradient scales by norm.

    1. Loss-scale balancing: the gradients of log(L_t) are used, obtained from
       the gradients of the raw losses by the chain rule,
       g_t / (L_t + 1e-8) (losses must be positive).
    2. An EMA buffer per task: h_t <- (1 - b_s) * g_t / (L_t + 1e-8) + b_s * h_t
       with b_s = beta / s^beta_sigma at step s = 1, 2, ... (buffers start at 0).
    3. Gradient-magnitude balancing: every buffer is rescaled to the largest
       buffer norm, d = sum_t (max_k ||h_k|| / ||h_t||) h_t.

    Convention: as in the authors' LibMTL implementation (no EMA bias
    correction, so at the first step h_t = (1 - beta) g_t / L_t), the rescaled
    buffers are SUMMED. For identical task gradients g and losses 1, a freshly
    reset aggregator returns `T * (1 - beta) * g` (`identical_scale`). The
    reference adds 1e-8 to the buffer norms; here a zero buffer simply
    contributes nothing. With `beta == 0` there is no buffer and the direction
    is a linear combination of the current gradients, so that instance is
    weight-based (`task_weights` available, usable for representation-level
    gradients); with `beta > 0` it is not, and the [T, P] buffer is a
    `tf.Variable` (P is fixed at the first call or by `build(T, P)`).
    Non-finite gradients or losses leave the buffers and step count untouched.

    Args:
        beta: float. EMA rate of the gradient buffers, in [0, 1). Defaults to 0.9.
        beta_sigma: float. Decay exponent of the EMA rate, >= 0. Defaults to 0.0.

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("db_mtl", beta=0.9, beta_sigma=0.5)
    agg.build(num_tasks=2, num_params=2)
    d = agg([[1.0, 0.0], [0.0, 2.0]], losses=[0.5, 2.0])
    ```

    Reference:
        Lin et al., "Dual-Balancing for Multi-Task Learning", 2023.
        https://arxiv.org/abs/2308.12029
    """

    name = "db_mtl"
    requires_losses = True

    def __init__(self, beta: float = 0.9, beta_sigma: float = 0.0):
        super().__init__()
        self.beta = check_range("DBMTL", "beta", beta, low=0.0, high=1.0, high_open=True)
        self.beta_sigma = check_range("DBMTL", "beta_sigma", beta_sigma, low=0.0)
        # Instance-level: only the EMA-free variant is a combination of the current gradients.
        self.weight_based = self.beta == 0.0
        self.stateful = self.beta > 0.0
        self.buffer = None

    def identical_scale(self, num_tasks):
        return float(num_tasks) * (1.0 - self.beta)

    def build(self, num_tasks, num_params=None):
        super().build(num_tasks, num_params)
        if self.stateful and self.buffer is None and num_params is not None:
            with tf.init_scope():
                zeros = tf.zeros([num_tasks, int(num_params)])
                self.buffer = tf.Variable(zeros, trainable=False, name="db_mtl_buffer")

    def _build_state(self, num_tasks, num_params):
        self.step = tf.Variable(0.0, trainable=False, name="db_mtl_step")

    def _reset_state(self):
        self.step.assign(0.0)
        if self.buffer is not None:
            self.buffer.assign(tf.zeros_like(self.buffer))

    def _maybe_build(self, grads):
        super()._maybe_build(grads)
        if not self.stateful:
            return
        num_params = grads.shape[1]
        if self.buffer is None:
            if num_params is None:
                raise ValueError(
                    "DBMTL with beta > 0 keeps a [T, P] gradient buffer and needs a static P: "
                    "call agg.build(T, P) before tracing, or pass gradients of static shape."
                )
            self.build(grads.shape[0], num_params)
        elif num_params is not None and num_params != self.buffer.shape[1]:
            raise ValueError(
                f"DBMTL was built for gradients of length {self.buffer.shape[1]}, got {num_params}."
            )

    @staticmethod
    def _balance(h):
        norms = tf.norm(h, axis=1)
        return safe_divide(tf.reduce_max(norms), norms)

    def _weights(self, grads, gram, losses, finite):
        # beta == 0: h_t = g_t / (L_t + eps); w_t = alpha_t / (L_t + eps).
        inv = 1.0 / (losses + EPS)
        norms = tf.sqrt(tf.maximum(tf.linalg.diag_part(gram), 0.0)) * tf.abs(inv)
        return safe_divide(tf.reduce_max(norms), norms) * inv

    def _aggregate(self, grads, losses, finite):
        log_grads = grads / (losses[:, None] + EPS)
        old_step = self.step.read_value()
        step = old_step + 1.0
        rate = self.beta / tf.pow(step, self.beta_sigma)
        old = self.buffer.read_value()
        h = log_grads + rate * (old - log_grads)
        ok = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(h)))
        self.buffer.assign(tf.where(ok, h, old))
        self.step.assign(tf.where(ok, step, old_step))
        return tf.linalg.matvec(h, self._balance(h), transpose_a=True)
