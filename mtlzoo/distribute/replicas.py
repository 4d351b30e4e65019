"""Distribution strategies for mtlzoo: names, TF_CONFIG checks, and the replica-aware step helpers.

`resolve_strategy(spec)` turns a name (`"mirrored"`, `"multi_worker"`,
`"one_device"`, `"tpu"`), a `tf.distribute.Strategy` or None into the strategy
that `mtlzoo.training.train` and `mtlzoo.tuning.tune` build the model under:

```python
strategy = mtlzoo.distribute.resolve_strategy("mirrored")
with strategy.scope():
    model = mtlzoo.build("tabular_demo")
model.fit(dataset, epochs=3)           # the dataset's batch is the global batch
```

Two helpers make a multi-task train step give the same update under
distribution as on one device (the model calls them from its train step):

- `replica_task_loss` computes a masked task loss as this replica's share of
  the *global* mean over valid labels: the valid-label counts are summed
  across replicas first, so a replica whose shard has no label for a task
  (or fewer labels than the others) does not change the task's mean.
- `apply_if_finite` skips a non-finite step on every replica together (the
  finite flag is all-reduced, and the update is wrapped in a `tf.cond` in
  cross-replica context as Keras's `LossScaleOptimizer` does), so no replica
  applies an update that another one skips and the optimizer state
  (Adam moments, iterations) is left untouched by a skipped step.

`use_logical_cpus(n)` splits the CPU into `n` logical devices so that
`MirroredStrategy` can be tried (and tested) on a machine without
accelerators; it must run before TensorFlow initialises its devices.

What was tested where is listed in `docs/distributed.md`.

Reference:
    TensorFlow guide "Distributed training with TensorFlow"
    (https://www.tensorflow.org/guide/distributed_training) and the
    `TF_CONFIG` format of `tf.distribute.cluster_resolver.TFConfigClusterResolver`.
"""

from __future__ import annotations

import json
import os
import socket

__all__ = [
    "STRATEGIES",
    "all_replicas",
    "apply_if_finite",
    "check_strategy",
    "check_tuner_env",
    "free_ports",
    "local_batch",
    "local_cluster",
    "num_replicas",
    "replica_task_loss",
    "resolve_strategy",
    "step_logs",
    "use_logical_cpus",
    "validate_tf_config",
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


# ---------------------------------------------------------------- TF_CONFIG
def validate_tf_config(value=None, *, for_strategy="multi_worker"):
    """Parses and checks a TF_CONFIG value; returns it as a dict (None when unset or empty).

    TensorFlow reads TF_CONFIG lazily and reports a malformed one late, often as
    a hang or an unrelated gRPC error. This check names the problem up front:
    malformed JSON, a missing or empty `cluster`, a missing `task`, a task type
    that is not a job of the cluster, an index out of range, addresses that are
    not `host:port`, or duplicate addresses.

    Args:
        value: str, dict or None. The TF_CONFIG content; None reads the
            `TF_CONFIG` environment variable.
        for_strategy: str. "multi_worker" also rejects parameter-server jobs
            (`ps`), which `MultiWorkerMirroredStrategy` does not use; any other
            value checks the general structure only.

    Returns:
        The parsed dict, or None when TF_CONFIG is not set (a single local worker).

    Raises:
        ValueError: naming the problem.

    Example:
    ```python
    os.environ["TF_CONFIG"] = json.dumps({
        "cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]},
        "task": {"type": "worker", "index": 0}})
    mtlzoo.distribute.validate_tf_config()
    ```
    """
    if value is None:
        value = os.environ.get("TF_CONFIG")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            config = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"TF_CONFIG is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno}): {value[:200]!r}. "
                'Expected e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}.'
            ) from None
    else:
        config = value
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object with `cluster` and `task`, got {type(config).__name__}.")
    cluster = config.get("cluster")
    if not cluster:
        raise ValueError(
            "TF_CONFIG has no `cluster` (or it is empty): give the address list of every job, e.g. "
            '"cluster": {"worker": ["host1:port", "host2:port"]}.'
        )
    if not isinstance(cluster, dict):
        raise ValueError(f"TF_CONFIG `cluster` must map job names to address lists, got {type(cluster).__name__}.")
    seen = {}
    for job, addresses in cluster.items():
        if isinstance(addresses, dict):  # sparse form {index: address}
            addresses = list(addresses.values())
        if not isinstance(addresses, list) or not addresses:
            raise ValueError(
                f"TF_CONFIG cluster job {job!r} must be a non-empty list of 'host:port' addresses, got {addresses!r}."
            )
        for address in addresses:
            host, sep, port = str(address).rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f"TF_CONFIG cluster job {job!r}: address {address!r} is not 'host:port' with a port in 1..65535."
                )
            if address in seen:
                raise ValueError(
                    f"TF_CONFIG cluster: address {address!r} is used by both {seen[address]!r} and {job!r}."
                )
            seen[address] = job
    if for_strategy == "multi_worker":
        unsupported = sorted(set(cluster) - {"chief", "worker", "evaluator"})
        if unsupported:
            raise ValueError(
                f"TF_CONFIG cluster has job(s) {unsupported} that MultiWorkerMirroredStrategy does not use "
                "(it takes `worker` and optionally one `chief`; parameter servers need ParameterServerStrategy)."
            )
        if len(cluster.get("chief", [])) > 1:
            raise ValueError(f"TF_CONFIG cluster may have at most one `chief`, got {len(cluster['chief'])}.")
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task:
        raise ValueError(
            f"TF_CONFIG has no `task` with a `type` (got {task!r}): each process must say which job it is, "
            'e.g. "task": {"type": "worker", "index": 0}.'
        )
    job = task["type"]
    index = task.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int):
        raise ValueError(f"TF_CONFIG task index must be an integer, got {index!r}.")
    if job == "evaluator" and job not in cluster:
        # The evaluator runs beside the cluster, not in it.
        if index != 0:
            raise ValueError(f"TF_CONFIG task index of the evaluator must be 0, got {index}.")
        return config
    if job not in cluster:
        from mtlzoo.registry import suggestion

        raise ValueError(
            f"TF_CONFIG task type {job!r} is not a job of the cluster.{suggestion(str(job), list(cluster))} "
            f"Jobs: {', '.join(cluster)}."
        )
    size = len(cluster[job])
    if not 0 <= index < size:
        raise ValueError(
            f"TF_CONFIG task index {index} is out of range for job {job!r}, which has {size} address(es) "
            f"(valid indices 0..{size - 1})."
        )
    return config


def local_cluster(num_workers, host="127.0.0.1"):
    """TF_CONFIG dicts for a cluster of `num_workers` processes on this machine (free ports).

    The ports are free when chosen; another program may take one before the
    workers bind it, so a caller that sees "address already in use" retries.

    Args:
        num_workers: int >= 1.
        host: str. Defaults to "127.0.0.1" (nothing is exposed to the network).

    Returns:
        A list of `num_workers` dicts, the i-th for the worker of index i.

    Example:
    ```python
    for i, config in enumerate(mtlzoo.distribute.local_cluster(2)):
        env = dict(os.environ, TF_CONFIG=json.dumps(config))
        subprocess.Popen([sys.executable, "train.py"], env=env)
    ```
    """
    if int(num_workers) < 1:
        raise ValueError(f"local_cluster: num_workers must be >= 1, got {num_workers}.")
    addresses = [f"{host}:{port}" for port in free_ports(int(num_workers), host)]
    return [{"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}} for i in range(len(addresses))]


def free_ports(n, host="127.0.0.1"):
    """`n` distinct TCP ports that are free on `host` right now."""
    sockets, ports = [], []
    try:
        for _ in range(int(n)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def check_tuner_env(environ=None):
    """Checks keras-tuner's chief/worker variables; returns the role: "single", "chief" or "worker".

    keras-tuner runs a distributed search when `KERASTUNER_TUNER_ID` is set:
    the process whose id is "chief" serves the oracle on
    `KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT`, every other process is a
    worker that asks it for trials. A missing address or a non-numeric port
    otherwise shows up as a worker that hangs.

    Args:
        environ: mapping or None. Defaults to `os.environ`.

    Raises:
        ValueError: when the variables are incomplete or malformed.
    """
    env = os.environ if environ is None else environ
    tuner_id = env.get("KERASTUNER_TUNER_ID")
    if not tuner_id:
        return "single"
    ip, port = env.get("KERASTUNER_ORACLE_IP"), env.get("KERASTUNER_ORACLE_PORT")
    if not ip or not port:
        raise ValueError(
            f"KERASTUNER_TUNER_ID={tuner_id!r} asks for a distributed search, but KERASTUNER_ORACLE_IP and "
            "KERASTUNER_ORACLE_PORT are not both set (the chief's address, e.g. 127.0.0.1 and 8000)."
        )
    if not str(port).isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"KERASTUNER_ORACLE_PORT must be a port number in 1..65535, got {port!r}.")
    return "chief" if tuner_id == "chief" else "worker"


# ---------------------------------------------------------------- devices
def use_logical_cpus(n=2):
    """Splits the first physical CPU into `n` logical devices (for MirroredStrategy without accelerators).

    Must run before TensorFlow initialises its devices (before the first op,
    model or strategy). Calling it again with the same `n` is a no-op.

    Args:
        n: int >= 1. Number of logical CPU devices.

    Returns:
        list of str: the logical CPU device names, e.g. ["/device:CPU:0", "/device:CPU:1"].

    Raises:
        RuntimeError: TensorFlow has initialised its devices already with another count.

    Example:
    ```python
    import mtlzoo.distribute as dist
    dist.use_logical_cpus(2)                       # first thing in the program
    strategy = dist.resolve_strategy("mirrored")   # 2 replicas
    ```
    """
    import tensorflow as tf

    n = int(n)
    if n < 1:
        raise ValueError(f"use_logical_cpus: n must be >= 1, got {n}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError:
        have = tf.config.list_logical_devices("CPU")
        if len(have) != n:
            raise RuntimeError(
                f"use_logical_cpus({n}): TensorFlow initialised its devices already ({len(have)} logical CPU(s)). "
                "Call it first thing in the program (before any model, op or strategy), or in a fresh process."
            ) from None
    return [d.name for d in tf.config.list_logical_devices("CPU")]


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

    from mtlzoo.losses import MaskedLoss, _broadcast_weight

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
        valid = valid * _broadcast_weight(sample_weight, valid)
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
