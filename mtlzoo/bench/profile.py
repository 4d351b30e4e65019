"""A TensorFlow profiler trace of a compiled train step, summarised by op type.

`mtlzoo bench step profile=DIR` calls `profile_steps` on the equal-weight
candidate after the timed rounds: it records `steps` calls of
`train_on_batch` with `tf.profiler.experimental` into DIR (open it with
TensorBoard's profile plugin for the timeline) and prints where the step's
time goes: self time per TensorFlow op type on the host, and the same time in
a few groups (convolutions forward and backward, depthwise convolutions,
BatchNorm, the optimizer update, elementwise and reductions, the rest).
"""

from __future__ import annotations

import glob
import json
import os

#: Op-type groups of the summary, by the op type without oneDNN's `_Mkl`/`_MklNative` prefix or a leading `_`
#: (`_FusedConv2D`): the first group whose prefixes match takes it.
GROUPS = (
    ("depthwise conv (fwd+bwd)", ("DepthwiseConv2dNative", "FusedDepthwiseConv2dNative")),
    ("conv backward", ("Conv2DBackprop", "FusedConv2DBackprop")),
    ("conv forward", ("Conv2D", "FusedConv2D")),
    ("batch norm", ("FusedBatchNorm",)),
    ("optimizer update", ("ResourceApply", "AssignVariable", "AssignAdd", "AssignSub")),
    ("resize / upsampling", ("ResizeBilinear", "ResizeNearest")),
    ("matmul", ("MatMul", "BatchMatMul", "FusedMatMul")),
    ("reductions", ("Sum", "Mean", "Max", "Min", "Prod", "All", "Any", "ArgMax")),
)


def _group(op_type: str) -> str:
    """The summary group of a TensorFlow op type; oneDNN's kernels (`_MklNativeConv2DBackpropFilter`,
    `_MklNativeDepthwiseConv2dNativeBackpropFilter`, ...) count with the op they implement."""
    for prefix in ("_MklNative", "_Mkl", "_"):
        if op_type.startswith(prefix):
            op_type = op_type[len(prefix):]
            break
    for name, prefixes in GROUPS:
        if op_type.startswith(prefixes):
            return name
    return "elementwise and the rest"


def _rows(table: dict) -> list[dict]:
    """Rows of a gviz DataTable (the `tensorflow_stats` tool's format) as dicts keyed by column id."""
    ids = [c["id"] for c in table["cols"]]
    return [{k: (cell or {}).get("v") for k, cell in zip(ids, row["c"])} for row in table.get("rows", [])]


def op_stats(logdir: str) -> list[dict]:
    """Per-op self times (idle time left out) of the newest trace in `logdir`: dicts with `type`, `name`,
    `occurrences`, `self_us`, `host`.

    Raises:
        RuntimeError: when no trace was written or TensorFlow cannot convert it.
    """
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    runs = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*")))
    paths = sorted(glob.glob(os.path.join(runs[-1], "*.xplane.pb"))) if runs else []
    if not paths:
        raise RuntimeError(f"no profiler trace (*.xplane.pb) under {logdir}/plugins/profile")
    data, ok = plugin.xspace_to_tools_data(paths, "framework_op_stats", {})  # TF 2.21's name of the op table
    if not ok:
        raise RuntimeError(f"TensorFlow could not summarise the trace {paths[0]}")
    tables = json.loads(data)
    table = tables[0] if isinstance(tables, list) else tables
    out = []
    for row in _rows(table):
        if row.get("type") == "IDLE":  # the gaps between ops: not an op's time
            continue
        out.append({"type": row.get("type"), "name": row.get("operation"), "occurrences": row.get("occurrences"),
                    "self_us": float(row.get("total_self_time") or 0.0), "host": row.get("host_or_device") == "Host"})
    return out


def summarize(stats: list[dict], steps: int, top: int = 15) -> dict:
    """Self time per op type and per group, in ms per step, largest first."""
    per_type, per_group = {}, {}
    for s in stats:
        per_type[s["type"]] = per_type.get(s["type"], 0.0) + s["self_us"]
        per_group[_group(s["type"])] = per_group.get(_group(s["type"]), 0.0) + s["self_us"]
    total = sum(per_type.values()) or 1.0

    def rows(d, n=None):
        items = sorted(d.items(), key=lambda kv: -kv[1])[:n]
        return [{"name": k, "ms_per_step": v / 1000.0 / steps, "share": v / total} for k, v in items]

    return {"total_ms_per_step": total / 1000.0 / steps, "types": rows(per_type, top), "groups": rows(per_group)}


def profile_steps(step, steps: int, logdir: str) -> dict:
    """Records `steps` calls of `step()` with the TensorFlow profiler into `logdir` and summarises them.

    Args:
        step: callable. One training step (already traced: warm it up before).
        steps: int. Calls to record.
        logdir: str. Folder for the trace (TensorBoard's profile plugin reads it).

    Example:
    ```python
    summary = profile_steps(lambda: model.train_on_batch(x, y), 5, "runs/profile")
    ```
    """
    import tensorflow as tf

    os.makedirs(logdir, exist_ok=True)
    tf.profiler.experimental.start(logdir)
    try:
        for _ in range(int(steps)):
            step()
    finally:
        tf.profiler.experimental.stop()
    return summarize(op_stats(logdir), int(steps))


def print_summary(summary: dict) -> None:
    print(f"profiled self time: {summary['total_ms_per_step']:.1f} ms per step (TensorFlow ops on the host)")
    print("| group | ms / step | share |")
    print("| --- | ---: | ---: |")
    for r in summary["groups"]:
        print(f"| {r['name']} | {r['ms_per_step']:.1f} | {100 * r['share']:.0f}% |")
    print("| op type | ms / step | share |")
    print("| --- | ---: | ---: |")
    for r in summary["types"]:
        print(f"| {r['name']} | {r['ms_per_step']:.2f} | {100 * r['share']:.1f}% |")
