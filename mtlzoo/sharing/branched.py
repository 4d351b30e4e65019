"""Branched sharing: a shared stem, then one trunk branch per group of tasks."""

from mtlzoo.neck import build_neck
from mtlzoo.registry import SHARING, suggestion
from mtlzoo.sharing.base import SharedGraph, apply_heads

#: Backbone stage the branches start at when `branch_stage` is not given (the stem is stages 0 and 1).
DEFAULT_BRANCH_STAGE = 2


def group_prefix(index):
    """Name prefix of group `index`'s branch: its stages are `g{index}_stage{i}`, its neck `g{index}_neck`."""
    return f"g{index}_"


def check_groups(groups, tasks):
    """Validates a partition of `tasks` into groups; returns it as a list of lists of task names.

    Args:
        groups: list of lists of task names, or None (one group per task).
        tasks: list of the model's task names.

    Returns:
        list of lists of str: every task in exactly one non-empty group.

    Raises:
        ValueError: `groups` is not a list of lists of names, a group is
            empty, a name is not a task (with the near match), a task is in
            two groups or in none.

    Example:
    ```python
    from mtlzoo.sharing.branched import check_groups
    check_groups([["segmentation", "depth"], ["detection", "scene"]],
                 ["segmentation", "depth", "detection", "scene"])
    ```
    """
    tasks = list(tasks)
    if groups is None:
        return [[t] for t in tasks]
    example = f"e.g. groups: [[{', '.join(tasks[:2])}], [{', '.join(tasks[2:]) or '...'}]]"
    if isinstance(groups, (str, bytes)) or not isinstance(groups, (list, tuple)) or not groups:
        raise ValueError(f"branched sharing: groups must be a non-empty list of lists of task names ({example}); "
                         f"got {groups!r}.")
    out, where = [], {}
    for i, group in enumerate(groups):
        if isinstance(group, (str, bytes)) or not isinstance(group, (list, tuple)):
            raise ValueError(f"branched sharing: group {i} must be a list of task names, got {group!r} "
                             f"(a single task is written [{group}]); {example}.")
        if not group:
            raise ValueError(f"branched sharing: group {i} is empty; give each group at least one task or drop it.")
        for t in group:
            if t not in tasks:
                raise ValueError(f"branched sharing: group {i} names {t!r}, which is not a task of this model."
                                 f"{suggestion(str(t), tasks)} The tasks are: {', '.join(tasks)}.")
            if t in where:
                raise ValueError(f"branched sharing: task {t!r} is in group {where[t]} and in group {i}; "
                                 "each task belongs to exactly one group (its branch feeds its head).")
            where[t] = i
        out.append([str(t) for t in group])
    missing = [t for t in tasks if t not in where]
    if missing:
        raise ValueError(f"branched sharing: task(s) {', '.join(map(repr, missing))} are in no group; add each to "
                         f"one group (a group of its own, [{missing[0]}], gives it its own branch).")
    return out


def check_branch_stage(branch_stage, num_stages, vector):
    """`branch_stage` resolved and checked against a backbone of `num_stages` stages; returns an int.

    None gives `DEFAULT_BRANCH_STAGE`, lowered to `num_stages - 1` for a
    shallower backbone (the one-stage `mlp`: 0). Image backbones accept
    0..num_stages (at `num_stages` only the neck is branched); vector
    backbones, which have no neck, 0..num_stages - 1.
    """
    if branch_stage is None:
        return min(DEFAULT_BRANCH_STAGE, num_stages - 1)
    high = num_stages - 1 if vector else num_stages
    if isinstance(branch_stage, bool) or not isinstance(branch_stage, int) or not 0 <= branch_stage <= high:
        copied = "the remaining stages are" if vector else "the remaining stages and the neck are"
        raise ValueError(
            f"branched sharing: branch_stage must be an integer in [0, {high}] for this {num_stages}-stage backbone "
            f"(stages [0, branch_stage) form the shared stem, {copied} copied per group; 0 gives each group a "
            f"whole trunk{'' if vector else f', {high} branches only the neck'}); got {branch_stage!r}.")
    return branch_stage


@SHARING.register("branched")
def branched(inputs, backbone, heads, neck_channels=64, groups=None, branch_stage=None):
    """A shared stem and one branch (the remaining backbone stages and a neck) per group of tasks.

    Backbone stages `[0, branch_stage)` form one stem shared by every task;
    each group of tasks gets its own copy of the remaining stages and its own
    neck, named after the group (`g0_stage2`, ..., `g0_neck`), and the heads
    of a group's tasks read its branch. The neck of a group takes the stem's
    feature maps and its own. A branch used by one task only (a group of one)
    belongs to that task (`SharedGraph.task_layers`); a branch of several
    tasks is shared among them, and gradient methods combine their
    gradients on it (the other tasks' gradients are zero there).

    Args:
        inputs: KerasTensor. The model input.
        backbone: callable. `backbone(prefix=...)` returns the stage models.
        heads: dict task -> `mtlzoo.heads.Head`.
        neck_channels: int. Width of each group's neck. Defaults to 64.
        groups: list of lists of task names, a partition of the tasks, or
            None for one group per task. Defaults to None.
        branch_stage: int or None. Backbone stages before it are the shared
            stem; 0 gives every group a whole trunk of its own. None: 2, or
            `num_stages - 1` for a shallower backbone (the one-stage `mlp`: 0).
            Defaults to None.

    Returns:
        `SharedGraph`: stem shared, group branches shared within their group.

    Example:
    ```python
    model = mtlzoo.build("driving_perception", sharing="branched",
                         sharing_args={"groups": [["segmentation", "depth"], ["detection", "scene"]],
                                       "branch_stage": 2})
    ```

    Reference:
        Fifty et al., "Efficiently Identifying Task Groupings for Multi-Task
        Learning", NeurIPS 2021 (one network per task group; `mtlzoo group`
        chooses the groups); Vandenhende et al., "Branched Multi-Task
        Networks: Deciding What Layers To Share", BMVC 2020 (a shared stem).
    """
    tasks = list(heads)
    groups = check_groups(groups, tasks)
    stem = backbone(prefix="backbone_")
    vector = len(inputs.shape) == 2
    branch_stage = check_branch_stage(branch_stage, len(stem), vector)

    x, stem_features = inputs, []
    for stage in stem[:branch_stage]:
        x = stage(x)
        stem_features.append(x)
    pyramids, task_layers = {}, {t: [] for t in tasks}
    for g, group in enumerate(groups):
        prefix = group_prefix(g)
        stages = backbone(prefix=prefix)[branch_stage:]
        y, features = x, list(stem_features)
        for stage in stages:
            y = stage(y)
            features.append(y)
        pyramid = build_neck(features, neck_channels, name=f"{prefix}neck")
        names = [s.name for s in stages] + ([] if vector else [f"{prefix}neck"])
        for t in group:
            pyramids[t] = pyramid
        if len(group) == 1:
            task_layers[group[0]] += names
    outputs, head_layers = apply_heads(heads, pyramids)
    for t in tasks:
        task_layers[t] = sorted(set(task_layers[t]) | set(head_layers[t]))
    return SharedGraph(outputs, task_layers)
