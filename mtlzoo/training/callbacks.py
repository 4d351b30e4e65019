"""The callbacks `train` attaches: non-finite stop, loss-weight logging, step timing, atomic checkpoints."""

from __future__ import annotations

import os
import time

import keras
import numpy as np

from mtlzoo import fileio

__all__ = ["AtomicModelCheckpoint", "LossWeightLogger", "StepTimer", "StopOnNonFinite"]


# ---------------------------------------------------------------------------- callbacks
class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training cleanly when non-finite steps persist.

    `mtlzoo.MultiTaskModel` already skips a step whose loss or gradients are
    NaN/inf (no weight changes) and counts those steps in the log key
    `nonfinite_steps` (a running count, reset every epoch). A few skipped steps
    are harmless; persistent ones mean training diverged or the data is
    broken. This callback sets `model.stop_training` (Keras then finishes the
    current step, runs `on_epoch_end` and `on_train_end`, so checkpoints and
    logs are written normally) when either

    - `patience` consecutive steps were non-finite, or
    - every step of an epoch was non-finite (checked at the epoch's end, for
      epochs shorter than `patience`).

    The reason is kept in `stopped_reason` (and `stopped_epoch`) and written
    into the epoch logs as `stopped_nonfinite = 1`.

    Skipped steps change nothing, but the finite step just before them may be
    the one that broke the model (a learning rate of 1e12 gives finite but
    enormous weights, after which every forward pass overflows). So with
    `restore=True` the callback keeps a copy of every variable (weights,
    BatchNorm statistics, optimizer and weighting state) from the start of the
    last epoch whose first step was finite — a state known to give finite
    losses — and puts it back when it stops training, before the checkpoints
    of that epoch are written.

    Args:
        patience: int. Consecutive non-finite steps that stop training.
            Defaults to 20.
        verbose: bool. Print a line when stopping. Defaults to True.
        restore: bool. Return the model to the last state known to be
            finite when stopping. Defaults to True.

    Example:
    ```python
    from mtlzoo.training import StopOnNonFinite
    model.fit(dataset, epochs=10, callbacks=[StopOnNonFinite(patience=10)])
    ```
    """

    def __init__(self, patience=20, verbose=True, restore=True):
        super().__init__()
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"StopOnNonFinite: patience must be an int >= 1, got {patience!r}.")
        self.patience = patience
        self.verbose = bool(verbose)
        self.restore = bool(restore)
        self.stopped_reason = None
        self.stopped_epoch = None
        self.restored_epoch = None
        self._reset_epoch()
        self.consecutive = 0
        self._pending = self._good = None

    def _variables(self):
        m = self.model
        out = list(m.variables) + list(getattr(m.optimizer, "variables", []) or [])
        if hasattr(m, "step_state_variables"):
            out += list(m.step_state_variables())
        seen, unique = set(), []
        for v in out:
            if id(v) not in seen:
                seen.add(id(v))
                unique.append(v)
        return unique

    def _snapshot(self, epoch):
        variables = self._variables()
        return epoch, variables, [np.array(v.numpy(), copy=True) for v in variables]

    def _restore_good(self):
        if self._good is None:
            return None
        epoch, variables, values = self._good
        for v, value in zip(variables, values):
            v.assign(value)
        self.restored_epoch = epoch
        return epoch

    def _reset_epoch(self):
        self._last_count = 0.0
        self._last_batch = -1
        self._steps = 0

    def on_train_begin(self, logs=None):
        self.stopped_reason = None
        self.stopped_epoch = None
        self.restored_epoch = None
        self.consecutive = 0
        self._pending = self._good = None

    def on_epoch_begin(self, epoch, logs=None):
        self._reset_epoch()
        self._epoch = epoch
        if self.restore:
            self._pending = self._snapshot(epoch)

    def on_train_batch_end(self, batch, logs=None):
        if not logs or "nonfinite_steps" not in logs:
            return
        count = float(np.asarray(logs["nonfinite_steps"]))
        steps = max(1, batch - self._last_batch)  # > 1 with steps_per_execution
        self._last_batch = batch
        self._steps += steps
        new = count - self._last_count
        self._last_count = count
        if self._steps == steps and new == 0 and self._pending is not None:
            # The epoch's first step was finite: its starting state is a good one.
            self._good, self._pending = self._pending, None
        if new >= steps:
            self.consecutive += steps
        elif new > 0:
            self.consecutive = int(new)  # the last ones of the group, at best a guess
        else:
            self.consecutive = 0
        if self.consecutive >= self.patience and self.stopped_reason is None:
            self._stop(f"{self.consecutive} consecutive training steps had a non-finite loss or gradient")

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        count = float(np.asarray(logs.get("nonfinite_steps", self._last_count)))
        if self.stopped_reason is None and self._steps > 0 and count >= self._steps:
            self._stop(f"every step of epoch {epoch} ({self._steps}) had a non-finite loss or gradient")
        if self.stopped_reason is not None:
            logs["stopped_nonfinite"] = 1.0

    def _stop(self, why):
        self.stopped_epoch = getattr(self, "_epoch", None)
        restored = self._restore_good() if self.restore else None
        if restored is not None:
            state = (f"the model was returned to its state at the start of epoch {restored}, the last one known "
                     "to give finite losses (skipped steps change nothing, but the finite steps before them may "
                     "have diverged)")
        else:
            state = "the skipped steps changed nothing, so the model holds the state after the last finite step"
        self.stopped_reason = (
            f"{why}; training stopped and {state}. Check the data for NaN/inf, lower the learning rate "
            "or add gradient clipping."
        )
        self.model.stop_training = True
        if self.verbose:
            print(f"\nStopOnNonFinite: {self.stopped_reason}")

    def get_config(self):
        return {"patience": self.patience, "verbose": self.verbose, "restore": self.restore}


class LossWeightLogger(keras.callbacks.Callback):
    """Writes each task's current loss weight into the epoch logs as `{task}_weight`.

    Weighting callbacks (`mtlzoo.weighting`) write these keys themselves; this
    callback fills in the keys they did not write, so a run with fixed weights
    logs them too. Place it after the weighting callback and before
    `CSVLogger`/`TensorBoard`.

    Example:
    ```python
    from mtlzoo.training import LossWeightLogger
    model.fit(dataset, callbacks=[LossWeightLogger(), keras.callbacks.CSVLogger("h.csv")])
    ```
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not hasattr(self.model, "get_loss_weights"):
            return
        for task, weight in self.model.get_loss_weights().items():
            logs.setdefault(f"{task}_weight", float(weight))


class StepTimer(keras.callbacks.Callback):
    """Measures seconds per training step and per epoch.

    The first `skip` steps of a `fit` call (tracing and compilation) are left
    out of `step_seconds`.

    Args:
        skip: int. Leading steps not timed. Defaults to 1.

    Example:
    ```python
    from mtlzoo.training import StepTimer
    timer = StepTimer()
    model.fit(dataset, epochs=2, callbacks=[timer])
    timer.summary()["train_step_s"]
    ```
    """

    def __init__(self, skip=1):
        super().__init__()
        self.skip = int(skip)
        self.step_seconds = []
        self.epoch_seconds = []
        self._seen = 0
        self._t_batch = None
        self._t_epoch = None
        self._t_train = None
        self.total_seconds = 0.0

    def on_train_begin(self, logs=None):
        self._t_train = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._t_epoch = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self._t_batch = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._t_batch is None:
            return
        if logs:  # the step's outputs are ready once read
            float(np.asarray(next(iter(logs.values()))))
        self._seen += 1
        if self._seen > self.skip:
            self.step_seconds.append(time.perf_counter() - self._t_batch)

    def on_epoch_end(self, epoch, logs=None):
        if self._t_epoch is not None:
            self.epoch_seconds.append(time.perf_counter() - self._t_epoch)

    def on_train_end(self, logs=None):
        if self._t_train is not None:
            self.total_seconds = time.perf_counter() - self._t_train

    def summary(self):
        """dict with `train_step_s` (median), `epoch_s` (list) and `total_s`."""
        step = float(np.median(self.step_seconds)) if self.step_seconds else float("nan")
        return {"train_step_s": step, "epoch_s": list(self.epoch_seconds), "total_s": self.total_seconds,
                "timed_steps": len(self.step_seconds)}


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`keras.callbacks.ModelCheckpoint` that never leaves a truncated checkpoint.

    Same arguments and behaviour (`monitor`, `mode`, `save_best_only`,
    `initial_value_threshold`, `save_freq`, `save_weights_only`), but each
    save goes to a temporary file in the checkpoint's folder, is fsynced and
    renamed over the old file (`mtlzoo.fileio.atomic_save_model`): a process
    killed mid-save leaves the previous checkpoint intact.

    Example:
    ```python
    from mtlzoo.training import AtomicModelCheckpoint
    model.fit(dataset, epochs=5, callbacks=[AtomicModelCheckpoint("runs/a/best.keras", save_best_only=True)])
    ```
    """

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, batch, logs, filepath):
            return
        folder = os.path.dirname(filepath)
        if folder:
            os.makedirs(folder, exist_ok=True)
        if self.save_weights_only:
            fileio.atomic_save_weights(self.model, filepath, overwrite=True)
        else:
            fileio.atomic_save_model(self.model, filepath, overwrite=True)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: finished saving model to {filepath}")
