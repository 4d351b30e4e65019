"""Label checks of the multi-task model: a dict keyed by task, of the shape each head expects."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.registry import suggestion

def check_labels(model, y):
    """Checks that `y` is a dict keyed by task with the shape each head expects; names the fix otherwise."""
    if not isinstance(y, dict):
        if len(model.task_names) == 1 and y is not None:
            return {model.task_names[0]: y}
        raise TypeError(
            f"Labels must be a dict keyed by task name {model.task_names}; got {type(y).__name__}."
        )
    for t in y:
        if t not in model.heads:
            raise ValueError(
                f"Labels name unknown task {t!r}.{suggestion(t, model.task_names)} "
                f"The model's tasks are {model.task_names}."
            )
    return y


def check_label_shape(model, task, label):
    """Checks one task's label against the shape its head expects."""
    expected, kind = model.heads[task].label_spec(tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else ())
    got = tuple(label.shape[1:])
    alternatives = {expected}
    if expected and expected[-1] == 1:
        alternatives.add(expected[:-1])
    elif kind == "int":
        alternatives.add(expected + (1,))
    ok = any(
        len(got) == len(alt) and all(g is None or a is None or g == a for g, a in zip(got, alt))
        for alt in alternatives
    )
    if not ok:
        raise ValueError(
            f"Task {task!r} ({model.tasks[task]['kind']}): labels have shape {('batch',) + got} but "
            f"{('batch',) + expected} was expected. Check the dataset's {task!r} labels against the recipe."
        )
    if label.dtype == tf.string or label.dtype == tf.bool:
        raise ValueError(f"Task {task!r}: labels must be numeric, got dtype {label.dtype.name}.")
