"""Task grouping from lookahead affinity (Fifty et al., 2021): which tasks should share a trunk?

`measure_affinity` trains a recipe briefly with hard sharing and a `TaskAffinity` probe; `best_groupings` turns
the T×T affinity matrix into the best split of the tasks into k groups for every k = 1..T; `choose_grouping`
picks one; `group_recipe` writes the recipe with `sharing: branched` that trains that split. `mtlzoo group RECIPE`
runs the four in a row.

```python
from mtlzoo.diagnostics.grouping import best_groupings, choose_grouping, group_recipe, measure_affinity
measured = measure_affinity("driving_perception_lite", steps=60)
groupings = best_groupings(measured.matrix, measured.tasks)
chosen = choose_grouping(groupings)
recipe = group_recipe("driving_perception_lite", chosen.groups, branch_stage=2)
```

The score of a split (the paper's network-selection rule restricted to partitions, since a branched model
serves each task from one branch): a task in a group of several receives the mean of the affinities
`Z_{i→t}` of the other tasks i of its group (the paper approximates a group's affinity onto a task by the
average of the pairwise ones); a task alone receives 0 (no transfer in either direction); the score is the sum
over tasks. Unmeasured (NaN) entries count as 0.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

__all__ = ["AffinityMeasurement", "TaskGrouping", "best_groupings", "choose_grouping", "group_recipe",
           "measure_affinity", "partition_score"]

#: Largest number of tasks searched exactly (Bell(8) = 4140 partitions); beyond it `method="auto"` is greedy.
MAX_EXACT_TASKS = 8


@dataclasses.dataclass(frozen=True)
class TaskGrouping:
    """The best split of the tasks into `k` groups found for an affinity matrix.

    Attributes:
        k: int. Number of groups.
        groups: list of lists of task names (groups in the order of their first task, tasks in the model's order).
        score: float. Sum over tasks of the affinity each receives from its group (higher is better).
        received: dict task -> the affinity it receives from its group (0 for a task alone).
        method: str. `"exact"` (every partition searched) or `"greedy"` (agglomerative merging).
    """

    k: int
    groups: list
    score: float
    received: dict
    method: str = "exact"


@dataclasses.dataclass
class AffinityMeasurement:
    """What `measure_affinity` measured: tasks, mean matrix (rows: step on task i, columns: loss of task j),
    the per-measurement matrices, the steps trained and the (hard-sharing) recipe it trained."""

    tasks: list
    matrix: np.ndarray
    history: list
    steps: int
    recipe: object


# ---------------------------------------------------------------- scoring and search
def _check_matrix(affinity, tasks):
    z = np.asarray(affinity, dtype=np.float64)
    tasks = [str(t) for t in tasks]
    if z.ndim != 2 or z.shape[0] != z.shape[1] or z.shape[0] != len(tasks):
        raise ValueError(f"task grouping: the affinity matrix must be T×T for the {len(tasks)} tasks "
                         f"({', '.join(tasks)}); got shape {z.shape}.")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"task grouping: task names must be distinct, got {tasks}.")
    if not tasks:
        raise ValueError("task grouping: no tasks given.")
    return np.where(np.isfinite(z), z, 0.0), tasks


def _received(z, block, reduce):
    """Affinity each task of `block` (indices) receives from the others in it."""
    if len(block) == 1:
        return {block[0]: 0.0}
    out = {}
    for t in block:
        total = float(sum(z[i, t] for i in block if i != t))
        out[t] = total / (len(block) - 1) if reduce == "mean" else total
    return out


def partition_score(affinity, tasks, groups, reduce="mean"):
    """(score, affinity received per task) of a split of `tasks` into `groups` under `affinity`.

    Args:
        affinity: T×T array, `affinity[i, j]` = Z_{i→j} (a step on task i changes task j's loss).
        tasks: list of the T task names, in the matrix's order.
        groups: list of lists of task names, a partition of `tasks`.
        reduce: str. `"mean"` (the paper's average of pairwise affinities) or `"sum"` of what a
            task receives from the other members of its group. Defaults to `"mean"`.

    Example:
    ```python
    partition_score([[0, .2], [.1, 0]], ["a", "b"], [["a", "b"]])   # (0.3, {'a': 0.1, 'b': 0.2})
    ```
    """
    from mtlzoo.sharing.branched import check_groups

    z, tasks = _check_matrix(affinity, tasks)
    _check_reduce(reduce)
    groups = check_groups(groups, tasks)
    received = {}
    for group in groups:
        received.update(_received(z, [tasks.index(t) for t in group], reduce))
    return float(sum(received.values())), {tasks[i]: v for i, v in sorted(received.items())}


def _check_reduce(reduce):
    if reduce not in ("mean", "sum"):
        raise ValueError(f"task grouping: reduce must be 'mean' or 'sum', got {reduce!r}.")


def _partitions(n):
    """Every partition of range(n) as a list of blocks (restricted growth strings, deterministic order)."""
    def grow(i, blocks):
        if i == n:
            yield [list(b) for b in blocks]
            return
        for b in blocks:
            b.append(i)
            yield from grow(i + 1, blocks)
            b.pop()
        blocks.append([i])
        yield from grow(i + 1, blocks)
        blocks.pop()

    yield from grow(0, [])


def _score(z, blocks, reduce):
    received = {}
    for block in blocks:
        received.update(_received(z, block, reduce))
    return float(sum(received.values())), received


def _grouping(k, blocks, score, received, tasks, method):
    blocks = sorted((sorted(b) for b in blocks), key=lambda b: b[0])
    return TaskGrouping(k=k, groups=[[tasks[i] for i in b] for b in blocks], score=score,
                        received={tasks[i]: received[i] for i in sorted(received)}, method=method)


def best_groupings(affinity, tasks, method="auto", reduce="mean"):
    """The best split of the tasks into k groups for every k = 1..T, by the network-selection score.

    Args:
        affinity: T×T array, `affinity[i, j]` = Z_{i→j} (`TaskAffinity.matrix`: rows are the task
            stepped on, columns the task whose loss changes). The diagonal is not used.
        tasks: list of the T task names, in the matrix's order.
        method: str. `"exact"` searches every partition (T <= 8); `"greedy"` starts from singletons
            and merges, k = T down to 1, the two groups whose union raises the score most (or lowers
            it least); `"auto"`: exact up to 8 tasks, greedy beyond. Defaults to `"auto"`.
        reduce: str. `"mean"` or `"sum"` of the affinities a task receives (see `partition_score`).
            Defaults to `"mean"`.

    Returns:
        list of `TaskGrouping`, index k - 1 for k groups; k = 1 holds every task, k = T singletons.

    Example:
    ```python
    from mtlzoo.diagnostics.grouping import best_groupings
    z = [[0, .3, -.2], [.4, 0, -.1], [-.3, -.2, 0]]
    [g.groups for g in best_groupings(z, ["a", "b", "c"])]
    # [[['a', 'b', 'c']], [['a', 'b'], ['c']], [['a'], ['b'], ['c']]]
    ```

    Reference:
        Fifty, Amid, Zhao, Yu, Anil, Finn, "Efficiently Identifying Task Groupings for Multi-Task
        Learning", NeurIPS 2021 (Section 3.2, network selection).
    """
    z, tasks = _check_matrix(affinity, tasks)
    _check_reduce(reduce)
    n = len(tasks)
    if method not in ("auto", "exact", "greedy"):
        raise ValueError(f"task grouping: method must be 'auto', 'exact' or 'greedy', got {method!r}.")
    if method == "exact" and n > MAX_EXACT_TASKS:
        raise ValueError(f"task grouping: exact search covers at most {MAX_EXACT_TASKS} tasks ({n} given: "
                         f"Bell({n}) partitions); use method='greedy' (or 'auto').")
    if method == "greedy" or (method == "auto" and n > MAX_EXACT_TASKS):
        return _greedy(z, tasks, reduce)
    best = {}
    for blocks in _partitions(n):
        score, received = _score(z, blocks, reduce)
        k = len(blocks)
        if k not in best or score > best[k][0] + 1e-12:
            best[k] = (score, blocks, received)
    return [_grouping(k, best[k][1], best[k][0], best[k][2], tasks, "exact") for k in range(1, n + 1)]


def _greedy(z, tasks, reduce):
    blocks = [[i] for i in range(len(tasks))]
    score, received = _score(z, blocks, reduce)
    out = [_grouping(len(blocks), blocks, score, received, tasks, "greedy")]
    while len(blocks) > 1:
        candidates = []
        for a, b in itertools.combinations(range(len(blocks)), 2):
            merged = [blk for i, blk in enumerate(blocks) if i not in (a, b)] + [blocks[a] + blocks[b]]
            candidates.append((_score(z, merged, reduce), merged))
        (score, received), blocks = max(candidates, key=lambda c: c[0][0])
        out.append(_grouping(len(blocks), blocks, score, received, tasks, "greedy"))
    return out[::-1]


def choose_grouping(groupings, k=None):
    """The grouping to train: the one with `k` groups, or (k None) the highest score, fewer groups on a tie.

    Without a budget on the number of networks (the paper's setting), the score alone decides: tasks are
    grouped when the affinities they receive are positive, kept apart when negative.

    Example:
    ```python
    chosen = choose_grouping(best_groupings(z, tasks))           # best score
    two = choose_grouping(best_groupings(z, tasks), k=2)         # two branches
    ```
    """
    groupings = list(groupings)
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(groupings):
            raise ValueError(f"task grouping: k must be an integer in [1, {len(groupings)}] (the number of "
                             f"groups, at most one per task), got {k!r}.")
        return groupings[k - 1]
    top = max(g.score for g in groupings)
    return next(g for g in groupings if g.score >= top - 1e-9 * max(1.0, abs(top)))


# ---------------------------------------------------------------- the recipe
def group_recipe(recipe, groups, branch_stage=None, name=None, overrides=None):
    """The recipe with `sharing: branched` and `sharing_args: {groups, branch_stage}` for `groups`.

    Args:
        recipe: str, path, dict or `Recipe`.
        groups: list of lists of task names, a partition of the recipe's tasks.
        branch_stage: int or None. Where the branches start (see `mtlzoo.sharing.branched`); None
            writes the branched default for the recipe's backbone. Defaults to None.
        name: str or None. Name of the new recipe; None: `{recipe name}_grouped`.
        overrides: dict or None. Recipe overrides applied first (as for `mtlzoo.build`).

    Returns:
        A validated `Recipe` (`recipe.to_yaml()` gives the text a file needs; `mtlzoo.get_recipe(path)`
        loads it back).

    Example:
    ```python
    recipe = group_recipe("driving_perception_lite", [["segmentation", "depth"], ["detection", "scene"]], 2)
    model = recipe.build()
    ```
    """
    from mtlzoo.recipe import get_recipe
    from mtlzoo.registry import BACKBONES
    from mtlzoo.sharing.branched import check_branch_stage, check_groups

    rec = get_recipe(recipe, **(overrides or {}))
    groups = check_groups(groups, list(rec.tasks))
    stages = BACKBONES.get(rec.backbone)(tuple(rec.input_shape), prefix="count_", weights=rec.weights,
                                         **rec.backbone_args)
    branch_stage = check_branch_stage(branch_stage, len(stages), len(rec.input_shape) == 1)
    text = "; ".join("[" + ", ".join(g) + "]" for g in groups)
    return rec.override(
        name=name or f"{rec.name}_grouped", sharing="branched",
        sharing_args={"groups": groups, "branch_stage": int(branch_stage)},
        description=f"{rec.name} with tasks grouped by lookahead affinity (mtlzoo group): {text}, "
                    f"branching at backbone stage {branch_stage}.")


# ---------------------------------------------------------------- measuring
def measure_affinity(recipe, steps=60, measurements=5, batches=2, overrides=None, seed=None, learning_rate=None,
                     verbose=0):
    """Trains the recipe with hard sharing for about `steps` steps and measures the lookahead affinity.

    The tasks share one trunk (as in the paper, whatever the recipe's own sharing); training uses the
    recipe's optimizer, weighting and aggregator. Every `steps // measurements` steps a `TaskAffinity`
    probe measures on `batches` validation batches; the returned matrix is the mean of all measurements.
    Data: the recipe's dataset (`data.name`, image recipes), else learnable synthetic data for vector
    inputs (`mtlzoo.diagnostics.synthetic_data`).

    Args:
        recipe: str, path, dict or `Recipe`.
        steps: int >= 1. Training steps (rounded down to a multiple of `measurements`, at least one
            per measurement). Defaults to 60.
        measurements: int >= 1. Affinity measurements, spread evenly over training. Defaults to 5.
        batches: int >= 1. Validation batches per measurement. Defaults to 2.
        overrides: dict or None. Recipe overrides (as for `mtlzoo.build`).
        seed: int or None. Replaces the recipe's seed.
        learning_rate: float or None. Lookahead step; None: the optimizer's learning rate.
        verbose: int. `fit` verbosity. Defaults to 0.

    Returns:
        `AffinityMeasurement`.

    Example:
    ```python
    measured = measure_affinity("tabular_demo", steps=20)
    measured.matrix       # [T, T]
    ```
    """
    from mtlzoo.diagnostics.affinity import TaskAffinity
    from mtlzoo.diagnostics.probes import check_positive_int
    from mtlzoo.diagnostics.report import synthetic_data
    from mtlzoo.recipe import get_recipe
    from mtlzoo.training import train, training_settings

    steps = check_positive_int("measure_affinity", "steps", steps)
    measurements = min(check_positive_int("measure_affinity", "measurements", measurements), steps)
    batches = check_positive_int("measure_affinity", "batches", batches)
    rec = get_recipe(recipe, **(overrides or {}))
    if seed is not None:
        rec = rec.override(seed=int(seed))
    if len(rec.tasks) < 2:
        raise ValueError(f"task grouping needs at least two tasks; recipe {rec.name!r} has {len(rec.tasks)}.")
    rec = rec.override(sharing="hard")
    per_epoch = steps // measurements
    batch = int(training_settings(rec)["batch_size"])
    if len(rec.input_shape) == 3:
        if not rec.data.get("name"):
            raise ValueError(f"recipe {rec.name!r} names no dataset: give one, e.g. --override "
                             "data.name=synthetic_driving (the built-in synthetic scenes).")
        from mtlzoo.data.splits import load_split

        given = rec.data.get("num_examples")
        data = {"num_examples": min(int(given), per_epoch * measurements * batch) if given
                else per_epoch * measurements * batch}
        probe = load_split(dict(rec.data, num_validation_examples=batches * batch), "validation",
                           image_size=tuple(rec.input_shape[:2]), batch_size=batch, seed=int(rec.seed),
                           tasks=list(rec.tasks), training=False)
    else:
        n = per_epoch * measurements * batch
        x, y = synthetic_data(rec.build(compile=False), n + batches * batch, seed=int(rec.seed))
        data = (x[:n], {t: v[:n] for t, v in y.items()})
        probe = (x[n:], {t: v[n:] for t, v in y.items()})
    affinity = TaskAffinity(probe, interval=1, num_batches=batches, learning_rate=learning_rate, batch_size=batch)
    result = train(rec, data=data, epochs=measurements, steps_per_epoch=per_epoch, callbacks=[affinity],
                   validation_data=False, verbose=verbose)
    matrix = affinity.mean_matrix()
    if matrix is None or not np.isfinite(matrix[~np.eye(len(rec.tasks), dtype=bool)]).any():
        raise ValueError("task grouping: no affinity could be measured (every task loss was 0 or undefined on "
                         "the probe batches); train longer (--steps) or check the labels.")
    return AffinityMeasurement(tasks=list(result.model.task_names), matrix=matrix, history=affinity.history,
                               steps=per_epoch * measurements, recipe=rec)


def format_matrix(matrix, tasks):
    """The affinity matrix as aligned text (rows: step on task i; columns: loss of task j; the diagonal,
    unused by the grouping, in parentheses)."""
    header = "step on i / loss of j"
    first = max(len(header), max(len(t) for t in tasks)) + 2
    width = max(11, max(len(t) for t in tasks) + 2)
    lines = [header.ljust(first) + "".join(t.rjust(width) for t in tasks)]
    for i, t in enumerate(tasks):
        cells = []
        for j in range(len(tasks)):
            value = float(matrix[i][j])
            text = "n/a" if not math.isfinite(value) else f"{value:+.3g}"
            cells.append(f"({text})" if i == j else text)
        lines.append(t.ljust(first) + "".join(c.rjust(width) for c in cells))
    return "\n".join(lines)
