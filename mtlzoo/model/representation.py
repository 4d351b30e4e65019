"""The multi-task model split at its shared features (trunk, heads), for representation-level methods."""

from __future__ import annotations

import keras
import tensorflow as tf

def shared_representation_model(model):
    """`MultiTaskModel.shared_representation_model` (its docstring says what it does)."""
    if getattr(model, "_split_cache", None) is None:
        task_layer_names = {n for names in model.task_layers.values() for n in names}
        boundary, seen = [], set()
        for name in sorted(task_layer_names):
            layer = model.get_layer(name)
            for node in layer._inbound_nodes:
                for tensor in node.input_tensors:
                    producer = tensor._keras_history.operation
                    if producer.name not in task_layer_names and id(tensor) not in seen:
                        seen.add(id(tensor))
                        boundary.append(tensor)
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        trunk = keras.Model(inputs, boundary, name=f"{model.name}_trunk")
        heads = keras.Model(boundary, model._outputs_struct, name=f"{model.name}_heads")
        object.__setattr__(model, "_split_cache", (trunk, heads))
    return model._split_cache


def elementwise_aggregator(model, hook):
    """The hook's aggregator if it acts element-wise on the shared features (GradDrop's `level="representation"`).

    None when it does not, or when the model cannot be split cleanly: shared
    variables used after a task layer (e.g. cross-stitch units) would get no
    gradient from the trunk pass, so such models keep the parameter level.
    """
    aggregator = getattr(hook, "aggregator", None)
    if getattr(aggregator, "level", None) != "representation" or not getattr(hook, "shared", None):
        return None
    if getattr(model, "_elementwise_ok", None) is None:
        _, heads = shared_representation_model(model)
        shared = {id(v) for v in hook.shared}
        object.__setattr__(model, "_elementwise_ok", not any(id(v) in shared for v in heads.trainable_variables))
    return aggregator if model._elementwise_ok else None


def elementwise_gradients(model, hook, tape, task_losses, extra, features, trunk_outputs):
    """Gradients of a step whose aggregator combines the per-task feature gradients element-wise (GradDrop).

    The rows are the gradients of `w_t * L_t` w.r.t. the shared feature maps
    (one pass through each head), the aggregator combines them per element,
    and the result goes back through the trunk once; each head keeps its own
    task's gradient and penalties add theirs. Under `tf.distribute` each
    replica combines its own batch elements, which is the global rule (every
    element's gradients come from its own example only).
    """
    variables = model.trainable_variables
    index = {id(v): i for i, v in enumerate(variables)}
    weights = model.loss_weights
    with tape:  # record the per-task terms on the (persistent) step tape
        terms = [model.scale_loss_for_step(tf.cast(weights[t], tf.float32) * task_losses[t]) for t in model.task_names]
    grads = [None] * len(variables)
    rows = []
    for t, term in zip(model.task_names, terms):
        own = hook.by_task[t]
        g = tape.gradient(term, list(features) + own)
        parts = [tf.zeros_like(f) if gf is None else gf for gf, f in zip(g, features)]
        rows.append(tf.concat([tf.reshape(part, [-1]) for part in parts], 0))
        for v, gv in zip(own, g[len(features):]):
            grads[index[id(v)]] = gv
    combined = tf.cast(hook.aggregator(tf.stack(rows)), tf.float32)
    sizes = [tf.size(f) for f in features]
    upstream = [tf.reshape(part, tf.shape(f)) for part, f in zip(tf.split(combined, sizes), features)]
    for v, gv in zip(hook.shared, tape.gradient(list(trunk_outputs), hook.shared, output_gradients=upstream)):
        grads[index[id(v)]] = gv
    for i, ge in enumerate(tape.gradient(extra, variables)):
        if ge is not None:
            grads[i] = ge if grads[i] is None else grads[i] + ge
    return grads
