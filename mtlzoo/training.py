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
- `out_dir/history.csv`: the same values, one row per epoch (`CSVLogger`);
- `out_dir/best.keras` (lowest `val_loss`, or `loss` without validation data)
  and `out_dir/last.keras` (after every epoch);
- `out_dir/backup/`: a `keras.callbacks.BackupAndRestore` state written at
  the end of every epoch. If training stops (crash, Ctrl-C, killed job),
  running the same call again resumes at the start of the epoch that was
  interrupted and trains to the same total number of epochs; the backup is
  deleted when training finishes;
- `out_dir/recipe.yaml` (the resolved recipe) and `out_dir/train_summary.json`
  (epochs run, step time, final logs, why training stopped).

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

import dataclasses
import inspect
import json
import math
import os
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from mtlzoo.recipe import Recipe, RecipeError, get_recipe
from mtlzoo.registry import suggestion

__all__ = [
    "DataCheckError",
    "LossWeightLogger",
    "StepTimer",
    "StopOnNonFinite",
    "TrainResult",
    "check_dataset",
    "load_split",
    "train",
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
    "check_batches": "batches inspected for NaN/inf labels before training (int >= 0, default 1)",
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

    Args:
        patience: int. Consecutive non-finite steps that stop training.
            Defaults to 20.
        verbose: bool. Print a line when stopping. Defaults to True.

    Example:
    ```python
    from mtlzoo.training import StopOnNonFinite
    model.fit(dataset, epochs=10, callbacks=[StopOnNonFinite(patience=10)])
    ```
    """

    def __init__(self, patience=20, verbose=True):
        super().__init__()
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"StopOnNonFinite: patience must be an int >= 1, got {patience!r}.")
        self.patience = patience
        self.verbose = bool(verbose)
        self.stopped_reason = None
        self.stopped_epoch = None
        self._reset_epoch()
        self.consecutive = 0

    def _reset_epoch(self):
        self._last_count = 0.0
        self._last_batch = -1
        self._steps = 0

    def on_train_begin(self, logs=None):
        self.stopped_reason = None
        self.stopped_epoch = None
        self.consecutive = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._reset_epoch()
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not logs or "nonfinite_steps" not in logs:
            return
        count = float(np.asarray(logs["nonfinite_steps"]))
        steps = max(1, batch - self._last_batch)  # > 1 with steps_per_execution
        self._last_batch = batch
        self._steps += steps
        new = count - self._last_count
        self._last_count = count
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
        self.stopped_reason = (
            f"{why}; training stopped (the model skips such steps, so the weights are those of the "
            "last finite step). Check the data for NaN/inf, lower the learning rate or add gradient clipping."
        )
        self.model.stop_training = True
        if self.verbose:
            print(f"\nStopOnNonFinite: {self.stopped_reason}")

    def get_config(self):
        return {"patience": self.patience, "verbose": self.verbose}


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
    - the first `check_batches` batches hold no NaN/inf labels or images.

    Args:
        recipe: a `Recipe` (or a name).
        dataset: `tf.data.Dataset` of batches.
        split: str. Split name used in the messages. Defaults to "train".
        check_batches: int. Batches read for the NaN/inf and emptiness checks
            (0: none). Defaults to 1.

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
    if check_batches > 0:
        seen = 0
        for element in dataset.take(check_batches):
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
def _read_csv_history(path):
    if not path or not os.path.exists(path):
        return {}
    import csv

    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key is None:
                    continue
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
    with open(meta) as f:
        return json.load(f)


def _check_resume(out_dir, recipe):
    """Refuses to resume a backup written by a different recipe."""
    path = os.path.join(out_dir, "recipe.yaml")
    if not os.path.exists(path):
        return
    import yaml

    with open(path) as f:
        stored = yaml.safe_load(f)
    current = yaml.safe_load(recipe.to_yaml())
    if stored != current:
        changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        raise DataCheckError(
            f"{out_dir} holds an interrupted run of a different recipe (changed keys: {', '.join(changed)}). "
            f"Fix: rerun with the same settings to resume, use another out_dir, or delete "
            f"{os.path.join(out_dir, 'backup')} to start over."
        )


# ---------------------------------------------------------------------------- train
def train(recipe, data=None, epochs=None, out_dir=None, strategy=None, callbacks=(), seed=None,
          steps_per_epoch=None, validation_data=None, verbose="auto", **overrides) -> TrainResult:
    """Trains a recipe's model with Keras `fit`, logging, checkpoints and resumption.

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
        **overrides: recipe overrides, as for `mtlzoo.build` (dotted keys
            through `**{"training.batch_size": 4}`).

    Returns:
        A `TrainResult` with the model, the full history and the file paths.

    Raises:
        DataCheckError: the data does not fit the recipe (unknown dataset,
            missing task labels, wrong image size or channels, NaN/inf
            labels, empty split), or `out_dir` holds an interrupted run of
            another recipe.
        RecipeError: bad recipe or training settings.

    Example:
    ```python
    import mtlzoo
    result = mtlzoo.train("driving_perception_lite", epochs=3, out_dir="runs/lite",
                          **{"data.num_examples": 256, "input_shape": (64, 128, 3)})
    # Interrupted? Run the same line again: it resumes where it stopped.
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
    strategy = _resolve_strategy(strategy)
    # Seed first: tf.data derives its shuffle seeds from the global seed too.
    keras.utils.set_random_seed(int(recipe.seed))

    # Data and checks, before any model is built.
    train_ds, val_ds = _resolve_train_data(recipe, data, validation_data, settings)
    train_ds = check_dataset(recipe, train_ds, "train", settings["check_batches"])
    if val_ds is not None:
        val_ds = check_dataset(recipe, val_ds, "validation", settings["check_batches"])
    if settings["steps_per_epoch"] is not None:
        train_ds = train_ds.repeat()
    elif int(train_ds.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
        raise DataCheckError("The training data repeats forever: set steps_per_epoch (or training.steps_per_epoch).")

    # Files and resumption.
    resuming = None
    if out_dir is not None:
        out_dir = os.fspath(out_dir)
        os.makedirs(out_dir, exist_ok=True)
        resuming = _backup_state(os.path.join(out_dir, "backup"))
        if resuming is not None:
            _check_resume(out_dir, recipe)
        with open(os.path.join(out_dir, "recipe.yaml"), "w") as f:
            f.write(recipe.to_yaml())

    # Model.
    keras.utils.set_random_seed(int(recipe.seed))
    if strategy is not None:
        with strategy.scope():
            model = recipe.build()
    else:
        model = recipe.build()

    # Callbacks, in the order Keras will call them.
    stop = StopOnNonFinite(patience=settings["nonfinite_patience"])
    timer = StepTimer()
    cbs = [timer]
    if recipe.weighting != "fixed":
        import mtlzoo.weighting

        weighting = mtlzoo.weighting.get(recipe.weighting, **recipe.weighting_args)
        if weighting is not None:
            cbs.append(weighting)
    cbs += [LossWeightLogger(), stop]
    cbs += list(callbacks or ())
    monitor = settings["monitor"] or ("val_loss" if val_ds is not None else "loss")
    best_path = last_path = None
    if out_dir is not None:
        csv_path = os.path.join(out_dir, "history.csv")
        previous = _read_csv_history(csv_path) if resuming is not None else {}
        if resuming is not None and previous.get("epoch"):
            # Keep only the rows of epochs the backup holds (a crash after the
            # CSV row but before the backup would otherwise duplicate one).
            keep = [i for i, e in enumerate(previous["epoch"]) if e < int(resuming.get("epoch", 0))]
            if len(keep) != len(previous["epoch"]):
                _rewrite_csv(csv_path, keep)
                previous = _read_csv_history(csv_path)
        best_value = None
        if previous.get(monitor):
            finite = [v for v in previous[monitor] if math.isfinite(v)]
            best_value = min(finite) if finite else None
        best_path = os.path.join(out_dir, "best.keras")
        last_path = os.path.join(out_dir, "last.keras")
        cbs += [
            keras.callbacks.ModelCheckpoint(best_path, monitor=monitor, mode="min", save_best_only=True,
                                            initial_value_threshold=best_value),
            keras.callbacks.ModelCheckpoint(last_path),
            keras.callbacks.CSVLogger(csv_path, append=resuming is not None),
            keras.callbacks.TensorBoard(log_dir=os.path.join(out_dir, "logs"), write_graph=False),
            keras.callbacks.BackupAndRestore(os.path.join(out_dir, "backup")),
        ]
    if resuming is not None and verbose != 0:
        print(f"Resuming from {os.path.join(out_dir, 'backup')}: epoch {int(resuming.get('epoch', 0)) + 1} "
              f"of {settings['epochs']}.")

    fit_kwargs = dict(epochs=settings["epochs"], callbacks=cbs, verbose=verbose, shuffle=False,
                      steps_per_epoch=settings["steps_per_epoch"])
    if val_ds is not None:
        fit_kwargs.update(validation_data=val_ds, validation_steps=settings["validation_steps"],
                          validation_freq=settings["validation_freq"])
    try:
        history = model.fit(train_ds, **fit_kwargs)
    except BaseException:
        if out_dir is not None and _backup_state(os.path.join(out_dir, "backup")) is not None:
            state = _backup_state(os.path.join(out_dir, "backup"))
            warnings.warn(
                f"Training was interrupted; {out_dir}/backup holds the state after epoch "
                f"{int(state.get('epoch', 0))}. Run the same command again to resume.",
                stacklevel=2,
            )
        raise
    initial_epoch = int(resuming.get("epoch", 0)) if resuming else 0
    model._initial_epoch = None  # a later fit() on this model starts from epoch 0 again

    full_history = _read_csv_history(os.path.join(out_dir, "history.csv")) if out_dir else {}
    if not full_history:
        full_history = {k: [float(np.asarray(v)) for v in vs] for k, vs in history.history.items()}
    full_history.pop("epoch", None)
    result = TrainResult(
        model=model,
        history=full_history,
        out_dir=out_dir,
        best_path=best_path if best_path and os.path.exists(best_path) else None,
        last_path=last_path if last_path and os.path.exists(last_path) else None,
        initial_epoch=initial_epoch,
        epochs=settings["epochs"],
        stopped_reason=stop.stopped_reason,
        timing=timer.summary(),
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
        with open(os.path.join(out_dir, "train_summary.json"), "w") as f:
            json.dump(summary, f, indent=2, default=_json_default)
    return result


def _rewrite_csv(path, keep_rows):
    with open(path) as f:
        lines = f.read().splitlines()
    header, rows = lines[:1], lines[1:]
    with open(path, "w") as f:
        f.write("\n".join(header + [rows[i] for i in keep_rows if i < len(rows)]) + "\n")
