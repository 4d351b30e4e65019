"""Old import paths that keep working: a module-level `__getattr__` that forwards moved names with a warning.

Example:
```python
# in a package __init__ whose names moved elsewhere
from mtlzoo.deprecation import forward_moved

__getattr__ = forward_moved(__name__, {"check_dataset": ("mtlzoo.data.checks", "check_dataset")})
```
"""

from __future__ import annotations

import importlib
import warnings

__all__ = ["forward_moved"]


def forward_moved(module_name: str, moved: dict):
    """A module `__getattr__` that returns `moved[name]` = (new module, attribute) with a DeprecationWarning.

    Args:
        module_name: str. The old module's `__name__`.
        moved: dict old name -> (new module path, attribute name).

    Returns:
        A function for the module's `__getattr__`; other names raise AttributeError as usual.
    """

    def __getattr__(name):
        if name in moved:
            module, attr = moved[name]
            warnings.warn(f"{module_name}.{name} moved to {module}.{attr}; import it from there.", DeprecationWarning,
                          stacklevel=2)
            return getattr(importlib.import_module(module), attr)
        raise AttributeError(f"module {module_name!r} has no attribute {name!r}")

    return __getattr__
