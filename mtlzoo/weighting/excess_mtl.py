"""ExcessMTL: robust task weighting by estimated excess risks."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mtlzoo.registry import WEIGHTINGS
from mtlzoo.weighting.base import (
    LossWeighting, all_finite, check_float, replica_mean, run_once, stack_losses,
)


def excess_risk_estimates(grads, squared_sum, epsilon=1e-7):
    """ExcessMTL's excess-risk estimates `e_t = g_tᵀ diag(1/sqrt(S_t + ε)) g_t` and the new S.

    The excess risk L_t(θ) − L_t(θ_t*) is approximated to second order by
    ½ g_tᵀ H_t⁻¹ g_t; the Hessian H_t is approximated by the diagonal
    AdaGrad preconditioner sqrt(S_t), with S_t the running sum of the squared
    task gradients (this call's included). The constant ½ cancels in the
    method (estimates are compared with the first ones).

    Args:
        grads: tf tensor [K, P]. Current task gradients of the shared parameters.
        squared_sum: tf tensor [K, P]. Sum of the squared gradients so far.
        epsilon: float. Added under the square root.

    Returns:
        (estimates [K], new squared sum [K, P]).
    """
    grads = tf.cast(grads, tf.float32)
    new_sum = tf.cast(squared_sum, tf.float32) + tf.square(grads)
    estimates = tf.reduce_sum(tf.square(grads) * tf.math.rsqrt(new_sum + epsilon), axis=1)
    return estimates, new_sum


def excess_mtl_update(weights, estimates, initial, step_size):
    """One exponentiated-gradient (mirror ascent) step of the task weights.

    `w_t <- w_t · exp(step_size · e_t / e_t(0))`, then renormalised to sum to K
    (the number of tasks). Tasks without an estimate yet (e_t(0) = 0) keep a
    ratio of 0.

    Returns:
        tf tensor [K] of positive weights summing to K.
    """
    ratio = tf.where(initial > 0, estimates / tf.where(initial > 0, initial, 1.0), 0.0)
    w = tf.cast(weights, tf.float32) * tf.exp(step_size * ratio)
    k = tf.cast(tf.shape(w)[0], tf.float32)
    return k * w / tf.reduce_sum(w)


@WEIGHTINGS.register("excess_mtl", aliases=("excessmtl", "excess-mtl"))
class ExcessMTL(LossWeighting):
    """ExcessMTL: give more weight to the tasks that are further from their own optimum.

    Robust MTL as a distributionally robust problem over the task weights,
    measured in excess risk (the loss above the task's best achievable loss)
    rather than raw loss, so that a noisy task with a high irreducible loss
    does not take over. Inside every training step, for each task:

    1. its gradient g_t of the shared parameters (one extra backward pass per
       task) updates the running sum of squared gradients S_t;
    2. the excess risk is estimated as e_t = g_tᵀ diag(1/sqrt(S_t)) g_t
       (second-order expansion with an AdaGrad-style diagonal Hessian,
       `excess_risk_estimates`), relative to its value on the first step;
    3. the weights take one exponentiated-gradient step,
       w_t <- w_t exp(step_size · e_t / e_t(0)), and are renormalised to sum
       to K (`excess_mtl_update`).

    The network's update in a step uses the weights from before that step's
    update (as GradNorm here); `{task}_weight` logs them. Weights start at 1.
    S (a [K, P] buffer over the shared parameters, P their total size), the
    first estimates and the weights are callback state (S holds K floats
    per shared parameter, as in the authors' code); a non-finite step
    changes none of them. Under a distribution strategy the task gradients
    are replica means (the global batch's).

    Differences from the authors' code: (1) timing — the authors update the
    weights first and train the network on this step's new weights; here the
    network's update uses the weights from before the step's update (the
    total loss is built before the task gradients exist, as for GradNorm),
    a one-step lag; (2) the authors skip the weight update on the very
    first step (it only records e_t(0)); here that step has ratio 1 for
    every task, which the renormalisation turns into no change (the same
    result whenever every task is present); a task absent from the first
    batch (zero gradient) gets its reference e_t(0) on the first batch where
    it is present. The estimate itself (1e-7 under the root, normalisation by
    the first estimate, multiplicative update, renormalisation to K) is the
    authors'.

    Args:
        step_size: float > 0. Step size of the weight update (the authors'
            `robust_step_size`). Defaults to 1e-2.

    Example:
    ```python
    import mtlzoo.weighting
    cb = mtlzoo.weighting.get("excess_mtl", step_size=1e-2)
    model.fit(x, y, epochs=10, callbacks=[cb])
    ```

    Reference:
        He, Zhou, Zhang, Yun, Xu, Zeng, Chilimbi, Zhao, "Robust Multi-Task
        Learning with Excess Risks", ICML 2024. https://arxiv.org/abs/2402.02009
    """

    name = "excess_mtl"
    uses_gradients = True
    needs_persistent_tape = True
    supports_representation = False

    def __init__(self, step_size=1e-2):
        super().__init__()
        self.step_size = check_float("ExcessMTL", "step_size", step_size, low=0.0, low_open=True)
        self.shared_variables = None

    def build(self, model):
        shared, _ = model.variable_groups()
        if not shared:
            raise ValueError("ExcessMTL needs shared trainable variables; the model has none.")
        self.shared_variables = shared
        k = len(model.task_names)
        p = int(sum(int(np.prod(v.shape)) for v in shared))
        self._squared_sum = keras.Variable(np.zeros((k, p), np.float32), trainable=False,
                                           name="excess_mtl_squared_sum")
        self._initial = keras.Variable(np.zeros(k, np.float32), trainable=False, name="excess_mtl_initial")
        self._w = keras.Variable(np.ones(k, np.float32), trainable=False, name="excess_mtl_weights")
        self.track_used_weights(model)

    def begin(self, model):
        self.assign_weights(tf.convert_to_tensor(self._w))

    def step_gradients(self, model, tape, task_losses, total, extra, base):
        grads = base()
        rows = []
        for t in model.task_names:
            gs = tape.gradient(task_losses[t], self.shared_variables)
            flat = [tf.zeros([int(np.prod(v.shape))]) if g is None else tf.reshape(tf.cast(tf.convert_to_tensor(g),
                                                                                           tf.float32), [-1])
                    for g, v in zip(gs, self.shared_variables)]
            rows.append(replica_mean(tf.concat(flat, axis=0)))
        task_grads = tf.stack(rows)
        finite = all_finite(total, task_grads, *[g for g in grads if g is not None])
        finite = replica_mean(tf.cast(finite, tf.float32)) >= 1.0
        run_once(self._update, model, finite, task_grads)
        return grads

    def _update(self, model, finite, task_grads):
        estimates, new_sum = excess_risk_estimates(task_grads, self._squared_sum)
        initial = tf.convert_to_tensor(self._initial)
        initial = tf.where(tf.logical_and(initial <= 0, estimates > 0), estimates, initial)
        w = excess_mtl_update(self._w, estimates, initial, self.step_size)

        def apply():
            self.remember_used_weights(model)
            self._squared_sum.assign(new_sum)
            self._initial.assign(initial)
            self._w.assign(w)
            self.assign_weights(w)
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
