"""Customized gate control (CGC) and progressive layered extraction (PLE)."""

from mtlzoo.layers import ExpertGate
from mtlzoo.registry import SHARING
from mtlzoo.sharing.base import SharedGraph, apply_heads
from mtlzoo.sharing.mmoe import (
    build_expert,
    check_count,
    check_tasks,
    expert_units_for,
    gate_input,
    shared_trunk,
    task_only_layers,
)


def extraction_levels(x, tasks, num_levels, num_shared_experts, num_task_experts, units):
    """Stacks `num_levels` extraction levels on `x`; returns dict task -> the task's last-level features.

    Level l has shared experts on the shared path and `num_task_experts`
    experts per task on that task's path. Task t's gate mixes its own and the
    shared experts; below the last level a shared gate mixes every expert of
    the level into the next shared path. With one level there is no shared
    gate and the layer names carry no level number (CGC).
    """
    task_in = {t: x for t in tasks}
    shared_in = x
    pools = {}

    def pooled(tensor, name):
        if id(tensor) not in pools:
            pools[id(tensor)] = gate_input(tensor, name)
        return pools[id(tensor)]

    for level in range(num_levels):
        tag = "" if num_levels == 1 else str(level)
        sep = "" if num_levels == 1 else "_"
        shared = [build_expert(shared_in, units, f"shared_expert{tag}{sep}{i}") for i in range(num_shared_experts)]
        own = {
            t: [build_expert(task_in[t], units, f"{t}__expert{tag}{sep}{i}") for i in range(num_task_experts)]
            for t in tasks
        }
        next_in = {}
        for t in tasks:
            pool_name = "gate_pool" if task_in[t] is x else f"{t}__gate_pool{tag}"
            g = pooled(task_in[t], pool_name)
            next_in[t] = ExpertGate(name=f"{t}__gate{tag}")(own[t] + shared + [g])
        if level < num_levels - 1:
            g = pooled(shared_in, "gate_pool" if shared_in is x else f"shared_gate_pool{tag}")
            every = [e for t in tasks for e in own[t]] + shared
            shared_in = ExpertGate(name=f"shared_gate{tag}")(every + [g])
        task_in = next_in
    return task_in


def _build(mode, inputs, backbone, heads, neck_channels, num_levels, num_shared_experts, num_task_experts,
           expert_units):
    tasks = check_tasks(heads, mode)
    num_levels = check_count(num_levels, f"{mode} num_levels")
    num_shared_experts = check_count(num_shared_experts, f"{mode} num_shared_experts")
    num_task_experts = check_count(num_task_experts, f"{mode} num_task_experts")
    x = shared_trunk(inputs, backbone, neck_channels)
    units = expert_units_for(x, expert_units, neck_channels)
    features = extraction_levels(x, tasks, num_levels, num_shared_experts, num_task_experts, units)
    outputs, _ = apply_heads(heads, {t: [f] for t, f in features.items()})
    return SharedGraph(outputs, task_only_layers(outputs))


@SHARING.register("cgc")
def cgc(inputs, backbone, heads, neck_channels=64, num_shared_experts=1, num_task_experts=1, expert_units=None):
    """Customized gate control: shared experts, experts of each task, and one gate per task over both.

    Task t's features are the softmax mixture (`ExpertGate` `{t}__gate`) of
    its own experts `{t}__expert{i}` and the shared experts
    `shared_expert{i}`; the gate reads the trunk's output. A task's experts,
    gate and head only reach that task's output (they are its task layers);
    the trunk and the shared experts are shared. On images the experts are
    3×3 conv-BN-ReLU blocks on the neck's finest map (P2), the gates read its
    global average pool, and each head gets its task's mixed map as its only
    feature level.

    Differences from the paper: the experts sit on a shared trunk (the
    paper's read the input) and, on images, are conv blocks.

    Args:
        inputs: KerasTensor. The model input.
        backbone: callable. `backbone(prefix=...)` returns the stage models.
        heads: dict task -> `mtlzoo.heads.Head`.
        neck_channels: int. Width of the neck. Defaults to 64.
        num_shared_experts: int >= 1. Shared experts. Defaults to 1.
        num_task_experts: int >= 1. Experts of each task. Defaults to 1.
        expert_units: int, list of int or None. Widths of each expert's layers;
            None: (16,) on vectors, (neck_channels,) on images. Defaults to None.

    Example:
    ```python
    model = mtlzoo.build("tabular_mmoe", sharing="cgc", sharing_args={"num_task_experts": 2})
    ```

    Reference:
        Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task
        Learning (MTL) Model for Personalized Recommendations", RecSys 2020.
    """
    return _build("cgc", inputs, backbone, heads, neck_channels, 1, num_shared_experts, num_task_experts,
                  expert_units)


@SHARING.register("ple")
def ple(inputs, backbone, heads, neck_channels=64, num_levels=2, num_shared_experts=1, num_task_experts=1,
        expert_units=None):
    """Progressive layered extraction: `num_levels` stacked CGC levels joined by a shared gate.

    Level l (l = 0 .. num_levels-1) has experts `{t}__expert{l}_{i}` on each
    task's path and `shared_expert{l}_{i}` on the shared path. Task t's gate
    `{t}__gate{l}` mixes its own and the shared experts into t's next path;
    below the last level a shared gate `shared_gate{l}` mixes every expert of
    the level into the next shared path. The heads read the last level. A
    task's experts and gates below the last level also feed the shared gate,
    so only its last-level experts and gate and its head are its task layers.
    On images the experts are 3×3 conv-BN-ReLU blocks (the first level's on
    the neck's finest map P2) and each gate reads the global average pool of
    its path's map.

    Differences from the paper: the experts sit on a shared trunk (the
    paper's first level reads the input) and, on images, are conv blocks.

    Args:
        inputs: KerasTensor. The model input.
        backbone: callable. `backbone(prefix=...)` returns the stage models.
        heads: dict task -> `mtlzoo.heads.Head`.
        neck_channels: int. Width of the neck. Defaults to 64.
        num_levels: int >= 1. Extraction levels (the paper compares two-level
            models). Defaults to 2.
        num_shared_experts: int >= 1. Shared experts per level. Defaults to 1.
        num_task_experts: int >= 1. Experts of each task per level. Defaults to 1.
        expert_units: int, list of int or None. Widths of each expert's layers;
            None: (16,) on vectors, (neck_channels,) on images. Defaults to None.

    Example:
    ```python
    model = mtlzoo.build("tabular_mmoe", sharing="ple", sharing_args={"num_levels": 3})
    gates = model.gates(x)   # {task: [level-0 weights, level-1 weights, ...]}
    ```

    Reference:
        Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task
        Learning (MTL) Model for Personalized Recommendations", RecSys 2020.
    """
    return _build("ple", inputs, backbone, heads, neck_channels, num_levels, num_shared_experts,
                  num_task_experts, expert_units)
