"""Scheduled loss weights: a per-task linear ramp or step schedule over epochs."""

from __future__ import annotations

import math
import numbers

from mtlzoo.registry import WEIGHTINGS
from mtlzoo.weighting.base import LossWeighting, check_task_names

_KINDS = ("constant", "linear", "step")


@WEIGHTINGS.register("scheduled")
class Scheduled(LossWeighting):
    """Per-task loss weights that follow a schedule over epochs.

    Each task's schedule is one of:

    - a number: a constant weight;
    - `{"kind": "linear", "start": a, "end": b, "epochs": n, "begin": e0}`: the
      weight is `a` up to epoch `e0` (default 0), then moves linearly to reach
      `b` at epoch `e0 + n` and stays there (a warm-up ramp with `a = 0`);
    - `{"kind": "step", "values": [v0, v1, ...], "boundaries": [e1, e2, ...]}`:
      `v0` for epochs `< e1`, `v1` for `e1 <= epoch < e2`, and so on
      (`len(values) == len(boundaries) + 1`, boundaries increasing).

    Epochs are Keras's 0-based epoch indices (so `initial_epoch` resumes the
    schedule where it was). The weight is set in `on_epoch_begin`. Tasks
    without a schedule keep their current weight.

    Args:
        schedules: dict task -> schedule (see above). Weights must be >= 0.

    Example:
    ```python
    import mtlzoo.weighting
    cb = mtlzoo.weighting.get("scheduled", schedules={
        "depth": {"kind": "linear", "start": 0.0, "end": 1.0, "epochs": 5},
        "scene": {"kind": "step", "values": [0.0, 1.0], "boundaries": [3]},
    })
    ```
    """

    name = "scheduled"
    positive_weights = False

    def __init__(self, schedules=None):
        super().__init__()
        if schedules is None:
            schedules = {}
        if not isinstance(schedules, dict):
            raise ValueError(f"Scheduled: schedules must be a dict task -> schedule, got {schedules!r}.")
        self.schedules = {str(t): _check_schedule(t, spec) for t, spec in schedules.items()}

    def build(self, model):
        check_task_names("Scheduled", self.schedules, model)

    def weight_at(self, task, epoch) -> float:
        """The scheduled weight of `task` at (0-based) `epoch`."""
        spec = self.schedules[task]
        kind = spec["kind"]
        if kind == "constant":
            return spec["value"]
        if kind == "linear":
            progress = (epoch - spec["begin"]) / spec["epochs"]
            progress = min(max(progress, 0.0), 1.0)
            return spec["start"] + progress * (spec["end"] - spec["start"])
        index = sum(1 for b in spec["boundaries"] if epoch >= b)
        return spec["values"][index]

    def epoch_begin(self, epoch):
        if self.schedules:
            self.assign_weights({t: self.weight_at(t, epoch) for t in self.schedules})


def _number(task, name, value, low=0.0, integer=False):
    bad = isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value))
    if integer:
        bad = bad or not isinstance(value, numbers.Integral)
    if bad or value < low:
        what = "an integer" if integer else "a finite number"
        raise ValueError(f"Scheduled: schedules[{task!r}].{name} must be {what} >= {low:g}, got {value!r}.")
    return int(value) if integer else float(value)


def _check_schedule(task, spec):
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        return {"kind": "constant", "value": _number(task, "value", spec)}
    if not isinstance(spec, dict):
        raise ValueError(f"Scheduled: schedules[{task!r}] must be a number or a dict with a `kind`, got {spec!r}.")
    kind = spec.get("kind")
    if kind not in _KINDS:
        raise ValueError(
            f"Scheduled: schedules[{task!r}].kind must be one of {', '.join(map(repr, _KINDS))}, got {kind!r}.")
    allowed = {"constant": {"kind", "value"}, "linear": {"kind", "start", "end", "epochs", "begin"},
               "step": {"kind", "values", "boundaries"}}[kind]
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(
            f"Scheduled: schedules[{task!r}] ({kind}) has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}.")
    if kind == "constant":
        return {"kind": kind, "value": _number(task, "value", spec.get("value", 1.0))}
    if kind == "linear":
        for key in ("start", "end", "epochs"):
            if key not in spec:
                raise ValueError(f"Scheduled: schedules[{task!r}] (linear) needs `{key}`.")
        return {
            "kind": kind,
            "start": _number(task, "start", spec["start"]),
            "end": _number(task, "end", spec["end"]),
            "epochs": _number(task, "epochs", spec["epochs"], low=1, integer=True),
            "begin": _number(task, "begin", spec.get("begin", 0), integer=True),
        }
    values = spec.get("values")
    boundaries = spec.get("boundaries", [])
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(
            f"Scheduled: schedules[{task!r}].values must be a non-empty list of weights >= 0, got {values!r}.")
    if not isinstance(boundaries, (list, tuple)):
        raise ValueError(f"Scheduled: schedules[{task!r}].boundaries must be a list of epochs, got {boundaries!r}.")
    values = [_number(task, f"values[{i}]", v) for i, v in enumerate(values)]
    boundaries = [_number(task, f"boundaries[{i}]", b, low=1, integer=True) for i, b in enumerate(boundaries)]
    if len(values) != len(boundaries) + 1:
        raise ValueError(
            f"Scheduled: schedules[{task!r}] needs len(values) == len(boundaries) + 1, got "
            f"{len(values)} values and {len(boundaries)} boundaries."
        )
    if any(b2 <= b1 for b1, b2 in zip(boundaries, boundaries[1:])):
        raise ValueError(f"Scheduled: schedules[{task!r}].boundaries must be strictly increasing, got {boundaries}.")
    return {"kind": kind, "values": values, "boundaries": boundaries}
