"""Soft parameter sharing by an L2 penalty between task columns."""

from mtlzoo.registry import SHARING
from mtlzoo.sharing.base import SharedGraph, apply_heads
from mtlzoo.sharing.columns import build_columns, init_columns_from


@SHARING.register("soft_l2")
def soft_l2(inputs, backbone, heads, neck_channels=64, weight=1e-3, init_from=None):
    """One column per task, tied by `weight · Σ_{i<j} ‖θ_i − θ_j‖²` over corresponding parameters.

    Every task keeps its own backbone and neck; the penalty over each pair of
    columns' corresponding trainable parameters pulls them together. It is
    added to the total loss by the model and logged as `soft_l2_penalty`.
    Every parameter is task-specific, so gradient aggregators have nothing
    shared to combine here.

    Args:
        inputs: KerasTensor. The model input.
        backbone: callable. `backbone(prefix=...)` returns the stage models.
        heads: dict task -> `mtlzoo.heads.Head`.
        neck_channels: int. Width of each column's neck. Defaults to 64.
        weight: float. Penalty strength λ >= 0. Defaults to 1e-3.
        init_from: None, the folder `mtlzoo baselines` wrote, or {task: single-task `.keras` file or run folder}:
            each task's column and head start from its trained single-task model (as cross-stitch networks do).
            Defaults to None.

    Example:
    ```python
    model = mtlzoo.build("driving_perception", sharing="soft_l2", sharing_args={"weight": 1e-2})
    ```

    Reference:
        Duong et al., "Low Resource Dependency Parsing: Cross-lingual Parameter
        Sharing in a Neural Network Parser", ACL 2015.
    """
    if float(weight) < 0:
        raise ValueError(f"soft_l2 weight must be >= 0, got {weight}.")
    tasks = list(heads)
    if len(tasks) < 2:
        raise ValueError("soft_l2 sharing needs at least two tasks; use sharing='hard' for one.")
    pyramids, stage_names, necks = build_columns(inputs, backbone, tasks, neck_channels)
    outputs, task_layers = apply_heads(heads, pyramids)
    if init_from is not None:
        init_columns_from(inputs, outputs, tasks, init_from)
    for t in tasks:
        task_layers[t] = sorted(set(task_layers[t]) | set(stage_names[t]) | ({necks[t]} if necks else set()))
    groups = [[stage_names[t][i] for t in tasks] for i in range(len(stage_names[tasks[0]]))]
    if necks:
        groups.append([necks[t] for t in tasks])
    penalty = {"kind": "soft_l2", "weight": float(weight), "groups": groups}
    return SharedGraph(outputs, task_layers, [penalty])
