"""The train step of the multi-task model: losses, gradients (or the hook's), skipped non-finite steps."""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from mtlzoo import distribute
from mtlzoo import step_state
from mtlzoo.model import representation as representation_split
from mtlzoo.model.labels import check_label_shape, check_labels

def step_state_variables(model):
    """`MultiTaskModel.step_state_variables` (its docstring says what it does)."""
    own = {id(v) for v in model.variables}
    out = list(model.non_trainable_variables)
    sources = list(model.step_hooks)
    weighting = getattr(model, "_weighting", None)
    if weighting is not None:
        sources.append(weighting)
    for source in sources:
        getter = getattr(source, "state_variables", None)
        found = getter() if callable(getter) else step_state.collect_variables(source)
        out.extend(v for v in found if id(v) not in own)
    return step_state.unique(out)


def losses_and_total(model, y, y_pred, sample_weight):
    """(task losses, total, extra): extra = the non-task part of the total (penalties, regularisers)."""
    task_losses = model.compute_task_losses(y, y_pred, sample_weight)
    weighted = model.combine_task_losses(task_losses)
    extra = ops.convert_to_tensor(0.0)
    penalties = model.penalty_losses()
    for value in penalties.values():
        extra = extra + value
    if model.losses:
        extra = extra + ops.sum(ops.stack([ops.cast(v, "float32") for v in model.losses]))
    total = weighted + extra
    y = check_labels(model, y)
    batch = ops.shape(next(iter(y_pred.values())))[0]
    for t, value in task_losses.items():
        if t in y and y[t] is not None:
            model._state.loss_trackers[t].update_state(value, sample_weight=batch)
    for name, value in penalties.items():
        model._state.extra_trackers[f"{name}_penalty"].update_state(value)
    return task_losses, total, extra


def train_step(model, data):
    """`MultiTaskModel.train_step` (its docstring says what it does)."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    # Read before the forward pass writes BatchNorm statistics, so a skipped
    # step can put every one of them back.
    state = model.step_state_variables()
    saved = step_state.snapshot(state)
    hook = model._hooks.gradient
    # GradDrop (level="representation") combines the feature gradients element-wise.
    elementwise = representation_split.elementwise_aggregator(model, hook) if hook is not None else None
    representation = hook is not None and (getattr(hook, "representation", False) or elementwise is not None)
    persistent = hook is not None and getattr(hook, "persistent_tape", True)
    features = None
    with tf.GradientTape(persistent=persistent) as tape:
        if representation:
            trunk, heads = model.shared_representation_model()
            trunk_outputs = trunk(x, training=True)
            trunk_outputs = list(trunk_outputs) if isinstance(trunk_outputs, (list, tuple)) else [trunk_outputs]
            # The heads read cut copies, so a gradient w.r.t. one feature
            # map is its own partial derivative (feature maps may depend on
            # each other inside the trunk, e.g. pyramid levels).
            features = [tf.stop_gradient(f) for f in trunk_outputs]
            for f in features:
                tape.watch(f)
            y_pred = heads(features, training=True)
        else:
            y_pred = model(x, training=True)
        task_losses, total, extra = losses_and_total(model, y, y_pred, sample_weight)
        batch = ops.shape(next(iter(y_pred.values())))[0]
        model._loss_tracker.update_state(total, sample_weight=batch)
        step_loss = model.scale_loss_for_step(total)
        step_extra = model.scale_loss_for_step(extra)
    variables = model.trainable_variables
    if elementwise is not None:
        grads = representation_split.elementwise_gradients(model, hook, tape, task_losses, step_extra, features,
                                                           trunk_outputs)
    elif hook is not None:
        kwargs = {"features": features, "trunk_outputs": trunk_outputs} if representation else {}
        grads = hook.gradients(model, tape, task_losses, step_loss, step_extra, **kwargs)
    else:
        grads = tape.gradient(step_loss, variables)
    del tape
    apply_if_finite(model, total, grads, variables, state, saved)
    if not getattr(model, "_train_metrics", True):  # compile(train_metrics=False): the losses only
        return distribute.step_logs(loss_logs(model))
    return distribute.step_logs(model.compute_metrics(x, y, y_pred, sample_weight))


def loss_logs(model) -> dict:
    """The step logs without the task metrics: the total and per-task losses and the extra trackers."""
    task_metrics = {id(m) for ms in model._state.task_metrics.values() for m in ms}
    logs = {}
    for metric in model.metrics:
        if id(metric) in task_metrics:
            continue
        result = metric.result()
        if isinstance(result, dict):
            logs.update(result)
        else:
            logs[metric.name] = result
    return logs


def apply_if_finite(model, total, grads, variables, state=(), saved=()):
    """Applies the gradients only when the step is finite; otherwise restores the saved state (a skipped step)."""
    # One check over the loss, every gradient and every statistic the forward pass wrote: a forward pass that
    # overflowed BatchNorm statistics (e.g. after a huge learning rate) is as broken as a NaN loss.
    finite = step_state.all_finite([total, *grads, *state])
    pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
    if pairs:
        # Under tf.distribute all replicas skip together (the flag is
        # all-reduced, the cond runs in cross-replica context); a skipped
        # step leaves the weights and the optimizer state as they were.
        finite = distribute.apply_if_finite(model.optimizer, pairs, finite)
    else:
        finite = distribute.all_replicas(finite)
    # ... and puts back what the forward pass and the hooks already wrote.
    step_state.restore_unless(finite, state, saved)
    skipped = 1.0 - tf.cast(finite, "float32")
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        # The Sum tracker adds up the replicas' values: count a skipped step once.
        skipped = skipped * tf.cast(tf.equal(context.replica_id_in_sync_group, 0), "float32")
    model._state.extra_trackers["nonfinite_steps"].update_state(skipped)


def compute_task_losses(model, y, y_pred, sample_weight=None):
    """`MultiTaskModel.compute_task_losses` (its docstring says what it does)."""
    if model._state is None:
        raise RuntimeError("Call compile() before training or evaluating a MultiTaskModel.")
    y = check_labels(model, y)
    if sample_weight is not None and not isinstance(sample_weight, dict):
        sample_weight = {t: sample_weight for t in model.task_names}
    out = {}
    for t in model.task_names:
        if t not in y or y[t] is None:
            out[t] = ops.convert_to_tensor(0.0)
            continue
        check_label_shape(model, t, y[t])
        sw = None if sample_weight is None else sample_weight.get(t)
        # Under tf.distribute: this replica's share of the mean over the
        # global batch's valid labels (valid counts summed over replicas).
        out[t] = distribute.replica_task_loss(model._state.task_losses[t], y[t], y_pred[t], sw)
    return out


def combine_task_losses(model, task_losses):
    """`MultiTaskModel.combine_task_losses` (its docstring says what it does)."""
    hook = model._hooks.loss
    if hook is not None:
        return hook.combine(model, task_losses)
    total = ops.convert_to_tensor(0.0)
    for t in model.task_names:
        total = total + ops.cast(model._loss_weight_vars[t], "float32") * task_losses[t]
    return total


def compute_metrics(model, x, y, y_pred, sample_weight=None):
    """`MultiTaskModel.compute_metrics` (its docstring says what it does)."""
    y = check_labels(model, y)
    if sample_weight is not None and not isinstance(sample_weight, dict):
        sample_weight = {t: sample_weight for t in model.task_names}
    for t in model.task_names:
        if t not in y or y[t] is None:
            continue
        sw = None if sample_weight is None else sample_weight.get(t)
        for m in model._state.task_metrics[t]:
            m.update_state(y[t], y_pred[t], sample_weight=sw)
    return model.get_metrics_result()
