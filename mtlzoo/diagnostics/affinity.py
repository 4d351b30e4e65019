"""`TaskAffinity`: lookahead inter-task affinity (Fifty et al., 2021)."""

from __future__ import annotations

import math

import keras
import numpy as np

from mtlzoo.diagnostics.probes import GradientProbe, SampledBatches, check_positive_int, nan_mean

__all__ = ["TaskAffinity"]


# ---------------------------------------------------------------- task affinity
class TaskAffinity(keras.callbacks.Callback):
    """Lookahead inter-task affinity (TAG) measured at a chosen epoch interval.

    For each sampled batch and each source task i, the shared parameters take
    a plain SGD lookahead step on task i's loss, `θ_s' = θ_s − η∇_{θ_s}L_i`
    (task-specific parameters unchanged), and every task's loss is measured
    again on the same batch:

        Z_{i→j} = 1 − L_j(θ_s', θ_j) / L_j(θ_s, θ_j)

    Z > 0: a step on i lowers j's loss (i helps j); Z < 0: it raises it. The
    parameters are restored exactly afterwards. Every `interval` epochs the
    mean over `num_batches` batches is logged as `affinity_{i}_{j}` (i ≠ j)
    and kept in `matrix` (latest) and `history`; `mean_matrix()` averages
    all measurements. Cost per batch: one backward pass per task and K + 1
    forward passes.

    Args:
        data: a batched `tf.data.Dataset` of `(x, y[, sample_weight])`, or a
            tuple of arrays, as for `GradientConflictMonitor`.
        interval: int >= 1. Measure every this many epochs. Defaults to 1.
        num_batches: int >= 1. Batches averaged per measurement. Defaults to 1.
        learning_rate: float > 0 or None. Lookahead step η. None: the model
            optimizer's current learning rate (the paper's choice for SGD;
            with Adam, whose steps are not `η·∇L`, the values are small and
            their signs and ranking are what matters). Defaults to None.
        batch_size: int >= 1. Batch size when `data` is arrays. Defaults to 32.
        training: bool. Run the model in training mode (restoring BatchNorm
            statistics afterwards). Defaults to True.

    Example:
    ```python
    from mtlzoo.diagnostics import TaskAffinity
    affinity = TaskAffinity(data=val_ds, interval=2, learning_rate=0.01)
    model.fit(train_ds, epochs=6, callbacks=[affinity])
    affinity.matrix          # [K, K], row i -> column j
    ```

    Reference:
        Fifty, Amid, Zhao, Yu, Anil, Finn, "Efficiently Identifying Task
        Groupings for Multi-Task Learning", NeurIPS 2021 (Eq. 1-2).
    """

    def __init__(self, data, interval=1, num_batches=1, learning_rate=None, batch_size=32, training=True):
        super().__init__()
        self.interval = check_positive_int("TaskAffinity", "interval", interval)
        self.num_batches = check_positive_int("TaskAffinity", "num_batches", num_batches)
        self.batch_size = check_positive_int("TaskAffinity", "batch_size", batch_size)
        if learning_rate is not None:
            if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) \
                    or not math.isfinite(learning_rate) or learning_rate <= 0:
                raise ValueError(
                    f"TaskAffinity: learning_rate must be a number in (0, inf) or None, got {learning_rate!r}.")
            learning_rate = float(learning_rate)
        self.learning_rate = learning_rate
        self.training = bool(training)
        self._batches = SampledBatches(data, self.batch_size)
        self._probe = None
        self.tasks = []
        self.matrix = None
        self.history = []  # dicts: epoch, learning_rate, matrix

    def set_model(self, model):
        super().set_model(model)
        if self._probe is None or self._probe.model is not model:
            self._probe = GradientProbe(model, self.training)
            self.tasks = list(model.task_names)

    def _step_size(self):
        if self.learning_rate is not None:
            return self.learning_rate
        from mtlzoo.weighting.base import optimizer_learning_rate

        return optimizer_learning_rate(self._probe.model, default=1e-3)

    def affinity_on_batch(self, x, y, sw=None, learning_rate=None):
        """The [K, K] lookahead affinity matrix on one batch (NaN where a loss is 0 or undefined)."""
        probe = self._probe
        eta = self._step_size() if learning_rate is None else float(learning_rate)
        base, grads = probe.task_gradients(x, y, sw)
        saved = [v.numpy() for v in probe.shared]
        k = len(self.tasks)
        z = np.full((k, k), np.nan)
        try:
            for i in range(k):
                if not base[i] > 0:
                    continue
                for v, g, value in zip(probe.shared, grads[i], saved):
                    v.assign(value - eta * g.numpy())
                after = probe.losses(x, y, sw)
                with np.errstate(divide="ignore", invalid="ignore"):
                    z[i] = np.where(base > 0, 1.0 - after / np.where(base > 0, base, 1.0), np.nan)
        finally:
            for v, value in zip(probe.shared, saved):
                v.assign(value)
        return z

    def measure(self, epoch=None):
        """Measures now on `num_batches` batches; returns the mean matrix (also kept)."""
        eta = self._step_size()
        mats = [self.affinity_on_batch(x, y, sw, eta) for x, y, sw in self._batches.take(self.num_batches)]
        self.matrix = nan_mean(np.stack(mats))
        self.history.append({"epoch": epoch, "learning_rate": eta, "matrix": self.matrix})
        return self.matrix

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.interval:
            return
        z = self.measure(epoch)
        if logs is None:
            return
        for i, a in enumerate(self.tasks):
            for j, b in enumerate(self.tasks):
                if i != j:
                    logs[f"affinity_{a}_{b}"] = float(z[i, j])

    def mean_matrix(self):
        """Mean affinity matrix over all measurements so far (None before the first)."""
        if not self.history:
            return None
        return nan_mean(np.stack([h["matrix"] for h in self.history]))
