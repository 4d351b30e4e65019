"""In-step helpers of the loss weightings: finite checks, stacking and replica reductions."""

from __future__ import annotations

import tensorflow as tf


def all_finite(*tensors):
    """A scalar bool tensor: every element of every given tensor (None skipped) is finite."""
    ok = tf.constant(True)
    for x in tensors:
        if x is None:
            continue
        ok = tf.logical_and(ok, tf.reduce_all(tf.math.is_finite(tf.cast(x, tf.float32))))
    return ok


def stack_losses(model, task_losses):
    """The task losses as a float32 vector [K] in `model.task_names` order."""
    return tf.stack([tf.cast(task_losses[t], tf.float32) for t in model.task_names])


# ---------------------------------------------------------------- distribution
def _replica_context():
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def replica_mean(value):
    """The mean over replicas of a per-replica value; the value itself on one replica.

    A task loss inside the train step is this replica's share (for masked
    losses `R · Σ_local / global count`, see
    `mtlzoo.distribute.replica_task_loss`), so its replica mean is the loss of
    the global batch, the value one device would see. Works on tensors of any
    shape (gradients too).
    """
    context = _replica_context()
    if context is None:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value) / float(context.num_replicas_in_sync)


def replica_sum(value):
    """The sum over replicas of a per-replica value; the value itself on one replica.

    The gradient of the step loss (already divided by the replica count) of
    the global batch is the replica sum of the per-replica gradients.
    """
    context = _replica_context()
    if context is None:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def run_once(fn, *args):
    """Calls `fn(*args)` once per step: directly on one replica, else in cross-replica context.

    Under a strategy with more than one replica in sync the call goes through
    `merge_call` and gets the first replica's values of `args` (they must be
    the same on every replica, e.g. computed from `replica_mean` values), so a
    state update happens once, not once per replica. `fn` must not call
    `merge_call` itself (a Keras optimizer does: use `SmallAdam`).
    """
    context = _replica_context()
    if context is None:
        return fn(*args)

    def merged(strategy, *values):
        return fn(*[strategy.experimental_local_results(v)[0] for v in values])

    return context.merge_call(merged, args=args)
