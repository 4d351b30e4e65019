"""`mtlzoo bench latency`: batch-1 inference latency of one multi-task model in every runtime.

Measured side by side in one process, interleaved (every repeat runs each
candidate once, in a rotating order, so load changes on a shared machine hit
all candidates alike), after a warm-up; reported as medians and as ratios to
the Keras direct call:

- Keras `model.predict` (per-call overhead of the Keras loop included),
  `model.predict_on_batch`, and the direct call `model(x, training=False)`
  inside a `tf.function` (the reference, ratio 1.0);
- the SavedModel `serving_default` signature (`tf.saved_model.load`);
- TFLite float32, float16 and int8 models on the `ai_edge_litert`
  interpreter with 1 and 2 threads, as `mtlzoo.export` writes them (static
  batch 1, `mtlzoo.export.edge_graph`), each with the number of delegated
  (XNNPACK) partitions and the ops left on the builtin kernels
  (`mtlzoo.export.tflite.delegation`); with `dynamic=true`, also the same
  models converted from the free-batch serving SavedModel (the export before
  static edge graphs) as `tflite_*_dynamic_t*`;
- the multi-task model against the sum of its single-task models (one model
  per task built with `mtlzoo.build(recipe, tasks=[t])`, each called in turn),
  as Keras direct calls and as float32 TFLite (1 thread): what serving each
  task with its own network would cost. Single-task models of recipes with
  cross-stitch or soft sharing (which need two tasks) use hard sharing.

The int8/float32 ratios at each thread count and int8 against the Keras
direct call are reported (`int8_vs_float32`). File sizes of every exported
model are reported too. Weights are the
recipe's initial ones, or a trained model's with `model=zoo:NAME` (or a
`.keras` path): float latency does not depend on them, int8 does (untrained
BatchNorm statistics give activation ranges for which XNNPACK refuses some
int8 ADDs, which then run outside its partition); int8 is
calibrated on synthetic street scenes (or random vectors).

Example:
```python
import argparse
from mtlzoo.bench.latency import run
result = run(argparse.Namespace(recipe="driving_perception_lite", overrides=["input_shape=[128,256,3]"],
                                repeats=30, out="latency.json"))
result["candidates"]["tflite_int8_t1"]["ratio_to_keras_direct"]
```
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

_DEFAULTS = {"recipe": "driving_perception_lite", "overrides": [], "repeats": 30, "out": None,
             "warmup": 5, "threads": (1, 2), "single_task": True, "dynamic": False, "model": None,
             "int8_float_ops": None}


def _options(args) -> dict:
    """Settings from a Namespace or dict; keys that are not settings are recipe overrides.

    `mtlzoo bench latency recipe=driving_perception_lite input_shape=[64,128,3] repeats=20`
    passes {"recipe": ..., "input_shape": [64, 128, 3], "repeats": 20}.
    """
    opts = dict(_DEFAULTS)
    extra = {}
    if args is not None:
        source = args if isinstance(args, dict) else vars(args)
        for key, value in source.items():
            if key in _DEFAULTS:
                if value is not None:
                    opts[key] = value
            elif key not in ("func", "command", "name", "options", "bench"):
                extra[key] = value
    overrides = opts["overrides"]
    if isinstance(overrides, str):
        overrides = [overrides]
    if isinstance(overrides, (list, tuple)):
        from mtlzoo.recipe import parse_cli_overrides

        overrides = parse_cli_overrides(list(overrides))
    opts["overrides"] = dict(overrides or {}, **extra)
    opts["repeats"] = max(1, int(opts["repeats"]))
    opts["warmup"] = max(1, int(opts["warmup"]))
    opts["dynamic"] = str(opts["dynamic"]).lower() in ("1", "true", "yes")
    opts["single_task"] = str(opts["single_task"]).lower() in ("1", "true", "yes")
    threads = opts["threads"]
    opts["threads"] = (int(threads),) if isinstance(threads, (int, str)) else tuple(int(t) for t in threads)
    return opts


def _calibration(model, n=16):
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) == 3 and shape[-1] == 3:
        from mtlzoo.data.synthetic_driving import render_scene

        return np.stack([render_scene(7, i, shape[:2])["image"] for i in range(n)]).astype(np.float32)
    return np.random.default_rng(0).normal(size=(n,) + shape).astype(np.float32)


def _folder_bytes(path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _single_task_models(recipe, overrides, tasks):
    import mtlzoo

    base = mtlzoo.get_recipe(recipe, **overrides)
    single = {}
    for task in tasks:
        extra = {}
        if base.sharing in ("cross_stitch", "soft_l2"):
            extra = {"sharing": "hard", "sharing_args": {}}
        single[task] = mtlzoo.build(recipe, compile=False, **dict(overrides, tasks=[task], **extra))
    return single


def measure(candidates: dict, x, repeats: int, warmup: int, cpu: dict = None) -> dict:
    """Interleaved timing: dict name -> list of seconds per call (`repeats` samples each).

    `cpu`, when given a dict, receives name -> list of the process CPU seconds
    of each call (all threads): on a loaded machine the CPU time of a
    one-thread runtime is its cost without the time it waited for a core.

    Args:
        candidates: dict name -> callable(x).
        x: the batch-1 input.
        repeats: samples per candidate.
        warmup: untimed calls per candidate first.
    """
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name](x)
    samples = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start, start_cpu = time.perf_counter(), time.process_time()
            candidates[name](x)
            samples[name].append(time.perf_counter() - start)
            if cpu is not None:
                cpu.setdefault(name, []).append(time.process_time() - start_cpu)
    return samples


def _table(rows, headers):
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]

    def line(r):
        return "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths)))

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def run(args=None) -> dict:
    """Runs the latency benchmark, prints a table and returns (and optionally writes) the numbers.

    Args:
        args: argparse Namespace or dict with `recipe` (name or YAML path,
            default "driving_perception_lite"), `overrides` (list of
            "key=value" recipe overrides, or a dict), `repeats` (timed calls
            per candidate, default 30), `out` (JSON path or None); optional
            `warmup` (default 5), `threads` (default (1, 2)), `single_task`
            (compare with single-task models, default True), `dynamic` (also
            time free-batch TFLite conversions, default False) and `model`
            (a `.keras` file or `zoo:NAME` to time instead of the recipe's
            untrained model: untrained BatchNorm statistics give int8 scales
            that XNNPACK refuses for some ops), `int8_float_ops` (also time a selective int8 model,
            `tflite_int8_selective`, that keeps these ops in float32: "x86" or op names; see
            `mtlzoo.export(int8_float_ops=...)`). In a dict (as
            `mtlzoo bench latency key=value ...` passes it), other keys are
            recipe overrides.

    Returns:
        dict with `candidates` (name -> median_ms, p10_ms, p90_ms,
        ratio_to_keras_direct, cpu_median_ms (process CPU time per call),
        threads, size_bytes, and for TFLite files input_shape, partitions
        and undelegated_ops), `int8_vs_float32` (int8 latency over float32
        and over the Keras direct call, wall and CPU), `mtl_vs_single_task`
        (Keras and TFLite medians of the MTL model and of the sum of
        single-task models, and their ratio), `sizes`, the recipe and the
        settings.
    """
    import keras
    import tensorflow as tf

    import mtlzoo
    from mtlzoo.edge import Runner
    from mtlzoo.export import FORMAT_FILES, export
    from mtlzoo.export import tflite as tfl
    from mtlzoo.export.saved_model import SavedModelFunction, keras_direct_call
    opts = _options(args)
    overrides = opts["overrides"]
    if opts["model"]:  # trained weights: int8 calibration (and so XNNPACK's int8 support) depends on them
        model = mtlzoo.load(opts["model"], compile=False)
    else:
        model = mtlzoo.build(opts["recipe"], compile=False, **overrides)
    calibration = _calibration(model)
    x = calibration[:1]
    workdir = Path(tempfile.mkdtemp(prefix="mtlzoo_latency_"))
    try:
        start = time.perf_counter()
        result = export(model, workdir / "mtl", formats="all", representative_data=calibration, verify=False,
                        postprocessed=False)
        export_seconds = time.perf_counter() - start
        direct = keras_direct_call(model)
        candidates = {
            "keras_predict": lambda v: model.predict(v, verbose=0),
            "keras_predict_on_batch": lambda v: model.predict_on_batch(v),
            "keras_direct": direct,
            "saved_model": SavedModelFunction(result.paths["saved_model"]),
        }
        info = {"keras_predict": {}, "keras_predict_on_batch": {}, "keras_direct": {},
                "saved_model": {"size_bytes": _folder_bytes(result.paths["saved_model"])}}
        files = {f"tflite_{label}": result.paths[fmt]
                 for fmt, label in (("tflite", "float32"), ("tflite_fp16", "fp16"), ("tflite_int8", "int8"))}
        if opts["int8_float_ops"]:
            selective = export(model, workdir / "selective", formats=["tflite_int8"], representative_data=calibration,
                               verify=False, postprocessed=False, int8_float_ops=opts["int8_float_ops"])
            files["tflite_int8_selective"] = selective.paths["tflite_int8"]
        if opts["dynamic"]:  # the same models from the free-batch serving SavedModel
            for label in ("float32", "fp16", "int8"):
                path = workdir / f"dynamic_{label}.tflite"
                path.write_bytes(tfl.convert(result.paths["saved_model"], label, representative=calibration,
                                             model=model))
                files[f"tflite_{label}_dynamic"] = path
        for stem, path in files.items():
            delegation = tfl.analyze(path)  # XNNPACK partitions and the ops outside them
            for threads in opts["threads"]:
                name = f"{stem}_t{threads}"
                runner = candidates[name] = Runner(path, num_threads=threads)
                info[name] = {"threads": threads, "size_bytes": _folder_bytes(path),
                              "input_shape": [int(d) for d in runner.input_details["shape_signature"]],
                              "partitions": delegation["partitions"],
                              "undelegated_ops": delegation["undelegated_ops"]}

        single_keras = single_tflite = None
        singles = {}
        if opts["single_task"] and len(model.task_names) > 1:
            singles = _single_task_models(opts["recipe"], overrides, model.task_names)
            single_direct = {t: keras_direct_call(m) for t, m in singles.items()}
            single_runners = {}
            for t, m in singles.items():
                r = export(m, workdir / f"single_{t}", formats=["tflite"], verify=False, postprocessed=False)
                single_runners[t] = Runner(r.paths["tflite"], num_threads=1)
            single_keras = lambda v: [f(v) for f in single_direct.values()]  # noqa: E731
            single_tflite = lambda v: [f(v) for f in single_runners.values()]  # noqa: E731
            candidates["single_task_sum_keras_direct"] = single_keras
            candidates["single_task_sum_tflite_float32_t1"] = single_tflite
            info["single_task_sum_keras_direct"] = {}
            info["single_task_sum_tflite_float32_t1"] = {
                "threads": 1,
                "size_bytes": sum(_folder_bytes(workdir / f"single_{t}" / FORMAT_FILES["tflite"]) for t in singles),
            }

        # One tf.function per model traces once each; TF's "frequent retracing" warning counts them together.
        level = tf.get_logger().level
        tf.get_logger().setLevel("ERROR")
        try:
            cpu_samples = {}
            samples = measure(candidates, x, opts["repeats"], opts["warmup"], cpu=cpu_samples)
        finally:
            tf.get_logger().setLevel(level)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    medians = {name: statistics.median(s) for name, s in samples.items()}
    ref = medians["keras_direct"]
    out = {}
    for name, s in samples.items():
        arr = np.asarray(s) * 1e3
        out[name] = {
            "median_ms": round(float(np.median(arr)), 3),
            "p10_ms": round(float(np.percentile(arr, 10)), 3),
            "p90_ms": round(float(np.percentile(arr, 90)), 3),
            "ratio_to_keras_direct": round(medians[name] / ref, 3),
            "cpu_median_ms": round(1e3 * statistics.median(cpu_samples[name]), 3),
            **info.get(name, {}),
        }
    int8_ratios = {}
    for i8_stem, f32_stem, suffix in (("tflite_int8", "tflite_float32", ""),
                                      ("tflite_int8_dynamic", "tflite_float32_dynamic", "_dynamic"),
                                      ("tflite_int8_selective", "tflite_float32", "_selective")):
        for threads in opts["threads"]:
            i8, f32 = f"{i8_stem}_t{threads}", f"{f32_stem}_t{threads}"
            if i8 in medians and f32 in medians:
                int8_ratios[f"int8_over_float32{suffix}_t{threads}"] = round(medians[i8] / medians[f32], 3)
                int8_ratios[f"int8_over_keras_direct{suffix}_t{threads}"] = round(medians[i8] / ref, 3)
                int8_ratios[f"int8_over_float32{suffix}_t{threads}_cpu"] = round(
                    statistics.median(cpu_samples[i8]) / statistics.median(cpu_samples[f32]), 3)
    comparison = {}
    if single_keras is not None:
        comparison = {
            "keras_direct_mtl_ms": out["keras_direct"]["median_ms"],
            "keras_direct_single_task_sum_ms": out["single_task_sum_keras_direct"]["median_ms"],
            "keras_speedup_of_mtl": round(medians["single_task_sum_keras_direct"] / medians["keras_direct"], 3),
            "tflite_float32_t1_mtl_ms": out["tflite_float32_t1"]["median_ms"] if "tflite_float32_t1" in out else None,
            "tflite_float32_t1_single_task_sum_ms": out["single_task_sum_tflite_float32_t1"]["median_ms"],
            "params_mtl": int(model.count_params()),
            "params_single_task_sum": int(sum(m.count_params() for m in singles.values())),
        }
        if "tflite_float32_t1" in medians:
            comparison["tflite_speedup_of_mtl"] = round(
                medians["single_task_sum_tflite_float32_t1"] / medians["tflite_float32_t1"], 3)
    report = {
        "recipe": opts["recipe"],
        "model": opts["model"],
        "overrides": overrides,
        "input_shape": list(model.inputs[0].shape[1:]),
        "tasks": list(model.task_names),
        "repeats": opts["repeats"],
        "warmup": opts["warmup"],
        "cpu_count": os.cpu_count(),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "export_seconds": round(export_seconds, 1),
        "candidates": out,
        "int8_vs_float32": int8_ratios,
        "mtl_vs_single_task": comparison,
    }
    rows = []
    for name, entry in out.items():
        size = entry.get("size_bytes")
        left = entry.get("undelegated_ops")
        left = "-" if left is None else " ".join(f"{k}x{v}" for k, v in left.items()) or "none"
        rows.append([name, f"{entry['median_ms']:.2f}", f"{entry['p10_ms']:.2f}-{entry['p90_ms']:.2f}",
                     f"{entry['ratio_to_keras_direct']:.2f}x", f"{entry['cpu_median_ms']:.2f}",
                     "-" if size is None else f"{size / 1e6:.2f}",
                     entry.get("partitions", "-"), left])
    shape = "x".join(map(str, report["input_shape"]))
    print(f"batch-1 latency, {opts['recipe']} {shape}, tasks {', '.join(model.task_names)}; "
          f"{opts['repeats']} interleaved repeats, {os.cpu_count()} CPUs")
    print(_table(rows, ["runtime", "median ms", "p10-p90 ms", "vs keras direct", "CPU ms", "MB", "XNNPACK partitions",
                        "ops on builtin kernels"]))
    if int8_ratios:
        print("int8 latency: " + ", ".join(f"{k} {v:.2f}x" for k, v in int8_ratios.items()))
    if comparison:
        text = (f"MTL vs {len(model.task_names)} single-task models: Keras {comparison['keras_direct_mtl_ms']:.2f} ms "
                f"vs {comparison['keras_direct_single_task_sum_ms']:.2f} ms ({comparison['keras_speedup_of_mtl']:.2f}x)")
        if comparison.get("tflite_float32_t1_mtl_ms") is not None:
            text += (f"; TFLite float32 {comparison['tflite_float32_t1_mtl_ms']:.2f} ms vs "
                     f"{comparison['tflite_float32_t1_single_task_sum_ms']:.2f} ms "
                     f"({comparison['tflite_speedup_of_mtl']:.2f}x)")
        print(text + f"; params {comparison['params_mtl']:,} vs {comparison['params_single_task_sum']:,}")
    if opts["out"]:
        folder = os.path.dirname(os.fspath(opts["out"]))
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(opts["out"], "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {opts['out']}")
    return report
