"""Dynamic loss weighting: Keras callbacks that own a MultiTaskModel's task weights.

```python
import mtlzoo.weighting
cb = mtlzoo.weighting.get("dwa", temperature=2.0)
history = model.fit(x, y, epochs=10, callbacks=[cb])
history.history["depth_weight"]            # the weights, one value per epoch
mtlzoo.weighting.list()                    # registered names
```

A recipe selects a method with `weighting: dwa` and `weighting_args: {...}`;
`weighting: fixed` (the default) means no callback: the recipe's loss weights
stay as they are. Every method registers itself in
`mtlzoo.registry.WEIGHTINGS` from its own file; importing this package imports
them all. See `base.py` for the shared conventions (logged `{task}_weight`,
step hooks, non-finite steps).

Methods: `equal` (EW), `static`, `scheduled`, `dwa`, `uncertainty`,
`gradnorm`, `rlw`, `dtp`, `gls`, `imtl_l`, `famo`.
"""

from __future__ import annotations

import builtins as _builtins

from mtlzoo.registry import WEIGHTINGS
from mtlzoo.weighting.learned import LearnedScalarWeighting
from mtlzoo.weighting.base import LossWeighting
from mtlzoo.weighting.dtp import DTP
from mtlzoo.weighting.dwa import DWA
from mtlzoo.weighting.excess_mtl import ExcessMTL
from mtlzoo.weighting.famo import FAMO
from mtlzoo.weighting.fixed import Equal, Fixed
from mtlzoo.weighting.gls import GLS
from mtlzoo.weighting.gradnorm import GradNorm
from mtlzoo.weighting.imtl_l import IMTLL
from mtlzoo.weighting.rlw import RLW
from mtlzoo.weighting.scheduled import Scheduled
from mtlzoo.weighting.stch import STCH
from mtlzoo.weighting.uncertainty import UncertaintyWeighting

__all__ = [
    "DTP",
    "DWA",
    "Equal",
    "ExcessMTL",
    "FAMO",
    "Fixed",
    "GLS",
    "GradNorm",
    "IMTLL",
    "LearnedScalarWeighting",
    "LossWeighting",
    "RLW",
    "Scheduled",
    "STCH",
    "UncertaintyWeighting",
    "get",
    "list",
]

# The recipe value meaning "no weighting callback" (see `get`).
BUILTIN = "fixed"


def get(name, **hyperparameters):
    """Creates the loss-weighting callback registered as `name`.

    Args:
        name: str. A registered name (see `list()`, case-insensitive; aliases
            `ew` and `uw` work), a `LossWeighting` instance (returned as is),
            or "fixed"/None: the recipe's fixed loss weights, for which there
            is no callback (returns None).
        **hyperparameters: constructor arguments of that method.

    Returns:
        A new `LossWeighting` callback, or None for "fixed".

    Raises:
        UnknownNameError: unknown name (a `KeyError` and `ValueError`; the
            message lists near matches).
        TypeError: a hyperparameter the method does not take.
        ValueError: an out-of-range hyperparameter value (the message names
            the argument and its valid range).

    Example:
    ```python
    import mtlzoo.weighting
    cb = mtlzoo.weighting.get("dwa", temperature=2.0)
    callbacks = [cb] if cb is not None else []
    ```
    """
    if isinstance(name, LossWeighting):
        if hyperparameters:
            raise TypeError("get() takes no hyperparameters when given a LossWeighting instance.")
        return name
    if name is None or (isinstance(name, str) and name.lower() == BUILTIN):
        if hyperparameters:
            raise TypeError(
                f"Weighting 'fixed' takes no hyperparameters (it keeps the recipe's loss weights); "
                f"got {sorted(hyperparameters)}. Use 'static' with weights={{...}} for explicit weights."
            )
        return None
    return WEIGHTINGS.create(name, **hyperparameters)


def list(pattern: str = "*") -> _builtins.list:  # noqa: A001 - public API name
    """Sorted names of the registered loss-weighting methods matching the shell-style `pattern`."""
    return WEIGHTINGS.list(pattern)
