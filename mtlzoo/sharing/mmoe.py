"""Multi-gate mixture of experts (MMoE), and the expert helpers the other mixture builders share."""

import keras

from mtlzoo.heads.base import conv_bn_relu
from mtlzoo.layers import ExpertGate
from mtlzoo.neck import build_neck
from mtlzoo.registry import SHARING
from mtlzoo.sharing.base import SharedGraph, apply_heads

#: Expert widths on vector features when `expert_units` is None (Ma et al.'s synthetic setup: 16 units).
VECTOR_EXPERT_UNITS = (16,)


def shared_trunk(inputs, backbone, neck_channels):
    """Runs the shared backbone and neck; returns the tensor the experts read.

    For images that is the neck's finest map (P2, stride 4, the map the dense
    heads read); for vectors the backbone's output.
    """
    x = inputs
    features = []
    for stage in backbone(prefix="backbone_"):
        x = stage(x)
        features.append(x)
    return build_neck(features, neck_channels, name="neck")[0]


def expert_units_for(x, expert_units, neck_channels):
    """The expert widths: `expert_units`, or the default for vectors / feature maps."""
    if expert_units is None:
        return VECTOR_EXPERT_UNITS if len(x.shape) == 2 else (int(neck_channels),)
    units = (expert_units,) if isinstance(expert_units, int) else tuple(expert_units)
    if not units or any(isinstance(u, bool) or int(u) != u or int(u) < 1 for u in units):
        raise ValueError(f"expert_units must be a positive int or a non-empty list of them, got {expert_units!r}.")
    return tuple(int(u) for u in units)


def build_expert(x, units, name):
    """Applies a new expert named `name` to `x`: Dense+ReLU layers on vectors, 3×3 conv-BN-ReLU blocks on maps.

    The expert is one nested model, so its name is one layer name of the
    multi-task model.
    """
    inp = keras.Input(x.shape[1:], name=f"{name}_in")
    y = inp
    for i, u in enumerate(units):
        if len(x.shape) == 2:
            y = keras.layers.Dense(u, activation="relu", name=f"{name}_dense{i}")(y)
        elif len(x.shape) == 4:
            y = conv_bn_relu(y, u, f"{name}_block{i}")
        else:
            raise ValueError(f"Experts take vectors [B, D] or feature maps [B, H, W, C]; got shape {x.shape}.")
    return keras.Model(inp, y, name=name)(x)


def gate_input(x, name):
    """The gate's input: `x` itself for vectors, its global average pool (layer `name`) for feature maps."""
    if len(x.shape) == 4:
        return keras.layers.GlobalAveragePooling2D(name=name)(x)
    return x


def check_tasks(heads, mode):
    tasks = list(heads)
    if len(tasks) < 2:
        raise ValueError(f"{mode} sharing needs at least two tasks; use sharing='hard' for one.")
    return tasks


def check_count(value, what, minimum=1):
    if isinstance(value, bool) or int(value) != value or int(value) < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def task_only_layers(outputs):
    """dict task -> names of the layers that only that task's output depends on.

    Walks the functional graph back from every output; a layer reached from
    one task's output alone is that task's, every other one is shared (what
    gradient methods combine the tasks' gradients on).
    """
    reached = {}
    for task, output in outputs.items():
        names, stack, seen = set(), [output], set()
        while stack:
            tensor = stack.pop()
            layer = tensor._keras_history.operation
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            node = layer._inbound_nodes[tensor._keras_history.node_index]
            if not node.input_tensors:  # the model's input layer
                continue
            names.add(layer.name)
            stack.extend(node.input_tensors)
        reached[task] = names
    only = {}
    for task, names in reached.items():
        others = set().union(*(reached[t] for t in reached if t != task))
        only[task] = sorted(names - others)
    return only


@SHARING.register("mmoe")
def mmoe(inputs, backbone, heads, neck_channels=64, num_experts=8, expert_units=None):
    """Shared trunk, `num_experts` shared experts, and one softmax gate per task over all of them.

    Task t's features are `Σ_i g_t(x)_i · f_i(x)`, with `g_t` an `ExpertGate`
    named `{t}__gate`; the head (the paper's "tower") reads them. On vectors
    the experts are MLPs on the backbone's output and the gates read that
    output. On images the experts are 3×3 conv-BN-ReLU blocks on the neck's
    finest map (P2, stride 4), the gates read its global average pool (one
    weight per expert and example), and each head gets the task's mixed map
    as its only feature level (dense and pooled heads alike). The experts and
    the trunk are shared; a task's gate and head are its own.

    Differences from the paper: the experts sit on a shared trunk (the paper's
    experts read the raw input; use the `mlp` backbone with no hidden layer
    widths to be close) and, on images, are conv blocks.

    Args:
        inputs: KerasTensor. The model input.
        backbone: callable. `backbone(prefix=...)` returns the stage models.
        heads: dict task -> `mtlzoo.heads.Head`.
        neck_channels: int. Width of the neck. Defaults to 64.
        num_experts: int >= 2. Number of experts (the paper's synthetic
            experiments use 8). Defaults to 8.
        expert_units: int, list of int or None. Widths of each expert's layers
            (conv blocks on images). None: (16,) on vectors (the paper's
            synthetic setup), (neck_channels,) on images. Defaults to None.

    Example:
    ```python
    model = mtlzoo.build("tabular_mmoe")
    model = mtlzoo.build("driving_perception_lite", sharing="mmoe", sharing_args={"num_experts": 4})
    ```

    Reference:
        Ma et al., "Modeling Task Relationships in Multi-task Learning with
        Multi-gate Mixture-of-Experts", KDD 2018.
    """
    tasks = check_tasks(heads, "mmoe")
    num_experts = check_count(num_experts, "mmoe num_experts", 2)
    x = shared_trunk(inputs, backbone, neck_channels)
    units = expert_units_for(x, expert_units, neck_channels)
    experts = [build_expert(x, units, f"expert{i}") for i in range(num_experts)]
    g = gate_input(x, "gate_pool")
    features = {t: [ExpertGate(name=f"{t}__gate")(experts + [g])] for t in tasks}
    outputs, _ = apply_heads(heads, features)
    return SharedGraph(outputs, task_only_layers(outputs))
