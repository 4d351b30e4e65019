"""`baselines`: train one single-task model per task and store their metrics and costs."""

from __future__ import annotations

import json
import os

from mtlzoo.evaluation.baselines_file import BASELINES_FORMAT
from mtlzoo.evaluation.evaluator import evaluate
from mtlzoo.evaluation.report import json_safe

__all__ = ["baselines"]


# ============================================================================ baselines
def baselines(recipe, data=None, epochs=None, out_dir="baselines", *, tasks=None, evaluation_data=None,
              split="validation", num_examples=None, verbose="auto", **train_kwargs) -> dict:
    """Trains one single-task model per task and stores their metrics and costs as JSON.

    Each single-task model is the recipe restricted to one task
    (`mtlzoo.build(recipe, tasks=[t])`) with hard sharing (one backbone, one
    head: for a cross-stitch recipe, one of its columns), loss weight 1, no
    loss weighting or gradient aggregation, and the recipe's backbone, data,
    optimizer, seed and training budget. Each is trained with
    `mtlzoo.train` into `out_dir/<task>/`, then evaluated like `evaluate`
    does. The results go to `out_dir/baselines.json`, which `evaluate` reads.

    Args:
        recipe: str, path or `Recipe`.
        data: as for `mtlzoo.train` (None: the recipe's dataset).
        epochs: int or None. Overrides `training.epochs`.
        out_dir: str. Output folder. Defaults to "baselines".
        tasks: list of task names, or None for every task of the recipe.
        evaluation_data: what `evaluate` gets as `data` (None: the recipe's
            dataset by name, `split` split).
        split: str. Split to evaluate on. Defaults to "validation".
        num_examples: int or None. Evaluation examples (by name).
        verbose: as for `fit`.
        **train_kwargs: passed to `mtlzoo.train` (e.g. `steps_per_epoch`,
            `validation_data`, recipe overrides).

    Returns:
        The stored dict: `format`, `recipe`, `epochs`, `data`, `tasks`
        (task -> `metrics`, `details`, `cost`, `model`), `higher_is_better`.

    Example:
    ```python
    from mtlzoo.evaluation import baselines
    stl = baselines("driving_perception_lite", epochs=5, out_dir="runs/stl")
    stl["tasks"]["depth"]["metrics"]["abs_err"]
    ```
    """
    from mtlzoo.recipe import get_recipe
    from mtlzoo.training import train

    overrides = {k: train_kwargs.pop(k) for k in list(train_kwargs)
                 if k not in ("strategy", "callbacks", "seed", "steps_per_epoch", "validation_data")}
    base = get_recipe(recipe, **overrides)
    names = list(base.tasks) if tasks is None else list(tasks)
    for t in names:
        if t not in base.tasks:
            from mtlzoo.registry import suggestion

            raise ValueError(f"baselines: recipe {base.name!r} has no task {t!r}.{suggestion(t, list(base.tasks))}")
    os.makedirs(out_dir, exist_ok=True)
    stored = {"format": BASELINES_FORMAT, "recipe": base.name, "data": json_safe(dict(base.data)),
              "tasks": {}, "higher_is_better": {}}
    for t in names:
        single = base.override(**{"tasks": [t], "sharing": "hard", "weighting": "fixed", "aggregator": None,
                                  f"tasks.{t}.loss_weight": 1.0})
        task_dir = os.path.join(out_dir, t)
        result = train(single, data=data, epochs=epochs, out_dir=task_dir, verbose=verbose, **train_kwargs)
        stored["epochs"] = result.epochs
        model_path = result.last_path  # the weights evaluated below (result.model)
        report = evaluate(result.model, evaluation_data, split=split, num_examples=num_examples,
                          batch_size=int(single.training.get("batch_size") or 8))
        cost = dict(report.cost)
        cost["train_step_s"] = result.timing.get("train_step_s")
        cost["train_total_s"] = result.timing.get("total_s")
        stored["tasks"][t] = {
            "metrics": report.metrics.get(t, {}),
            "details": report.details.get(t, {}),
            "cost": cost,
            "model": os.path.relpath(model_path, out_dir) if model_path else None,
            "epochs_run": len(next(iter(result.history.values()), [])),
            "stopped_reason": result.stopped_reason,
        }
        stored["higher_is_better"][t] = report.higher_is_better.get(t, {})
        stored["evaluation_data"] = report.data
        stored["evaluation_examples"] = report.num_examples
    stored = json_safe(stored)
    with open(os.path.join(out_dir, "baselines.json"), "w") as f:
        json.dump(stored, f, indent=2)
    return stored
