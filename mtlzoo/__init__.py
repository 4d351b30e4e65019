"""mtlzoo: a Keras 3 model zoo for multi-task learning.

Public face: `build`, `load`, `list_recipes`, `get_recipe`. Heavier entry points
(training, evaluation, export) live in their own modules and are exposed here
lazily so that `import mtlzoo` stays cheap.
"""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_LAZY = {
    "build": ("mtlzoo.api", "build"),
    "load": ("mtlzoo.api", "load"),
    "list_recipes": ("mtlzoo.recipe", "list_recipes"),
    "get_recipe": ("mtlzoo.recipe", "get_recipe"),
    "Recipe": ("mtlzoo.recipe", "Recipe"),
    "MultiTaskModel": ("mtlzoo.model", "MultiTaskModel"),
    "train": ("mtlzoo.training", "train"),
    "evaluate": ("mtlzoo.evaluation", "evaluate"),
}
# Submodules reachable as attributes without an explicit import: `mtlzoo.edge.load(...)`,
# `mtlzoo.export(model, ...)` (the export package is callable: it runs `mtlzoo.export.export`).
_SUBMODULES = ("edge", "zoo", "optimizers", "export", "predict", "aggregators", "weighting", "data", "heads", "backbones",
               "layers", "losses", "metrics", "diagnostics", "testing", "flops")


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"mtlzoo.{name}")
    raise AttributeError(f"module 'mtlzoo' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY) + list(_SUBMODULES))
