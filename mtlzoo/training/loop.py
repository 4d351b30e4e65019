"""Training a recipe end to end: data, checks, callbacks, checkpoints and resumption.

`train(recipe)` loads the recipe's dataset (or takes yours), checks it against
the recipe before any model is built, builds and compiles the model (inside a
`tf.distribute` strategy scope when one is given), attaches the recipe's
loss-weighting callback and runs Keras `fit` with its progress bar. With an
`out_dir` it also writes:

- `out_dir/logs/`: TensorBoard events (`train/` and `validation/`): every
  per-task loss and metric, `loss`, `nonfinite_steps` and the loss weight of
  each task (`{task}_weight`: written by the weighting callback, or the fixed
  weights when there is none);
- `out_dir/history.csv`: the same values, one row per epoch (`HistoryCSV`);
- `out_dir/best.keras` (lowest `val_loss`, or `loss` without validation data)
  and `out_dir/last.keras` (after every epoch);
- `out_dir/backup/`: a `keras.callbacks.BackupAndRestore` state written at
  the end of every epoch. If training stops (crash, Ctrl-C, killed job),
  running the same call again resumes at the start of the epoch that was
  interrupted and trains to the same total number of epochs; the backup is
  deleted when training finishes;
- `out_dir/recipe.yaml` (the resolved recipe) and `out_dir/train_summary.json`
  (epochs run, step time, final logs, why training stopped).

Nothing is lost if the process is killed at any moment: every file is
written to a temporary name in `out_dir`, fsynced and renamed over the old
one (`mtlzoo.fileio`), so a checkpoint is always the complete old or the
complete new file. A finished run is never replaced silently: training the
same recipe with more epochs into its folder continues it (from `last.keras`
and `history.csv`), a different recipe is refused (`RunFolderError`, naming
the changed keys) unless `overwrite=True`. While a call trains, the folder
holds the lock file `.mtlzoo.lock` (pid and host): a second process is
refused; a lock left by a killed process is taken over.

Runs are repeatable: the recipe's `seed` (or `seed=`) seeds
`keras.utils.set_random_seed` (weights, dropout) and the data pipeline
(scene selection, shuffling, flips), so two runs with one seed on one machine
give identical losses. A resumed run restarts the data order of the
interrupted epoch, so it matches an uninterrupted run in epochs and files but
not bit for bit.

Example:
```python
import mtlzoo
result = mtlzoo.train("driving_perception_lite", epochs=2, out_dir="runs/lite",
                      **{"data.num_examples": 256})
result.history["segmentation_loss"]       # one value per epoch
model = mtlzoo.load("runs/lite/best.keras")
```
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import math
import os
import shutil
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from mtlzoo import fileio
from mtlzoo.recipe import Recipe, RecipeError, get_recipe
from mtlzoo.registry import suggestion

__all__ = [
    "AtomicModelCheckpoint",
    "DataCheckError",
    "HistoryCSV",
    "LossWeightLogger",
    "RunBackup",
    "RunFolderError",
    "StepTimer",
    "StopOnNonFinite",
    "TrainResult",
    "check_dataset",
    "clear_run",
    "load_split",
    "read_history_rows",
    "train",
    "write_history_rows",
]

# Keys of `recipe.training` understood by `train`.
TRAINING_KEYS = {
    "epochs": "number of epochs (int >= 1)",
    "batch_size": "examples per batch (int >= 1)",
    "steps_per_epoch": "batches per epoch; the data is repeated (int >= 1 or null)",
    "validation_steps": "batches per validation pass (int >= 1 or null)",
    "validation_freq": "validate every N epochs (int >= 1)",
    "monitor": "log value selecting best.keras (default val_loss, or loss without validation)",
    "nonfinite_patience": "consecutive non-finite steps before stopping (int >= 1, default 20)",
    "check_batches": "batches inspected for NaN/inf and out-of-range labels before training (int >= 0, default 1; "
                     "arrays passed as data are checked whole)",
}
# Keys of `recipe.data` used by `train` itself; every other key is passed to the reader.
DATA_KEYS = ("name", "data_dir", "train_split", "validation_split", "num_examples", "num_validation_examples")
# Keys of a batch's label dict that are evaluation extras, never model targets.
EVALUATION_KEYS = ("boxes", "box_classes", "num_boxes")

_MISSING_VALUE_HINT = {
    "segmentation": "-1 for unlabelled pixels",
    "classification": "-1 for a missing class id",
    "depth": "0 (or any value <= 0) for invalid pixels",
    "detection": "an all -1 CenterNet target for a missing image",
    "multilabel": "-1 for unknown tags",
    "regression": "the head's ignore_value, or a zero sample_weight",
}


class DataCheckError(ValueError):
    """The data does not fit the recipe; the message names the problem and the fix."""


class RunFolderError(DataCheckError):
    """The output folder cannot take this run; the message names the problem and the fix.

    Raised when `out_dir` holds a finished run of a different recipe (or more
    epochs than asked for), an interrupted run of a different recipe, a
    corrupt resume backup, or is locked by another live process. A subclass of
    `DataCheckError`, so code catching that keeps working.
    """


# ---------------------------------------------------------------------------- results
@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        model: the trained `mtlzoo.MultiTaskModel` (weights of the last epoch).
        history: dict log key -> list with one value per epoch, over the whole
            run: when the run was resumed, the epochs before the interruption
            are read back from `history.csv`.
        out_dir: str or None. Where the files were written.
        best_path: str or None. `out_dir/best.keras`.
        last_path: str or None. `out_dir/last.keras`.
        initial_epoch: int. First epoch trained by this call (> 0 after a resume).
        epochs: int. Total number of epochs the run is set to.
        stopped_reason: str or None. Why training stopped before `epochs`
            (e.g. persistent non-finite steps), None when it completed.
        timing: dict. `train_step_s` (median seconds per training step,
            compilation excluded), `epoch_s` (seconds per epoch), `total_s`.
        recipe: the resolved `Recipe`.
    """

    model: keras.Model
    history: dict
    out_dir: str | None = None
    best_path: str | None = None
    last_path: str | None = None
    initial_epoch: int = 0
    epochs: int = 0
    stopped_reason: str | None = None
    timing: dict = dataclasses.field(default_factory=dict)
    recipe: Recipe | None = None


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


def _csv_value(value):
    if isinstance(value, str):
        return value
    array = np.asarray(value)
    if array.ndim == 0:
        return repr(float(array)) if array.dtype.kind in "fiub" else str(value)
    return '"[' + ", ".join(map(str, array.ravel().tolist())) + ']"'


def read_history_rows(path):
    """The rows of a `history.csv` as dicts of strings, one per epoch, epochs 0, 1, ... in order.

    Rows that cannot be read (a truncated last line of a file written by an
    older version, a non-integer epoch) and everything after them are left
    out; a repeated epoch keeps its last row.

    Example:
    ```python
    from mtlzoo.training import read_history_rows
    [row["val_loss"] for row in read_history_rows("runs/lite/history.csv")]
    ```
    """
    if not path or not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        by_epoch = {}
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                break  # short or long row: a line cut by a crash
            try:
                epoch = int(row.get("epoch", ""))
            except ValueError:
                break
            by_epoch[epoch] = row
    rows = []
    while len(rows) in by_epoch:
        rows.append(by_epoch[len(rows)])
    return rows


def write_history_rows(path, rows):
    """Writes history rows (dicts) as CSV atomically: `epoch` first, then every key seen, sorted; "NA" if absent.

    Example:
    ```python
    from mtlzoo.training import read_history_rows, write_history_rows
    rows = read_history_rows("runs/lite/history.csv")
    write_history_rows("runs/lite/history.csv", rows[:3])   # keep the first three epochs
    ```
    """
    keys = sorted({k for row in rows for k in row if k != "epoch"})
    with fileio.atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch"] + keys, restval="NA")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


class HistoryCSV(keras.callbacks.Callback):
    """Writes the epoch logs to a CSV file, one row per epoch, rewritten atomically after every epoch.

    Like `keras.callbacks.CSVLogger` (same columns: `epoch`, then the log keys
    sorted), but the whole file is written to a temporary name and renamed
    over the old one at each epoch end, so a process killed at any moment
    leaves a complete file, never a cut last line.

    Args:
        filename: str. The CSV file.
        previous_rows: list of dicts or None. Rows of earlier epochs kept at
            the top (a resumed or continued run); None starts empty.
            Defaults to None.

    Example:
    ```python
    from mtlzoo.training import HistoryCSV
    model.fit(dataset, epochs=5, callbacks=[HistoryCSV("runs/a/history.csv")])
    ```
    """

    def __init__(self, filename, previous_rows=None):
        super().__init__()
        self.filename = os.fspath(filename)
        self.previous_rows = [dict(r) for r in previous_rows or ()]
        self.rows = list(self.previous_rows)

    def on_train_begin(self, logs=None):
        self.rows = list(self.previous_rows)

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": int(epoch)}
        row.update((k, _csv_value(v)) for k, v in (logs or {}).items())
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch] + [row]
        write_history_rows(self.filename, self.rows)


def _broken_backup(path, backup_dir, error, run_dir=None):
    run_dir = run_dir or os.path.dirname(os.path.abspath(backup_dir))
    detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return RunFolderError(
        f"The resume backup file {path} is broken ({type(error).__name__}{': ' + detail if detail else ''}), "
        f"so the interrupted run in {run_dir} cannot resume from it. Fix: delete the folder {backup_dir} and run "
        f"the same command again: training then continues from {os.path.join(run_dir, 'last.keras')} when it "
        "exists, or starts over at epoch 1 (to discard the run entirely, pass overwrite=True / "
        "mtlzoo train --overwrite)."
    )


class RunBackup(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` with atomic writes and one clear error for a broken backup.

    The weights (`latest.weights.h5`) and the epoch counter
    (`training_metadata.json`) are each written to a temporary file, fsynced
    and renamed into place, weights first, so a killed process leaves the
    previous backup readable. A backup that cannot be read (a damaged disk,
    a file copied halfway) stops training with a `RunFolderError` naming the
    file and the fix, instead of an h5py traceback.

    Args:
        backup_dir: str. The backup folder (used by nothing else).
        run_dir: str or None. The run folder, for the message. Defaults to
            the backup folder's parent.

    Example:
    ```python
    from mtlzoo.training import RunBackup
    model.fit(dataset, epochs=5, callbacks=[RunBackup("runs/a/backup")])
    ```
    """

    def __init__(self, backup_dir, run_dir=None, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.run_dir = run_dir or os.path.dirname(os.path.abspath(backup_dir))

    def _broken(self, path, error):
        return _broken_backup(path, self.backup_dir, error, self.run_dir)

    def on_train_begin(self, logs=None):
        if os.path.exists(self._training_metadata_path):
            try:
                with open(self._training_metadata_path) as f:
                    epoch = int(json.load(f)["epoch"])
            except (ValueError, KeyError, TypeError, OSError) as error:
                raise self._broken(self._training_metadata_path, error) from None
        else:
            epoch = None
        if os.path.exists(self._weights_path):
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            try:
                self.model.load_weights(self._weights_path)
            except Exception as error:  # h5py raises OSError, KeyError, ValueError... for a damaged file
                raise self._broken(self._weights_path, error) from None
        if epoch is not None:
            self.model._initial_epoch = epoch

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        fileio.atomic_save_weights(self.model, self._weights_path, overwrite=True)
        fileio.atomic_write_json(self._training_metadata_path,
                                 {"epoch": self._current_epoch, "batch": self._last_batch_seen})


# ---------------------------------------------------------------------------- settings
def _positive_int(value, where, allow_none=False, minimum=1):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise RecipeError(f"{where} must be an int >= {minimum}{' or null' if allow_none else ''}, got {value!r}.")
    return int(value)


def training_settings(recipe, epochs=None, steps_per_epoch=None) -> dict:
    """The recipe's `training` mapping, checked, with defaults and call overrides applied.

    Args:
        recipe: a `Recipe`.
        epochs: int or None. Replaces `training.epochs`.
        steps_per_epoch: int or None. Replaces `training.steps_per_epoch`.

    Returns:
        dict with every key of `TRAINING_KEYS`.

    Raises:
        RecipeError: an unknown key (with a near match) or a bad value.

    Example:
    ```python
    import mtlzoo
    from mtlzoo.training import training_settings
    training_settings(mtlzoo.get_recipe("driving_perception_lite"), epochs=2)["batch_size"]   # 16
    ```
    """
    given = dict(recipe.training)
    for key in given:
        if key not in TRAINING_KEYS:
            raise RecipeError(
                f"recipe {recipe.name!r}: unknown key training.{key}.{suggestion(key, TRAINING_KEYS)} "
                "Valid keys: " + "; ".join(f"{k} ({v})" for k, v in TRAINING_KEYS.items()) + "."
            )
    out = {"epochs": 10, "batch_size": 8, "steps_per_epoch": None, "validation_steps": None,
           "validation_freq": 1, "monitor": None, "nonfinite_patience": 20, "check_batches": 1}
    out.update(given)
    if epochs is not None:
        out["epochs"] = epochs
    if steps_per_epoch is not None:
        out["steps_per_epoch"] = steps_per_epoch
    where = f"recipe {recipe.name!r}: training"
    out["epochs"] = _positive_int(out["epochs"], f"{where}.epochs (or epochs=)")
    out["batch_size"] = _positive_int(out["batch_size"], f"{where}.batch_size")
    out["steps_per_epoch"] = _positive_int(out["steps_per_epoch"], f"{where}.steps_per_epoch", allow_none=True)
    out["validation_steps"] = _positive_int(out["validation_steps"], f"{where}.validation_steps", allow_none=True)
    out["validation_freq"] = _positive_int(out["validation_freq"], f"{where}.validation_freq")
    out["nonfinite_patience"] = _positive_int(out["nonfinite_patience"], f"{where}.nonfinite_patience")
    out["check_batches"] = _positive_int(out["check_batches"], f"{where}.check_batches", minimum=0)
    return out


def _resolve_strategy(strategy):
    if strategy is None:
        return None
    try:
        from mtlzoo.distribute import resolve_strategy
    except ModuleNotFoundError as e:
        if e.name != "mtlzoo.distribute":
            raise
        if isinstance(strategy, tf.distribute.Strategy):
            return strategy
        raise ValueError(
            f"strategy={strategy!r}: strategy names need mtlzoo.distribute; pass None or a "
            "tf.distribute.Strategy instance."
        ) from None
    return resolve_strategy(strategy)


# ---------------------------------------------------------------------------- data
def _dataset_names():
    import mtlzoo.data

    return list(mtlzoo.data.DATASETS)


def check_dataset_name(name) -> str:
    """Returns `name` if it is a registered dataset, else raises `DataCheckError` with near matches.

    Example:
    ```python
    from mtlzoo.training import check_dataset_name
    check_dataset_name("synthetic_drivng")   # DataCheckError: ... Did you mean 'synthetic_driving'?
    ```
    """
    names = _dataset_names()
    if not isinstance(name, str) or name not in names:
        raise DataCheckError(
            f"Unknown dataset {name!r}.{suggestion(str(name), names)} Known datasets: {', '.join(names)}. "
            "Fix: set data.name (e.g. data.name=synthetic_driving) or register a reader with "
            "mtlzoo.data.register_reader(name, reader)."
        )
    return name


def _reader_parameters(name):
    import mtlzoo.data

    try:
        reader = mtlzoo.data._reader(name)
        params = inspect.signature(reader).parameters
    except (TypeError, ValueError, AttributeError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    return set(params)


def load_split(data_config, split, *, image_size, batch_size, seed=0, tasks=None, training=False,
               with_boxes=False):
    """Loads one split of the dataset described by a recipe's `data` mapping.

    Args:
        data_config: dict. `name` (a registered dataset), optionally
            `data_dir`, `train_split` / `validation_split` (split names,
            defaults "train" / "validation"), `num_examples` /
            `num_validation_examples`, and reader options (e.g.
            `label_fractions`, `augment`, `cache`) passed to the reader.
        split: str. "train" or "validation" (mapped through `train_split` /
            `validation_split`), or a literal split name.
        image_size: (H, W) of the model input.
        batch_size: int.
        seed: int. Data seed.
        tasks: list of label keys wanted (passed to readers that take
            `tasks`); None for all.
        training: bool. A training split: reader options such as `augment`
            and `label_fractions` apply; otherwise no shuffling or
            augmentation.
        with_boxes: bool. Ask for raw boxes (for detection mAP) when the
            reader can give them.

    Returns:
        A batched `tf.data.Dataset` of (image, labels).

    Example:
    ```python
    from mtlzoo.training import load_split
    val = load_split({"name": "synthetic_driving", "num_validation_examples": 64}, "validation",
                     image_size=(128, 256), batch_size=16)
    ```
    """
    import mtlzoo.data

    config = dict(data_config or {})
    if "name" not in config:
        raise DataCheckError(
            "The recipe names no dataset: set data.name (e.g. data.name=synthetic_driving) or pass data=."
        )
    name = check_dataset_name(config["name"])
    split_name = {"train": config.get("train_split", "train"),
                  "validation": config.get("validation_split", "validation")}.get(split, split)
    count = config.get("num_examples") if split == "train" else config.get("num_validation_examples")
    options = {k: v for k, v in config.items() if k not in DATA_KEYS}
    if not training:
        options.pop("label_fractions", None)
        options.pop("augment", None)
    auto = {}
    if tasks:
        auto["tasks"] = [t for t in tasks if t not in EVALUATION_KEYS]
    if with_boxes:
        auto["with_boxes"] = True
    if not training:
        auto["augment"] = False
    accepted = _reader_parameters(name)
    if accepted is not None:
        unknown = [k for k in options if k not in accepted]
        if unknown:
            raise DataCheckError(
                f"Dataset {name!r} has no option {unknown[0]!r}.{suggestion(unknown[0], sorted(accepted))} "
                f"Its options: {', '.join(sorted(accepted))}."
            )
        auto = {k: v for k, v in auto.items() if k in accepted}
    kwargs = dict(split=split_name, batch_size=int(batch_size), image_size=tuple(image_size), seed=int(seed),
                  data_dir=config.get("data_dir"), num_examples=count, **options)
    if not training:
        kwargs["shuffle"] = False
    try:
        return mtlzoo.data.load(name, **kwargs, **auto)
    except (ValueError, FileNotFoundError) as first:
        error = first
        if "tasks" in auto and not isinstance(first, FileNotFoundError):
            # The reader may not know some task name: load every label instead,
            # so that check_dataset names the task that is missing.
            auto.pop("tasks")
            try:
                return mtlzoo.data.load(name, **kwargs, **auto)
            except (ValueError, FileNotFoundError) as second:
                error = second
    raise DataCheckError(f"Dataset {name!r}, split {split_name!r}: {error}") from error


def _label_alternatives(expected, kind):
    alternatives = {tuple(expected)}
    if expected and expected[-1] == 1:
        alternatives.add(tuple(expected[:-1]))
    elif kind == "int":
        alternatives.add(tuple(expected) + (1,))
    return alternatives


def _shape_str(shape):
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _batch_shape_str(shape):
    return "(" + ", ".join(["batch"] + ["?" if d is None else str(d) for d in shape]) + ")"


def _task_heads(recipe):
    from mtlzoo.registry import HEADS

    return {t: (spec.kind, HEADS.get(spec.kind)(**spec.head_args)) for t, spec in recipe.tasks.items()}


def _show(value):
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _check_class_ids(task, kind, num_classes, value, where, what="class ids"):
    """Raises DataCheckError if `value` holds anything but integer ids in [0, num_classes) or -1."""
    if value.size == 0:
        return
    value = value.astype(np.float64) if value.dtype.kind == "f" else value.astype(np.int64)
    bad = ~((value == -1) | ((value >= 0) & (value < num_classes)))
    fractional = (value != np.round(value)) if value.dtype.kind == "f" else np.zeros(value.shape, bool)
    bad |= fractional
    if not bad.any():
        return
    found = np.unique(value[bad])
    shown = ", ".join(_show(v) for v in found[:5]) + (", ..." if len(found) > 5 else "")
    problem = "fractional" if fractional[bad].all() else "out-of-range"
    raise DataCheckError(
        f"Task {task!r} ({kind}): {where} has {int(bad.sum())} {problem} {what}: {shown}. Allowed: integers "
        f"0 to {num_classes - 1} (the head's num_classes is {num_classes}) and -1 for a missing label. Fix: map "
        f"the labels to 0..{num_classes - 1} (e.g. an 'ignore' id such as 255 to -1), or set "
        f"tasks.{task}.num_classes to the number of classes in the data."
    )


def _check_label_values(task, kind_head, value, where):
    """Class ids in range and integral, multi-label targets in {0, 1, -1}, CenterNet heatmaps in [0, 1]."""
    kind, head = kind_head
    num_classes = getattr(head, "num_classes", None)
    if num_classes is None or value.size == 0 or not np.all(np.isfinite(value)):
        return
    if kind in ("segmentation", "classification"):
        _check_class_ids(task, kind, int(num_classes), value, where)
    elif kind == "multilabel":
        bad = ~np.isin(value, (0.0, 1.0, -1.0))
        if bad.any():
            found = np.unique(value[bad])
            shown = ", ".join(_show(v) for v in found[:5]) + (", ..." if len(found) > 5 else "")
            raise DataCheckError(
                f"Task {task!r} (multilabel): {where} has {int(bad.sum())} target values outside {{0, 1, -1}}: "
                f"{shown}. Allowed: 1 (tag present), 0 (absent) and -1 (unknown), one per tag. Fix: give multi-hot "
                "vectors (not class ids or probabilities) of length num_classes."
            )
    elif kind == "detection" and value.ndim >= 2 and value.shape[-1] == int(num_classes) + 5:
        per_example = value.reshape(value.shape[0], -1)
        present = ~np.all(per_example == -1.0, axis=1)  # all -1: a missing label
        heat = value[present][..., : int(num_classes)]
        center = value[present][..., int(num_classes) + 4]
        if heat.size and (heat.min() < 0.0 or heat.max() > 1.0):
            found = heat.min() if heat.min() < 0.0 else heat.max()
            raise DataCheckError(
                f"Task {task!r} (detection): {where} has a class heatmap value {_show(found)} in the first "
                f"{num_classes} channels; CenterNet targets hold values in [0, 1] there (an all -1 target marks a "
                "missing image). Fix: encode boxes and class ids (0 to "
                f"{int(num_classes) - 1}) with mtlzoo.heads.centernet_targets.encode_centernet_targets."
            )
        if center.size and not np.all(np.isin(center, (0.0, 1.0))):
            raise DataCheckError(
                f"Task {task!r} (detection): {where} has center-flag values other than 0 and 1 (channel "
                f"{int(num_classes) + 4}). Fix: encode the targets with "
                "mtlzoo.heads.centernet_targets.encode_centernet_targets."
            )


def check_dataset(recipe, dataset, split="train", check_batches=1):
    """Checks a dataset against a recipe before training; returns it with extra label keys removed.

    Checked, each failure raising a `DataCheckError` that names the problem
    and the fix:

    - the elements are `(image, labels)` (or `(image, labels, sample_weight)`)
      pairs whose labels are a dict keyed by task;
    - every task of the recipe has labels, of the shape and dtype its head
      expects (`head.label_spec`); label keys the recipe does not use (other
      tasks, evaluation boxes) are dropped from the returned dataset;
    - the images have the recipe's `input_shape` (size and channels);
    - the split is not empty;
    - the first `check_batches` batches hold no NaN/inf labels or images,
      their class ids (segmentation, classification, detection
      `box_classes`) are integers in [0, num_classes) or -1 (missing),
      multi-label targets are 0, 1 or -1, and CenterNet heatmaps lie in
      [0, 1].

    Args:
        recipe: a `Recipe` (or a name).
        dataset: `tf.data.Dataset` of batches.
        split: str. Split name used in the messages. Defaults to "train".
        check_batches: int. Batches read for the value and emptiness checks
            (0: none, -1: all). Defaults to 1.

    Returns:
        The dataset, mapped to drop label keys that are not recipe tasks.

    Example:
    ```python
    import mtlzoo, mtlzoo.data
    from mtlzoo.training import check_dataset
    recipe = mtlzoo.get_recipe("driving_perception_lite", input_shape=(64, 128, 3))
    ds = mtlzoo.data.load("synthetic_driving", image_size=(64, 128), num_examples=16)
    ds = check_dataset(recipe, ds)
    ```
    """
    recipe = get_recipe(recipe) if not isinstance(recipe, Recipe) else recipe
    where = f"the {split} data"
    if not isinstance(dataset, tf.data.Dataset):
        raise DataCheckError(
            f"{where} must be a tf.data.Dataset of (image, labels) batches, got {type(dataset).__name__}."
        )
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise DataCheckError(
            f"{where} must yield (image, labels) pairs with labels a dict keyed by task "
            f"{list(recipe.tasks)}; its elements are {spec}."
        )
    image_spec, label_spec = spec[0], spec[1]
    tasks = list(recipe.tasks)
    heads = _task_heads(recipe)
    if not isinstance(label_spec, dict):
        if len(tasks) == 1 and isinstance(label_spec, tf.TensorSpec):
            dataset = dataset.map(lambda x, y, *rest: (x, {tasks[0]: y}, *rest))
            label_spec = {tasks[0]: label_spec}
        else:
            raise DataCheckError(
                f"{where}: labels must be a dict keyed by task name {tasks}; got {label_spec}. "
                "Fix: map the dataset to (image, {task: label, ...})."
            )
    # Images: rank, size and channels.
    want = tuple(recipe.input_shape)
    got = tuple(image_spec.shape[1:]) if isinstance(image_spec, tf.TensorSpec) else None
    if got is None:
        raise DataCheckError(
            f"{where}: the input must be one tensor of shape {_batch_shape_str(want)}; got {image_spec}."
        )
    if len(got) != len(want) or any(g is not None and g != w for g, w in zip(got, want)):
        if len(want) == 3 and len(got) == 3:
            size_ok = all(g is None or g == w for g, w in zip(got[:2], want[:2]))
            problem = (f"{got[2]} channels but the recipe expects {want[2]}" if size_ok else
                       f"images of size {_shape_str(got[:2])} but the recipe's input_shape is {want}")
            fix = (f"load the data with image_size={want[:2]}, or build the recipe with "
                   f"input_shape={list(got)}" if not size_ok else "convert the images to RGB (3 channels)")
        else:
            problem = f"inputs of shape {_shape_str(got)} but the recipe expects {want}"
            fix = "give inputs of the recipe's input_shape or change input_shape"
        raise DataCheckError(f"{where} has {problem}. Fix: {fix}.")
    # Labels: presence, shape, dtype.
    found = sorted(label_spec)
    for task in tasks:
        kind, head = heads[task]
        if task not in label_spec:
            raise DataCheckError(
                f"Recipe {recipe.name!r} has task {task!r} ({kind}) but {where} has no {task!r} labels; "
                f"the labels found are {found}.{suggestion(task, found)} Fix: drop the task "
                f"(tasks=[{', '.join(repr(t) for t in tasks if t != task)}]), rename the label key, or use a "
                f"dataset that provides {task!r}."
            )
        tspec = label_spec[task]
        if not isinstance(tspec, tf.TensorSpec):
            raise DataCheckError(f"{where}: the {task!r} labels must be one tensor per batch, got {tspec}.")
        expected, dtype_kind = head.label_spec(want)
        got_shape = tuple(tspec.shape[1:])
        ok = any(
            len(got_shape) == len(alt) and all(g is None or a is None or g == a for g, a in zip(got_shape, alt))
            for alt in _label_alternatives(expected, dtype_kind)
        )
        if not ok:
            raise DataCheckError(
                f"Task {task!r} ({kind}): {where} has labels of shape {_batch_shape_str(got_shape)} but "
                f"the recipe's head expects {_batch_shape_str(expected)} for input_shape {want}. Fix: "
                "check the label format of the task kind (see the head's docstring) or the recipe's head "
                "arguments (e.g. num_classes)."
            )
        if tspec.dtype in (tf.string, tf.bool) or not (tspec.dtype.is_floating or tspec.dtype.is_integer):
            raise DataCheckError(
                f"Task {task!r} ({kind}): {where} has labels of dtype {tspec.dtype.name}; numeric labels "
                f"({'integer class ids' if dtype_kind == 'int' else 'floats'}) are needed."
            )
    raw = dataset  # label keys beyond the tasks (e.g. detection `box_classes`) are checked too
    extra = [k for k in label_spec if k not in tasks]
    if extra:
        keep = tuple(tasks)
        dataset = dataset.map(
            lambda x, y, *rest: (x, {t: y[t] for t in keep}, *rest), num_parallel_calls=tf.data.AUTOTUNE
        )
    # Emptiness and values.
    cardinality = int(dataset.cardinality())
    if cardinality == 0:
        raise DataCheckError(
            f"{where} is empty (0 batches). Fix: check the split name, the data folder and num_examples."
        )
    if check_batches != 0:
        seen = 0
        for element in raw.take(check_batches):
            seen += 1
            image, labels = element[0], element[1]
            image = np.asarray(image)
            if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
                raise DataCheckError(
                    f"{where}: batch {seen - 1} has {int(np.sum(~np.isfinite(image)))} NaN/inf input values. "
                    "Fix the reader or the files."
                )
            for task in tasks:
                value = np.asarray(labels[task])
                if value.dtype.kind != "f":
                    continue
                nan, inf = int(np.isnan(value).sum()), int(np.isinf(value).sum())
                if nan or inf:
                    kind = heads[task][0]
                    raise DataCheckError(
                        f"Task {task!r} ({kind}): batch {seen - 1} of {where} has {nan} NaN and {inf} inf "
                        f"label values. Missing labels must use the task's missing value "
                        f"({_MISSING_VALUE_HINT.get(kind, 'see the head docstring')}), not NaN/inf. Fix the "
                        "reader or the files."
                    )
            for task in tasks:
                _check_label_values(task, heads[task], np.asarray(labels[task]), f"batch {seen - 1} of {where}")
            if "box_classes" in labels:
                for task in tasks:
                    if heads[task][0] == "detection":
                        _check_class_ids(task, "detection", heads[task][1].num_classes,
                                         np.asarray(labels["box_classes"]), f"batch {seen - 1} of {where}",
                                         what="box class ids (`box_classes`)")
        if seen == 0:
            raise DataCheckError(
                f"{where} is empty: it yielded no batch. Fix: check the split name, the data folder and num_examples."
            )
    return dataset


def _as_dataset(data, batch_size, seed, shuffle):
    """numpy (x, y) or (x, y, w) -> batched tf.data.Dataset; datasets pass through."""
    if isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        tensors = tuple(data)
        ds = tf.data.Dataset.from_tensor_slices(tensors)
        n = len(np.asarray(data[0]))
        if n == 0:
            raise DataCheckError("The data arrays are empty (0 examples).")
        if shuffle:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size)
    raise DataCheckError(
        f"data= must be None (the recipe's dataset), a dataset name, a dict of data settings, a "
        f"tf.data.Dataset or an (x, y) tuple of arrays; got {type(data).__name__}."
    )


def _resolve_train_data(recipe, data, validation_data, settings):
    """(train dataset, validation dataset or None), loaded as the recipe says when not given."""
    seed = int(recipe.seed)
    batch = settings["batch_size"]
    config = None
    if data is None:
        config = dict(recipe.data)
    elif isinstance(data, str):
        config = {**recipe.data, "name": data} if recipe.data.get("name") == data else {"name": data}
    elif isinstance(data, dict):
        config = {**recipe.data, **data}
    if config is not None:
        if "name" in config:
            check_dataset_name(config["name"])
        image_size = tuple(recipe.input_shape[:2])
        train_ds = load_split(config, "train", image_size=image_size, batch_size=batch, seed=seed,
                              tasks=list(recipe.tasks), training=True)
        if validation_data is None and config.get("validation_split", "validation") not in (None, False):
            validation_data = load_split(config, "validation", image_size=image_size, batch_size=batch,
                                         seed=seed, tasks=list(recipe.tasks), training=False)
    else:
        train_ds = _as_dataset(data, batch, seed, shuffle=True)
    if validation_data is False:
        validation_data = None
    if validation_data is not None:
        validation_data = _as_dataset(validation_data, batch, seed, shuffle=False)
    return train_ds, validation_data


# ---------------------------------------------------------------------------- files
#: Files and folders `train` writes into `out_dir`; `overwrite=True` deletes these and nothing else.
RUN_FILES = ("best.keras", "last.keras", "history.csv", "recipe.yaml", "train_summary.json")
RUN_FOLDERS = ("backup", "logs")


def _read_csv_history(path):
    out = {}
    for row in read_history_rows(path):
        for key, value in row.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            out.setdefault(key, []).append(number)
    if "epoch" in out:
        out["epoch"] = [int(e) for e in out["epoch"]]
    return out


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _finite_or_none(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _backup_state(backup_dir):
    meta = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(meta):
        return None
    try:
        with open(meta) as f:
            state = json.load(f)
        int(state["epoch"])
    except (ValueError, KeyError, TypeError) as error:
        raise _broken_backup(meta, backup_dir, error) from None
    return state


def _flatten(value, prefix=""):
    if isinstance(value, dict) and value:
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def _recipe_changes(stored, current):
    """'key: old -> new' for each dotted recipe key that differs, `training.epochs` left out."""
    old, new = _flatten(stored or {}), _flatten(current or {})
    changes = []
    for key in sorted(set(old) | set(new)):
        if key == "training.epochs" or old.get(key, "<unset>") == new.get(key, "<unset>"):
            continue
        show = [repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..." for v in
                (old.get(key, "<unset>"), new.get(key, "<unset>"))]
        changes.append(f"{key}: {show[0]} -> {show[1]}")
    return changes


def _stored_recipe(out_dir):
    path = os.path.join(out_dir, "recipe.yaml")
    if not os.path.exists(path):
        return None
    import yaml

    try:
        with open(path) as f:
            stored = yaml.safe_load(f)
    except yaml.YAMLError as error:
        raise RunFolderError(
            f"{path} cannot be read ({type(error).__name__}), so the run in {out_dir} cannot be compared with this "
            "recipe. Fix: pass overwrite=True (mtlzoo train --overwrite) to replace the run, or use another out_dir."
        ) from None
    return stored if isinstance(stored, dict) else None


def _check_resume(out_dir, recipe):
    """Refuses to resume a backup written by a different recipe."""
    stored = _stored_recipe(out_dir)
    if stored is None:
        return
    import yaml

    changed = _recipe_changes(stored, yaml.safe_load(recipe.to_yaml()))
    if changed:
        raise RunFolderError(
            f"{out_dir} holds an interrupted run of a different recipe (changed keys: {'; '.join(changed)}). "
            f"Fix: rerun with the same settings to resume, use another out_dir (--out), pass overwrite=True "
            f"(mtlzoo train --overwrite) to replace it, or delete {os.path.join(out_dir, 'backup')} to start over."
        )


def clear_run(out_dir):
    """Deletes the files `train` writes in `out_dir` (`RUN_FILES`, `RUN_FOLDERS`, leftover temporaries), nothing else.

    Example:
    ```python
    from mtlzoo.training import clear_run
    clear_run("runs/lite")   # best.keras, last.keras, history.csv, recipe.yaml, ... are gone
    ```
    """
    for name in RUN_FILES:
        path = os.path.join(out_dir, name)
        if os.path.lexists(path):
            os.remove(path)
    for name in RUN_FOLDERS:
        path = os.path.join(out_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
    fileio.remove_temporaries(out_dir)
    fileio.fsync_dir(out_dir)


def _plan_run(out_dir, recipe, epochs, overwrite):
    """What to do with `out_dir`: dict(mode=fresh|resume|continue|done, initial_epoch, rows, backup).

    - `resume`: an interrupted run with a backup (BackupAndRestore restores it);
    - `continue`: a run without backup (finished, or stopped before its first
      backup) whose `last.keras` and `history.csv` let it go on to `epochs`;
    - `done`: such a run that already has `epochs` epochs;
    - `fresh`: nothing trained here yet, or only part of a first epoch; with
      `clear`, our files there are deleted once the data checks have passed
      (so a data error never costs the old run).
    """
    import yaml

    if overwrite:
        return {"mode": "fresh", "initial_epoch": 0, "rows": [], "backup": None, "clear": True}
    fileio.remove_temporaries(out_dir)
    backup_dir = os.path.join(out_dir, "backup")
    state = _backup_state(backup_dir)
    if state is None and os.path.isdir(backup_dir):
        # Weights without the epoch counter: the very first backup was cut short; it holds nothing usable.
        shutil.rmtree(backup_dir)
    rows = read_history_rows(os.path.join(out_dir, "history.csv"))
    if state is not None:
        _check_resume(out_dir, recipe)
        done = int(state.get("epoch", 0))
        return {"mode": "resume", "initial_epoch": done, "rows": rows[:done], "backup": state}
    last = os.path.join(out_dir, "last.keras")
    finished = os.path.exists(os.path.join(out_dir, "train_summary.json"))
    if not finished and not (rows and os.path.exists(last)):
        # Nothing to continue from: at most the files of a run killed during its first epoch (recipe.yaml, logs,
        # the first history row or best.keras, written just before last.keras). That epoch is trained again.
        return {"mode": "fresh", "initial_epoch": 0, "rows": [], "backup": None, "clear": True}
    holds = [n for n in ("train_summary.json", "best.keras", "last.keras") if os.path.exists(os.path.join(out_dir, n))]
    if rows:
        holds = sorted(set(holds) | {"history.csv"})
    stored = _stored_recipe(out_dir)
    changed = _recipe_changes(stored, yaml.safe_load(recipe.to_yaml())) if stored is not None else []
    how = ("Fix: pass overwrite=True (mtlzoo train --overwrite) to replace that run, or train into another "
           "out_dir (--out).")
    epochs_text = f"{len(rows)} epoch{'s' if len(rows) != 1 else ''}"
    what = f"{out_dir} holds a run ({', '.join(holds)}; {epochs_text} in history.csv)"
    if stored is None:
        raise RunFolderError(f"{what} without its recipe.yaml, so it cannot be checked against this recipe. {how}")
    if changed:
        raise RunFolderError(
            f"{what} of a different recipe (changed keys: {'; '.join(changed)}). Training here would replace its "
            f"checkpoints and history. {how}"
        )
    if not rows or not os.path.exists(last):
        missing = "history.csv" if not rows else "last.keras"
        raise RunFolderError(f"{what} but its {missing} is missing, so it cannot be continued. {how}")
    if epochs < len(rows):
        raise RunFolderError(
            f"{what}; asked for {epochs} epochs, fewer than the {len(rows)} it has. Fix: ask for {len(rows)} epochs "
            f"(or more, to continue it), pass overwrite=True (mtlzoo train --overwrite) to retrain it, or train into "
            "another out_dir (--out)."
        )
    mode = "done" if epochs == len(rows) else "continue"
    return {"mode": mode, "initial_epoch": len(rows), "rows": rows, "backup": None}


def _load_run_weights(model, path):
    """Loads weights and optimizer state of `last.keras` into a freshly built `model`."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(path)
    except Exception as error:
        raise RunFolderError(
            f"{path} cannot be loaded ({type(error).__name__}: {str(error)[:200]}), so the run cannot be continued "
            "from it. Fix: pass overwrite=True (mtlzoo train --overwrite) to start over, or use another out_dir."
        ) from None


# ---------------------------------------------------------------------------- train
def train(recipe, data=None, epochs=None, out_dir=None, strategy=None, callbacks=(), seed=None,
          steps_per_epoch=None, validation_data=None, verbose="auto", overwrite=False, **overrides) -> TrainResult:
    """Trains a recipe's model with Keras `fit`, logging, checkpoints and resumption.

    With an `out_dir`, what is already in it decides what happens:

    - nothing trained yet: a new run;
    - an interrupted run (`backup/`) of the same recipe: it resumes at the
      epoch that was interrupted;
    - a run without backup (finished, or stopped before its first backup) of
      the same recipe: with more `epochs` it continues from `last.keras`
      (weights and optimizer state) and `history.csv`, counting epochs from
      where it stopped; with as many epochs nothing is trained and the stored
      run is returned;
    - a run of a different recipe, or with more epochs than asked for: a
      `RunFolderError` naming the changed keys, unless `overwrite=True`.

    Args:
        recipe: str, path, dict or `Recipe`. The recipe to train.
        data: None (the recipe's `data` settings: `data.name` and options),
            a dataset name, a dict of data settings merged over the recipe's,
            a `tf.data.Dataset` of (image, labels) batches, or an (x, y)
            tuple of arrays. Defaults to None.
        epochs: int or None. Overrides `training.epochs`.
        out_dir: str or None. Where logs, checkpoints and the resume backup
            go; None writes no files (and cannot resume). Defaults to None.
        strategy: None, a `tf.distribute.Strategy` or a spec understood by
            `mtlzoo.distribute.resolve_strategy`; the model is built in its
            scope. Defaults to None.
        callbacks: extra Keras callbacks, run after the weighting callback
            and before the loggers.
        seed: int or None. Overrides the recipe's seed (weights, dropout,
            data order).
        steps_per_epoch: int or None. Overrides `training.steps_per_epoch`;
            the training data is then repeated.
        validation_data: None (the recipe dataset's validation split when the
            data comes from the recipe), False (no validation), a
            `tf.data.Dataset` or an (x, y) tuple.
        verbose: "auto", 0, 1 or 2, as for `fit`. Defaults to "auto".
        overwrite: bool. Replace a run already in `out_dir`: its files
            (`RUN_FILES`, `backup/`, `logs/`) are deleted first; other files
            in the folder are left alone. Defaults to False.
        **overrides: recipe overrides, as for `mtlzoo.build` (dotted keys
            through `**{"training.batch_size": 4}`).

    Returns:
        A `TrainResult` with the model, the full history and the file paths.

    Raises:
        DataCheckError: the data does not fit the recipe (unknown dataset,
            missing task labels, wrong image size or channels, NaN/inf
            labels, class ids out of range, empty split).
        RunFolderError: `out_dir` holds a run of another recipe or with
            more epochs, a broken resume backup, or is in use by another
            process (its lock file `.mtlzoo.lock` names the pid).
        RecipeError: bad recipe or training settings.

    Example:
    ```python
    import mtlzoo
    result = mtlzoo.train("driving_perception_lite", epochs=3, out_dir="runs/lite",
                          **{"data.num_examples": 256, "input_shape": (64, 128, 3)})
    # Interrupted? Run the same line again: it resumes where it stopped.
    # Want 2 more epochs? The same line with epochs=5 continues the run.
    print(result.history["val_loss"], result.best_path)
    ```

    Reference:
        Keras callbacks `BackupAndRestore`, `ModelCheckpoint`, `CSVLogger`,
        `TensorBoard` (https://keras.io/api/callbacks/).
    """
    recipe = get_recipe(recipe, **overrides)
    if seed is not None:
        recipe = recipe.override(seed=int(seed))
    settings = training_settings(recipe, epochs, steps_per_epoch)
    if out_dir is None:
        return _train(recipe, settings, data, None, strategy, callbacks, validation_data, verbose, None)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    lock = fileio.RunLock(out_dir)
    try:
        lock.acquire()
    except fileio.RunLockError as error:
        raise RunFolderError(str(error)) from None
    try:
        plan = _plan_run(out_dir, recipe, settings["epochs"], overwrite)
        return _train(recipe, settings, data, out_dir, strategy, callbacks, validation_data, verbose, plan)
    finally:
        lock.release()


def _train(recipe, settings, data, out_dir, strategy, callbacks, validation_data, verbose, plan):
    strategy = _resolve_strategy(strategy)
    # Seed first: tf.data derives its shuffle seeds from the global seed too.
    keras.utils.set_random_seed(int(recipe.seed))

    # Data and checks, before any model is built.
    train_ds, val_ds = _resolve_train_data(recipe, data, validation_data, settings)
    # Arrays in memory are checked whole (every batch); datasets only their first `check_batches` batches.
    in_memory = settings["check_batches"] > 0 and isinstance(data, (tuple, list))
    train_ds = check_dataset(recipe, train_ds, "train", -1 if in_memory else settings["check_batches"])
    if val_ds is not None:
        in_memory = settings["check_batches"] > 0 and isinstance(validation_data, (tuple, list))
        val_ds = check_dataset(recipe, val_ds, "validation", -1 if in_memory else settings["check_batches"])
    if settings["steps_per_epoch"] is not None:
        train_ds = train_ds.repeat()
    elif int(train_ds.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
        raise DataCheckError("The training data repeats forever: set steps_per_epoch (or training.steps_per_epoch).")

    mode = plan["mode"] if plan else "fresh"
    initial_epoch = plan["initial_epoch"] if plan else 0
    if out_dir is not None:
        if plan.get("clear"):
            clear_run(out_dir)
        fileio.atomic_write_text(os.path.join(out_dir, "recipe.yaml"), recipe.to_yaml())

    # Model.
    keras.utils.set_random_seed(int(recipe.seed))
    if strategy is not None:
        with strategy.scope():
            model = recipe.build()
    else:
        model = recipe.build()
    if mode in ("continue", "done"):
        if strategy is not None:
            with strategy.scope():
                _load_run_weights(model, os.path.join(out_dir, "last.keras"))
        else:
            _load_run_weights(model, os.path.join(out_dir, "last.keras"))

    # Callbacks, in the order Keras will call them.
    stop = StopOnNonFinite(patience=settings["nonfinite_patience"])
    timer = StepTimer()
    cbs = [timer]
    if getattr(model, "weighting", None) is not None:
        # The model's own weighting (built from the recipe; its state may come
        # from a checkpoint): run here, before the loggers, and only once.
        cbs.append(model.weighting)
    cbs += [LossWeightLogger(), stop]
    cbs += list(callbacks or ())
    monitor = settings["monitor"] or ("val_loss" if val_ds is not None else "loss")
    best_path = last_path = None
    if out_dir is not None:
        previous = plan["rows"]
        values = [_finite_or_none(r.get(monitor)) for r in previous]
        finite = [v for v in values if v is not None]
        best_value = min(finite) if finite else None
        best_path = os.path.join(out_dir, "best.keras")
        last_path = os.path.join(out_dir, "last.keras")
        # The history row is written before the checkpoints and the backup last: a kill between two of them
        # leaves a state that resumes consistently (the backup, when present, decides the epoch).
        cbs += [
            HistoryCSV(os.path.join(out_dir, "history.csv"), previous_rows=previous),
            AtomicModelCheckpoint(best_path, monitor=monitor, mode="min", save_best_only=True,
                                  initial_value_threshold=best_value),
            AtomicModelCheckpoint(last_path),
            keras.callbacks.TensorBoard(log_dir=os.path.join(out_dir, "logs"), write_graph=False),
            RunBackup(os.path.join(out_dir, "backup"), run_dir=out_dir),
        ]
    if verbose != 0 and mode != "fresh":
        print({"resume": f"Resuming from {os.path.join(out_dir, 'backup')}: epoch {initial_epoch + 1} "
                         f"of {settings['epochs']}.",
               "continue": f"Continuing the run in {out_dir} from last.keras: epoch {initial_epoch + 1} "
                           f"of {settings['epochs']}.",
               "done": f"{out_dir} already holds this run with {initial_epoch} epochs: nothing to train "
                       "(ask for more epochs to continue it)."}[mode])

    fit_kwargs = dict(epochs=settings["epochs"], callbacks=cbs, verbose=verbose, shuffle=False,
                      steps_per_epoch=settings["steps_per_epoch"],
                      initial_epoch=initial_epoch if mode == "continue" else 0)
    if val_ds is not None:
        fit_kwargs.update(validation_data=val_ds, validation_steps=settings["validation_steps"],
                          validation_freq=settings["validation_freq"])
    history = None
    if mode != "done":
        try:
            history = model.fit(train_ds, **fit_kwargs)
        except RunFolderError:
            raise
        except BaseException:
            state = None
            if out_dir is not None:
                try:
                    state = _backup_state(os.path.join(out_dir, "backup"))
                except RunFolderError:
                    state = None
            if state is not None:
                warnings.warn(
                    f"Training was interrupted; {out_dir}/backup holds the state after epoch "
                    f"{int(state.get('epoch', 0))}. Run the same command again to resume.",
                    stacklevel=3,
                )
            raise
    model._initial_epoch = None  # a later fit() on this model starts from epoch 0 again

    full_history = _read_csv_history(os.path.join(out_dir, "history.csv")) if out_dir else {}
    if not full_history and history is not None:
        full_history = {k: [float(np.asarray(v)) for v in vs] for k, vs in history.history.items()}
    full_history.pop("epoch", None)
    timing = timer.summary()
    summary_path = os.path.join(out_dir, "train_summary.json") if out_dir else None
    if mode == "done" and os.path.exists(summary_path):
        try:
            with open(summary_path) as f:
                timing = json.load(f).get("timing") or timing
        except ValueError:
            pass
    result = TrainResult(
        model=model,
        history=full_history,
        out_dir=out_dir,
        best_path=best_path if best_path and os.path.exists(best_path) else None,
        last_path=last_path if last_path and os.path.exists(last_path) else None,
        initial_epoch=initial_epoch,
        epochs=settings["epochs"],
        stopped_reason=stop.stopped_reason,
        timing=timing,
        recipe=recipe,
    )
    if out_dir is not None:
        summary = {
            "recipe": recipe.name,
            "epochs": settings["epochs"],
            "epochs_run": len(next(iter(full_history.values()), [])),
            "initial_epoch": initial_epoch,
            "stopped_reason": stop.stopped_reason,
            "timing": result.timing,
            "final": {k: _finite_or_none(v[-1]) for k, v in full_history.items() if v},
            "best_path": result.best_path,
            "last_path": result.last_path,
            "monitor": monitor,
        }
        fileio.atomic_write_text(summary_path, json.dumps(summary, indent=2, default=_json_default))
    return result
