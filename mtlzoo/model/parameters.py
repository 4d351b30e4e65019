"""Shared and task-specific parameters of the multi-task model."""

from __future__ import annotations

from keras import ops

def variable_groups(model):
    """`MultiTaskModel.variable_groups` (its docstring says what it does)."""
    by_task, owned = {}, set()
    for t in model.task_names:
        vs = []
        for name in model.task_layers[t]:
            for v in model.get_layer(name).trainable_variables:
                if id(v) not in owned:
                    vs.append(v)
                    owned.add(id(v))
        by_task[t] = vs
    own = {id(v) for v in model._trainable_variables}
    shared = [v for v in model.trainable_variables if id(v) not in owned and id(v) not in own]
    return shared, by_task


def parameter_summary(model):
    """`MultiTaskModel.parameter_summary` (its docstring says what it does)."""
    shared, by_task = model.variable_groups()
    count = lambda vs: int(sum(int(ops.size(v)) for v in vs))  # noqa: E731
    out = {"shared": count(shared)}
    out.update({t: count(vs) for t, vs in by_task.items()})
    out["total"] = int(model.count_params())
    return out


def set_bn_momentum(model, momentum: float) -> int:
    """Sets the momentum of every BatchNormalization layer in `model` (nested models too); returns how many."""
    import keras

    from mtlzoo.layers.traversal import iter_layers

    count = 0
    for layer in iter_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            count += 1
    return count
