"""Sharing builders: hard sharing, cross-stitch, soft (L2) sharing and the others registered here.

A builder is registered in `mtlzoo.registry.SHARING` and called as
`builder(inputs, backbone, heads, neck_channels=..., **sharing_args)`; it
returns a `SharedGraph`. Adding a sharing mode is one file in this folder with
the `@SHARING.register(...)` decorator: importing this package imports every
module in it, so the new mode is registered (and swept by the tests and by
`mtlzoo bench methods`) without touching this file.
"""

import importlib as _importlib
import pkgutil as _pkgutil

from mtlzoo.registry import SHARING
from mtlzoo.sharing.base import SharedGraph

for _module in sorted(m.name for m in _pkgutil.iter_modules(__path__)):
    if not _module.startswith("_"):
        _importlib.import_module(f"{__name__}.{_module}")


def get(name):
    return SHARING.get(name)


def list():  # noqa: A001
    return SHARING.list()


__all__ = ["SharedGraph", "get", "list"]
