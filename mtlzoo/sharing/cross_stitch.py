"""Cross-stitch soft sharing."""

from mtlzoo.layers import CrossStitch
from mtlzoo.registry import SHARING
from mtlzoo.sharing.base import SharedGraph, apply_heads
from mtlzoo.sharing.columns import build_columns


@SHARING.register("cross_stitch")
def cross_stitch(inputs, backbone, heads, neck_channels=64, mode="per_channel", alpha_self=0.9):
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

    Example:
    ```python
    model = mtlzoo.build("driving_perception", sharing="cross_stitch")
    ```

    Reference:
        Misra et al., "Cross-stitch Networks for Multi-task Learning", CVPR 2016.
    """
    tasks = list(heads)
    if len(tasks) < 2:
        raise ValueError("cross_stitch sharing needs at least two tasks; use sharing='hard' for one.")

    def mix(i, xs):
        mixed = CrossStitch(mode=mode, alpha_self=alpha_self, name=f"cross_stitch_{i}")([xs[t] for t in tasks])
        return dict(zip(tasks, mixed))

    pyramids, _, _ = build_columns(inputs, backbone, tasks, neck_channels, mix=mix)
    outputs, task_layers = apply_heads(heads, pyramids)
    return SharedGraph(outputs, task_layers)
