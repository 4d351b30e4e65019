"""Mixture of experts with DSelect-k gates."""

from mtlzoo.layers import DSelectKGate
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


@SHARING.register("dselect_k")
def dselect_k(inputs, backbone, heads, neck_channels=64, num_experts=8, num_nonzeros=2, gamma=1.0,
              entropy_reg=0.0, expert_units=None):
    """MMoE's layout with one `DSelectKGate` per task: each task ends up using at most k experts.

    Shared trunk, `num_experts` shared experts `expert{i}`, and per task a
    DSelect-k gate `{t}__gate` (example-conditioned: it reads the trunk's
    output, pooled on images) whose weights become a sparse choice of at most
    `num_nonzeros` experts as its smooth-steps reach 0 or 1. The optional
    entropy regulariser (`entropy_reg`) is added to the model's loss in
    training (it is part of `model.losses`, logged inside `loss`). On images
    the experts are 3×3 conv-BN-ReLU blocks on the neck's finest map (P2) and
    each head gets its task's mixed map as its only feature level.

    Differences from the paper's code: the experts sit on a shared trunk and,
    on images, are conv blocks; see `mtlzoo.layers.DSelectKGate` for the
    gate's own differences (batch-mean regularisers, renormalisation when
    `num_experts` is not a power of two).

    Args:
        inputs: KerasTensor. The model input.
        backbone: callable. `backbone(prefix=...)` returns the stage models.
        heads: dict task -> `mtlzoo.heads.Head`.
        neck_channels: int. Width of the neck. Defaults to 64.
        num_experts: int >= 2. Number of experts. Defaults to 8.
        num_nonzeros: int >= 1. k, the most experts a task selects. Defaults to 2.
        gamma: float > 0. Smooth-step width (the paper's default). Defaults to 1.0.
        entropy_reg: float >= 0. Entropy regulariser weight (0: off, as in the
            paper's gate). Defaults to 0.0.
        expert_units: int, list of int or None. Widths of each expert's layers;
            None: (16,) on vectors, (neck_channels,) on images. Defaults to None.

    Example:
    ```python
    model = mtlzoo.build("tabular_mmoe", sharing="dselect_k",
                         sharing_args={"num_nonzeros": 2, "entropy_reg": 1e-3})
    ```

    Reference:
        Hazimeh et al., "DSelect-k: Differentiable Selection in the Mixture of
        Experts with Applications to Multi-Task Learning", NeurIPS 2021.
    """
    tasks = check_tasks(heads, "dselect_k")
    num_experts = check_count(num_experts, "dselect_k num_experts", 2)
    x = shared_trunk(inputs, backbone, neck_channels)
    units = expert_units_for(x, expert_units, neck_channels)
    experts = [build_expert(x, units, f"expert{i}") for i in range(num_experts)]
    g = gate_input(x, "gate_pool")
    features = {
        t: [DSelectKGate(num_nonzeros, gamma=gamma, entropy_reg=entropy_reg, name=f"{t}__gate")(experts + [g])]
        for t in tasks
    }
    outputs, _ = apply_heads(heads, features)
    return SharedGraph(outputs, task_only_layers(outputs))
