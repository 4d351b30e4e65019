"""`train`: a recipe trained end to end (the loop around Keras `fit`)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from mtlzoo import fileio
from mtlzoo.data.checks import check_dataset
from mtlzoo.data.splits import DataCheckError
from mtlzoo.recipe import Recipe, get_recipe, seed_model_building
from mtlzoo.training.callbacks import AtomicModelCheckpoint, LossWeightLogger, StepTimer, StopOnNonFinite
from mtlzoo.training.run_folder import HistoryCSV, RunBackup, RunFolderError, backup_state, clear_run, load_run_weights, plan_run, read_csv_history
from mtlzoo.training.settings import resolve_train_data, strategy_or_none, training_settings

__all__ = ["train", "TrainResult"]


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
        plan = plan_run(out_dir, recipe, settings["epochs"], overwrite)
        return _train(recipe, settings, data, out_dir, strategy, callbacks, validation_data, verbose, plan)
    finally:
        lock.release()


def _train(recipe, settings, data, out_dir, strategy, callbacks, validation_data, verbose, plan):
    strategy = strategy_or_none(strategy)
    # Seed first, without tf.random.set_seed (which clears TensorFlow's kernel caches and stalls every other model
    # of the process): mtlzoo's pipelines and aggregators carry their own seeds.
    seed_model_building(int(recipe.seed))

    # Data and checks, before any model is built.
    train_ds, val_ds = resolve_train_data(recipe, data, validation_data, settings)
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

    # Model. A learning-rate schedule spans the whole run: epochs × batches per epoch.
    seed_model_building(int(recipe.seed))
    per_epoch = settings["steps_per_epoch"] or int(train_ds.cardinality())
    total_steps = settings["epochs"] * per_epoch if per_epoch > 0 else None
    if strategy is not None:
        with strategy.scope():
            model = recipe.build(total_steps=total_steps)
    else:
        model = recipe.build(total_steps=total_steps)
    if mode in ("continue", "done"):
        if strategy is not None:
            with strategy.scope():
                load_run_weights(model, os.path.join(out_dir, "last.keras"))
        else:
            load_run_weights(model, os.path.join(out_dir, "last.keras"))

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
                    state = backup_state(os.path.join(out_dir, "backup"))
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

    full_history = read_csv_history(os.path.join(out_dir, "history.csv")) if out_dir else {}
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
