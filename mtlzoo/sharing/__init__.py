"""Sharing builders: hard sharing, cross-stitch and soft (L2) sharing.

A builder is registered in `mtlzoo.registry.SHARING` and called as
`builder(inputs, backbone, heads, neck_channels=..., **sharing_args)`; it
returns a `SharedGraph`. Adding a sharing mode is one file with a decorator.
"""

from mtlzoo.registry import SHARING
from mtlzoo.sharing import cross_stitch, hard, soft_l2  # noqa: F401  (registration)
from mtlzoo.sharing.base import SharedGraph


def get(name):
    return SHARING.get(name)


def list():  # noqa: A001
    return SHARING.list()


__all__ = ["SharedGraph", "get", "list"]
