"""Negative-transfer diagnostics: gradient conflict, task affinity, and a report.

Two Keras callbacks measure, at epoch ends and on a few sampled batches (not
at every step), how the tasks of a `mtlzoo.MultiTaskModel` interact through
their shared parameters:

- `GradientConflictMonitor`: each task's gradient norm on the shared
  parameters and the pairwise cosine similarity of the task gradients; how
  often (fraction of sampled steps with cosine < 0) and how strongly tasks
  conflict.
- `TaskAffinity`: lookahead inter-task affinity (Fifty et al., 2021),
  `Z_{i→j} = 1 − L_j(θ_s − η∇_{θ_s}L_i) / L_j(θ_s)`: does a step on task i's
  loss lower (Z > 0) or raise (Z < 0) task j's loss?

Both write their numbers into the epoch `logs` under keys that CSVLogger and
TensorBoard accept (`{task}_grad_norm`, `cos_{a}_{b}`, `conflict_{a}_{b}`,
`affinity_{i}_{j}`) and keep them as matrices. `diagnose(recipe, out_dir)`
trains a recipe briefly with both and saves a report folder (heatmaps, loss
weight trajectories, JSON, a plain-language reading); `run_diagnose(args)`
is the body of the `mtlzoo diagnose RECIPE` command.

```python
from mtlzoo.diagnostics import GradientConflictMonitor, TaskAffinity, diagnose
monitor = GradientConflictMonitor(data=(x_val, y_val), num_batches=4)
affinity = TaskAffinity(data=(x_val, y_val), interval=1)
model.fit(x, y, epochs=5, callbacks=[monitor, affinity])
monitor.summary()["conflict_fraction"], affinity.matrix
report = diagnose("tabular_demo", "diag_out", epochs=3, steps=20)
```

Conventions: the probes run the model with `training=True` by default
(BatchNorm in batch mode, dropout on, like the train step) and restore every
non-trainable variable afterwards, so a diagnostic never changes the model
(BatchNorm statistics, loss weights) or the optimizer. Gradients are those of
the unweighted task losses `L_t` (`weighted=True`: of `w_t·L_t`) with respect
to the shared trainable parameters (`model.variable_groups()[0]`). A task
with no label in a sampled batch has no gradient there and is left out of
that batch's cosines (and of the affinities involving it).
"""

from __future__ import annotations

import itertools
import math
import os

import keras
import numpy as np
import tensorflow as tf

from mtlzoo import fileio

__all__ = ["GradientConflictMonitor", "TaskAffinity", "diagnose", "run_diagnose", "synthetic_data"]


# ---------------------------------------------------------------- helpers
def _check_positive_int(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be an integer >= 1, got {value!r}.")
    return int(value)


class _Batches:
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


class _Probe:
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
    flat = tf.stack([tf.concat([tf.reshape(g, [-1]) for g in gs], 0) for gs in grads])
    gram = tf.matmul(flat, flat, transpose_b=True).numpy().astype(np.float64)
    norms = np.sqrt(np.maximum(np.diag(gram), 0.0))
    denom = np.outer(norms, norms)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(denom > 0, gram / np.where(denom > 0, denom, 1.0), np.nan)
    cos = np.clip(cos, -1.0, 1.0)
    return norms, cos


def _nanmean(values, axis=0):
    values = np.asarray(values, np.float64)
    count = np.sum(np.isfinite(values), axis=axis)
    total = np.nansum(values, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _pairs(tasks):
    return list(itertools.combinations(range(len(tasks)), 2))


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
    - `conflict_{a}_{b}`: fraction of sampled batches with a negative cosine.

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
        (conflicting gradients: negative cosine similarity).
    """

    def __init__(self, data, num_batches=4, every=1, batch_size=32, training=True, weighted=False):
        super().__init__()
        self.num_batches = _check_positive_int("GradientConflictMonitor", "num_batches", num_batches)
        self.every = _check_positive_int("GradientConflictMonitor", "every", every)
        self.batch_size = _check_positive_int("GradientConflictMonitor", "batch_size", batch_size)
        self.training = bool(training)
        self.weighted = bool(weighted)
        self._batches = _Batches(data, self.batch_size)
        self._probe = None
        self.tasks = []
        self.samples = []  # one dict per sampled batch: epoch, norms [K], cos [K, K]
        self.history = []  # one dict per measurement (epoch means)

    def set_model(self, model):
        super().set_model(model)
        if self._probe is None or self._probe.model is not model:
            self._probe = _Probe(model, self.training, self.weighted)
            self.tasks = list(model.task_names)

    def measure(self, epoch=None):
        """Samples `num_batches` batches now; returns the epoch summary dict (also kept in `history`)."""
        norms_all, cos_all = [], []
        for x, y, sw in self._batches.take(self.num_batches):
            losses, grads = self._probe.task_gradients(x, y, sw)
            norms, cos = gradient_statistics(grads)
            norms = np.where(losses > 0, norms, np.nan)
            self.samples.append({"epoch": epoch, "norms": norms, "cos": cos})
            norms_all.append(norms)
            cos_all.append(cos)
        summary = _conflict_summary(norms_all, cos_all)
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
        for i, j in _pairs(self.tasks):
            a, b = self.tasks[i], self.tasks[j]
            logs[f"cos_{a}_{b}"] = float(summary["cosine"][i, j])
            logs[f"conflict_{a}_{b}"] = float(summary["conflict_fraction"][i, j])

    def summary(self) -> dict:
        """Statistics over every sampled batch so far.

        Returns:
            dict with `tasks`, `grad_norm` [K], `cosine` [K, K] (mean),
            `conflict_fraction` [K, K] (fraction of batches with cosine < 0),
            `conflict_strength` [K, K] (mean of `max(0, −cos)`) and `samples`
            (numpy arrays; NaN where undefined).
        """
        out = _conflict_summary([s["norms"] for s in self.samples], [s["cos"] for s in self.samples])
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
    strength = _nanmean(np.where(valid, np.maximum(0.0, -np.nan_to_num(cos)), np.nan))
    return {
        "grad_norm": _nanmean(np.stack(norms)),
        "cosine": _nanmean(cos),
        "conflict_fraction": fraction,
        "conflict_strength": strength,
        "samples": int(len(norms)),
    }


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
        self.interval = _check_positive_int("TaskAffinity", "interval", interval)
        self.num_batches = _check_positive_int("TaskAffinity", "num_batches", num_batches)
        self.batch_size = _check_positive_int("TaskAffinity", "batch_size", batch_size)
        if learning_rate is not None:
            if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) \
                    or not math.isfinite(learning_rate) or learning_rate <= 0:
                raise ValueError(
                    f"TaskAffinity: learning_rate must be a number in (0, inf) or None, got {learning_rate!r}.")
            learning_rate = float(learning_rate)
        self.learning_rate = learning_rate
        self.training = bool(training)
        self._batches = _Batches(data, self.batch_size)
        self._probe = None
        self.tasks = []
        self.matrix = None
        self.history = []  # dicts: epoch, learning_rate, matrix

    def set_model(self, model):
        super().set_model(model)
        if self._probe is None or self._probe.model is not model:
            self._probe = _Probe(model, self.training)
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
        self.matrix = _nanmean(np.stack(mats))
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
        return _nanmean(np.stack([h["matrix"] for h in self.history]))


# ---------------------------------------------------------------- data for diagnose
def synthetic_data(model, num_examples, seed=0):
    """Learnable synthetic data for a vector-input model: (x, labels dict).

    A random teacher maps `x ~ N(0, I)` to a shared latent `h = tanh(xA)`; each
    task reads its own random projection of `h` (classification: arg-max
    class; multilabel: positive entries; regression: the projection plus a
    little noise), so the tasks share structure, as MTL data does.

    Args:
        model: a `MultiTaskModel` with a vector input (D,).
        num_examples: int. Number of examples.
        seed: int. Teacher and sampling seed.
    """
    shape = tuple(model.input_shape[1:])
    if len(shape) != 1:
        raise ValueError(f"synthetic_data makes vector inputs only; this model takes {shape}. Pass data= instead.")
    rng = np.random.default_rng(seed)
    d = shape[0]
    x = rng.normal(size=(num_examples, d)).astype("float32")
    latent = np.tanh(x @ rng.normal(size=(d, 8)) / math.sqrt(d))
    labels = {}
    for t, head in model.heads.items():
        kind = model.tasks[t]["kind"]
        if kind == "classification":
            logits = latent @ rng.normal(size=(8, head.num_classes)) * 3.0
            labels[t] = np.argmax(logits + 0.3 * rng.normal(size=logits.shape), axis=-1).astype("int32")
        elif kind == "multilabel":
            logits = latent @ rng.normal(size=(8, head.num_classes))
            labels[t] = (logits > 0).astype("float32")
        elif kind == "regression":
            out = latent @ rng.normal(size=(8, head.units))
            labels[t] = (out + 0.1 * rng.normal(size=out.shape)).astype("float32")
        else:
            raise ValueError(f"synthetic_data: task {t!r} of kind {kind!r} needs image data; pass data= instead.")
    return x, labels


def _recipe_data(recipe, model, steps, batch_size, probe_batches, seed):
    """(train dataset, probe data) for a recipe: its dataset if it names one, else synthetic data."""
    name = (recipe.data or {}).get("name")
    shape = tuple(recipe.input_shape)
    if name and len(shape) == 3:
        import mtlzoo.data

        options = {"tasks": list(recipe.tasks)}
        fractions = recipe.data.get("label_fractions")
        train = mtlzoo.data.load(name, split="train", batch_size=batch_size, image_size=shape[:2],
                                 num_examples=steps * batch_size, seed=seed, label_fractions=fractions,
                                 shuffle=True, **options)
        probe = mtlzoo.data.load(name, split="validation", batch_size=batch_size, image_size=shape[:2],
                                 num_examples=probe_batches * batch_size, seed=seed, shuffle=False, **options)
        return train.repeat(), probe
    x, y = synthetic_data(model, steps * batch_size + probe_batches * batch_size, seed)
    n = steps * batch_size
    train = tf.data.Dataset.from_tensor_slices((x[:n], {t: v[:n] for t, v in y.items()}))
    train = train.shuffle(n, seed=seed).batch(batch_size).repeat()
    probe = tf.data.Dataset.from_tensor_slices((x[n:], {t: v[n:] for t, v in y.items()})).batch(batch_size)
    return train, probe


class _WeightRecorder(keras.callbacks.Callback):
    """Records the model's loss weights after every training step."""

    def __init__(self):
        super().__init__()
        self.steps = []
        self.weights = {}
        self._step = 0

    def _record(self):
        for t, v in self.model.loss_weights.items():
            self.weights.setdefault(t, []).append(float(v.numpy()))
        self.steps.append(self._step)

    def on_train_begin(self, logs=None):
        self._record()

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        self._record()


# ---------------------------------------------------------------- report
def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _reading(tasks, conflict, affinity, weights):
    """Plain-language sentences from the measured numbers."""
    lines = []
    fraction, cosine, norms = conflict["conflict_fraction"], conflict["cosine"], conflict["grad_norm"]
    pairs = [(i, j) for i, j in _pairs(tasks) if np.isfinite(fraction[i, j])]
    pairs.sort(key=lambda p: (-fraction[p], cosine[p]))
    n = conflict["samples"]
    for i, j in pairs:
        f, c = fraction[i, j], cosine[i, j]
        verdict = "they mostly conflict" if f >= 0.5 else ("they often conflict" if f >= 0.25 else
                                                           ("they rarely conflict" if f > 0 else "they agree"))
        lines.append(
            f"{tasks[i]} conflicts with {tasks[j]} in {f:.0%} of sampled steps "
            f"(mean gradient cosine {c:+.2f} over {n} batches): {verdict}."
        )
    finite = [(norms[i], tasks[i]) for i in range(len(tasks)) if np.isfinite(norms[i]) and norms[i] > 0]
    if len(finite) >= 2:
        hi, lo = max(finite), min(finite)
        ratio = hi[0] / lo[0]
        line = f"{hi[1]} has the largest loss gradient on the shared parameters ({ratio:.1f}x that of {lo[1]})"
        last = {t: v[-1] for t, v in (weights or {}).items() if v}
        if hi[1] in last and lo[1] in last and last[lo[1]] > 0:
            weighted = ratio * last[hi[1]] / last[lo[1]]
            line += (f"; with the final loss weights ({last[hi[1]]:.3g} vs {last[lo[1]]:.3g}) "
                     f"its share of the update is {weighted:.1f}x")
            ratio = weighted
        line += " and dominates the shared update." if ratio >= 10 else "."
        lines.append(line)
    if affinity is not None:
        entries = [(affinity[i, j], tasks[i], tasks[j]) for i in range(len(tasks)) for j in range(len(tasks))
                   if i != j and np.isfinite(affinity[i, j])]
        entries.sort(reverse=True)
        for z, a, b in entries:
            if z > 0:
                lines.append(f"A step on {a} lowers {b}'s loss (affinity {z:+.2g}): {a} helps {b}.")
            elif z < 0:
                lines.append(f"A step on {a} raises {b}'s loss (affinity {z:+.2g}): {a} hurts {b}.")
            else:
                lines.append(f"A step on {a} leaves {b}'s loss unchanged (affinity 0).")
    if weights:
        first = {t: v[0] for t, v in weights.items() if v}
        last = {t: v[-1] for t, v in weights.items() if v}
        if first != last:
            moved = ", ".join(f"{t} {first[t]:.3g} -> {last[t]:.3g}" for t in tasks if t in first)
            lines.append(f"The loss weights moved during training: {moved}.")
        else:
            fixed = ", ".join(f"{t} {last[t]:.3g}" for t in tasks if t in last)
            lines.append(f"The loss weights stayed fixed: {fixed}.")
    return lines


def _heatmap(ax, matrix, labels, title, vmin, vmax, cmap, fmt, row_label=None, col_label=None, diagonal="hide"):
    """Annotated heatmap; the diagonal is left uncoloured ("hide": no text, "text": value in grey)."""
    matrix = np.asarray(matrix, np.float64)
    k = len(labels)
    mask = ~np.isfinite(matrix) | np.eye(k, dtype=bool)
    image = ax.imshow(np.ma.masked_array(np.nan_to_num(matrix), mask), vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_facecolor("#eeeeee")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticklabels(labels)
    ax.set_title(title)
    if row_label:
        ax.set_ylabel(row_label)
    if col_label:
        ax.set_xlabel(col_label)
    span = max(abs(vmin), abs(vmax)) or 1.0
    for i in range(k):
        for j in range(k):
            value = matrix[i, j]
            if i == j:
                if diagonal == "text" and np.isfinite(value):
                    ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=8, color="#777777")
                continue
            text = "n/a" if not np.isfinite(value) else fmt.format(value)
            strong = np.isfinite(value) and abs(value - (0.0 if vmin < 0 else vmin)) > 0.6 * span
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if strong else "black")
    return image


def _new_figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plot_conflict(path, tasks, conflict):
    fig = _new_figure(4.2 * 2 + 1, 4.2)
    ax1, ax2 = fig.subplots(1, 2)
    im1 = _heatmap(ax1, conflict["cosine"], tasks, "mean gradient cosine", -1.0, 1.0, "RdBu", "{:+.2f}")
    fig.colorbar(im1, ax=ax1, shrink=0.8)
    im2 = _heatmap(ax2, conflict["conflict_fraction"], tasks, "fraction of steps with cosine < 0", 0.0, 1.0,
                   "Reds", "{:.0%}")
    fig.colorbar(im2, ax=ax2, shrink=0.8)
    fileio.atomic_savefig(fig, path, dpi=100)


def _plot_affinity(path, tasks, matrix):
    fig = _new_figure(5.5, 4.6)
    ax = fig.subplots()
    shown = np.asarray(matrix, np.float64) if matrix is not None else np.full((len(tasks), len(tasks)), np.nan)
    off = shown[~np.eye(len(tasks), dtype=bool)]
    off = np.abs(off[np.isfinite(off)])
    limit = float(off.max()) if off.size and off.max() > 0 else 1.0
    image = _heatmap(ax, shown, tasks, "lookahead task affinity Z(i -> j)", -limit, limit, "RdBu", "{:+.2g}",
                     row_label="step on task i", col_label="loss of task j", diagonal="text")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fileio.atomic_savefig(fig, path, dpi=100)


def _plot_weights(path, steps, weights):
    fig = _new_figure(6.5, 3.8)
    ax = fig.subplots()
    for t, values in weights.items():
        ax.plot(steps[: len(values)], values, label=t)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss weight")
    ax.set_title("loss-weight trajectories")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fileio.atomic_savefig(fig, path, dpi=100)


def diagnose(recipe, out_dir, epochs=3, steps=20, *, overrides=None, batch_size=None, num_batches=4,
             affinity_interval=1, affinity_batches=1, affinity_learning_rate=None, data=None, probe_data=None,
             seed=0, verbose=0):
    """Trains a recipe briefly and writes a negative-transfer report folder.

    The recipe's model is built and compiled (with its aggregator, if any)
    and trained for `epochs` x `steps` steps with its loss weighting, a
    `GradientConflictMonitor` and a `TaskAffinity`. Data: `data` if given;
    else the recipe's dataset (`data: {name: synthetic_driving}`) for image
    recipes; else learnable synthetic data (`synthetic_data`) for vector
    inputs. The folder receives:

    - `conflict.png`: heatmaps of the mean gradient cosine and of the fraction
      of sampled steps with a negative cosine;
    - `affinity.png`: heatmap of the lookahead affinity `Z(i -> j)`;
    - `loss_weights.png`: the loss weights after every training step;
    - `report.json`: all numbers (NaN as null), the training history and the
      reading; `report.txt`: the reading, one sentence per line.

    Args:
        recipe: str, path, dict or `Recipe`.
        out_dir: str. Output folder (created).
        epochs: int >= 1. Defaults to 3.
        steps: int >= 1. Training steps per epoch. Defaults to 20.
        overrides: dict or None. Recipe overrides (as for `mtlzoo.build`).
        batch_size: int or None. None: the recipe's `training.batch_size`
            (default 16).
        num_batches: int >= 1. Batches sampled per epoch for gradient conflict.
        affinity_interval: int >= 1. Epochs between affinity measurements.
        affinity_batches: int >= 1. Batches per affinity measurement.
        affinity_learning_rate: float or None. Lookahead step (None: the
            optimizer's learning rate).
        data: training data (`tf.data.Dataset` of (x, y) repeating, or
            (x, y) arrays) or None.
        probe_data: data the diagnostics sample from; None: the recipe's
            validation split (or held-out synthetic data), or `data`.
        seed: int. Data seed. Defaults to 0.
        verbose: int. Keras `fit` verbosity. Defaults to 0.

    Returns:
        The report dict (also saved as `report.json`), with `files` listing the
        written paths.

    Example:
    ```python
    from mtlzoo.diagnostics import diagnose
    report = diagnose("driving_perception_lite", "diag", epochs=2, steps=10,
                      overrides={"backbone": "tiny", "input_shape": (64, 128, 3)})
    print("\\n".join(report["reading"]))
    ```
    """
    import mtlzoo.weighting
    from mtlzoo.recipe import get_recipe

    epochs = _check_positive_int("diagnose", "epochs", epochs)
    steps = _check_positive_int("diagnose", "steps", steps)
    rec = get_recipe(recipe, **(overrides or {}))
    batch_size = int(batch_size or (rec.training or {}).get("batch_size", 16))
    model = rec.build()
    if data is None:
        train, probe = _recipe_data(rec, model, steps, batch_size, num_batches, seed)
    else:
        train = data
        probe = probe_data if probe_data is not None else data
    if probe_data is not None:
        probe = probe_data
    if isinstance(train, (tuple, list)):
        x, y = train[0], train[1]
        fit_kwargs = {"x": x, "y": y, "batch_size": batch_size}
    else:
        fit_kwargs = {"x": train, "steps_per_epoch": steps, "shuffle": False}

    weighting = mtlzoo.weighting.get(rec.weighting, **rec.weighting_args)
    recorder = _WeightRecorder()
    monitor = GradientConflictMonitor(probe, num_batches=num_batches, batch_size=batch_size)
    affinity = TaskAffinity(probe, interval=affinity_interval, num_batches=affinity_batches,
                            learning_rate=affinity_learning_rate, batch_size=batch_size)
    callbacks = ([weighting] if weighting is not None else []) + [recorder, monitor, affinity]
    history = model.fit(epochs=epochs, callbacks=callbacks, verbose=verbose, **fit_kwargs)

    tasks = list(model.task_names)
    conflict = monitor.summary()
    z = affinity.mean_matrix()
    reading = _reading(tasks, conflict, z, recorder.weights)

    os.makedirs(out_dir, exist_ok=True)
    files = {
        "conflict": os.path.join(out_dir, "conflict.png"),
        "affinity": os.path.join(out_dir, "affinity.png"),
        "loss_weights": os.path.join(out_dir, "loss_weights.png"),
        "json": os.path.join(out_dir, "report.json"),
        "text": os.path.join(out_dir, "report.txt"),
    }
    _plot_conflict(files["conflict"], tasks, conflict)
    _plot_affinity(files["affinity"], tasks, z)
    _plot_weights(files["loss_weights"], recorder.steps, recorder.weights)
    report = {
        "recipe": rec.name,
        "tasks": tasks,
        "weighting": rec.weighting,
        "weighting_args": rec.weighting_args,
        "aggregator": rec.aggregator,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "batch_size": batch_size,
        "gradient": {
            "grad_norm": dict(zip(tasks, conflict["grad_norm"])),
            "cosine": conflict["cosine"],
            "conflict_fraction": conflict["conflict_fraction"],
            "conflict_strength": conflict["conflict_strength"],
            "sampled_batches": conflict["samples"],
            "per_epoch": [
                {"epoch": h["epoch"], "grad_norm": h["grad_norm"], "cosine": h["cosine"],
                 "conflict_fraction": h["conflict_fraction"]} for h in monitor.history
            ],
        },
        "affinity": {
            "matrix": z,
            "rows": "source task i (lookahead step on L_i)",
            "columns": "target task j (relative change of L_j, positive = helped)",
            "per_epoch": affinity.history,
        },
        "loss_weights": {"steps": recorder.steps, **recorder.weights},
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "reading": reading,
        "files": files,
    }
    fileio.atomic_write_json(files["json"], _json_ready(report), indent=2, allow_nan=False)
    fileio.atomic_write_text(files["text"], "\n".join(reading) + "\n")
    return report


def run_diagnose(args):
    """Body of `mtlzoo diagnose RECIPE [key=value ...] --out DIR --epochs N --steps N`.

    Args:
        args: an argparse Namespace with `recipe`, `overrides` (list of
            "key=value"), `out`, `epochs`, `steps`.

    Returns:
        0 (the process exit status).
    """
    from mtlzoo.recipe import parse_cli_overrides

    overrides = parse_cli_overrides(getattr(args, "overrides", None) or [])
    out = getattr(args, "out", None) or "diagnose_out"
    report = diagnose(args.recipe, out, epochs=int(getattr(args, "epochs", None) or 3),
                      steps=int(getattr(args, "steps", None) or 20), overrides=overrides)
    print(f"mtlzoo diagnose {report['recipe']}: tasks {', '.join(report['tasks'])}; "
          f"{report['epochs']} epochs x {report['steps_per_epoch']} steps, weighting {report['weighting']}")
    for line in report["reading"]:
        print("  " + line)
    print("report written to " + ", ".join(report["files"].values()))
    return 0
