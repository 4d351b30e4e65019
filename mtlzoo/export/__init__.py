"""Deployment export: SavedModel and TFLite (float32, float16, int8), verified and written atomically.

`export(model, out_dir, formats=...)` writes, into `out_dir`:

- `saved_model/` — signatures `serving_default` (raw outputs named by task)
  and `serving_postprocessed` (class maps, decoded boxes, probabilities), for
  TF Serving (`mtlzoo.export.saved_model`);
- `model_float32.tflite`, `model_fp16.tflite`, `model_int8.tflite` —
  builtin-op TFLite models converted from an edge copy of that SavedModel
  with a static batch of 1, so that XNNPACK runs the whole graph as one
  partition (`mtlzoo.export.edge_graph`), with a `serving_default` signature
  whose outputs are named by task (`mtlzoo.export.tflite`); run them with
  `mtlzoo.edge.load`;
- `mtlzoo_export.json` — task order and kinds, class names, input name and
  shape, recipe, versions (read by `mtlzoo.edge` and `mtlzoo.predict`);
- `verification.json` and `verification.md` — every file checked against the
  Keras model on real inputs (`mtlzoo.export.verify`).

Everything is written to a hidden staging folder next to `out_dir` and moved
into place only when all formats are converted and verified
(`mtlzoo.export.atomic`): a failed or interrupted export never leaves a
half-written model at `out_dir`, and an existing export is only replaced with
`overwrite=True`.

Example:
```python
import mtlzoo, mtlzoo.data
model = mtlzoo.build("driving_perception_lite")
val_ds = mtlzoo.data.load("synthetic_driving", split="validation", batch_size=8, num_examples=64)
result = mtlzoo.export(model, "saved_models/driving_perception_lite",
                       formats=["saved_model", "tflite", "tflite_fp16", "tflite_int8"],
                       representative_data=val_ds)
result.paths["tflite_int8"]       # .../model_int8.tflite
result.report["passed"]           # True
```
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import shutil
import sys
import time
import types
from pathlib import Path

import numpy as np

from mtlzoo.export.atomic import MARKER_FILE, atomic_directory, check_target
from mtlzoo.export import selective_int8
from mtlzoo.export.edge_graph import export_edge_saved_model
from mtlzoo.export.tflite import ConversionError
from mtlzoo.export.verify import TOLERANCES, ExportVerificationError, run_batched, verify_tflite

log = logging.getLogger("mtlzoo.export")

#: Format name -> file (or folder) name inside the export folder.
FORMAT_FILES = {
    "saved_model": "saved_model",
    "tflite": "model_float32.tflite",
    "tflite_fp16": "model_fp16.tflite",
    "tflite_int8": "model_int8.tflite",
}
FORMATS = tuple(FORMAT_FILES)
_ALIASES = {
    "savedmodel": "saved_model", "tf_saved_model": "saved_model",
    "tflite_float32": "tflite", "tflite_fp32": "tflite", "float32": "tflite",
    "tflite_float16": "tflite_fp16", "fp16": "tflite_fp16", "float16": "tflite_fp16",
    "int8": "tflite_int8", "tflite_int": "tflite_int8",
}
_PRECISION = {"tflite": "float32", "tflite_fp16": "fp16", "tflite_int8": "int8"}
#: The export metadata; also the marker that lets `overwrite=True` replace a folder (`mtlzoo.export.atomic`).
METADATA_FILE = MARKER_FILE


@dataclasses.dataclass
class ExportResult:
    """What `export` wrote.

    Attributes:
        out_dir: Path of the export folder.
        paths: dict format -> Path of its file/folder (plus "report" and "metadata").
        report: the verification report (also in `verification.json`).
    """

    out_dir: Path
    paths: dict
    report: dict

    @property
    def passed(self) -> bool:
        return bool(self.report.get("passed", False))

    def __repr__(self):
        files = ", ".join(f"{k}={Path(v).name}" for k, v in self.paths.items())
        return f"ExportResult({str(self.out_dir)!r}, {files}, passed={self.passed})"


def normalize_formats(formats) -> list:
    """Canonical format names (`saved_model`, `tflite`, `tflite_fp16`, `tflite_int8`), in a stable order."""
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    out = []
    for f in formats:
        name = str(f).lower().replace("-", "_")
        if name == "all":
            out.extend(FORMATS)
            continue
        name = _ALIASES.get(name, name)
        if name not in FORMAT_FILES:
            from mtlzoo.registry import suggestion

            hint = suggestion(name, list(FORMAT_FILES))
            raise ValueError(f"Unknown export format {f!r}.{hint} Formats: {', '.join(FORMATS)}, or all.")
        out.append(name)
    if not out:
        raise ValueError(f"No export format given; choose from {', '.join(FORMATS)}, or all.")
    return [f for f in FORMATS if f in out]


def _resolve_model(model):
    if isinstance(model, (str, os.PathLike)):
        import mtlzoo

        return mtlzoo.load(model, compile=False)
    if not hasattr(model, "task_names") or not isinstance(getattr(model, "output", None), dict):
        raise TypeError(
            "export needs an mtlzoo MultiTaskModel (dict outputs keyed by task) or a path to its .keras file."
        )
    return model


def _random_inputs(model, n, seed=0):
    rng = np.random.default_rng(seed)
    shape = (n,) + tuple(model.inputs[0].shape[1:])
    if len(shape) == 4:
        return rng.uniform(0.0, 255.0, shape).astype(np.float32)
    return rng.normal(size=shape).astype(np.float32)


def _reiterable(data, input_rank, limit):
    """`data` itself when it can be iterated again (arrays, datasets, lists), else its first examples as a list."""
    import tensorflow as tf

    if data is None or isinstance(data, (np.ndarray, tf.Tensor, tf.data.Dataset, list, tuple)):
        return data
    from mtlzoo.export.tflite import take_examples

    x, y = take_examples(data, input_rank, limit)
    if x is None:
        return None
    return [(x, y)] if y is not None else x


def _keras_outputs(model, x, batch_size=16) -> dict:
    parts = {t: [] for t in model.task_names}
    for i in range(0, len(x), batch_size):
        out = model(x[i:i + batch_size], training=False)
        for t in model.task_names:
            parts[t].append(np.asarray(out[t], np.float32))
    return {t: np.concatenate(v) for t, v in parts.items()}


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def export_metadata(model, formats, signatures=None) -> dict:
    """The `mtlzoo_export.json` content: what a runtime needs to interpret the outputs."""
    import keras
    import tensorflow as tf

    import mtlzoo
    from mtlzoo.export.saved_model import input_name
    from mtlzoo.predict import default_class_names

    recipe = (getattr(model, "metadata", None) or {}).get("recipe")
    return _jsonable({
        "format_version": 1,
        "model": model.name,
        "task_names": list(model.task_names),
        "tasks": {t: dict(model.tasks[t]) for t in model.task_names},
        "input_name": input_name(model),
        "input_shape": [None] + list(model.inputs[0].shape[1:]),
        "input_range": [0.0, 255.0] if len(model.inputs[0].shape) == 4 else None,
        "class_names": default_class_names(model.tasks),
        "files": {f: FORMAT_FILES[f] for f in formats},
        "signatures": signatures or {},
        "recipe": recipe,
        "versions": {"mtlzoo": mtlzoo.__version__, "tensorflow": tf.__version__, "keras": keras.__version__},
    })


def _versions():
    import keras
    import tensorflow as tf

    versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
    try:
        from importlib.metadata import version

        versions["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:  # noqa: BLE001 - not installed
        versions["ai_edge_litert"] = None
    return versions


def export(
    model,
    out_dir,
    formats=("saved_model", "tflite"),
    representative_data=None,
    overwrite=False,
    verify=True,
    int8_io=False,
    verify_data=None,
    num_calibration=100,
    num_verify=16,
    tolerances=None,
    int8_max_drop=None,
    postprocessed=True,
    detection_options=None,
    edge_batch_size=1,
    int8_float_ops=None,
):
    """Exports a multi-task model for deployment, verifies every file and publishes the folder atomically.

    Args:
        model: a `MultiTaskModel` (or a path to its `.keras` file).
        out_dir: str or Path. The export folder (created; see the module docstring for its content).
        formats: list of `"saved_model"`, `"tflite"` (float32), `"tflite_fp16"`,
            `"tflite_int8"`, or `"all"`. Defaults to `("saved_model", "tflite")`.
        representative_data: typical inputs for int8 calibration, and the
            default verification data: a `tf.data.Dataset` of `(image, labels)`
            or of images (batched or not), or a NumPy array of images.
            Required for `"tflite_int8"`.
        overwrite: bool. Replace an earlier export at `out_dir`. Defaults to
            False (an existing folder raises `FileExistsError`). Only a folder
            holding `mtlzoo_export.json` (an earlier export) or an empty one is
            ever replaced: a file or a folder of other files at `out_dir`
            raises `FileExistsError` and is left untouched.
        verify: bool. Check every file against the Keras model. Defaults to True.
        int8_io: bool. int8 model inputs/outputs instead of float32 for
            `"tflite_int8"` (`mtlzoo.edge` (de)quantises them). Defaults to False.
        verify_data: inputs (with labels for int8 metrics) to verify on; same
            forms as `representative_data`. Defaults to `representative_data`,
            else random inputs (noted in the report).
        num_calibration: int. At most this many calibration examples. Defaults to 100.
        num_verify: int. At most this many verification examples. Defaults to 16.
        tolerances: dict format -> tolerance factor overriding `verify.TOLERANCES`.
        int8_max_drop: float or dict. Fail when an int8 metric drops more than
            this (dict keys: "task.metric", metric or task). Defaults to None
            (report only).
        postprocessed: bool. Add the `serving_postprocessed` SavedModel signature. Defaults to True.
        detection_options: dict. In-graph detection decoding options
            (`max_detections`, `score_threshold`, `pool_size`).
        edge_batch_size: int or None. Static batch of the TFLite models
            (`mtlzoo.export.edge_graph`: no run-time shape ops, one XNNPACK
            partition; `mtlzoo.edge.Runner` runs larger batches one example at
            a time). None keeps a free batch. The SavedModel always has a free
            batch. Defaults to 1.
        int8_float_ops: str, list or None. Ops that `"tflite_int8"` keeps in
            float32 (selective quantisation): `"x86"` (the ops whose int8
            XNNPACK kernels are slower than float32 ones on x86 CPUs; see
            `mtlzoo.export.selective_int8.INT8_FLOAT_OPS`), TFLite op names, or None
            (full int8, the default: what ARM CPUs and NPUs run fastest).
            Not with `int8_io`.

    Returns:
        `ExportResult` with `.paths` (format -> path) and `.report`.

    Raises:
        FileExistsError: `out_dir` exists and `overwrite` is False, or it is
            not an earlier export (see `overwrite`).
        NotADirectoryError: a parent of `out_dir` is a file.
        OSError: `out_dir` cannot be written (read-only, no permission); the
            message names the folder.
        ValueError: unknown or no format, int8 without representative data.
        ConversionError: TFLite conversion failed or needs Flex ops (names the
            layer and task when it can).
        ExportVerificationError: an exported file disagrees with Keras beyond tolerance.

    Example:
    ```python
    result = mtlzoo.export(model, "saved_models/driving_perception_lite",
                           formats=["saved_model", "tflite", "tflite_fp16", "tflite_int8"],
                           representative_data=val_ds)
    runner = mtlzoo.edge.load(result.paths["tflite_int8"])
    ```
    """
    from mtlzoo.export import saved_model as sm
    from mtlzoo.export import tflite as tfl
    from mtlzoo.export import verify as ver

    float_ops = selective_int8.int8_float_ops(int8_float_ops)  # before loading anything
    if float_ops and int8_io:
        raise ValueError("int8_io=True needs a fully int8 model: leave int8_float_ops unset, or use float I/O.")
    model = _resolve_model(model)
    formats = normalize_formats(formats)
    out_dir = check_target(out_dir, overwrite)
    if "tflite_int8" in formats and representative_data is None:
        raise ValueError(
            "The 'tflite_int8' format needs representative_data (a tf.data dataset or array of typical inputs)."
        )
    tol = dict(TOLERANCES, **(tolerances or {}))
    input_rank = len(model.inputs[0].shape) - 1
    # One-shot iterables (generators) are read once, here: calibration and verification both use them.
    limit = max(int(num_calibration), int(num_verify))
    representative_data = _reiterable(representative_data, input_rank, limit)
    verify_data = _reiterable(verify_data, input_rank, int(num_verify))

    x_verify = labels = None
    source = None
    if verify:
        for name, data in (("verify_data", verify_data), ("representative_data", representative_data)):
            if data is not None:
                x_verify, labels = tfl.take_examples(data, input_rank, int(num_verify))
                source = name
                break
        if x_verify is None:
            x_verify = _random_inputs(model, min(int(num_verify), 4))
            source = "random inputs (pass verify_data for real ones)"
        labels = None if labels is None else {t: v for t, v in labels.items() if t in model.task_names} or None
        reference = _keras_outputs(model, x_verify)

    report = {
        "model": model.name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "task_names": list(model.task_names),
        "tasks": {t: model.tasks[t]["kind"] for t in model.task_names},
        "verified": bool(verify),
        "verify_data": {
            "source": source,
            "num_examples": 0 if x_verify is None else int(len(x_verify)),
            "has_labels": labels is not None,
        },
        "tolerances": {k: v for k, v in tol.items()},
        "formats": {},
        "passed": True,
    }
    problems = []
    paths = {}
    with atomic_directory(out_dir, overwrite=overwrite) as staging:
        start = time.perf_counter()
        sm_dir = staging / FORMAT_FILES["saved_model"]
        signatures = sm.export_saved_model(
            model, sm_dir, postprocessed=postprocessed, detection_options=detection_options
        )
        log.info("SavedModel written in %.1fs", time.perf_counter() - start)
        if "saved_model" in formats:
            entry = {"file": FORMAT_FILES["saved_model"], "signatures": signatures, "tolerance": tol["saved_model"]}
            if verify:
                loaded = sm.SavedModelFunction(sm_dir)
                if sorted(loaded.output_names) != sorted(model.task_names):
                    entry.setdefault("problems", []).append(
                        f"serving_default outputs {sorted(loaded.output_names)} != tasks {sorted(model.task_names)}"
                    )
                entry["outputs"] = ver.compare_outputs(reference, run_batched(loaded, x_verify), tol["saved_model"])
                if postprocessed:
                    post = sm.SavedModelFunction(sm_dir, sm.SERVING_POSTPROCESSED, loaded=loaded.loaded)
                    got = run_batched(post, x_verify[:2])
                    entry["postprocessed_outputs"] = sorted(got)
            report["formats"]["saved_model"] = entry
            paths["saved_model"] = out_dir / FORMAT_FILES["saved_model"]
        edge_dirs = {}  # precision family -> (edge SavedModel folder, rewrites)
        for fmt in formats:
            if fmt == "saved_model":
                continue
            precision = _PRECISION[fmt]
            start = time.perf_counter()
            # A selective int8 model keeps hard-swish in float32: it is converted from the float edge graph.
            family = "int8" if precision == "int8" and not float_ops else "float"
            if family not in edge_dirs:
                folder = staging / f".edge_{family}"
                edge_dirs[family] = folder, export_edge_saved_model(model, folder, precision, edge_batch_size)
            flatbuffer = tfl.convert(
                edge_dirs[family][0], precision, representative=representative_data,
                int8_io=int8_io and precision == "int8", model=model, input_rank=input_rank,
                num_calibration=num_calibration, float_ops=float_ops if precision == "int8" else (),
            )
            seconds = time.perf_counter() - start
            file = staging / FORMAT_FILES[fmt]
            file.write_bytes(flatbuffer)
            entry = {"file": FORMAT_FILES[fmt], "size_bytes": len(flatbuffer), "convert_seconds": round(seconds, 2),
                     "ops": tfl.op_names(flatbuffer), "rewrites": edge_dirs[family][1]}
            if precision == "int8" and float_ops:
                entry["float_ops"] = list(float_ops)
            delegation = tfl.analyze(flatbuffer)
            entry["input_shape"] = [int(d) for d in tfl.signature_input_shape(flatbuffer)]
            entry["delegation"] = {k: delegation[k] for k in ("partitions", "ops", "delegated_ops", "undelegated_ops")}
            paths[fmt] = out_dir / FORMAT_FILES[fmt]
            if verify:
                verify_tflite(model, file, fmt, entry, reference, x_verify, labels, tol, int8_max_drop)
            report["formats"][fmt] = entry
        for folder, _ in edge_dirs.values():
            shutil.rmtree(folder)
        if "saved_model" not in formats:
            shutil.rmtree(sm_dir)
        for fmt, entry in report["formats"].items():
            for task, o in entry.get("outputs", {}).items():
                if o.get("passed") is False:
                    entry.setdefault("problems", []).append(f"{task}: {o.get('problem')}")
            problems += [f"{fmt}: {p}" for p in entry.get("problems", [])]
            entry["passed"] = not entry.get("problems")
        report["passed"] = not problems
        metadata = export_metadata(model, formats, signatures if "saved_model" in formats else None)
        with open(staging / METADATA_FILE, "w") as f:
            json.dump(metadata, f, indent=2)
        ver.write_report(report, staging)
        if problems:
            raise ExportVerificationError(
                f"Export to {str(out_dir)!r} failed verification; nothing was written there"
                f"{' (the previous export is unchanged)' if out_dir.exists() else ''}:\n  - "
                + "\n  - ".join(problems) + "\n\n" + ver.to_markdown(report),
                report,
            )
    paths["metadata"] = out_dir / METADATA_FILE
    paths["report"] = out_dir / "verification.json"
    log.info("Exported %s to %s", ", ".join(formats), out_dir)
    return ExportResult(out_dir, paths, report)


class _CallableModule(types.ModuleType):
    """Lets `mtlzoo.export(...)` work even after `import mtlzoo.export` bound the package there."""

    def __call__(self, *args, **kwargs):
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = [
    "ConversionError",
    "ExportResult",
    "ExportVerificationError",
    "FORMATS",
    "FORMAT_FILES",
    "export",
    "normalize_formats",
]
