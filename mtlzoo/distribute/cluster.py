"""Multi-worker setup: TF_CONFIG checks, local clusters, free ports and logical CPU devices."""

from __future__ import annotations

import json
import os
import socket

__all__ = ["check_tuner_env", "free_ports", "local_cluster", "use_logical_cpus", "validate_tf_config"]


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
