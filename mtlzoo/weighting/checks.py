"""Argument checks shared by the loss weightings (errors name the argument and the fix)."""

from __future__ import annotations

import math
import numbers

from mtlzoo.registry import suggestion


# ---------------------------------------------------------------- validation
def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_float(owner, name, value, low=None, high=None, low_open=False, high_open=False, allow_none=False):
    """Returns `value` as a float in the given range, or raises ValueError naming `name`.

    Args:
        owner: str. Method name used in the message ("DWA").
        name: str. Argument name.
        value: the value to check.
        low, high: float or None. Bounds (None: unbounded).
        low_open, high_open: bool. Exclude the bound itself.
        allow_none: bool. Accept None (returned as None).
    """
    if value is None and allow_none:
        return None
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    rng = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    if not _is_real(value) or not math.isfinite(float(value)):
        raise ValueError(f"{owner}: {name} must be a finite number in {rng}, got {value!r}.")
    value = float(value)
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{owner}: {name} must be in {rng}, got {value!r}.")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{owner}: {name} must be in {rng}, got {value!r}.")
    return value


def check_int(owner, name, value, low=None, allow_none=False):
    """Returns `value` as an int >= `low`, or raises ValueError naming `name`."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}.")
    if low is not None and value < low:
        raise ValueError(f"{owner}: {name} must be an integer >= {low}, got {value!r}.")
    return int(value)


def check_choice(owner, name, value, choices):
    """Returns `value` if it is one of `choices`, or raises ValueError listing them."""
    if value not in choices:
        raise ValueError(
            f"{owner}: {name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}."
            f"{suggestion(str(value), choices) if isinstance(value, str) else ''}"
        )
    return value


def check_task_names(owner, names, model):
    """Raises ValueError if `names` holds a task `model` does not have (with a near match)."""
    for t in names:
        if t not in model.task_names:
            raise ValueError(
                f"{owner}: unknown task {t!r}.{suggestion(t, model.task_names)} "
                f"The model's tasks are {model.task_names}."
            )
