"""Runs a gradient aggregator (PCGrad, MGDA, ...) inside the model's train step."""

from __future__ import annotations

import math
import warnings

import tensorflow as tf


def flatten(tensors, like):
    """Concatenates gradients into one vector (None -> zeros shaped like the variable)."""
    return tf.concat(
        [tf.reshape(tf.zeros_like(v) if g is None else tf.convert_to_tensor(g), [-1]) for g, v in zip(tensors, like)],
        axis=0,
    )


def unflatten(vector, like):
    """Splits a flat vector back into tensors shaped like the variables in `like`."""
    sizes = [math.prod(v.shape) for v in like]
    parts = tf.split(vector, sizes) if like else []
    return [tf.reshape(p, v.shape) for p, v in zip(parts, like)]


class AggregatorHook:
    """Replaces the shared parameters' gradient by an aggregator's direction.

    Per step: one backward pass per task gives that task's gradient on the
    shared parameters (stacked as the [T, P] matrix the aggregator combines)
    and on its own head; the aggregated direction is applied to the shared
    parameters, each head gets its task's gradient, and penalties and
    regularisers (e.g. soft sharing) add their own gradients. The rows are the
    gradients of `w_t · L_t`, so the model's loss weights (and epoch-level
    weighting callbacks such as DWA) still scale the tasks; methods that
    change the loss itself (uncertainty weighting, GLS) cannot be combined with
    an aggregator.

    With `representation=True` (the "-UB" variants of weight-based methods,
    e.g. MGDA-UB) the rows are the gradients w.r.t. the shared feature map,
    which only pass through the heads; the aggregator's task weights λ_t then
    scale each head's gradient and the feature-map gradients, which go back
    through the trunk in one backward pass — the same passes as an ordinary
    step, plus the small solver.

    Under `tf.distribute`, the per-task gradient matrix is summed across
    replicas before aggregation (the global method, not a per-replica one).

    Args:
        aggregator: an `mtlzoo.aggregators` object.
        representation: bool. Use representation-level gradients. Defaults to False.

    Example:
    ```python
    model = mtlzoo.build("driving_perception_lite", aggregator="pcgrad")   # installs it
    # or by hand:
    model.set_step_hook(mtlzoo.gradient_hook.AggregatorHook(mtlzoo.aggregators.get("mgda")))
    ```
    """

    persistent_tape = True

    def __init__(self, aggregator, representation=False):
        if representation and not getattr(aggregator, "weight_based", False):
            raise ValueError(
                f"Representation-level aggregation needs a weight-based aggregator "
                f"(MGDA, Aligned-MTL, ...); {type(aggregator).__name__} is not."
            )
        self.aggregator = aggregator
        self.representation = bool(representation)
        self.shared = []
        self.by_task = {}

    def build(self, model):
        if getattr(model, "_hooks", None) is not None and model._hooks.loss is not None:
            raise ValueError(
                f"Gradient aggregator {type(self.aggregator).__name__} cannot be combined with the loss hook "
                f"{type(model._hooks.loss).__name__} (it changes the loss itself); use one of them."
            )
        self.shared, self.by_task = model.variable_groups()
        if not self.shared:
            warnings.warn(
                "This model has no shared parameters (soft_l2 sharing keeps every column task-specific): "
                "the gradient aggregator has nothing to combine and plain gradients are used.",
                stacklevel=3,
            )
        num_params = sum(math.prod(v.shape) for v in self.shared)
        self._num_params = int(num_params)
        self.aggregator.build(len(model.task_names), None if self.representation else num_params)

    def _losses_vector(self, model, task_losses):
        return tf.stack([tf.cast(task_losses[t], tf.float32) for t in model.task_names])

    def gradients(self, model, tape, task_losses, total, extra, features=None, trunk_outputs=None):
        variables = model.trainable_variables
        if not self.shared:
            return tape.gradient(total, variables)
        weights = model.loss_weights
        with tape:  # record the per-task terms on the (persistent) step tape
            terms = {
                t: model.scale_loss_for_step(tf.cast(weights[t], tf.float32) * task_losses[t]) for t in model.task_names
            }
        losses = self._losses_vector(model, task_losses) if self.aggregator.requires_losses else None
        replica = tf.distribute.get_replica_context()
        replicas = tf.distribute.get_strategy().num_replicas_in_sync

        index = {id(v): i for i, v in enumerate(variables)}
        if self.representation:
            return self._representation_gradients(model, tape, terms, extra, features, trunk_outputs, losses, variables, index)

        grads = [None] * len(variables)
        # The [T, P] matrix is filled row by row in one buffer
        # (tensor_scatter_nd_update forwards its input when nothing else
        # holds it), so a task's flattened gradient is freed once written:
        # the step holds about one [T, P] matrix, not the rows and a stacked copy.
        num_tasks = len(model.task_names)
        matrix = tf.zeros([num_tasks, self._num_params], tf.float32)
        for i, t in enumerate(model.task_names):
            own = self.by_task[t]
            g = tape.gradient(terms[t], self.shared + own)
            row = tf.cast(flatten(g[: len(self.shared)], self.shared), tf.float32)
            matrix = tf.tensor_scatter_nd_update(matrix, [[i]], row[None])
            for v, gv in zip(own, g[len(self.shared):]):
                grads[index[id(v)]] = gv
        if replicas > 1 and replica is not None:
            # Aggregate the global per-task gradients once, in cross-replica
            # context, then hand back this replica's share (the optimizer sums
            # the replicas' gradients). Once, not per replica: a random
            # aggregator (PCGrad's task orders, GradDrop) would otherwise draw a
            # different stream on each replica (tf.random.Generator folds in
            # the replica id), and stateful ones (GradVac, Nash-MTL) update
            # their mirrored state in cross-replica context, as on one device.
            matrix = replica.all_reduce(tf.distribute.ReduceOp.SUM, matrix)
            if losses is not None:
                losses = replica.all_reduce(tf.distribute.ReduceOp.SUM, losses) / replicas

            def aggregate_once(strategy, matrix, losses):
                first = lambda v: None if v is None else strategy.experimental_local_results(v)[0]  # noqa: E731
                return self.aggregator(first(matrix), first(losses))

            direction = replica.merge_call(aggregate_once, args=(matrix, losses)) / replicas
        else:
            direction = self.aggregator(matrix, losses)
        for v, gv in zip(self.shared, unflatten(tf.cast(direction, tf.float32), self.shared)):
            grads[index[id(v)]] = gv
        return self._add_extra(tape, extra, variables, grads)

    @staticmethod
    def _add_extra(tape, extra, variables, grads):
        """Adds the gradients of the non-task loss terms (penalties, regularisers)."""
        for i, ge in enumerate(tape.gradient(extra, variables)):
            if ge is not None:
                grads[i] = ge if grads[i] is None else grads[i] + ge
        return grads

    def _representation_gradients(self, model, tape, terms, extra, features, trunk_outputs, losses, variables, index):
        """Weights from feature-map gradients; heads once per task, the trunk once in all."""
        grads = [None] * len(variables)
        rows, feature_grads, head_grads = [], [], []
        for t in model.task_names:
            own = self.by_task[t]
            g = tape.gradient(terms[t], list(features) + own)
            f = [tf.zeros_like(x) if gi is None else gi for gi, x in zip(g[: len(features)], features)]
            feature_grads.append(f)
            head_grads.append(g[len(features):])
            rows.append(tf.concat([tf.reshape(x, [-1]) for x in f], axis=0))
        matrix = tf.stack(rows)
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            # The global batch's feature maps are the replicas' maps side by
            # side: gather the rows (a column permutation of the one-device
            # matrix, which leaves every inner product, so the weights,
            # unchanged) and weigh once, in cross-replica context.
            matrix = replica.all_gather(matrix, axis=1)
            if losses is not None:
                losses = replica.all_reduce(tf.distribute.ReduceOp.SUM, losses) / replica.num_replicas_in_sync

            def weigh_once(strategy, matrix, losses):
                first = lambda v: None if v is None else strategy.experimental_local_results(v)[0]  # noqa: E731
                return self.aggregator.task_weights(first(matrix), first(losses))

            lam = replica.merge_call(weigh_once, args=(matrix, losses))
        else:
            lam = self.aggregator.task_weights(matrix, losses)
        lam = tf.stop_gradient(lam)
        for i, t in enumerate(model.task_names):
            for v, gv in zip(self.by_task[t], head_grads[i]):
                if gv is not None:
                    grads[index[id(v)]] = lam[i] * gv
        upstream = [tf.add_n([lam[i] * feature_grads[i][k] for i in range(len(model.task_names))])
                    for k in range(len(features))]
        trunk = tape.gradient(list(trunk_outputs), self.shared, output_gradients=upstream)
        for v, gv in zip(self.shared, trunk):
            grads[index[id(v)]] = gv
        return self._add_extra(tape, extra, variables, grads)
