"""`GradientConflictMonitor`: per-task gradient norms and pairwise cosines on the shared parameters."""

from __future__ import annotations

import keras
import numpy as np

from mtlzoo.diagnostics.probes import (GradientProbe, SampledBatches, check_positive_int, cosine_statistics,
                                      flatten_gradients, nan_mean, task_pairs)

__all__ = ["COHERENCE_LOW", "GradientConflictMonitor"]

#: A task whose batch-to-batch gradient coherence is below this is read as learning labels its inputs do not
#: determine (calibrated on `mtlzoo bench claims --claim intruder`, docs/when-mtl-helps.md).
COHERENCE_LOW = 0.05


# ---------------------------------------------------------------- gradient conflict
class GradientConflictMonitor(keras.callbacks.Callback):
    """Logs per-task gradient norms and pairwise gradient conflict at epoch ends.

    Every `every` epochs, on `num_batches` batches drawn from `data` (the
    draws continue through `data` from one measurement to the next), it
    computes each task's gradient `g_t` on the shared parameters (one
    `tf.function` with a persistent tape, one backward pass per task) and
    writes into the epoch logs:

    - `{task}_grad_norm`: mean `‖g_t‖` over the sampled batches;
    - `cos_{a}_{b}`: mean cosine similarity of `g_a` and `g_b` (a before b in
      the model's task order);
    - `conflict_{a}_{b}`: fraction of sampled batches with a negative cosine;
    - `{task}_grad_coherence` (when `num_batches >= 2`): mean cosine between
      the task's own gradients on different batches of one measurement. A task
      that the inputs determine has gradients that agree from batch to batch;
      one whose labels the inputs do not determine (an unrelated or pure-noise
      task, which can only be memorised) has a coherence near 0.

    Put it before `CSVLogger`/`TensorBoard` in `callbacks=[...]` so they see
    these keys. `summary()` aggregates every sampled batch seen so far.

    Args:
        data: a batched `tf.data.Dataset` of `(x, y[, sample_weight])`, or a
            tuple `(x, y[, sample_weight])` of arrays (labels: dict by task).
            Held-out data is best; training data works too.
        num_batches: int >= 1. Batches sampled per measurement. Defaults to 4.
        every: int >= 1. Measure every this many epochs. Defaults to 1.
        batch_size: int >= 1. Batch size when `data` is arrays. Defaults to 32.
        training: bool. Run the model in training mode (restoring BatchNorm
            statistics afterwards). Defaults to True.
        weighted: bool. Gradients of `w_t·L_t` instead of `L_t`. Defaults to False.

    Example:
    ```python
    from mtlzoo.diagnostics import GradientConflictMonitor
    monitor = GradientConflictMonitor(data=val_ds, num_batches=4)
    history = model.fit(train_ds, epochs=5, callbacks=[monitor])
    history.history["conflict_depth_scene"]     # fraction per epoch
    ```

    Reference:
        Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020
        (conflicting gradients: negative cosine similarity); Chatterjee,
        "Coherent Gradients: An Approach to Understanding Generalization in
        Gradient Descent-based Optimization", ICLR 2020 (coherence).
    """

    def __init__(self, data, num_batches=4, every=1, batch_size=32, training=True, weighted=False):
        super().__init__()
        self.num_batches = check_positive_int("GradientConflictMonitor", "num_batches", num_batches)
        self.every = check_positive_int("GradientConflictMonitor", "every", every)
        self.batch_size = check_positive_int("GradientConflictMonitor", "batch_size", batch_size)
        self.training = bool(training)
        self.weighted = bool(weighted)
        self._batches = SampledBatches(data, self.batch_size)
        self._probe = None
        self.tasks = []
        self.samples = []  # one dict per sampled batch: epoch, norms [K], cos [K, K]
        self.coherence = []  # one [K] array per measurement of >= 2 batches
        self.history = []  # one dict per measurement (epoch means)

    def set_model(self, model):
        super().set_model(model)
        if self._probe is None or self._probe.model is not model:
            self._probe = GradientProbe(model, self.training, self.weighted)
            self.tasks = list(model.task_names)

    def measure(self, epoch=None):
        """Samples `num_batches` batches now; returns the epoch summary dict (also kept in `history`)."""
        norms_all, cos_all, flats = [], [], []
        for x, y, sw in self._batches.take(self.num_batches):
            losses, grads = self._probe.task_gradients(x, y, sw)
            flat = flatten_gradients(grads)
            norms, cos = cosine_statistics(flat)
            norms = np.where(losses > 0, norms, np.nan)
            self.samples.append({"epoch": epoch, "norms": norms, "cos": cos})
            norms_all.append(norms)
            cos_all.append(cos)
            flats.append(np.where((losses > 0)[:, None], flat.numpy(), 0.0))
        summary = _conflict_summary(norms_all, cos_all)
        summary["coherence"] = _coherence(flats)
        if len(flats) >= 2:
            self.coherence.append(summary["coherence"])
        summary["epoch"] = epoch
        self.history.append(summary)
        return summary

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        summary = self.measure(epoch)
        if logs is None:
            return
        for i, t in enumerate(self.tasks):
            logs[f"{t}_grad_norm"] = float(summary["grad_norm"][i])
            if np.isfinite(summary["coherence"][i]):
                logs[f"{t}_grad_coherence"] = float(summary["coherence"][i])
        for i, j in task_pairs(self.tasks):
            a, b = self.tasks[i], self.tasks[j]
            logs[f"cos_{a}_{b}"] = float(summary["cosine"][i, j])
            logs[f"conflict_{a}_{b}"] = float(summary["conflict_fraction"][i, j])

    def summary(self) -> dict:
        """Statistics over every sampled batch so far.

        Returns:
            dict with `tasks`, `grad_norm` [K], `cosine` [K, K] (mean),
            `conflict_fraction` [K, K] (fraction of batches with cosine < 0),
            `conflict_strength` [K, K] (mean of `max(0, −cos)`), `coherence`
            [K] (mean over measurements of each task's batch-to-batch gradient
            cosine) and `samples` (numpy arrays; NaN where undefined).
        """
        out = _conflict_summary([s["norms"] for s in self.samples], [s["cos"] for s in self.samples])
        k = len(self.tasks)
        out["coherence"] = nan_mean(np.stack(self.coherence)) if self.coherence else np.full(k, np.nan)
        out["tasks"] = list(self.tasks)
        return out


def _conflict_summary(norms, cosines):
    k = len(norms[0]) if norms else 0
    if not norms:
        nan = np.full((k, k), np.nan)
        return {"grad_norm": np.full(k, np.nan), "cosine": nan, "conflict_fraction": nan,
                "conflict_strength": nan, "samples": 0}
    cos = np.stack(cosines)
    valid = np.isfinite(cos)
    count = valid.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(count > 0, np.sum(valid & (np.nan_to_num(cos) < 0), axis=0) / np.maximum(count, 1), np.nan)
    strength = nan_mean(np.where(valid, np.maximum(0.0, -np.nan_to_num(cos)), np.nan))
    return {
        "grad_norm": nan_mean(np.stack(norms)),
        "cosine": nan_mean(cos),
        "conflict_fraction": fraction,
        "conflict_strength": strength,
        "samples": int(len(norms)),
    }


def _coherence(flats):
    """[K]: per task, the mean cosine between its gradients on different batches (NaN with < 2 batches)."""
    k = len(flats[0]) if flats else 0
    out = np.full(k, np.nan)
    if len(flats) < 2:
        return out
    for t in range(k):
        _, cos = cosine_statistics(np.stack([f[t] for f in flats]))  # NaN rows and columns for zero gradients
        off = cos[~np.eye(len(flats), dtype=bool)]
        if np.isfinite(off).any():
            out[t] = np.nanmean(off)
    return out
