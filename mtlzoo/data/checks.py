"""`check_dataset`: a dataset checked against a recipe before any model is built."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mtlzoo.data.splits import DataCheckError
from mtlzoo.recipe import Recipe, get_recipe
from mtlzoo.registry import suggestion

__all__ = ["check_dataset"]


_MISSING_VALUE_HINT = {
    "segmentation": "-1 for unlabelled pixels",
    "classification": "-1 for a missing class id",
    "depth": "0 (or any value <= 0) for invalid pixels",
    "detection": "an all -1 CenterNet target for a missing image",
    "multilabel": "-1 for unknown tags",
    "regression": "the head's ignore_value, or a zero sample_weight",
}


def _label_alternatives(expected, kind):
    alternatives = {tuple(expected)}
    if expected and expected[-1] == 1:
        alternatives.add(tuple(expected[:-1]))
    elif kind == "int":
        alternatives.add(tuple(expected) + (1,))
    return alternatives


def _shape_str(shape):
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def _batch_shape_str(shape):
    return "(" + ", ".join(["batch"] + ["?" if d is None else str(d) for d in shape]) + ")"


def _task_heads(recipe):
    from mtlzoo.registry import HEADS

    return {t: (spec.kind, HEADS.get(spec.kind)(**spec.head_args)) for t, spec in recipe.tasks.items()}


def _show(value):
    value = float(value)
    return str(int(value)) if value.is_integer() else f"{value:g}"


def _check_class_ids(task, kind, num_classes, value, where, what="class ids"):
    """Raises DataCheckError if `value` holds anything but integer ids in [0, num_classes) or -1."""
    if value.size == 0:
        return
    value = value.astype(np.float64) if value.dtype.kind == "f" else value.astype(np.int64)
    bad = ~((value == -1) | ((value >= 0) & (value < num_classes)))
    fractional = (value != np.round(value)) if value.dtype.kind == "f" else np.zeros(value.shape, bool)
    bad |= fractional
    if not bad.any():
        return
    found = np.unique(value[bad])
    shown = ", ".join(_show(v) for v in found[:5]) + (", ..." if len(found) > 5 else "")
    problem = "fractional" if fractional[bad].all() else "out-of-range"
    raise DataCheckError(
        f"Task {task!r} ({kind}): {where} has {int(bad.sum())} {problem} {what}: {shown}. Allowed: integers "
        f"0 to {num_classes - 1} (the head's num_classes is {num_classes}) and -1 for a missing label. Fix: map "
        f"the labels to 0..{num_classes - 1} (e.g. an 'ignore' id such as 255 to -1), or set "
        f"tasks.{task}.num_classes to the number of classes in the data."
    )


def _check_label_values(task, kind_head, value, where):
    """Class ids in range and integral, multi-label targets in {0, 1, -1}, CenterNet heatmaps in [0, 1]."""
    kind, head = kind_head
    num_classes = getattr(head, "num_classes", None)
    if num_classes is None or value.size == 0 or not np.all(np.isfinite(value)):
        return
    if kind in ("segmentation", "classification"):
        _check_class_ids(task, kind, int(num_classes), value, where)
    elif kind == "multilabel":
        bad = ~np.isin(value, (0.0, 1.0, -1.0))
        if bad.any():
            found = np.unique(value[bad])
            shown = ", ".join(_show(v) for v in found[:5]) + (", ..." if len(found) > 5 else "")
            raise DataCheckError(
                f"Task {task!r} (multilabel): {where} has {int(bad.sum())} target values outside {{0, 1, -1}}: "
                f"{shown}. Allowed: 1 (tag present), 0 (absent) and -1 (unknown), one per tag. Fix: give multi-hot "
                "vectors (not class ids or probabilities) of length num_classes."
            )
    elif kind == "detection" and value.ndim >= 2 and value.shape[-1] == int(num_classes) + 5:
        per_example = value.reshape(value.shape[0], -1)
        present = ~np.all(per_example == -1.0, axis=1)  # all -1: a missing label
        heat = value[present][..., : int(num_classes)]
        center = value[present][..., int(num_classes) + 4]
        if heat.size and (heat.min() < 0.0 or heat.max() > 1.0):
            found = heat.min() if heat.min() < 0.0 else heat.max()
            raise DataCheckError(
                f"Task {task!r} (detection): {where} has a class heatmap value {_show(found)} in the first "
                f"{num_classes} channels; CenterNet targets hold values in [0, 1] there (an all -1 target marks a "
                "missing image). Fix: encode boxes and class ids (0 to "
                f"{int(num_classes) - 1}) with mtlzoo.heads.centernet_targets.encode_centernet_targets."
            )
        if center.size and not np.all(np.isin(center, (0.0, 1.0))):
            raise DataCheckError(
                f"Task {task!r} (detection): {where} has center-flag values other than 0 and 1 (channel "
                f"{int(num_classes) + 4}). Fix: encode the targets with "
                "mtlzoo.heads.centernet_targets.encode_centernet_targets."
            )


def check_dataset(recipe, dataset, split="train", check_batches=1):
    """Checks a dataset against a recipe before training; returns it with extra label keys removed.

    Checked, each failure raising a `DataCheckError` that names the problem
    and the fix:

    - the elements are `(image, labels)` (or `(image, labels, sample_weight)`)
      pairs whose labels are a dict keyed by task;
    - every task of the recipe has labels, of the shape and dtype its head
      expects (`head.label_spec`); label keys the recipe does not use (other
      tasks, evaluation boxes) are dropped from the returned dataset;
    - the images have the recipe's `input_shape` (size and channels);
    - the split is not empty;
    - the first `check_batches` batches hold no NaN/inf labels or images,
      their class ids (segmentation, classification, detection
      `box_classes`) are integers in [0, num_classes) or -1 (missing),
      multi-label targets are 0, 1 or -1, and CenterNet heatmaps lie in
      [0, 1].

    Args:
        recipe: a `Recipe` (or a name).
        dataset: `tf.data.Dataset` of batches.
        split: str. Split name used in the messages. Defaults to "train".
        check_batches: int. Batches read for the value and emptiness checks
            (0: none, -1: all). Defaults to 1.

    Returns:
        The dataset, mapped to drop label keys that are not recipe tasks.

    Example:
    ```python
    import mtlzoo, mtlzoo.data
    from mtlzoo.data.checks import check_dataset
    recipe = mtlzoo.get_recipe("driving_perception_lite", input_shape=(64, 128, 3))
    ds = mtlzoo.data.load("synthetic_driving", image_size=(64, 128), num_examples=16)
    ds = check_dataset(recipe, ds)
    ```
    """
    recipe = get_recipe(recipe) if not isinstance(recipe, Recipe) else recipe
    where = f"the {split} data"
    if not isinstance(dataset, tf.data.Dataset):
        raise DataCheckError(
            f"{where} must be a tf.data.Dataset of (image, labels) batches, got {type(dataset).__name__}."
        )
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise DataCheckError(
            f"{where} must yield (image, labels) pairs with labels a dict keyed by task "
            f"{list(recipe.tasks)}; its elements are {spec}."
        )
    image_spec, label_spec = spec[0], spec[1]
    tasks = list(recipe.tasks)
    heads = _task_heads(recipe)
    if not isinstance(label_spec, dict):
        if len(tasks) == 1 and isinstance(label_spec, tf.TensorSpec):
            dataset = dataset.map(lambda x, y, *rest: (x, {tasks[0]: y}, *rest))
            label_spec = {tasks[0]: label_spec}
        else:
            raise DataCheckError(
                f"{where}: labels must be a dict keyed by task name {tasks}; got {label_spec}. "
                "Fix: map the dataset to (image, {task: label, ...})."
            )
    # Images: rank, size and channels.
    want = tuple(recipe.input_shape)
    got = tuple(image_spec.shape[1:]) if isinstance(image_spec, tf.TensorSpec) else None
    if got is None:
        raise DataCheckError(
            f"{where}: the input must be one tensor of shape {_batch_shape_str(want)}; got {image_spec}."
        )
    if len(got) != len(want) or any(g is not None and g != w for g, w in zip(got, want)):
        if len(want) == 3 and len(got) == 3:
            size_ok = all(g is None or g == w for g, w in zip(got[:2], want[:2]))
            problem = (f"{got[2]} channels but the recipe expects {want[2]}" if size_ok else
                       f"images of size {_shape_str(got[:2])} but the recipe's input_shape is {want}")
            fix = (f"load the data with image_size={want[:2]}, or build the recipe with "
                   f"input_shape={list(got)}" if not size_ok else "convert the images to RGB (3 channels)")
        else:
            problem = f"inputs of shape {_shape_str(got)} but the recipe expects {want}"
            fix = "give inputs of the recipe's input_shape or change input_shape"
        raise DataCheckError(f"{where} has {problem}. Fix: {fix}.")
    # Labels: presence, shape, dtype.
    found = sorted(label_spec)
    for task in tasks:
        kind, head = heads[task]
        if task not in label_spec:
            raise DataCheckError(
                f"Recipe {recipe.name!r} has task {task!r} ({kind}) but {where} has no {task!r} labels; "
                f"the labels found are {found}.{suggestion(task, found)} Fix: drop the task "
                f"(tasks=[{', '.join(repr(t) for t in tasks if t != task)}]), rename the label key, or use a "
                f"dataset that provides {task!r}."
            )
        tspec = label_spec[task]
        if not isinstance(tspec, tf.TensorSpec):
            raise DataCheckError(f"{where}: the {task!r} labels must be one tensor per batch, got {tspec}.")
        expected, dtype_kind = head.label_spec(want)
        got_shape = tuple(tspec.shape[1:])
        ok = any(
            len(got_shape) == len(alt) and all(g is None or a is None or g == a for g, a in zip(got_shape, alt))
            for alt in _label_alternatives(expected, dtype_kind)
        )
        if not ok:
            raise DataCheckError(
                f"Task {task!r} ({kind}): {where} has labels of shape {_batch_shape_str(got_shape)} but "
                f"the recipe's head expects {_batch_shape_str(expected)} for input_shape {want}. Fix: "
                "check the label format of the task kind (see the head's docstring) or the recipe's head "
                "arguments (e.g. num_classes)."
            )
        if tspec.dtype in (tf.string, tf.bool) or not (tspec.dtype.is_floating or tspec.dtype.is_integer):
            raise DataCheckError(
                f"Task {task!r} ({kind}): {where} has labels of dtype {tspec.dtype.name}; numeric labels "
                f"({'integer class ids' if dtype_kind == 'int' else 'floats'}) are needed."
            )
    raw = dataset  # label keys beyond the tasks (e.g. detection `box_classes`) are checked too
    extra = [k for k in label_spec if k not in tasks]
    if extra:
        keep = tuple(tasks)
        dataset = dataset.map(
            lambda x, y, *rest: (x, {t: y[t] for t in keep}, *rest), num_parallel_calls=tf.data.AUTOTUNE
        )
    # Emptiness and values.
    cardinality = int(dataset.cardinality())
    if cardinality == 0:
        raise DataCheckError(
            f"{where} is empty (0 batches). Fix: check the split name, the data folder and num_examples."
        )
    if check_batches != 0:
        seen = 0
        for element in raw.take(check_batches):
            seen += 1
            image, labels = element[0], element[1]
            image = np.asarray(image)
            if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
                raise DataCheckError(
                    f"{where}: batch {seen - 1} has {int(np.sum(~np.isfinite(image)))} NaN/inf input values. "
                    "Fix the reader or the files."
                )
            for task in tasks:
                value = np.asarray(labels[task])
                if value.dtype.kind != "f":
                    continue
                nan, inf = int(np.isnan(value).sum()), int(np.isinf(value).sum())
                if nan or inf:
                    kind = heads[task][0]
                    raise DataCheckError(
                        f"Task {task!r} ({kind}): batch {seen - 1} of {where} has {nan} NaN and {inf} inf "
                        f"label values. Missing labels must use the task's missing value "
                        f"({_MISSING_VALUE_HINT.get(kind, 'see the head docstring')}), not NaN/inf. Fix the "
                        "reader or the files."
                    )
            for task in tasks:
                _check_label_values(task, heads[task], np.asarray(labels[task]), f"batch {seen - 1} of {where}")
            if "box_classes" in labels:
                for task in tasks:
                    if heads[task][0] == "detection":
                        _check_class_ids(task, "detection", heads[task][1].num_classes,
                                         np.asarray(labels["box_classes"]), f"batch {seen - 1} of {where}",
                                         what="box class ids (`box_classes`)")
        if seen == 0:
            raise DataCheckError(
                f"{where} is empty: it yielded no batch. Fix: check the split name, the data folder and num_examples."
            )
    return dataset
