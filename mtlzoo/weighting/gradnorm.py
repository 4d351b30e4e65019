"""GradNorm: balance the task gradient norms at the last shared layer."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mtlzoo.registry import WEIGHTINGS, suggestion
from mtlzoo.weighting.base import (
    MIN_WEIGHT, LossWeighting, SmallAdam, all_finite, check_float, replica_mean, run_once, stack_losses,
)


def gradnorm_weight_gradient(weights, grad_norms, losses, initial_losses, alpha):
    """Gradient of GradNorm's `L_grad = Σ_t |G_t − Ḡ·r_t^α|` with respect to the weights.

    With `G_t = w_t·‖∇_W L_t‖`, `Ḡ` the mean of the `G_t`, `L̃_t = L_t / L_t(0)`
    and `r_t = L̃_t / mean(L̃)`, and the target `Ḡ·r_t^α` held constant, the
    gradient is `sign(G_t − Ḡ·r_t^α)·‖∇_W L_t‖`. Tasks with a zero loss or
    gradient norm (no label in the batch) are left out (gradient 0).

    Args:
        weights, grad_norms, losses, initial_losses: tf tensors [K].
        alpha: float. Asymmetry α.

    Returns:
        (gradient [K], G [K], target [K]) as tf tensors.
    """
    weights = tf.cast(weights, tf.float32)
    valid = tf.logical_and(losses > 0, grad_norms > 0)
    valid = tf.logical_and(valid, initial_losses > 0)
    vf = tf.cast(valid, tf.float32)
    count = tf.maximum(tf.reduce_sum(vf), 1.0)
    g = weights * grad_norms
    g_mean = tf.reduce_sum(g * vf) / count
    ratio = tf.where(valid, losses / tf.where(valid, initial_losses, 1.0), 0.0)
    ratio_mean = tf.reduce_sum(ratio) / count
    r = tf.where(valid, ratio / tf.maximum(ratio_mean, 1e-30), 1.0)
    target = tf.stop_gradient(g_mean * tf.pow(r, alpha))
    grad = tf.where(valid, tf.sign(g - target) * grad_norms, 0.0)
    return grad, g, target


def renormalize(weights, total):
    """Clips the weights to >= MIN_WEIGHT and rescales them to sum to `total`."""
    weights = tf.maximum(tf.cast(weights, tf.float32), MIN_WEIGHT)
    return total * weights / tf.reduce_sum(weights)


@WEIGHTINGS.register("gradnorm")
class GradNorm(LossWeighting):
    """GradNorm: learn loss weights that equalise the tasks' training rates.

    Inside every training step, with `W` the last shared layer's weights:
    `G_t = ‖∇_W (w_t·L_t)‖`, `Ḡ = mean_t G_t`, the inverse training rate
    `r_t = L̃_t / mean(L̃)` with `L̃_t = L_t / L_t(0)` (the task's loss on the
    first step it has labels), and

        L_grad = Σ_t |G_t − Ḡ·r_t^α|

    is differentiated with respect to the weights only (the target `Ḡ·r_t^α`
    is a constant). The weights take one step of their own Adam optimizer
    (`learning_rate`), are clipped to stay positive and renormalised to sum to
    K. The network's own update in that step uses the weights before the
    update (the total loss was computed with them); the logged
    `{task}_weight` are those used by the epoch's last step and
    `model.get_loss_weights()` the updated ones. Weights start at 1 (the
    recipe's loss weights are replaced).

    `W` is, by default, the last trainable shared variable with at least two
    dimensions in `model.variable_groups()` order (the kernel of the last
    shared Dense/Conv layer, e.g. the neck's last conv); `variable` selects
    another one by its path. The norms are taken on that kernel, not on the
    shared feature map. Cost: one extra backward pass per task, from each
    task loss down to `W` only (through the heads).

    Args:
        alpha: float >= 0. Asymmetry α: larger values pull harder towards
            equal training rates (0 equalises the gradient norms only).
            Defaults to 1.5.
        learning_rate: float > 0. Learning rate of the weights' Adam optimizer.
            Defaults to 0.025.
        variable: str or None. Path (or path suffix) of the shared variable W.
            Defaults to None (see above).

    Example:
    ```python
    import mtlzoo.weighting
    cb = mtlzoo.weighting.get("gradnorm", alpha=1.5)
    model.fit(x, y, epochs=10, callbacks=[cb])
    ```

    Reference:
        Chen, Badrinarayanan, Lee, Rabinovich, "GradNorm: Gradient
        Normalization for Adaptive Loss Balancing in Deep Multitask Networks",
        ICML 2018.
    """

    name = "gradnorm"
    uses_gradients = True
    needs_persistent_tape = True
    supports_representation = False

    def __init__(self, alpha=1.5, learning_rate=0.025, variable=None):
        super().__init__()
        self.alpha = check_float("GradNorm", "alpha", alpha, low=0.0)
        self.learning_rate = check_float("GradNorm", "learning_rate", learning_rate, low=0.0, low_open=True)
        if variable is not None and not isinstance(variable, str):
            raise ValueError(f"GradNorm: variable must be a variable path (str) or None, got {variable!r}.")
        self.variable = variable
        self.shared_variable = None

    def build(self, model):
        shared, _ = model.variable_groups()
        if not shared:
            raise ValueError("GradNorm needs shared trainable variables; the model has none.")
        if self.variable is None:
            kernels = [v for v in shared if len(v.shape) >= 2]
            self.shared_variable = (kernels or shared)[-1]
        else:
            hits = [v for v in shared if v.path == self.variable or v.path.endswith("/" + self.variable)]
            if not hits:
                paths = [v.path for v in shared]
                raise ValueError(
                    f"GradNorm: no shared variable {self.variable!r}.{suggestion(self.variable, paths)} "
                    f"Shared variables: {', '.join(paths)}."
                )
            self.shared_variable = hits[-1]
        k = len(model.task_names)
        self._w = keras.Variable(np.ones(k, np.float32), trainable=True, name="gradnorm_weights")
        self._initial = keras.Variable(np.zeros(k, np.float32), trainable=False, name="gradnorm_initial_losses")
        self._optimizer = SmallAdam([self._w], learning_rate=self.learning_rate)
        self.track_used_weights(model)

    def begin(self, model):
        self.assign_weights(tf.convert_to_tensor(self._w))

    @property
    def initial_losses(self) -> dict:
        """dict task -> the loss L_t(0) that training rates are measured against (0: not seen yet)."""
        return dict(zip(self.tasks, np.asarray(self._initial.numpy(), float).tolist()))

    def step_gradients(self, model, tape, task_losses, total, extra, base):
        grads = base()
        # Global-batch values on every replica (replica means), as on one device.
        losses = replica_mean(stack_losses(model, task_losses))
        norms = []
        for t in model.task_names:
            # The unscaled task loss (recorded on the step tape): the replica and
            # loss-scale factors would multiply every norm alike.
            g = tape.gradient(task_losses[t], self.shared_variable)
            norms.append(tf.norm(replica_mean(tf.cast(g, tf.float32))) if g is not None else tf.constant(0.0))
        norms = tf.stack(norms)
        finite = all_finite(total, losses, norms, *[g for g in grads if g is not None])
        finite = replica_mean(tf.cast(finite, tf.float32)) >= 1.0
        run_once(self._update, model, finite, losses, norms)
        return grads

    def _update(self, model, finite, losses, norms):
        k = float(len(model.task_names))
        initial = tf.convert_to_tensor(self._initial)
        initial = tf.where(tf.logical_and(initial <= 0, losses > 0), losses, initial)
        w_grad, _, _ = gradnorm_weight_gradient(self._w, norms, losses, initial, self.alpha)

        def apply():
            self.remember_used_weights(model)
            self._initial.assign(initial)
            self._optimizer.apply([w_grad])
            self._w.assign(renormalize(self._w, k))
            self.assign_weights(tf.convert_to_tensor(self._w))
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
