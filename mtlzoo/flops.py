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
    return int(_graph_flops(model, set()))


def _graph_flops(model, seen):
    """FLOPs of the nodes of `model`'s own graph (a layer reused inside it counts once per call).

    Only the nodes of this model's graph count: a layer shared with another
    graph (e.g. a `keras.applications` model split into stage models, whose
    layers keep the nodes of the full application) is not counted twice.
    """
    nodes = getattr(model, "_nodes_by_depth", None)
    if nodes is None:  # a subclassed model: fall back to every recorded call
        total = 0
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                if id(layer) not in seen:
                    seen.add(id(layer))
                    total += _graph_flops(layer, seen)
            else:
                total += sum(_layer_flops(layer, node) for node in layer._inbound_nodes)
        return total
    total = 0
    for depth_nodes in nodes.values():
        for node in depth_nodes:
            op = node.operation
            if isinstance(op, keras.Model):
                total += _graph_flops(op, seen)
            elif isinstance(op, keras.layers.Layer):
                total += _layer_flops(op, node)
    return total
