"""Δm: the average relative difference of a multi-task model to single-task baselines.

The multi-task literature summarises a model evaluated on K metrics (over all
tasks) by one number, the mean per-metric relative change against the
single-task learning (STL) baselines, in percent, signed so that **lower is
better** (a negative Δm means the multi-task model improves on the baselines):

    Δm = (1/K) Σ_k (−1)^{h_k} (M_mtl,k − M_stl,k) / M_stl,k × 100

with h_k = 1 when a higher value of metric k is better (mIoU, pixel accuracy,
"within 11.25°") and h_k = 0 when lower is better (errors, angles).

Reference:
    Maninis, Radosavovic and Kokkinos, "Attentive Single-Tasking of Multiple
    Tasks", CVPR 2019 (definition of Δm). Navon et al., "Multi-Task Learning as
    a Bargaining Game", ICML 2022, Table 2 (the NYUv2 numbers in the example).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["delta_m"]


def _as_flag(value, where: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise TypeError(
        f"delta_m: higher_is_better{where} must be a bool (or 0/1), got "
        f"{type(value).__name__}: {value!r}."
    )


def _as_number(value, name: str, where: str) -> float:
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise TypeError(f"delta_m: {name}{where} must be a real number, got {type(value).__name__}: {value!r}.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"delta_m: {name}{where} must be a real number, got {type(value).__name__}: {value!r}."
        ) from None
    if not math.isfinite(number):
        raise ValueError(f"delta_m: {name}{where} is {number}; every metric must be a finite number.")
    return number


def _is_sequence(x) -> bool:
    return isinstance(x, (Sequence, np.ndarray)) and not isinstance(x, (str, bytes))


def _align(mtl, stl, higher_is_better):
    """Returns four equal-length lists (labels, mtl, stl, flags) from sequences or dicts."""
    if isinstance(mtl, Mapping) or isinstance(stl, Mapping):
        if not (isinstance(mtl, Mapping) and isinstance(stl, Mapping)):
            raise TypeError(
                "delta_m: `mtl` and `stl` must both be dicts (metric name -> value) or both be "
                f"sequences; got {type(mtl).__name__} and {type(stl).__name__}."
            )
        if set(mtl) != set(stl):
            only_mtl = sorted(map(str, set(mtl) - set(stl)))
            only_stl = sorted(map(str, set(stl) - set(mtl)))
            raise ValueError(
                "delta_m: `mtl` and `stl` must have the same metric names. "
                f"Only in mtl: {only_mtl}; only in stl: {only_stl}."
            )
        if not isinstance(higher_is_better, Mapping):
            raise TypeError(
                "delta_m: with dict metrics, `higher_is_better` must be a dict with the same keys "
                f"(metric name -> bool), got {type(higher_is_better).__name__}."
            )
        if set(higher_is_better) != set(stl):
            missing = sorted(map(str, set(stl) - set(higher_is_better)))
            extra = sorted(map(str, set(higher_is_better) - set(stl)))
            raise ValueError(
                "delta_m: `higher_is_better` must have the same keys as the metrics. "
                f"Missing: {missing}; unknown: {extra}."
            )
        keys = list(stl)
        return (
            [f"[{k!r}]" for k in keys],
            [mtl[k] for k in keys],
            [stl[k] for k in keys],
            [higher_is_better[k] for k in keys],
        )
    for name, value in (("mtl", mtl), ("stl", stl), ("higher_is_better", higher_is_better)):
        if not _is_sequence(value):
            raise TypeError(
                f"delta_m: `{name}` must be a sequence (list, tuple, 1-D array) or, for `mtl`/`stl`, "
                f"a dict; got {type(value).__name__}: {value!r}."
            )
        if isinstance(value, np.ndarray) and value.ndim != 1:
            raise ValueError(f"delta_m: `{name}` must be 1-D, got an array of shape {value.shape}.")
    if not len(mtl) == len(stl) == len(higher_is_better):
        raise ValueError(
            "delta_m: `mtl`, `stl` and `higher_is_better` must have the same length, got "
            f"{len(mtl)}, {len(stl)} and {len(higher_is_better)}."
        )
    return [f"[{i}]" for i in range(len(stl))], list(mtl), list(stl), list(higher_is_better)


def delta_m(mtl, stl, higher_is_better) -> float:
    """Average relative difference of multi-task metrics to single-task baselines, in percent.

    Δm = (1/K) Σ_k (−1)^{h_k} (M_mtl,k − M_stl,k) / M_stl,k × 100, where h_k is 1
    when higher is better for metric k. Lower Δm is better; a negative value means
    the multi-task model beats the single-task baselines on average.

    Args:
        mtl: The multi-task model's metrics: a sequence of K numbers, or a dict
            metric name -> number.
        stl: The single-task baselines, in the same form as `mtl` (same length,
            or same keys).
        higher_is_better: For each metric, True when a higher value is better.
            A sequence of K bools (for sequence metrics) or a dict with the same
            keys (for dict metrics).

    Returns:
        Δm in percent, as a Python float.

    Raises:
        ValueError: on length or key mismatch, no metrics at all, a NaN or
            infinite value, or a baseline equal to zero (the relative difference
            is undefined).
        TypeError: on mixed dict/sequence inputs or non-numeric values.

    Example:
    ```python
    from mtlzoo.metrics import delta_m

    # NYUv2: mIoU, pix acc, abs err, rel err, mean, median, <11.25, <22.5, <30.
    stl = (38.30, 63.76, 0.6754, 0.2780, 25.01, 19.21, 30.14, 57.20, 69.15)
    nash_mtl = (40.13, 65.93, 0.5261, 0.2171, 25.26, 20.08, 28.40, 55.47, 68.15)
    higher = (True, True, False, False, False, False, True, True, True)
    delta_m(nash_mtl, stl, higher)   # -4.05 (the paper prints -4.04, a mean over seeds)

    delta_m({"miou": 40.0, "abs_err": 0.5}, {"miou": 38.0, "abs_err": 0.6},
            {"miou": True, "abs_err": False})
    ```

    Reference:
        Maninis et al., "Attentive Single-Tasking of Multiple Tasks", CVPR 2019;
        Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022.
    """
    labels, mtl_values, stl_values, flags = _align(mtl, stl, higher_is_better)
    if not labels:
        raise ValueError("delta_m: got no metrics; pass at least one (mtl, stl, higher_is_better) triple.")
    total = 0.0
    for label, m, s, h in zip(labels, mtl_values, stl_values, flags):
        m = _as_number(m, "mtl", label)
        s = _as_number(s, "stl", label)
        higher = _as_flag(h, label)
        if s == 0.0:
            raise ValueError(
                f"delta_m: the single-task baseline stl{label} is 0, so the relative difference "
                "is undefined. Drop that metric or use a non-zero baseline."
            )
        sign = -1.0 if higher else 1.0
        total += sign * (m - s) / s
    return float(total / len(labels) * 100.0)
