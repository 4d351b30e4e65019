"""The tuning objective: metric directions, logged names and the callback that reports them."""

from __future__ import annotations

import math

import keras
import keras_tuner as kt
import numpy as np

from mtlzoo.recipe import BUILTIN_WEIGHTINGS
from mtlzoo.registry import HEADS
from mtlzoo.tuning.space import BUILTIN_OBJECTIVES

__all__ = ["infer_direction", "logged_names", "ObjectiveCallback"]


# Metric-name endings (after the task prefix) and their direction.
_HIGHER = ("acc", "accuracy", "pixel_acc", "miou", "iou", "delta1", "delta2", "delta3", "f1", "auc",
           "recall", "center_recall", "precision", "map", "ap")


_LOWER = ("loss", "mae", "mse", "rmse", "abs_err", "abs_rel", "sq_rel", "err", "error", "delta_m", "norm_loss",
          "nonfinite_steps")


# ---------------------------------------------------------------- helpers
def infer_direction(name):
    """"min" or "max" for a logged metric name, or None when the name does not tell.

    Example:
    ```python
    infer_direction("val_segmentation_miou")   # "max"
    infer_direction("val_depth_abs_err")       # "min"
    ```
    """
    base = name[4:] if name.startswith("val_") else name
    for suffix in sorted(_HIGHER + _LOWER, key=len, reverse=True):
        if base == suffix or base.endswith("_" + suffix):
            return "max" if suffix in _HIGHER else "min"
    return None


def logged_names(recipe, validation=True, weighting=False, sharing_modes=()):
    """The names a MultiTaskModel built from `recipe` (and the tuning callbacks) log per epoch.

    Args:
        recipe: a `Recipe`.
        validation: bool. Include the `val_` names.
        weighting: bool. A weighting callback runs (it logs `{task}_weight`).
        sharing_modes: extra sharing modes searched (their penalties are logged).

    Returns:
        sorted list of str.
    """
    from mtlzoo import metrics as metrics_lib

    names = {"loss", "nonfinite_steps"}
    for task, spec in recipe.tasks.items():
        head = HEADS.get(spec.kind)(**spec.head_args)
        names.add(f"{task}_loss")
        for m in head.metrics():
            names.add(f"{task}_{metrics_lib.get(m).name}")
        if weighting or recipe.weighting not in BUILTIN_WEIGHTINGS:
            names.add(f"{task}_weight")
    for mode in {recipe.sharing, *sharing_modes}:
        if mode == "soft_l2":
            names.add("soft_l2_penalty")
    if validation:
        names |= {f"val_{n}" for n in names if not n.endswith("_weight") and n != "nonfinite_steps"}
        names |= set(BUILTIN_OBJECTIVES)
    return sorted(names)


# ---------------------------------------------------------------- objective
class ObjectiveCallback(keras.callbacks.Callback):
    """Writes the tuning objective into the epoch logs (keras-tuner reads it there).

    Args:
        name: str. The log key written (`val_norm_loss`, `val_delta_m`) or read
            (any other logged name).
        tasks: list of task names.
        baselines: dict {task: {metric: value}}; `val_delta_m` only.
        higher_is_better: dict {task: {metric: bool}}; `val_delta_m` only.
        reference: dict {task: loss} or "first_epoch"; `val_norm_loss` only.

    A non-finite objective or training loss raises
    `keras_tuner.errors.FailedTrialError`: keras-tuner records the trial as
    FAILED and goes on with the next one.

    Example:
    ```python
    cb = ObjectiveCallback("val_norm_loss", ["label", "target"], reference={"label": 1.1, "target": 2.0})
    model.fit(x, y, validation_data=(xv, yv), callbacks=[cb])
    ```
    """

    def __init__(self, name, tasks, baselines=None, higher_is_better=None, reference="first_epoch"):
        super().__init__()
        self.name = name
        self.tasks = list(tasks)
        self.baselines = baselines
        self.higher_is_better = higher_is_better
        self.reference = reference if isinstance(reference, dict) else None
        self.history = []

    def _value(self, logs):
        if self.name == "val_norm_loss":
            losses = {}
            for t in self.tasks:
                key = f"val_{t}_loss"
                if key not in logs:
                    raise kt.errors.FatalValueError(f"val_norm_loss needs {key!r} in the logs; got {sorted(logs)}.")
                losses[t] = float(logs[key])
            if self.reference is None:
                self.reference = dict(losses)
            ratios = [losses[t] / self.reference[t] if self.reference[t] > 0 else math.nan for t in self.tasks]
            return float(np.mean(ratios))
        if self.name == "val_delta_m":
            from mtlzoo.metrics import delta_m

            mtl, stl, hib = {}, {}, {}
            for t, metrics in self.baselines.items():
                for m, value in metrics.items():
                    key = f"val_{t}_{m}"
                    if key not in logs:
                        raise kt.errors.FatalValueError(f"val_delta_m needs {key!r} in the logs; got {sorted(logs)}.")
                    mtl[f"{t}/{m}"] = float(logs[key])
                    stl[f"{t}/{m}"] = float(value)
                    hib[f"{t}/{m}"] = bool(self.higher_is_better[t][m])
            if not all(math.isfinite(v) for v in mtl.values()):
                return math.nan
            return float(delta_m(mtl, stl, hib))
        if self.name not in logs:
            raise kt.errors.FatalValueError(f"The objective {self.name!r} is not in the logs; got {sorted(logs)}.")
        return float(logs[self.name])

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        value = self._value(logs)
        logs[self.name] = value
        self.history.append(value)
        loss = float(logs.get("loss", 0.0))
        if not math.isfinite(value) or not math.isfinite(loss):
            raise kt.errors.FailedTrialError(
                f"Trial diverged at epoch {epoch + 1}: {self.name}={value}, loss={loss} (not finite)."
            )
