"""Strategies by name and the replica arithmetic of the train step."""

from __future__ import annotations

from mtlzoo.distribute.cluster import validate_tf_config

__all__ = [
    "all_replicas",
    "apply_if_finite",
    "check_strategy",
    "local_batch",
    "num_replicas",
    "replica_task_loss",
    "resolve_strategy",
    "step_logs",
    "STRATEGIES",
]


# Strategy names accepted by `resolve_strategy` (and `strategy=` of train/tune, `--strategy` on the CLI).
STRATEGIES = ("mirrored", "multi_worker", "one_device", "tpu")


_ALIASES = {
    "mirror": "mirrored",
    "mirrored_strategy": "mirrored",
    "multi_worker_mirrored": "multi_worker",
    "multiworker": "multi_worker",
    "multi-worker": "multi_worker",
    "one-device": "one_device",
    "tpu_strategy": "tpu",
}


# ---------------------------------------------------------------- strategies
def _canonical_name(spec):
    from mtlzoo.registry import suggestion

    key = str(spec).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in STRATEGIES:
        raise ValueError(
            f"Unknown distribution strategy {spec!r}.{suggestion(str(spec), STRATEGIES)} "
            f"Known: {', '.join(STRATEGIES)} (or None for the default, or a tf.distribute.Strategy)."
        )
    return key


def check_strategy(spec):
    """Validates a strategy spec without creating it (no device or cluster is touched).

    Returns the canonical name, None, or the strategy instance itself. Checks
    TF_CONFIG for "multi_worker". Used by `tune` to fail before any trial.
    """
    if spec is None:
        return None
    import tensorflow as tf

    if isinstance(spec, tf.distribute.Strategy):
        return spec
    if not isinstance(spec, str):
        raise TypeError(
            f"strategy must be None, a name ({', '.join(STRATEGIES)}) or a tf.distribute.Strategy, "
            f"got {type(spec).__name__}."
        )
    if spec.strip().lower() in ("", "none", "default"):
        return None
    name = _canonical_name(spec)
    if name == "multi_worker":
        validate_tf_config(for_strategy="multi_worker")
    return name


def resolve_strategy(spec=None, *, devices=None):
    """The `tf.distribute.Strategy` for a name, or None for TensorFlow's default (one device).

    | spec | strategy |
    |---|---|
    | None, "default", "none" | None: the default strategy (no `scope()` needed) |
    | "mirrored" | `MirroredStrategy` over the local GPUs, or over the logical CPUs when there is no GPU |
    | "multi_worker" | `MultiWorkerMirroredStrategy` from `TF_CONFIG` (checked first, see `validate_tf_config`) |
    | "one_device" | `OneDeviceStrategy` on the first GPU, else the CPU |
    | "tpu" | `TPUStrategy` on the local TPU VM (not tested here) |
    | a `tf.distribute.Strategy` | returned unchanged |

    With only CPUs, "mirrored" uses `ReductionToOneDevice` cross-device ops
    instead of MirroredStrategy's default there, `CollectiveAllReduce` (RING).
    Why: the train step makes extra all-reduces besides the gradients' (the
    per-task gradient matrix of an aggregator, valid-label counts, the
    finite flag), and one of them was measured failing with a shape mismatch
    under the collective implementation (shared/PITFALLS.md). With the
    current step the collective one also gave identical weights in a re-run
    (PCGrad, tabular and tiny CNN models), but the reduction to one device is
    what the tests check, and on one host's CPU, where all logical devices
    share memory, it costs nothing extra. On GPUs the default (NCCL) is kept.

    Args:
        spec: None, str or `tf.distribute.Strategy`.
        devices: list of str or None. "mirrored" only: the devices to mirror
            over (default: every GPU, else every logical CPU).

    Returns:
        A `tf.distribute.Strategy`, or None for the default strategy.

    Raises:
        ValueError: unknown name (with the near match) or malformed TF_CONFIG.
        TypeError: `spec` is neither None, a str nor a Strategy.

    Example:
    ```python
    strategy = mtlzoo.distribute.resolve_strategy("mirrored")
    with strategy.scope():
        model = mtlzoo.build("tabular_demo")
    ```
    """
    checked = check_strategy(spec)
    if checked is None:
        return None
    import tensorflow as tf

    if isinstance(checked, tf.distribute.Strategy):
        return checked
    name = checked
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if devices is None:
            devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        if all("GPU" not in str(d).upper() for d in devices):
            return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    # "tpu": the TPU VM's local chips.
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def num_replicas():
    """Replicas in sync of the current strategy (1 outside any `scope()`)."""
    import tensorflow as tf

    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def _all_reduce_sum(value):
    """Sum over replicas inside a replica context; the value itself otherwise."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


# ---------------------------------------------------------------- train-step helpers
def replica_task_loss(loss, y_true, y_pred, sample_weight=None):
    """A task loss as this replica's share of the global mean over valid labels.

    On one replica this is `loss(y_true, y_pred, sample_weight)`. With R
    replicas, the model divides every loss by R and the optimizer sums the
    replicas' gradients, so a per-replica mean is only right when every
    replica holds the same number of valid labels. For a masked loss
    (`mtlzoo.losses.MaskedLoss`: mean over valid label elements) this returns
    `R · Σ_valid(values on this replica) / Σ_replicas(valid count)`, whose
    replica sum divided by R is the mean over the global batch's valid labels,
    as on one device. A replica with no valid label for the task contributes
    0 and does not halve the task's gradient. Losses normalised by a count of
    their own (`CenterNetLoss`: objects) provide `sum_and_count`, and get
    `R · sum / max(Σ_replicas count, 1)` the same way. Other losses are
    returned per replica unchanged.

    Args:
        loss: a loss object; `MaskedLoss` subclasses that keep the base
            `__call__` are reduced globally.
        y_true, y_pred, sample_weight: as for the loss.

    Returns:
        A float32 scalar tensor.
    """
    import tensorflow as tf
    from keras import ops

    from mtlzoo.losses import MaskedLoss, broadcast_weight

    context = tf.distribute.get_replica_context()
    replicas = 1 if context is None else context.num_replicas_in_sync
    masked = isinstance(loss, MaskedLoss) and type(loss).__call__ is MaskedLoss.__call__
    if replicas > 1 and hasattr(loss, "sum_and_count"):
        total, count = loss.sum_and_count(y_true, y_pred, sample_weight)
        count = ops.maximum(_all_reduce_sum(tf.stop_gradient(ops.cast(count, "float32"))), 1.0)
        return ops.cast(replicas, "float32") * ops.cast(total, "float32") / count
    if replicas == 1 or not masked:
        return ops.cast(loss(y_true, y_pred, sample_weight), "float32")
    values, valid = loss.elementwise(y_true, ops.cast(y_pred, "float32"))
    valid = ops.cast(valid, "float32")
    if sample_weight is not None:
        valid = valid * broadcast_weight(sample_weight, valid)
    values = ops.where(valid > 0, values, ops.zeros_like(values))
    total = ops.sum(values * valid)
    count = _all_reduce_sum(tf.stop_gradient(ops.sum(valid)))
    return ops.cast(replicas, "float32") * ops.divide_no_nan(total, count)


def apply_if_finite(optimizer, grads_and_vars, finite):
    """Applies the gradients unless the step is non-finite on any replica; returns the global flag.

    One device: a `tf.cond` around `optimizer.apply_gradients`. Under
    tf.distribute the local flags are all-reduced first, so all replicas take
    the same branch; the `tf.cond` then runs in cross-replica context (inside
    a `merge_call`), since `apply_gradients` itself calls `merge_call` and
    TensorFlow does not allow that inside a cond in replica context. A skipped
    step leaves the weights, the optimizer slots and `optimizer.iterations`
    as they were. With XLA on GPUs (no merge_call) the cond stays in replica
    context, which is safe because the flag is the same on every replica.

    Args:
        optimizer: a Keras optimizer.
        grads_and_vars: list of (gradient, variable); no None gradients.
        finite: scalar bool tensor, this replica's verdict.

    Returns:
        The scalar bool tensor that decided the step (same on every replica).
    """
    import tensorflow as tf

    grads = [g for g, _ in grads_and_vars]
    variables = [v for _, v in grads_and_vars]

    def apply(gs):
        optimizer.apply_gradients(list(zip(gs, variables)))

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        tf.cond(finite, lambda: apply(grads) or tf.constant(True), lambda: tf.constant(False))
        return finite
    bad = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
    finite = tf.equal(bad, 0.0)
    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, lambda: apply(grads) or tf.constant(True), lambda: tf.constant(False))
        return finite

    def cross_replica(strategy, grads, finite):
        flag = strategy.experimental_local_results(finite)[0]

        def apply_all():
            strategy.extended.call_for_each_replica(apply, args=(grads,))
            return tf.constant(True)

        tf.cond(flag, apply_all, lambda: tf.constant(False))

    context.merge_call(cross_replica, args=(grads, finite))
    return finite


def all_replicas(flag):
    """A scalar bool that is True only where `flag` is True on every replica (identity on one device)."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return flag
    bad = context.all_reduce(tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(flag, tf.float32))
    return tf.equal(bad, 0.0)


def local_batch(batch):
    """The first local replica's part of a batch from a distributed iterator (other values unchanged).

    Keras 3.15's `fit`/`evaluate`/`predict` peek at one batch to build the
    model symbolically and reduce it with `strategy.reduce("MEAN", batch)`;
    under `MultiWorkerMirroredStrategy` with more than one worker that
    reduction fails for a nested batch (a tuple with a dict of labels:
    "Attempt to convert a value (PerReplica...) to a Tensor"). Only the
    shapes and dtypes are used, so the local part is enough and needs no
    collective. `MultiTaskModel._maybe_symbolic_build` uses this.
    """
    import tensorflow as tf

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return tf.distribute.get_strategy().experimental_local_results(value)[0]
        return value

    return tf.nest.map_structure(local, batch)


def _multi_worker_mode(strategy):
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode()


def step_logs(logs):
    """Gives scalar step logs a leading axis of size 1 under multi-worker `MultiWorkerMirroredStrategy`.

    Keras 3.15 reduces a step's logs across workers with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalar
    metric results a train/test step returns ("Invalid reduction dimension 0
    for input with 0 dimensions"). With shape [1] the same call averages the
    workers' values into a scalar. Anywhere else the logs are returned as they are.
    `MultiTaskModel.train_step`/`test_step` use this.
    """
    import tensorflow as tf

    if not _multi_worker_mode(tf.distribute.get_strategy()):
        return logs

    def expand(value):
        value = tf.convert_to_tensor(value)
        return tf.reshape(value, [1]) if value.shape.rank == 0 else value

    return tf.nest.map_structure(expand, logs)
