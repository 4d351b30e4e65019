"""Variables that a train step may change besides the trained weights, and their rollback.

A training-mode forward pass writes BatchNorm moving statistics as it runs,
and loss-weighting methods update their own state inside the step, before
anyone knows whether the step's loss and gradients are finite. When
`mtlzoo.MultiTaskModel` skips a non-finite step it therefore restores every
such variable from a snapshot taken before the forward pass, so a skipped
step changes nothing (see `docs/reliability.md`).

`collect_variables(obj)` finds the `keras.Variable`s / `tf.Variable`s held by
an object (directly, in lists, tuples or dicts, in a `keras.random.SeedGenerator`
or in an object with a `variables` list), which is how a step hook exposes its
state without declaring every attribute.

Example:
```python
from mtlzoo.step_state import collect_variables, snapshot, restore_unless
state = model.non_trainable_variables + collect_variables(weighting)
saved = snapshot(state)
...                                   # forward pass, hooks, gradients
restore_unless(finite, state, saved)  # finite: scalar bool tensor
```
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["collect_variables", "snapshot", "restore_unless", "all_finite", "unique"]


def _is_variable(value) -> bool:
    return isinstance(value, (keras.Variable, tf.Variable))


def unique(variables) -> list:
    """The variables in order, each once (by identity)."""
    out, seen = [], set()
    for v in variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def collect_variables(obj, _depth=0) -> list:
    """Every variable held by `obj`'s attributes, searched through containers and mtlzoo helper objects.

    Keras models, layers and callbacks met on the way are not searched (a
    weighting callback refers to its model; the model's own variables are
    not the hook's state).

    Args:
        obj: any object; a variable returns itself, a list/tuple/dict its items'.

    Returns:
        A list of variables without duplicates, in attribute order.
    """
    if _is_variable(obj):
        return [obj]
    if isinstance(obj, keras.random.SeedGenerator):
        return [obj.state]
    if obj is None or _depth > 3 or isinstance(obj, (str, bytes, int, float, bool, type)):
        return []
    if isinstance(obj, dict):
        items = list(obj.values())
    elif isinstance(obj, (list, tuple)):
        items = list(obj)
    elif _depth == 0 or (type(obj).__module__.startswith("mtlzoo")
                         and not isinstance(obj, (keras.Model, keras.layers.Layer, keras.callbacks.Callback))):
        items = list(getattr(obj, "__dict__", {}).values())
    else:
        return []
    out = []
    for item in items:
        out.extend(collect_variables(item, _depth + 1))
    return unique(out)


def _value(v):
    return v.value if isinstance(v, keras.Variable) else tf.convert_to_tensor(v)


def snapshot(variables) -> list:
    """Copies of the variables' current values (read before the step changes them)."""
    return [tf.identity(_value(v)) for v in variables]


def all_finite(tensors):
    """Scalar bool tensor: every floating-point tensor (or variable) in `tensors` holds only finite values.

    One reduction per tensor and one test in all: the sum of a tensor is
    finite exactly when its elements are, except for finite elements whose
    sum overflows float32 (beyond ±3.4e38), which also counts as non-finite.
    This keeps the check to one op per tensor instead of three, which
    matters in a train step that checks every gradient and statistic.
    """
    tensors = [_value(t) if _is_variable(t) else t for t in tensors if t is not None]
    sums = [tf.reduce_sum(tf.cast(t, "float32")) for t in tensors if tf.as_dtype(t.dtype).is_floating]
    if not sums:
        return tf.constant(True)
    return tf.math.is_finite(tf.add_n(sums) if len(sums) > 1 else sums[0])


def restore_unless(keep, variables, saved) -> None:
    """Assigns each variable its saved value unless `keep` (a scalar bool tensor) is True.

    In a graph the assignments sit in the false branch of one `tf.cond`, so
    a kept step runs none of them (under a multi-replica strategy each
    variable is assigned a `tf.where` of the two values instead).
    """
    pairs = list(zip(variables, saved))
    if not pairs:
        return

    def restore():
        for v, old in pairs:
            v.assign(old)
        return tf.constant(False)

    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        # A mirrored variable's assignment in replica context is a merge_call, which TensorFlow refuses inside
        # a cond: select the value instead (every replica assigns).
        for v, old in pairs:
            v.assign(tf.where(keep, _value(v), old))
        return
    if tf.executing_eagerly():
        if not bool(keep):
            restore()
        return
    tf.cond(keep, lambda: tf.constant(True), restore)
