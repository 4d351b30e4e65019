"""FAMO: Fast Adaptive Multitask Optimization."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mtlzoo.registry import WEIGHTINGS
from mtlzoo.weighting.base import (
    LossWeighting, SmallAdam, all_finite, check_float, replica_mean, run_once, stack_losses,
)


def famo_weights(logits, losses, epsilon=1e-8):
    """FAMO's loss weights `K·(z_t/L_t) / Σ_s (z_s/L_s)` with `z = softmax(logits)`.

    They make the update `Σ_t w_t ∇L_t` follow the gradient of
    `Σ_t z_t log L_t` up to a positive scale. Tasks with a zero loss (no
    label in the batch) get weight 0 and are left out of the normalisation.

    Args:
        logits: tf tensor [K]. FAMO's task logits ξ.
        losses: tf tensor [K]. Current task losses.
        epsilon: float. Added to the losses.

    Returns:
        tf tensor [K] of weights summing to K over the present tasks.
    """
    losses = tf.cast(losses, tf.float32)
    present = losses > 0
    z = tf.nn.softmax(tf.cast(logits, tf.float32))
    inv = tf.where(present, z / (losses + epsilon), 0.0)
    count = tf.reduce_sum(tf.cast(present, tf.float32))
    return tf.where(present, count * inv / tf.maximum(tf.reduce_sum(inv), 1e-30), 0.0)


def famo_logit_gradient(logits, previous_losses, losses, epsilon=1e-8):
    """Gradient for FAMO's logits from the log-loss decrease `δ = log L_prev − log L_now`.

    It is `J_softmax(ξ)ᵀ δ = z ⊙ (δ − zᵀδ)`: descending it moves weight away
    from the tasks whose losses fell most. Tasks missing from either step
    contribute δ = 0.
    """
    valid = tf.logical_and(previous_losses > 0, losses > 0)
    before = tf.math.log(tf.where(valid, previous_losses, 1.0) + epsilon)
    now = tf.math.log(tf.where(valid, losses, 1.0) + epsilon)
    delta = tf.where(valid, before - now, 0.0)
    z = tf.nn.softmax(tf.cast(logits, tf.float32))
    return z * (delta - tf.reduce_sum(z * delta))


@WEIGHTINGS.register("famo")
class FAMO(LossWeighting):
    """FAMO: decrease all task losses at a balanced (log-scale) rate, in O(1) per step.

    FAMO keeps task logits ξ (z = softmax(ξ)) and trains the network with the
    weights `w_t ∝ z_t / L_t` (normalised to sum to K), i.e. along the gradient
    of `Σ_t z_t log L_t`. After each step it compares the log losses before
    and after, `δ_t = log L_t(prev) − log L_t(now)`, and takes one Adam step
    (`learning_rate`) on ξ with the gradient `J_softmax(ξ)ᵀ δ + γ·ξ`, so tasks
    whose loss fell less get more weight next time. ξ starts at 0 (equal z).

    Approximation: the reference method re-evaluates the losses on the same
    batch after the update (an extra forward pass); here δ compares the
    losses of two consecutive training steps (consecutive batches), which
    costs nothing extra. The loss (logged `loss`) is `Σ_t w_t L_t` with the
    weights held constant; `model.loss_weights`/`{task}_weight` are the `w_t`
    of the epoch's last step.

    Args:
        gamma: float >= 0. Weight decay γ on the logits. Defaults to 0.001.
        learning_rate: float > 0. Adam learning rate of the logits (β in the
            paper). Defaults to 0.025.
        epsilon: float > 0. Added to the losses inside the logs. Defaults to 1e-8.

    Example:
    ```python
    import mtlzoo.weighting
    cb = mtlzoo.weighting.get("famo", gamma=0.001, learning_rate=0.025)
    model.fit(x, y, epochs=10, callbacks=[cb])
    ```

    Reference:
        Liu, Feng, Stone, Liu, "FAMO: Fast Adaptive Multitask Optimization",
        NeurIPS 2023.
    """

    name = "famo"
    uses_combine = True
    uses_gradients = True

    def __init__(self, gamma=0.001, learning_rate=0.025, epsilon=1e-8):
        super().__init__()
        self.gamma = check_float("FAMO", "gamma", gamma, low=0.0)
        self.learning_rate = check_float("FAMO", "learning_rate", learning_rate, low=0.0, low_open=True)
        self.epsilon = check_float("FAMO", "epsilon", epsilon, low=0.0, low_open=True)

    def build(self, model):
        k = len(model.task_names)
        self._logits = keras.Variable(np.zeros(k, np.float32), trainable=True, name="famo_logits")
        self._previous = keras.Variable(np.zeros(k, np.float32), trainable=False, name="famo_previous_losses")
        self._optimizer = SmallAdam([self._logits], learning_rate=self.learning_rate)

    def begin(self, model):
        self.assign_weights({t: 1.0 for t in model.task_names})

    @property
    def task_probabilities(self) -> dict:
        """dict task -> z_t = softmax(ξ)_t."""
        z = tf.nn.softmax(tf.convert_to_tensor(self._logits)).numpy()
        return dict(zip(self.tasks, z.astype(float).tolist()))

    def step_combine(self, model, task_losses):
        losses = stack_losses(model, task_losses)
        # The weights come from the global batch's losses (replica means).
        w = tf.stop_gradient(famo_weights(self._logits, replica_mean(tf.stop_gradient(losses)), self.epsilon))
        return tf.reduce_sum(w * losses)

    def step_gradients(self, model, tape, task_losses, total, extra, base):
        grads = base()
        losses = replica_mean(tf.stop_gradient(stack_losses(model, task_losses)))
        finite = all_finite(total, losses, *[g for g in grads if g is not None])
        finite = replica_mean(tf.cast(finite, tf.float32)) >= 1.0
        run_once(self._update, finite, losses)
        return grads

    def _update(self, finite, losses):
        logits = tf.convert_to_tensor(self._logits)
        weights = famo_weights(logits, losses, self.epsilon)
        previous = tf.convert_to_tensor(self._previous)
        grad = famo_logit_gradient(logits, previous, losses, self.epsilon) + self.gamma * logits

        def apply():
            self._optimizer.apply([grad])
            # A task absent from this batch keeps its last loss for the next comparison.
            self._previous.assign(tf.where(losses > 0, losses, previous))
            self.assign_weights(weights)
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
