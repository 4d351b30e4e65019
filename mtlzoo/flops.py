"""Analytic FLOP counts for Keras models (convolutions and dense layers)."""

from __future__ import annotations

import math

import keras


def _shape(tensor):
    return tuple(1 if d is None else int(d) for d in tensor.shape[1:])


def _layer_flops(layer, node):
    ins = node.input_tensors
    outs = node.output_tensors
    if not ins or not outs:
        return 0
    x, y = _shape(ins[0]), _shape(outs[0])
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        k = math.prod(layer.kernel_size)
        return 2 * math.prod(y) * k
    if isinstance(layer, keras.layers.SeparableConv2D):
        k = math.prod(layer.kernel_size)
        depthwise = 2 * math.prod(y[:-1]) * x[-1] * layer.depth_multiplier * k
        return depthwise + 2 * math.prod(y) * x[-1] * layer.depth_multiplier
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return 2 * math.prod(x) * math.prod(layer.kernel_size) * layer.filters
    if isinstance(layer, keras.layers.Conv2D):
        groups = getattr(layer, "groups", 1) or 1
        return 2 * math.prod(y) * math.prod(layer.kernel_size) * x[-1] // groups
    if isinstance(layer, keras.layers.Dense):
        return 2 * math.prod(y) * x[-1]
    return 0


def count_flops(model) -> int:
    """FLOPs (2 × multiply-adds) of one example through `model`'s conv and dense layers.

    Element-wise layers (batch norm, activations, additions) are left out, as is
    customary; nested models are walked recursively.

    Example:
    ```python
    gflops = mtlzoo.flops.count_flops(mtlzoo.build("driving_perception")) / 1e9
    ```
    """
    seen, total = set(), 0
    stack = [model]
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
            continue
        for node in layer._inbound_nodes:
            total += _layer_flops(layer, node)
    return int(total)
