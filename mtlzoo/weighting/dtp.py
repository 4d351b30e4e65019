"""Dynamic Task Prioritization (DTP)."""

from __future__ import annotations

import math
import numbers
import warnings

import keras
import numpy as np

from mtlzoo.registry import suggestion, WEIGHTINGS
from mtlzoo.weighting.base import LossWeighting, check_float, check_task_names

_MODES = ("max", "min")


def focal_weight(kpi, gamma):
    """DTP's focal priority `−(1 − κ)^γ · log κ` of a KPI κ in (0, 1)."""
    kpi = np.asarray(kpi, np.float64)
    return -np.power(1.0 - kpi, gamma) * np.log(kpi)


@WEIGHTINGS.register("dtp")
class DTP(LossWeighting):
    """Dynamic Task Prioritization: more weight to the tasks that perform worst.

    Each task has a key performance indicator κ_t in [0, 1] (higher is
    better), smoothed over epochs as `κ̄_t ← α·κ_t + (1 − α)·κ̄_t`, and gets the
    focal weight `w_t = −(1 − κ̄_t)^γ_t · log κ̄_t`: a task that is already
    good (κ̄ near 1) gets a weight near 0, a poor one a large weight. κ̄ is
    clipped to `[epsilon, 1 − epsilon]` so that weights stay finite and > 0.
    The KPIs are read from the epoch logs, so the weights change once per
    epoch (they are 1 until the first epoch ends).

    KPI specification per task (`kpis`):

    - a log key (e.g. `"label_acc"`, `"val_segmentation_miou"`) whose value is
      already in [0, 1] with higher = better;
    - `{"key": ..., "mode": "min", "scale": s}` for an error (lower = better):
      `κ = exp(−value / s)`; `scale: None` (default) uses the first observed
      value, so κ starts at e^-1 ≈ 0.37 and rises as the error falls. This
      mapping is mtlzoo's extension for tasks without a bounded KPI.

    Tasks not in `kpis` use `{"key": "{task}_loss", "mode": "min"}`.

    Args:
        kpis: dict task -> KPI specification (see above). Defaults to None.
        gamma: float >= 0, or dict task -> float >= 0. Focusing parameter γ_t
            (0: weight `−log κ̄`). Defaults to 1.0.
        alpha: float in (0, 1]. Smoothing: weight of the newest KPI.
            Defaults to 0.9.
        epsilon: float in (0, 0.5). KPI clipping margin. Defaults to 1e-4.

    Example:
    ```python
    import mtlzoo.weighting
    cb = mtlzoo.weighting.get("dtp", kpis={"label": "label_acc"}, gamma=2.0)
    ```

    Reference:
        Guo, Haque, Huang, Yeung, Fei-Fei, "Dynamic Task Prioritization for
        Multitask Learning", ECCV 2018.
    """

    name = "dtp"

    def __init__(self, kpis=None, gamma=1.0, alpha=0.9, epsilon=1e-4):
        super().__init__()
        if kpis is None:
            kpis = {}
        if not isinstance(kpis, dict):
            raise ValueError(f"DTP: kpis must be a dict task -> log key or spec, got {kpis!r}.")
        self.kpis = {str(t): _check_kpi(t, spec) for t, spec in kpis.items()}
        if isinstance(gamma, dict):
            self.gamma = {str(t): check_float("DTP", f"gamma[{t!r}]", g, low=0.0) for t, g in gamma.items()}
        else:
            self.gamma = check_float("DTP", "gamma", gamma, low=0.0)
        self.alpha = check_float("DTP", "alpha", alpha, low=0.0, high=1.0, low_open=True)
        self.epsilon = check_float("DTP", "epsilon", epsilon, low=0.0, high=0.5, low_open=True, high_open=True)
        self._smoothed = None
        self._has_smoothed = None
        self._scale_values = None

    def build(self, model):
        check_task_names("DTP", self.kpis, model)
        if isinstance(self.gamma, dict):
            check_task_names("DTP", self.gamma, model)
        # Variables, so the state is saved with a model built with this weighting:
        # κ̄ (valid once an epoch was seen) and the loss scales of `min` KPIs (0 until set).
        k = len(model.task_names)
        self._smoothed = keras.Variable(np.zeros(k, np.float32), trainable=False, name="dtp_smoothed_kpis")
        self._has_smoothed = keras.Variable(0.0, trainable=False, name="dtp_epochs_seen")
        self._scale_values = keras.Variable(np.zeros(k, np.float32), trainable=False, name="dtp_kpi_scales")

    @property
    def smoothed(self):
        """The smoothed KPIs κ̄_t as a list in task order, or None before the first epoch."""
        if self._smoothed is None:
            return None
        if float(self._has_smoothed.numpy()) <= 0:
            return None
        return np.asarray(self._smoothed.numpy(), float).tolist()

    @property
    def _scales(self) -> dict:
        if self._scale_values is None:
            return {}
        return {t: float(v) for t, v in zip(self.tasks, self._scale_values.numpy()) if v > 0}

    def _set_scale(self, task, value):
        values = np.asarray(self._scale_values.numpy()).copy()
        values[self.tasks.index(task)] = value
        self._scale_values.assign(values)

    def _spec(self, task):
        return self.kpis.get(task, {"key": f"{task}_loss", "mode": "min", "scale": None})

    def _gamma(self, task):
        return self.gamma.get(task, 1.0) if isinstance(self.gamma, dict) else self.gamma

    def read_kpis(self, logs):
        """Per-task KPI κ_t (numpy [K]) from epoch logs, or None when a value is not finite."""
        out = []
        for t in self.tasks:
            spec = self._spec(t)
            key = spec["key"]
            if key not in logs:
                raise ValueError(
                    f"DTP: KPI key {key!r} of task {t!r} is not in the epoch logs.{suggestion(key, list(logs))} "
                    f"Logged keys: {', '.join(sorted(logs)) or '(none)'}."
                )
            value = float(np.asarray(logs[key]))
            if not math.isfinite(value):
                return None
            if spec["mode"] == "max":
                kappa = value
            else:
                scale = spec["scale"] if spec["scale"] is not None else self._scales.get(t)
                if scale is None:
                    if value <= 0:
                        return None
                    scale = value
                    self._set_scale(t, value)
                kappa = math.exp(-max(value, 0.0) / scale)
            out.append(kappa)
        return np.asarray(out, np.float64)

    def begin(self, model):
        if self.smoothed is None:
            self.assign_weights({t: 1.0 for t in model.task_names})

    def epoch_update(self, epoch, logs):
        kappa = self.read_kpis(logs)
        if kappa is None:
            warnings.warn("DTP: a KPI is not finite this epoch; keeping the current loss weights.",
                          RuntimeWarning, stacklevel=2)
            return None
        kappa = np.clip(kappa, 0.0, 1.0)
        if self.smoothed is None:
            smoothed = kappa
        else:
            smoothed = self.alpha * kappa + (1.0 - self.alpha) * np.asarray(self.smoothed)
        self._smoothed.assign(np.asarray(smoothed, np.float32))
        self._has_smoothed.assign(1.0)
        clipped = np.clip(smoothed, self.epsilon, 1.0 - self.epsilon)
        weights = [focal_weight(k, self._gamma(t)) for k, t in zip(clipped, self.tasks)]
        self.assign_weights(np.asarray(weights, np.float32))
        return None


def _check_kpi(task, spec):
    if isinstance(spec, str):
        return {"key": spec, "mode": "max", "scale": None}
    if not isinstance(spec, dict) or "key" not in spec or not isinstance(spec["key"], str):
        raise ValueError(f"DTP: kpis[{task!r}] must be a log key or a dict with a string `key`, got {spec!r}.")
    unknown = set(spec) - {"key", "mode", "scale"}
    if unknown:
        raise ValueError(f"DTP: kpis[{task!r}] has unknown keys {sorted(unknown)}; allowed: key, mode, scale.")
    mode = spec.get("mode", "max")
    if mode not in _MODES:
        raise ValueError(f"DTP: kpis[{task!r}].mode must be 'max' or 'min', got {mode!r}.")
    scale = spec.get("scale")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"DTP: kpis[{task!r}].scale must be a number in (0, inf) or None, got {scale!r}.")
        scale = float(scale)
    return {"key": spec["key"], "mode": mode, "scale": scale}
