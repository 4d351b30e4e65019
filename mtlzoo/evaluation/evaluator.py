"""`evaluate`: run a multi-task model over a dataset and report metrics, Δm and cost."""

from __future__ import annotations

import math
import os

import numpy as np

from mtlzoo.evaluation.baselines_file import read_baselines
from mtlzoo.evaluation.cost import measure_step_time, model_cost
from mtlzoo.evaluation.report import EvaluationReport
from mtlzoo.evaluation.task_evaluator import TaskEvaluator
from mtlzoo.metrics.headline import HIGHER_IS_BETTER

__all__ = ["evaluate"]


# ============================================================================ evaluate
def _load_model(model_or_path):
    import keras

    if isinstance(model_or_path, keras.Model):
        return model_or_path
    import mtlzoo

    if not isinstance(model_or_path, (str, os.PathLike)):
        raise TypeError(
            f"evaluate needs a Keras model or the path of a .keras file; got {type(model_or_path).__name__}."
        )
    path = os.fspath(model_or_path)
    if os.path.isdir(path):
        for name in ("best.keras", "last.keras"):
            if os.path.exists(os.path.join(path, name)):
                return mtlzoo.load(os.path.join(path, name), compile=False)
        if any(os.path.exists(os.path.join(path, f)) for f in ("saved_model.pb", "mtlzoo_export.json")):
            raise ValueError(
                f"{path!r} is an export folder or SavedModel; evaluate reads Keras models (a .keras file or an "
                "mtlzoo.train out_dir): evaluate the .keras model it was exported from."
            )
        raise FileNotFoundError(f"{path} holds no best.keras or last.keras (an mtlzoo.train out_dir).")
    return mtlzoo.load(path, compile=False)  # a .keras file (read in safe mode) or zoo:NAME


def _model_tasks(model):
    return {t: model.tasks[t]["kind"] for t in model.task_names}


def _model_recipe(model):
    from mtlzoo.recipe import Recipe

    data = getattr(model, "metadata", {}).get("recipe")
    return Recipe.from_dict(data) if data else None


def _eval_dataset(model, data, split, num_examples, batch_size, data_dir):
    """(dataset, description) for evaluation."""
    import tensorflow as tf

    from mtlzoo.data.splits import load_split

    if isinstance(data, tf.data.Dataset):
        return data, "the given dataset"
    recipe = _model_recipe(model)
    config = dict(recipe.data) if recipe is not None else {}
    if isinstance(data, str):
        config = config if config.get("name") == data else {"name": data}
    elif isinstance(data, dict):
        config = {**config, **data}
    elif data is not None:
        raise TypeError(
            f"evaluate: data must be a dataset name, a dict, a tf.data.Dataset or None, got {type(data).__name__}."
        )
    if data_dir is not None:
        config["data_dir"] = data_dir
    if num_examples is not None:
        config["num_examples" if split == "train" else "num_validation_examples"] = int(num_examples)
    if batch_size is None:
        batch_size = int((recipe.training.get("batch_size") if recipe else None) or 8)
    tasks = _model_tasks(model)
    size = tuple(model.input_shape[1:3]) if len(model.input_shape) == 4 else None  # None: vector inputs
    ds = load_split(config, split, image_size=size, batch_size=batch_size,
                    seed=int(recipe.seed) if recipe else 0, tasks=list(tasks), training=False,
                    with_boxes="detection" in tasks.values())
    return ds, f"{config.get('name')}/{split}"


def _delta_m(metrics, higher, base_metrics, notes):
    from mtlzoo.metrics import delta_m

    mtl_all, stl_all, hib_all, per_task = {}, {}, {}, {}
    for task, values in metrics.items():
        base = base_metrics.get(task)
        if base is None:
            notes.append(f"no single-task baseline for task {task!r}: left out of Δm")
            continue
        mtl, stl, hib = {}, {}, {}
        for name, value in values.items():
            b = base.get(name)
            if b is None or value is None or not math.isfinite(value) or not math.isfinite(b):
                notes.append(f"{task}/{name}: value or baseline undefined, left out of Δm")
                continue
            if b == 0:
                notes.append(
                    f"{task}/{name}: the single-task baseline is 0, left out of Δm (relative change undefined)"
                )
                continue
            mtl[name], stl[name], hib[name] = value, b, higher[task][name]
        if mtl:
            per_task[task] = delta_m(mtl, stl, hib)
            for name in mtl:
                key = f"{task}/{name}"
                mtl_all[key], stl_all[key], hib_all[key] = mtl[name], stl[name], hib[name]
    overall = delta_m(mtl_all, stl_all, hib_all) if mtl_all else None
    return overall, per_task


def evaluate(model_or_path, data=None, baselines=None, *, split="validation", num_examples=None, batch_size=None,
             data_dir=None, max_batches=None, detection_kwargs=None, timing_repeats=10,
             remeasure_baselines=True) -> EvaluationReport:
    """Evaluates a multi-task model over a dataset, against single-task baselines when given.

    Args:
        model_or_path: a `MultiTaskModel`, a `.keras` file, or an
            `mtlzoo.train` out_dir (its `best.keras`, else `last.keras`).
        data: a dataset name (its `split` is loaded at the model's input size,
            with raw boxes for detection), a dict of data settings, a
            `tf.data.Dataset` of (image, labels) batches, or None for the
            dataset named in the model's recipe.
        baselines: None, a `baselines.json` path (or its folder; `zoo:NAME`
            for a shipped model's), or the dict
            returned by `baselines()`.
        split: str. Split to load by name. Defaults to "validation".
        num_examples: int or None. Examples to load by name (None: the
            dataset's default).
        batch_size: int or None. Defaults to the recipe's batch size.
        data_dir: str or None. Data folder for datasets read from disk.
        max_batches: int or None. Stop after this many batches.
        detection_kwargs: dict. Decoding options (default score_threshold
            0.01, max_detections 100).
        timing_repeats: int. Timed inference calls for the step time.
        remeasure_baselines: bool. Time the stored single-task models again
            on this machine and batch (when their files exist) instead of
            using the stored times. Defaults to True.

    Returns:
        An `EvaluationReport`.

    Example:
    ```python
    from mtlzoo.evaluation import evaluate
    report = evaluate("runs/lite", "synthetic_driving", baselines="runs/stl", num_examples=100)
    print(report.table())
    ```

    Reference:
        Maninis et al., "Attentive Single-Tasking of Multiple Tasks", CVPR 2019 (Δm).
    """
    model = _load_model(model_or_path)
    dataset, description = _eval_dataset(model, data, split, num_examples, batch_size, data_dir)
    tasks = _model_tasks(model)
    image_shape = tuple(model.input_shape[1:])
    evaluators = {t: TaskEvaluator(t, k, model.heads[t], image_shape, detection_kwargs) for t, k in tasks.items()}
    import tensorflow as tf

    def forward(x):
        return model(x, training=False)

    predict = tf.function(forward, autograph=False, reduce_retracing=True)
    notes, first_inputs, count, missing = [], None, 0, set()
    for b, element in enumerate(dataset):
        if max_batches is not None and b >= max_batches:
            break
        inputs, labels = element[0], element[1]
        if not isinstance(labels, dict):
            labels = {next(iter(tasks)): labels} if len(tasks) == 1 else {}
        if first_inputs is None:
            first_inputs = inputs
        outputs = predict(inputs)
        labels_np = {k: np.asarray(v) for k, v in labels.items()}
        count += int(np.shape(inputs)[0])
        for task, ev in evaluators.items():
            if task not in labels_np:
                missing.add(task)
                continue
            ev.update(np.asarray(outputs[task]), labels_np)
    if count == 0:
        from mtlzoo.data.splits import DataCheckError

        raise DataCheckError(f"evaluate: {description} yielded no batch; check the split name and num_examples.")
    metrics, details, higher = {}, {}, {}
    for task, ev in evaluators.items():
        if task in missing:
            notes.append(f"the data has no {task!r} labels: task not evaluated")
            continue
        metrics[task], details[task] = ev.result()
        higher[task] = {name: HIGHER_IS_BETTER[name] for name in metrics[task]}
        if tasks[task] == "detection" and details[task]["ground_truth"] == "centernet_targets":
            notes.append(
                f"{task}: no raw boxes in the data; ground-truth boxes were read back from the CenterNet targets"
            )
    cost = model_cost(model, first_inputs, repeats=timing_repeats)
    report = EvaluationReport(model=model.name, data=description, num_examples=count, tasks=tasks, metrics=metrics,
                              details=details, higher_is_better=higher, cost=cost, notes=notes)
    stored, folder = read_baselines(baselines)
    if stored is not None:
        base_tasks = stored.get("tasks", {})
        report.baseline_metrics = {t: dict(v.get("metrics", {})) for t, v in base_tasks.items() if t in tasks}
        report.delta_m, report.delta_m_per_task = _delta_m(metrics, higher, report.baseline_metrics, notes)
        report.baseline_cost, report.cost_ratio = _baseline_cost(
            base_tasks, tasks, cost, first_inputs, folder, remeasure_baselines, timing_repeats, notes)
    return report


def _baseline_cost(base_tasks, tasks, cost, inputs, folder, remeasure, repeats, notes):
    covered = [t for t in tasks if t in base_tasks]
    if not covered:
        return None, None
    if len(covered) < len(tasks):
        notes.append(f"cost: no single-task model for {sorted(set(tasks) - set(covered))}; sums cover {covered}")
    total = {"params": 0, "flops": 0, "step_time_s": 0.0, "batch_size": cost.get("batch_size")}
    train_steps = []
    remeasured = True
    for t in covered:
        entry = base_tasks[t].get("cost", {})
        total["params"] += int(entry.get("params", 0))
        total["flops"] += int(entry.get("flops", 0))
        step = None
        path = base_tasks[t].get("model")
        if remeasure and path and folder and inputs is not None:
            full = path if os.path.isabs(path) else os.path.join(folder, path)
            if os.path.exists(full):
                step = measure_step_time(_load_model(full), inputs, repeats=repeats)
        if step is None:
            remeasured = False
            step = entry.get("step_time_s")
            if entry.get("batch_size") not in (None, cost.get("batch_size")):
                notes.append(f"cost: the stored step time of {t!r} is for batch {entry.get('batch_size')}")
        total["step_time_s"] += float(step) if step is not None else float("nan")
        if entry.get("train_step_s") is not None:
            train_steps.append(float(entry["train_step_s"]))
    if len(train_steps) == len(covered):
        total["train_step_s"] = float(sum(train_steps))
    if not remeasured:
        notes.append("cost: single-task step times are the stored ones (measured when the baselines were trained)")
    ratio = {}
    for key in ("params", "flops", "step_time_s"):
        m, s = cost.get(key), total.get(key)
        ratio[key] = (m / s) if m is not None and s and math.isfinite(s) else None
    return total, ratio
