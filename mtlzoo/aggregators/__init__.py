"""Gradient aggregators: combine per-task gradients [T, P] into one direction [P].

```python
import mtlzoo.aggregators
agg = mtlzoo.aggregators.get("cagrad", c=0.5)
d = agg(grads, losses=None)            # grads [T, P] -> tf.Tensor [P]
if agg.weight_based:
    w = agg.task_weights(grads, losses)   # [T], d == w @ grads
mtlzoo.aggregators.list()              # registered names
```

Every method registers itself in `mtlzoo.registry.AGGREGATORS` from its own
file; importing this package imports them all. See `base.py` for the shared
conventions (graph mode, fixed-iteration solvers, state, non-finite input).
"""

from __future__ import annotations

import builtins as _builtins

from mtlzoo.aggregators.base import Aggregator
from mtlzoo.aggregators.aligned_mtl import AlignedMTL
from mtlzoo.aggregators.cagrad import CAGrad
from mtlzoo.aggregators.db_mtl import DBMTL
from mtlzoo.aggregators.fairgrad import FairGrad
from mtlzoo.aggregators.graddrop import GradDrop
from mtlzoo.aggregators.gradvac import GradVac
from mtlzoo.aggregators.imtl_g import IMTLG
from mtlzoo.aggregators.mean import Mean, Sum
from mtlzoo.aggregators.mgda import MGDA
from mtlzoo.aggregators.moco import MoCo
from mtlzoo.aggregators.modo import MoDo
from mtlzoo.aggregators.nash_mtl import NashMTL
from mtlzoo.aggregators.pcgrad import PCGrad
from mtlzoo.aggregators.sdmgrad import SDMGrad
from mtlzoo.aggregators.upgrad import UPGrad
from mtlzoo.registry import AGGREGATORS

__all__ = [
    "Aggregator",
    "AlignedMTL",
    "CAGrad",
    "DBMTL",
    "FairGrad",
    "GradDrop",
    "GradVac",
    "IMTLG",
    "MGDA",
    "Mean",
    "MoCo",
    "MoDo",
    "NashMTL",
    "PCGrad",
    "SDMGrad",
    "Sum",
    "UPGrad",
    "get",
    "list",
]


def get(name, **hyperparameters) -> Aggregator:
    """Creates the aggregator registered as `name` with the given hyperparameters.

    Args:
        name: str. A registered name (see `list()`), case-insensitive, or an
            `Aggregator` instance (returned as is; no hyperparameters then).
        **hyperparameters: constructor arguments of that aggregator.

    Returns:
        A new `Aggregator` instance.

    Raises:
        UnknownNameError: unknown name (the message lists near matches).
        TypeError: a hyperparameter the aggregator does not take.
        ValueError: an out-of-range hyperparameter value.

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("pcgrad", seed=0)
    ```
    """
    if isinstance(name, Aggregator):
        if hyperparameters:
            raise TypeError("get() takes no hyperparameters when given an Aggregator instance.")
        return name
    return AGGREGATORS.create(name, **hyperparameters)


def list(pattern: str = "*") -> _builtins.list:  # noqa: A001 - public API name
    """Sorted names of the registered aggregators matching the shell-style `pattern`."""
    return AGGREGATORS.list(pattern)
