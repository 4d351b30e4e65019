"""Multi-Task Attention Network (MTAN) sharing."""

import keras
import numpy as np

from mtlzoo.layers import TaskAttention
from mtlzoo.neck import build_neck
from mtlzoo.registry import SHARING
from mtlzoo.sharing.base import SharedGraph, apply_heads


def attention_layer_name(task, stage):
    """Name of `task`'s attention module at backbone stage `stage`: `"{task}__att_{stage}"`."""
    return f"{task}__att_{stage}"


@SHARING.register("mtan")
def mtan(inputs, backbone, heads, neck_channels=64, block_kernel_size=3):
    """A shared trunk with one soft-attention module per task at every backbone stage (MTAN).

    The backbone stages run once and are shared by all tasks. At stage j,
    task t's `TaskAttention` module (layer `"{t}__att_{j}"`) computes the mask
    `a_t^j = sigmoid(BN(h(ReLU(BN(g([shared_j, resize(attended_t^{j-1})]))))))`
    (only `shared_0` at the first stage), with 1×1 convolutions `g`, `h`, and
    the attended feature `attended_t^j = f(a_t^j ⊙ shared_j)`, `f` being a 3×3
    conv-BN-ReLU block. The attended features of all stages form the task's
    pyramid, which goes through the task's own neck (`"{t}__neck"`, the same
    FPN as hard sharing) to its head. For vector inputs (the mlp backbone) the
    convolutions are dense layers and the mask is elementwise over units.

    Everything after the shared stage outputs belongs to a task (attention,
    neck, head), so gradient aggregators combine the tasks' gradients on the
    trunk only, and the representation-level aggregators (`*_ub`) split the
    model exactly at the stage outputs.

    Differences from the paper's code (SegNet-MTAN, lorenmt/mtan):
    - Our backbone stages are Keras sub-models, so the output of a block's
      first layer is not available: the stage output is both the mask input
      (the paper's `g^j[0]`) and the feature that is masked (`g^j[1]`).
    - Each task has its own block `f` (the paper's code shares
      `encoder_block_att[j]` across tasks), so that no shared layer sits behind
      a task's attention; `f` keeps the stage's width (the paper's maps to the
      next stage's width), and the previous attended feature is max-pooled to
      the next stage's resolution only where it enters the next mask.
    - The decoder has no attention modules: each task has an FPN neck over its
      attended pyramid instead of SegNet's attention-gated decoder.
    - The attention convolutions have no bias (BatchNorm follows them).
    Parameter cost: per task and stage about `9·C_j²` for `f` plus
    `(C_j + C_{j-1})·C_j + C_j²` for the mask, where `C_j` is stage j's width.

    Args:
        inputs: KerasTensor. The model input.
        backbone: callable. `backbone(prefix=...)` returns the stage models.
        heads: dict task -> `mtlzoo.heads.Head`.
        neck_channels: int. Width of each task's neck. Defaults to 64.
        block_kernel_size: int. Kernel size of the block `f`. Defaults to 3 (the paper's).

    Returns:
        `SharedGraph`: the trunk is shared; attention modules, neck and head
        belong to their task.

    Example:
    ```python
    import mtlzoo.sharing.mtan

    model = mtlzoo.build("driving_perception_mtan")
    masks = mtlzoo.sharing.mtan.attention_masks(model, images)  # {task: [mask per stage]}
    ```

    Reference:
        Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019.
    """
    tasks = list(heads)
    if len(tasks) < 2:
        raise ValueError("mtan sharing needs at least two tasks; use sharing='hard' for one.")
    shared, x = [], inputs
    for stage in backbone(prefix="backbone_"):
        x = stage(x)
        shared.append(x)
    if len(shared[0].shape) == 2 and len(shared) > 1:
        raise ValueError("mtan sharing takes one vector stage (the mlp backbone); got several.")
    pyramids, own = {}, {}
    for t in tasks:
        attended, names = [], []
        for j, feature in enumerate(shared):
            name = attention_layer_name(t, j)
            layer = TaskAttention(return_mask=True, block_kernel_size=block_kernel_size, name=name)
            attended.append(layer(feature if j == 0 else [feature, attended[-1]])[0])
            names.append(name)
        pyramids[t] = build_neck(attended, neck_channels, name=f"{t}__neck")
        if len(attended[-1].shape) == 4:  # vector features pass through without a neck
            names.append(f"{t}__neck")
        own[t] = names
    outputs, task_layers = apply_heads(heads, pyramids)
    for t in tasks:
        task_layers[t] = sorted(set(task_layers[t]) | set(own[t]))
    return SharedGraph(outputs, task_layers)


def attention_masks(model, x, batch_size=None):
    """Reads out every task's attention masks of an MTAN model on inputs `x`.

    Args:
        model: a `MultiTaskModel` built with `sharing="mtan"`.
        x: array or tensor. A batch of model inputs.
        batch_size: int or None. Passed to `predict`. Defaults to None.

    Returns:
        dict task -> list of NumPy masks, one per backbone stage, each shaped
        like that stage's output, with values in (0, 1).

    Example:
    ```python
    import mtlzoo.sharing.mtan

    masks = mtlzoo.sharing.mtan.attention_masks(model, images[:4])
    print({t: [float(m.mean()) for m in ms] for t, ms in masks.items()})
    ```
    """
    names = {layer.name for layer in model.layers if isinstance(layer, TaskAttention)}
    if not names:
        raise ValueError(f"Model {model.name!r} has no TaskAttention layers: build it with sharing='mtan'.")
    keys, tensors = [], []
    for t in model.task_names:
        j = 0
        while attention_layer_name(t, j) in names:
            layer = model.get_layer(attention_layer_name(t, j))
            if not layer.return_mask:
                raise ValueError(f"Layer {layer.name!r} does not return its mask (return_mask=False).")
            keys.append((t, j))
            tensors.append(layer.output[1])
            j += 1
    reader = keras.Model(model.inputs, tensors, name=f"{model.name}_attention_masks")
    values = reader.predict(x, batch_size=batch_size, verbose=0)
    values = values if isinstance(values, list) else [values]
    masks = {t: [] for t in model.task_names}
    for (t, _), value in zip(keys, values):
        masks[t].append(np.asarray(value))
    return masks
