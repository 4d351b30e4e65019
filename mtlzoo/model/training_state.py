"""Per-compile state of the multi-task model, loss-weight checks and the replica loss scaling."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mtlzoo.registry import suggestion

def scale_for_replicas(value):
    """Divides by the replica count under tf.distribute (Keras's convention for losses)."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return value / replicas if replicas > 1 else value


class TrainingState:
    """Per-compile objects kept out of Keras's attribute tracking (not saved)."""

    def __init__(self, task_losses, task_metrics, loss_trackers, extra_trackers):
        self.task_losses = task_losses
        self.task_metrics = task_metrics
        self.loss_trackers = loss_trackers
        self.extra_trackers = extra_trackers

    def all_metrics(self):
        out = list(self.loss_trackers.values()) + list(self.extra_trackers.values())
        for ms in self.task_metrics.values():
            out.extend(ms)
        return out


def check_loss_weight(task, value):
    """`value` as a float32 scalar if it is one finite number >= 0 (Python, NumPy or a tensor), else ValueError."""
    problem = None
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
        problem = "not a number"
    else:
        try:
            array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        except Exception:  # noqa: BLE001 - anything that is not array-like
            array = None
        if array is None or array.dtype.kind not in "iuf":
            problem = "not a number"
        elif array.size != 1:
            problem = f"{array.size} values where one number was expected"
        else:
            number = float(array.reshape(()))
            if not np.isfinite(number):
                problem = "not finite"
            elif number < 0:
                problem = "negative"
            else:
                return np.float32(number)
    raise ValueError(
        f"Loss weight of task {task!r} must be one finite number >= 0; got {value!r} ({problem}). "
        "Use 0 to switch a task off."
    )


def set_loss_weights(model, weights):
    """`MultiTaskModel.set_loss_weights` (its docstring says what it does)."""
    if isinstance(weights, (list, tuple)):
        if len(weights) != len(model.task_names):
            raise ValueError(f"Got {len(weights)} loss weights for {len(model.task_names)} tasks {model.task_names}.")
        weights = dict(zip(model.task_names, weights))
    for t, w in weights.items():
        if t not in model._loss_weight_vars:
            raise ValueError(f"Unknown task {t!r} in loss weights.{suggestion(t, model.task_names)} Tasks: {model.task_names}.")
        model._loss_weight_vars[t].assign(check_loss_weight(t, w))
