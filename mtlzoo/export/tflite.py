"""TFLite conversion (float32, float16, full-integer int8) from an exported SavedModel.

Conversion goes through `tf.lite.TFLiteConverter.from_saved_model` on the
`serving_default` signature, so the TFLite signature keeps the task names as
output names. Only builtin ops are allowed (`TFLITE_BUILTINS`, or
`TFLITE_BUILTINS_INT8` for int8): the `ai-edge-litert` runtime cannot run
Flex (TF Select) ops. When conversion fails, `ConversionError` names the
unsupported TF ops and, where the converter's location info allows, the Keras
layer and the task they belong to.

- `float32`: plain conversion;
- `fp16`: float16 weights (`target_spec.supported_types = [tf.float16]`),
  float32 compute and I/O on CPU;
- `int8`: post-training full-integer quantisation calibrated on a
  representative dataset; inputs/outputs float32 (quantise/dequantise ops in
  the graph) or int8 (`int8_io=True`; use the tensors' scale and zero point,
  `mtlzoo.edge` does it for you).

Example:
```python
from mtlzoo.export import tflite
flatbuffer = tflite.convert("/tmp/driving/saved_model", "int8", representative=val_ds, model=model)
```

Reference:
    Jacob et al., "Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference", CVPR 2018.
"""

from __future__ import annotations

import contextlib
import os
import re
import warnings

import numpy as np
import tensorflow as tf

from mtlzoo.export.saved_model import SERVING_DEFAULT

#: Precision name -> file name inside an export folder.
FILENAMES = {"float32": "model_float32.tflite", "fp16": "model_fp16.tflite", "int8": "model_int8.tflite"}


class ConversionError(RuntimeError):
    """TFLite conversion failed or needs ops outside the TFLite builtins.

    Attributes:
        ops: list of TF op names the converter rejected (e.g. `["Cumprod"]`).
        layers: list of Keras layer names those ops belong to.
        tasks: list of task names of those layers (empty when shared or unknown).
    """

    def __init__(self, message, ops=(), layers=(), tasks=()):
        super().__init__(message)
        self.ops = list(ops)
        self.layers = list(layers)
        self.tasks = list(tasks)


# ------------------------------------------------------------------ data
def _first_input(element):
    """The model input of a dataset element: `x` of (x, y[, w]), `image` of a dict, or the element."""
    if isinstance(element, (tuple, list)):
        return element[0]
    if isinstance(element, dict):
        for key in ("image", "features", "inputs"):
            if key in element:
                return element[key]
        raise ValueError(f"Cannot find the model input in a dict element with keys {sorted(element)}.")
    return element


def iter_batches(data, input_rank: int):
    """Yields (x [N, ...] float32, labels dict or None) from a dataset, an array or an iterable.

    Accepts a `tf.data.Dataset` or iterable of `(image, labels)` pairs or of
    images, batched or not, one `(images, labels)` tuple, or a NumPy array of
    images (a batch, or a single example when its rank equals the input rank
    without batch).

    Args:
        data: the data.
        input_rank: int. Rank of one example without batch (3 for images).
    """
    if data is None:
        return
    if isinstance(data, tuple) and len(data) in (2, 3) and isinstance(data[1], dict):
        data = [data]  # one (x, labels) batch
    if isinstance(data, (np.ndarray, tf.Tensor)):
        x = np.asarray(data, np.float32)
        if x.ndim == input_rank:
            x = x[None]
        yield x, None
        return
    for element in data:
        labels = None
        if isinstance(element, (tuple, list)) and len(element) >= 2 and isinstance(element[1], dict):
            labels = {k: np.asarray(v) for k, v in element[1].items()}
        x = np.asarray(_first_input(element), np.float32)
        if x.ndim == input_rank:
            x = x[None]
            labels = None if labels is None else {k: v[None] for k, v in labels.items()}
        yield x, labels


def take_examples(data, input_rank: int, limit: int):
    """The first `limit` examples of `data` as (x [N, ...], labels dict or None)."""
    xs, labels, have_labels = [], {}, True
    count = 0
    for x, y in iter_batches(data, input_rank):
        take = min(len(x), limit - count)
        xs.append(x[:take])
        if y is None:
            have_labels = False
        elif have_labels:
            for k, v in y.items():
                labels.setdefault(k, []).append(v[:take])
        count += take
        if count >= limit:
            break
    if not xs:
        return None, None
    x = np.concatenate(xs)
    y = {k: np.concatenate(v) for k, v in labels.items()} if have_labels and labels else None
    return x, y


def representative_dataset(data, input_name: str, input_rank: int, limit: int = 100):
    """A converter `representative_dataset` callable yielding one example per step."""
    x, _ = take_examples(data, input_rank, limit)
    if x is None or len(x) == 0:
        raise ValueError("The representative data is empty: int8 calibration needs example inputs.")

    def generator():
        for i in range(len(x)):
            yield {input_name: x[i:i + 1]}

    return generator


# ------------------------------------------------------------------ conversion
@contextlib.contextmanager
def _quiet():
    """Silences the converter's deprecation chatter about `tf.lite.Interpreter`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="tensorflow.lite")
        yield


def convert(saved_model_dir, precision: str = "float32", representative=None, int8_io: bool = False,
            model=None, input_rank=None, num_calibration: int = 100, float_ops=()) -> bytes:
    """Converts the `serving_default` signature of a SavedModel to a TFLite flatbuffer.

    Args:
        saved_model_dir: str. Folder written by `export_saved_model`.
        precision: str. `"float32"`, `"fp16"` or `"int8"`. Defaults to `"float32"`.
        representative: calibration data for int8 (see `iter_batches`).
        int8_io: bool. int8 inputs and outputs for `"int8"` (else float32 I/O). Defaults to False.
        model: the Keras model, used to name the layer/task of unsupported ops
            in errors and for the input name and rank. Optional.
        input_rank: int. Rank of one input example; defaults from `model` or 3.
        num_calibration: int. Calibration examples used at most. Defaults to 100.
        float_ops: TFLite op names an `"int8"` model keeps in float32 (selective quantisation, with
            quantise/dequantise ops at the boundaries; see `mtlzoo.export.selective_int8`). Defaults to none.

    Returns:
        bytes of the `.tflite` flatbuffer (builtin ops only).

    Raises:
        ConversionError: conversion failed or needs Flex/custom ops.
        ValueError: int8 without representative data, unknown precision.
    """
    if precision not in FILENAMES:
        raise ValueError(f"Unknown TFLite precision {precision!r}; use one of {sorted(FILENAMES)}.")
    converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(saved_model_dir), signature_keys=[SERVING_DEFAULT])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        if representative is None:
            raise ValueError("int8 export needs representative_data: a tf.data dataset or array of typical inputs.")
        if input_rank is None:
            input_rank = len(model.inputs[0].shape) - 1 if model is not None else 3
        name = "image"
        if model is not None:
            from mtlzoo.export.saved_model import input_name

            name = input_name(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        calibration = representative_dataset(representative, name, input_rank, num_calibration)
        converter.representative_dataset = calibration
        if float_ops:
            if int8_io:
                raise ValueError("int8_io needs a fully int8 model; leave int8_float_ops unset to use it.")
            return _selective_int8(converter, calibration, float_ops, model, precision)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        with _quiet():
            flatbuffer = converter.convert()
    except Exception as e:  # ConverterError and friends
        raise conversion_error(e, model, precision) from None
    ops = op_names(flatbuffer)
    bad = [op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")]
    if bad:
        raise ConversionError(
            f"TFLite {precision} model uses non-builtin ops {bad}; ai-edge-litert cannot run them.", ops=bad
        )
    return flatbuffer


def _selective_int8(converter, calibration, float_ops, model, precision) -> bytes:
    """int8 except the ops in `float_ops`, with TensorFlow Lite's quantisation debugger (its denylist)."""
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops))
    try:
        with _quiet():
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=calibration, debug_options=options)
            flatbuffer = debugger.get_nondebug_quantized_model()
    except Exception as e:
        raise conversion_error(e, model, precision) from None
    bad = [op for op in op_names(flatbuffer) if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")]
    if bad:
        raise ConversionError(f"TFLite {precision} model uses non-builtin ops {bad}; ai-edge-litert cannot run them.",
                              ops=bad)
    return flatbuffer


_OP_PATTERNS = (
    re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op"),
    re.compile(r"\btf\.([A-Z]\w*)\s*\{"),
    re.compile(r"\btf\.([A-Z]\w*)\("),
    re.compile(r"\bFlex([A-Z]\w*)"),
)
_LOC_PATTERN = re.compile(r'fused\["(\w+):",\s*"([^"@]+)@')
_SUFFIX = re.compile(r"_\d+$")


def _model_layer_names(model):
    names = set()
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        names.add(layer.name)
        stack.extend(getattr(layer, "layers", []) or [])
    return names


def _task_of(layer_name, model):
    for t in getattr(model, "task_names", []):
        if layer_name == t or layer_name.startswith(t + "__"):
            return t
        if layer_name in getattr(model, "task_layers", {}).get(t, ()):
            return t
    return None


def conversion_error(error, model=None, precision="float32") -> ConversionError:
    """Builds a `ConversionError` that names the rejected ops and, if found, their layer and task.

    The converter reports MLIR locations like
    `fused["Cumprod:", "model/scene__odd_1/Cumprod@__inference..."]`; path
    components are matched (without Keras's `_N` suffixes) against the model's
    layer names, and a layer named `task` or `task__*` gives the task.
    """
    text = str(error)
    ops = []
    for pattern in _OP_PATTERNS:
        for op in pattern.findall(text):
            if op not in ops and op not in ("StatefulPartitionedCall", "PartitionedCall"):
                ops.append(op)
    layers, tasks = [], []
    known = _model_layer_names(model) if model is not None else set()
    for op, path in _LOC_PATTERN.findall(text):
        if ops and op not in ops:
            continue
        for part in path.split("/"):
            for candidate in (part, _SUFFIX.sub("", part)):
                if candidate in known and candidate not in layers and candidate != getattr(model, "name", None):
                    layers.append(candidate)
    for layer in layers:
        task = _task_of(layer, model) if model is not None else None
        if task and task not in tasks:
            tasks.append(task)
    where = []
    if layers:
        where.append(f"in layer{'s' if len(layers) > 1 else ''} {', '.join(repr(n) for n in layers)}")
    if tasks:
        where.append(f"of task{'s' if len(tasks) > 1 else ''} {', '.join(repr(t) for t in tasks)}")
    elif layers:
        where.append("(shared part of the model)")
    first = next((line for line in text.splitlines() if line.strip()), type(error).__name__)
    if ops:
        message = (
            f"TFLite {precision} conversion failed: op{'s' if len(ops) > 1 else ''} {', '.join(ops)} "
            f"{' '.join(where) + ' ' if where else ''}"
            f"{'are' if len(ops) > 1 else 'is'} not a TFLite builtin, and Flex (TF Select) ops are not allowed "
            "because ai-edge-litert cannot run them. Replace the op with builtin-friendly ops "
            "(or export only the SavedModel)."
        )
    else:
        message = f"TFLite {precision} conversion failed{' ' + ' '.join(where) if where else ''}: {first[:500]}"
    return ConversionError(message, ops=ops, layers=layers, tasks=tasks)


# ------------------------------------------------------------------ inspection
def interpreter_class():
    """(Interpreter class, backend name): `ai_edge_litert` if installed, else `tf.lite`."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        return tf.lite.Interpreter, "tf.lite"


def open_interpreter(model):
    """A TFLite interpreter (LiteRT when installed) of a model given as bytes or a path, its start-up notices hidden."""
    Interpreter, _ = interpreter_class()
    with _quiet():
        if isinstance(model, (bytes, bytearray)):
            return Interpreter(model_content=bytes(model))
        return Interpreter(model_path=os.fspath(model))


def op_names(model) -> list:
    """Sorted names of the ops in a TFLite model (bytes or path), e.g. `["CONV_2D", ...]`."""
    interpreter = open_interpreter(model)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


def signature_input_shape(model) -> list:
    """The `serving_default` input's shape signature of a TFLite model (bytes or path); -1 = free size."""
    interpreter = open_interpreter(model)
    inputs = interpreter.get_signature_runner(SERVING_DEFAULT).get_input_details()
    return [int(d) for d in next(iter(inputs.values()))["shape_signature"]]


def signature_io(model) -> dict:
    """dict signature -> {"inputs": [...], "outputs": [...]} of a TFLite model (bytes or path)."""
    interpreter = open_interpreter(model)
    return interpreter.get_signature_list()


def delegation(interpreter) -> dict:
    """How an allocated interpreter runs its model: delegated partitions, and the ops left outside them.

    The CPU runtimes apply their default delegate (XNNPACK) when tensors are
    allocated: each delegated partition becomes one `DELEGATE` node appended
    after the model's own nodes, whose inputs and outputs are the partition's
    boundary tensors. A model node belongs to a partition when it is reached
    by walking back from the partition's outputs without crossing its inputs;
    the nodes no partition covers run on the runtime's builtin (reference)
    kernels.

    Args:
        interpreter: an `ai_edge_litert` or `tf.lite` interpreter after `allocate_tensors()`.

    Returns:
        dict with `partitions` (delegated partitions, XNNPACK on CPU), `ops`
        (nodes of the model), `delegated_ops`, and `undelegated_ops` (dict op
        name -> count of the nodes on the builtin kernels; empty when the
        whole graph is delegated).
    """
    details = interpreter._get_ops_details()
    nodes = {op["index"]: op for op in details if op["op_name"] != "DELEGATE"}
    delegates = [op for op in details if op["op_name"] == "DELEGATE"]
    producer = {int(t): op["index"] for op in nodes.values() for t in op["outputs"]}
    covered = set()
    for partition in delegates:
        boundary = {int(t) for t in partition["inputs"]}
        stack = [int(t) for t in partition["outputs"]]
        while stack:
            tensor = stack.pop()
            node = producer.get(tensor)
            if tensor in boundary or node is None or node in covered:
                continue
            covered.add(node)
            stack.extend(int(t) for t in nodes[node]["inputs"] if t >= 0)
    left = {}
    for index, op in sorted(nodes.items()):
        if index not in covered:
            left[op["op_name"]] = left.get(op["op_name"], 0) + 1
    return {"partitions": len(delegates), "ops": len(nodes), "delegated_ops": len(covered),
            "undelegated_ops": dict(sorted(left.items()))}


def analyze(model, num_threads: int = 1) -> dict:
    """`delegation` of a TFLite model (bytes or path) on this machine's interpreter, plus its op counts.

    Example:
    ```python
    info = tflite.analyze("saved_models/driving_perception_lite/model_int8.tflite")
    info["partitions"], info["undelegated_ops"]    # (1, {})
    ```
    """
    Interpreter, backend = interpreter_class()
    with _quiet():
        if isinstance(model, (bytes, bytearray)):
            interpreter = Interpreter(model_content=bytes(model), num_threads=num_threads)
        else:
            interpreter = Interpreter(model_path=os.fspath(model), num_threads=num_threads)
    interpreter.allocate_tensors()
    info = delegation(interpreter)
    counts = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] != "DELEGATE":
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    info["op_counts"] = dict(sorted(counts.items()))
    info["backend"] = backend
    return info
