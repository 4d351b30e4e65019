"""STCH: smooth Tchebycheff scalarisation of the task losses."""

from __future__ import annotations

import numbers

import tensorflow as tf

from mtlzoo.registry import WEIGHTINGS
from mtlzoo.weighting.base import (
    LossWeighting, all_finite, check_float, check_task_names, replica_mean, run_once, stack_losses,
)


def stch_value(losses, mu, preference=None, ideal=None):
    """`mu * log Σ_t exp(λ_t (L_t − z_t) / mu)` over the tasks with a positive loss.

    Args:
        losses: tf tensor [K] of task losses (0: no label in the batch, left out).
        mu: float > 0. Smoothing parameter.
        preference: tf tensor [K] of λ_t, or None (all 1/K).
        ideal: tf tensor [K] of z_t, or None (all 0).

    Returns:
        A scalar tf tensor (0 when no task is present), differentiable in `losses`.
    """
    losses = tf.cast(losses, tf.float32)
    k = losses.shape[0]
    lam = tf.fill([k], 1.0 / k) if preference is None else tf.cast(preference, tf.float32)
    z = tf.zeros([k]) if ideal is None else tf.cast(ideal, tf.float32)
    present = losses > 0
    scaled = tf.where(present, lam * (losses - z) / mu, -float("inf"))
    value = mu * tf.reduce_logsumexp(scaled)
    return tf.where(tf.reduce_any(present), value, 0.0)


def stch_weights(losses, mu, preference=None, ideal=None):
    """The gradient of `stch_value` with respect to the losses: `λ_t · softmax_t(λ (L − z) / mu)`."""
    losses = tf.cast(losses, tf.float32)
    k = losses.shape[0]
    lam = tf.fill([k], 1.0 / k) if preference is None else tf.cast(preference, tf.float32)
    z = tf.zeros([k]) if ideal is None else tf.cast(ideal, tf.float32)
    present = losses > 0
    scaled = tf.where(present, lam * (losses - z) / mu, -float("inf"))
    p = tf.where(present, tf.nn.softmax(scaled), 0.0)
    return tf.where(tf.reduce_any(present), lam * p, 0.0)


def _check_vector(owner, name, value, positive):
    """A dict task -> float (or None); raises ValueError naming the bad entry."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{owner}: {name} must be a dict task -> float or None, got {value!r}.")
    out = {}
    for task, v in value.items():
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and float(v) == float(v)
        ok = ok and abs(float(v)) != float("inf") and (not positive or float(v) > 0)
        if not ok:
            need = "a finite number > 0" if positive else "a finite number"
            raise ValueError(f"{owner}: {name}[{task!r}] must be {need}, got {v!r}.")
        out[str(task)] = float(v)
    return out


@WEIGHTINGS.register("stch")
class STCH(LossWeighting):
    """STCH: minimise the smooth Tchebycheff scalarisation of the task losses.

    The training objective replaces `Σ_t w_t L_t` (through the model's
    `combine` hook) by

        g_mu(L) = mu · log Σ_t exp(λ_t (L_t − z_t) / mu),

    a smooth upper bound of the Tchebycheff scalarisation max_t λ_t (L_t − z_t)
    (between it and it + mu log K): mu -> 0 recovers Tchebycheff (the worst
    weighted task drives the update), large mu gives the weighted mean plus
    the constant mu log K. Its gradient is `Σ_t λ_t p_t ∇L_t` with
    p = softmax(λ (L − z) / mu); these effective weights `λ_t p_t` are written
    into `model.loss_weights` and logged as `{task}_weight`. Tasks with no
    label in a batch (loss 0) are left out of that batch's softmax. Under a
    distribution strategy the weights come from the replica-mean losses and
    the logged loss is g_mu at the local losses.

    Differences from the authors' MTL code: it uses λ_t = 1 (and multiplies
    the value by K), trains the first `warmup_epoch` (4) epochs on Σ log L_t,
    and then applies g_mu to log(L_t / n_t), with n_t the mean loss of the
    last warm-up epoch (a nadir estimate) and z = 0. None of this schedule is
    built in here; `preference` and `ideal_point` give the paper's general
    form (e.g. λ_t = 1 / n_t normalises the loss scales).

    Args:
        mu: float > 0. Smoothing parameter. Defaults to 1.0 (LibMTL's
            default for the authors' MTL code).
        preference: dict task -> λ_t > 0, or None for λ_t = 1/K (the
            paper's preference on the simplex). Defaults to None.
        ideal_point: dict task -> z_t, or None for z_t = 0 (the losses'
            lower bound). Defaults to None.

    Example:
    ```python
    import mtlzoo.weighting
    cb = mtlzoo.weighting.get("stch", mu=1.0)
    model.fit(x, y, epochs=10, callbacks=[cb])
    ```

    Reference:
        Lin, Zhang, Yang, Liu, Wang, Zhang, "Smooth Tchebycheff
        Scalarization for Multi-Objective Optimization", ICML 2024.
        https://arxiv.org/abs/2402.19078
    """

    name = "stch"
    uses_combine = True

    def __init__(self, mu=1.0, preference=None, ideal_point=None):
        super().__init__()
        self.mu = check_float("STCH", "mu", mu, low=0.0, low_open=True)
        self.preference = _check_vector("STCH", "preference", preference, positive=True)
        self.ideal_point = _check_vector("STCH", "ideal_point", ideal_point, positive=False)

    def build(self, model):
        k = len(model.task_names)
        for name in ("preference", "ideal_point"):
            given = getattr(self, name)
            if given is not None:
                check_task_names("STCH", given, model)
        lam = self.preference or {}
        z = self.ideal_point or {}
        self._lam = tf.constant([lam.get(t, 1.0 / k) for t in model.task_names], tf.float32)
        self._z = tf.constant([z.get(t, 0.0) for t in model.task_names], tf.float32)

    def begin(self, model):
        self.assign_weights(self._lam)

    def step_combine(self, model, task_losses):
        losses = stack_losses(model, task_losses)
        global_losses = replica_mean(tf.stop_gradient(losses))
        w = tf.stop_gradient(stch_weights(global_losses, self.mu, self._lam, self._z))
        linear = tf.reduce_sum(w * losses)
        # Value g_mu(L), gradient Σ_t w_t ∇L_t (exact on one device).
        value = stch_value(tf.stop_gradient(losses), self.mu, self._lam, self._z)
        run_once(self._assign, all_finite(global_losses), w)
        return linear + tf.stop_gradient(value - linear)

    def _assign(self, finite, w):
        def apply():
            self.assign_weights(w)
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
