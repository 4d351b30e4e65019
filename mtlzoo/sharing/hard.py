"""Hard parameter sharing."""

from mtlzoo.neck import build_neck
from mtlzoo.registry import SHARING
from mtlzoo.sharing.base import SharedGraph, apply_heads


@SHARING.register("hard")
def hard(inputs, backbone, heads, neck_channels=64):
    """One shared trunk (backbone + neck) and one head per task.

    Args:
        inputs: KerasTensor. The model input.
        backbone: callable. `backbone(prefix=...)` returns the stage models.
        heads: dict task -> `mtlzoo.heads.Head`.
        neck_channels: int. Width of the neck. Defaults to 64.

    Returns:
        `SharedGraph`: the trunk is shared, each head belongs to its task.

    Example:
    ```python
    model = mtlzoo.build("driving_perception", sharing="hard")
    ```

    Reference:
        Caruana, "Multitask Learning", Machine Learning 28, 1997.
    """
    x = inputs
    features = []
    for stage in backbone(prefix="backbone_"):
        x = stage(x)
        features.append(x)
    pyramid = build_neck(features, neck_channels, name="neck")
    outputs, task_layers = apply_heads(heads, {t: pyramid for t in heads})
    return SharedGraph(outputs, task_layers)
