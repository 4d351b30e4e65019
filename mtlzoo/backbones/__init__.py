"""Backbones: registered factories returning lists of stage models.

A backbone factory is called as `factory(input_shape, prefix=..., weights=None, **kwargs)`
and returns a list of `keras.Model` stages; chaining them maps the raw input
(RGB in [0, 255] for images) to the deepest feature, and each stage's output
is a feature tap (strides 4, 8, 16, 32 for image backbones).
"""

from mtlzoo.backbones import applications, mlp, tiny  # noqa: F401  (registration)
from mtlzoo.registry import BACKBONES


def get(name):
    """The backbone factory registered as `name` (unknown names list near matches)."""
    return BACKBONES.get(name)


def list():  # noqa: A001
    return BACKBONES.list()
