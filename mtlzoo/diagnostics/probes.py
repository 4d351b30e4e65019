"""What both diagnostics share: sampled batches, the gradient probe and small statistics."""

from __future__ import annotations

import itertools

import keras
import numpy as np
import tensorflow as tf

__all__ = ["check_positive_int", "cosine_statistics", "flatten_gradients", "gradient_statistics", "GradientProbe", "nan_mean", "SampledBatches", "task_pairs"]


# ---------------------------------------------------------------- helpers
def check_positive_int(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be an integer >= 1, got {value!r}.")
    return int(value)


class SampledBatches:
    """Cycles through a dataset (or in-memory arrays), handing out batches across epochs."""

    def __init__(self, data, batch_size):
        if isinstance(data, tf.data.Dataset):
            ds = data
        elif isinstance(data, (tuple, list)) and len(data) in (2, 3):
            ds = tf.data.Dataset.from_tensor_slices(tuple(data)).batch(batch_size)
        else:
            raise TypeError(
                "data must be a batched tf.data.Dataset of (x, y[, sample_weight]) or a tuple (x, y[, sample_weight]) "
                f"of arrays; got {type(data).__name__}."
            )
        self._iterator = iter(ds.repeat())

    def take(self, n):
        return [keras.utils.unpack_x_y_sample_weight(next(self._iterator)) for _ in range(n)]


class GradientProbe:
    """Per-task gradients on the shared parameters and forward losses, without side effects."""

    def __init__(self, model, training=True, weighted=False):
        self.model = model
        self.training = bool(training)
        self.weighted = bool(weighted)
        self.shared, _ = model.variable_groups()
        if not self.shared:
            raise ValueError("The model has no shared trainable parameters: there is no negative transfer to measure.")
        self._grads_fn = tf.function(self._grads, reduce_retracing=True)
        self._losses_fn = tf.function(self._losses, reduce_retracing=True)

    def _task_losses(self, x, y, sw):
        """The per-task (optionally weighted) losses as a list of scalars, in task order."""
        model = self.model
        y_pred = model(x, training=self.training)
        losses = model.compute_task_losses(y, y_pred, sw)
        out = [tf.cast(losses[t], tf.float32) for t in model.task_names]
        if self.weighted:
            out = [v * tf.cast(model.loss_weights[t], tf.float32) for v, t in zip(out, model.task_names)]
        return out

    def _grads(self, x, y, sw):
        with tf.GradientTape(persistent=True) as tape:
            losses = self._task_losses(x, y, sw)
        vec = tf.stack(losses)
        out = []
        for i in range(len(self.model.task_names)):
            g = tape.gradient(losses[i], self.shared)
            out.append([tf.zeros_like(v) if gi is None else tf.cast(gi, tf.float32) for gi, v in zip(g, self.shared)])
        del tape
        return vec, out

    def _losses(self, x, y, sw):
        return tf.stack(self._task_losses(x, y, sw))

    def _guarded(self, fn, *args):
        state = [(v, v.numpy()) for v in self.model.non_trainable_variables]
        try:
            return fn(*args)
        finally:
            for v, value in state:
                v.assign(value)

    def task_gradients(self, x, y, sw=None):
        """(losses [K] numpy, per-task list of gradient tensors on the shared variables)."""
        vec, grads = self._guarded(self._grads_fn, x, y, sw)
        return vec.numpy().astype(np.float64), grads

    def losses(self, x, y, sw=None):
        return self._guarded(self._losses_fn, x, y, sw).numpy().astype(np.float64)


def gradient_statistics(grads):
    """Norms [K] and pairwise cosines [K, K] (NaN where a gradient is zero) of per-task gradients.

    Args:
        grads: per-task lists of gradient tensors (same variables for every task).

    Returns:
        (norms, cosines) as float64 numpy arrays.
    """
    return cosine_statistics(flatten_gradients(grads))


def flatten_gradients(grads):
    """[K, P] tensor: each task's gradient tensors concatenated into one vector."""
    return tf.stack([tf.concat([tf.reshape(g, [-1]) for g in gs], 0) for gs in grads])


def cosine_statistics(flat):
    """Norms [K] and pairwise cosines [K, K] (NaN where a row is zero) of the rows of a [K, P] tensor."""
    gram = tf.matmul(flat, flat, transpose_b=True).numpy().astype(np.float64)
    norms = np.sqrt(np.maximum(np.diag(gram), 0.0))
    denom = np.outer(norms, norms)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(denom > 0, gram / np.where(denom > 0, denom, 1.0), np.nan)
    cos = np.clip(cos, -1.0, 1.0)
    return norms, cos


def nan_mean(values, axis=0):
    values = np.asarray(values, np.float64)
    count = np.sum(np.isfinite(values), axis=axis)
    total = np.nansum(values, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def task_pairs(tasks):
    return list(itertools.combinations(range(len(tasks)), 2))
