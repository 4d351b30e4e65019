"""Checks for user-given settings: integers that are integers, numbers that are finite.

Every check names the owner and the key and says what was expected, so a
recipe typo fails at construction (`num_classes: 2.5`, `channels: ten`)
instead of being truncated silently or failing deep inside TensorFlow.

Example:
```python
from mtlzoo.validation import as_int
self.num_classes = as_int("segmentation", "num_classes", num_classes, low=2)
```
"""

from __future__ import annotations

import numbers

__all__ = ["as_int"]


def as_int(owner: str, key: str, value, low: int | None = None) -> int:
    """`value` as an int if it is a whole number (an int, or a float like 3.0) >= `low`; else ValueError.

    Args:
        owner: str. Who takes the setting (a head, a recipe), for the message.
        key: str. The setting's name.
        value: the given value.
        low: int or None. Smallest allowed value.

    Returns:
        The int.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        problem = f"{value!r} is not a number"
    elif isinstance(value, numbers.Integral) or (float(value).is_integer()):
        number = int(value)
        if low is None or number >= low:
            return number
        problem = f"{number} is below the minimum"
    else:
        problem = f"{value!r} is not a whole number"
    bound = f" >= {low}" if low is not None else ""
    raise ValueError(f"{owner}: `{key}` must be an integer{bound}; {problem}.")
