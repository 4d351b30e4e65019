"""Reading out the expert-gate weights of a mixture-of-experts model (`MultiTaskModel.gates`)."""

from __future__ import annotations

import re

import keras
import numpy as np

from mtlzoo.layers import DSelectKGate, ExpertGate

#: Layer classes whose weights `gates` reads; each has `gate_weights(gate_input) -> [B, n]`.
GATE_CLASSES = (ExpertGate, DSelectKGate)

_GATE_NAME = re.compile(r"^(?P<task>.+)__gate(?P<level>\d*)$")


def task_gate_layers(model):
    """dict task -> that task's gate layers in level order (found by class, named `{task}__gate[level]`)."""
    found = {}
    for layer in model.layers:
        if not isinstance(layer, GATE_CLASSES):
            continue
        match = _GATE_NAME.match(layer.name)
        if match and match["task"] in model.task_names:
            found.setdefault(match["task"], []).append((int(match["level"] or 0), layer))
    return {t: [layer for _, layer in sorted(found[t], key=lambda p: p[0])] for t in model.task_names if t in found}


def gates(model, x):
    """Per-task expert-gate weights of `model` on inputs `x` (`MultiTaskModel.gates`).

    Finds the gate layers by class (`ExpertGate`, `DSelectKGate`) named
    `{task}__gate` or `{task}__gate{level}`, computes their gate inputs on `x`
    in inference mode, and evaluates each gate's weights. Shared gates (PLE's
    `shared_gate{l}`) are not returned.

    Args:
        model: `MultiTaskModel`.
        x: a batch of model inputs (array or tensor).

    Returns:
        dict task -> float array [batch, num_experts] (rows sum to one); with
        several gate levels (PLE), task -> list of such arrays, level 0 first.

    Raises:
        ValueError: the model has no expert gates; the message names its sharing mode.

    Example:
    ```python
    model = mtlzoo.build("tabular_mmoe")
    weights = model.gates(x)   # {"y1": array [B, 8], "y2": array [B, 8]}
    ```
    """
    by_task = task_gate_layers(model)
    if not by_task:
        recipe = model.metadata.get("recipe", {}) if isinstance(model.metadata, dict) else {}
        mode = recipe.get("sharing", "unknown")
        raise ValueError(
            f"Model {model.name!r} has no expert gates: its sharing mode is {mode!r}. Gate weights exist "
            "in the mixture-of-experts modes; build with e.g. sharing='mmoe', 'cgc', 'ple' or 'dselect_k'."
        )
    layers = [layer for t in by_task for layer in by_task[t]]
    # The gate input is the last tensor a gate layer is called on.
    gate_inputs = [layer._inbound_nodes[0].input_tensors[-1] for layer in layers]
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, gate_inputs)
    values = probe(x, training=False)
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    weights = {id(layer): np.asarray(keras.ops.convert_to_numpy(layer.gate_weights(v))) for layer, v in zip(layers, values)}
    out = {}
    for t, task_layers in by_task.items():
        arrays = [weights[id(layer)] for layer in task_layers]
        out[t] = arrays[0] if len(arrays) == 1 else arrays
    return out
