"""What a sharing builder returns, and helpers shared by the builders."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class SharedGraph:
    """The functional graph a sharing builder made.

    Attributes:
        outputs: dict task -> output KerasTensor (the output layer is named after the task).
        task_layers: dict task -> names of the layers only that task uses. The
            remaining trainable layers are "shared": gradient methods combine
            the tasks' gradients on them.
        penalties: list of penalty configs the model adds to its loss (see
            `MultiTaskModel`), e.g. the soft-sharing distance between columns.
    """

    outputs: dict
    task_layers: dict
    penalties: list = dataclasses.field(default_factory=list)


def apply_heads(heads, features_by_task):
    """Applies each task's head to its features; returns outputs and the head layer names."""
    outputs, layers = {}, {}
    for task, head in heads.items():
        outputs[task] = head(features_by_task[task], task)
        layers[task] = _head_layer_names(outputs[task], task)
    return outputs, layers


def _head_layer_names(output, task):
    """Names of the layers between the neck and `output` that belong to `task`.

    Heads name every layer `task` or `task__*`; walk the graph back from the
    output and collect those names.
    """
    names, stack, seen = set(), [output], set()
    while stack:
        tensor = stack.pop()
        layer = tensor._keras_history.operation
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if layer.name == task or layer.name.startswith(task + "__"):
            names.add(layer.name)
            node = layer._inbound_nodes[tensor._keras_history.node_index]
            stack.extend(node.input_tensors)
    return sorted(names)
