"""Cross-stitch soft sharing."""

from mtlzoo.layers import CrossStitch
from mtlzoo.registry import SHARING
from mtlzoo.sharing.base import SharedGraph, apply_heads
from mtlzoo.sharing.columns import build_columns, init_columns_from


@SHARING.register("cross_stitch")
def cross_stitch(inputs, backbone, heads, neck_channels=64, mode="per_channel", alpha_self=0.9, lr_multiplier=1.0,
                 init_from=None):
    """One column per task, mixed by a `CrossStitch` unit after every backbone stage.

    Each task has its own backbone (same architecture) and neck; after each
    stage, the tasks' feature maps are mixed by a learnable T×T matrix (per
    channel or per layer) that starts at `alpha_self` on the diagonal. The
    columns and the units receive gradients from every task, so gradient
    methods treat them as shared; only the heads are task-specific.

    Args:
        inputs: KerasTensor. The model input.
        backbone: callable. `backbone(prefix=...)` returns the stage models.
        heads: dict task -> `mtlzoo.heads.Head`.
        neck_channels: int. Width of each column's neck. Defaults to 64.
        mode: str. `"per_channel"` or `"per_layer"` mixing. Defaults to `"per_channel"`.
        alpha_self: float. Initial diagonal of the mixing matrices. Defaults to 0.9.
        lr_multiplier: float. Learning-rate multiplier of the cross-stitch units against the rest of the network
            (the paper trains them faster); see `mtlzoo.layers.CrossStitch`. Defaults to 1.0.
        init_from: None, the folder `mtlzoo baselines` wrote, or {task: single-task `.keras` file or run folder}:
            each task's column (backbone, neck) and head start from its trained single-task model, as the paper
            initialises them. Defaults to None (random initialisation).

    Example:
    ```python
    model = mtlzoo.build("driving_perception", sharing="cross_stitch")
    # as the paper trains it: columns from the single-task models, faster cross-stitch units
    model = mtlzoo.build("driving_perception", sharing="cross_stitch",
                         sharing_args={"init_from": "runs/baselines", "lr_multiplier": 10.0})
    ```

    Reference:
        Misra et al., "Cross-stitch Networks for Multi-task Learning", CVPR 2016.
    """
    tasks = list(heads)
    if len(tasks) < 2:
        raise ValueError("cross_stitch sharing needs at least two tasks; use sharing='hard' for one.")

    def mix(i, xs):
        mixed = CrossStitch(mode=mode, alpha_self=alpha_self, lr_multiplier=lr_multiplier,
                            name=f"cross_stitch_{i}")([xs[t] for t in tasks])
        return dict(zip(tasks, mixed))

    pyramids, _, _ = build_columns(inputs, backbone, tasks, neck_channels, mix=mix)
    outputs, task_layers = apply_heads(heads, pyramids)
    if init_from is not None:
        init_columns_from(inputs, outputs, tasks, init_from)
    return SharedGraph(outputs, task_layers)
