"""Run exported mtlzoo models on device-like runtimes: dict outputs keyed by task, like Keras.

`load(path)` returns a runner whose call takes a batch of images (float32
[B, H, W, 3] RGB in [0, 255], or one [H, W, 3] image) and returns
`{task: np.ndarray}` in the model's task order, with the same shapes and
meaning as the Keras model's outputs:

- a `.tflite` file -> `Runner`, on the `ai_edge_litert` interpreter (the
  deprecated `tf.lite.Interpreter` only when `ai-edge-litert` is not
  installed; `runner.backend` says which). It calls the `serving_default`
  signature, so outputs keep their task names; int8 models with int8 inputs
  and outputs are handled by quantising the input and dequantising the
  outputs with each tensor's scale and zero point;
- a SavedModel folder -> `SavedModelRunner` (the `serving_default`
  signature through `tf.saved_model.load`). A SavedModel is code: its
  signature runs whatever TensorFlow ops it holds (reading or writing files,
  for one). It is accepted only inside an `mtlzoo.export` folder (next to
  its `mtlzoo_export.json`) or with `trusted=True` (CLI:
  `--trust-savedmodel`); a `.tflite` file of builtin ops and a `.keras` file
  read in safe mode are data;
- an export folder from `mtlzoo.export` -> its float32 TFLite model (else
  fp16, int8, then the SavedModel).

The export's `mtlzoo_export.json` (task kinds, class names, recipe), when
found next to the file, is available as `runner.metadata`.

Example:
```python
import mtlzoo.edge
runner = mtlzoo.edge.load("saved_models/driving_perception_lite/model_int8.tflite", num_threads=2)
outputs = runner(images)                 # {"segmentation": ..., "depth": ..., ...}
runner.op_names()                        # ['ADD', 'CONV_2D', ...] (no Flex ops)
```
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from mtlzoo.fileio import ModelFileError, UntrustedModelError  # noqa: F401  (re-exported)

log = logging.getLogger("mtlzoo.edge")

METADATA_FILE = "mtlzoo_export.json"
SIGNATURE = "serving_default"
_PREFERENCE = ("model_float32.tflite", "model_fp16.tflite", "model_int8.tflite")


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai_edge_litert"
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter, "tf.lite"


def read_metadata(folder) -> dict:
    """The export metadata (`mtlzoo_export.json`) in `folder`, or {} when absent."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        with open(path) as f:
            metadata = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(
            f"{str(path)!r} is not valid JSON ({e}): the export metadata is damaged; export the model again."
        ) from e
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{str(path)!r} is not mtlzoo export metadata (a JSON object); export the model again.")
    return metadata


def _is_tflite(data: bytes) -> bool:
    """True when `data` starts like a TFLite flatbuffer (root offset, then the file identifier `TFL3`)."""
    return len(data) >= 8 and data[4:8] == b"TFL3"


def _not_tflite(where, detail="") -> ModelFileError:
    return ModelFileError(
        f"{where} is not a valid TFLite flatbuffer{detail}: it may be truncated (an interrupted copy or "
        "download) or corrupt, or another kind of file; export or copy it again."
    )


def _order(names, metadata):
    wanted = list(metadata.get("task_names", [])) if metadata else []
    ordered = [n for n in wanted if n in names]
    return ordered + [n for n in names if n not in ordered]


def _as_batch(x, rank):
    x = np.asarray(x)
    if x.ndim == rank - 1:
        x = x[None]
    if x.ndim != rank:
        raise ValueError(
            f"Expected inputs of rank {rank} (batch first) or {rank - 1} (one example); got shape {x.shape}."
        )
    return x


class Runner:
    """A TFLite model called like the Keras model: `runner(images) -> {task: array}`.

    Args:
        path: str. The `.tflite` file (or None with `model_content`).
        num_threads: int or None. Interpreter threads; None lets the runtime decide.
        model_content: bytes. A flatbuffer in memory instead of `path`.
        signature: str. Signature to run. Defaults to "serving_default".
        metadata: dict. Export metadata; read from `mtlzoo_export.json` next
            to `path` when None.

    Attributes:
        backend: "ai_edge_litert" or "tf.lite".
        input_details: dict of the input tensor's details (name, shape, dtype,
            quantization) as reported by the signature runner.
        static_batch: 1 for edge exports (`mtlzoo.export`: batch-1
            signature; larger batches run one example at a time), None for
            a free batch.
        output_details: dict output name -> details.
        task_names: output names in the model's task order.
        metadata: the export metadata ({} when none).

    Example:
    ```python
    runner = mtlzoo.edge.Runner("saved_models/driving_perception_lite/model_float32.tflite")
    runner(image)["depth"].shape
    ```
    """

    def __init__(self, path=None, num_threads=None, model_content=None, signature=SIGNATURE, metadata=None):
        Interpreter, self.backend = _interpreter_class()
        if self.backend != "ai_edge_litert":
            log.warning("ai-edge-litert is not installed: falling back to the deprecated tf.lite.Interpreter.")
        else:
            log.info("Running TFLite models with the ai_edge_litert interpreter.")
        kwargs = {} if num_threads is None else {"num_threads": int(num_threads)}
        if model_content is not None:
            self.path = None
            where, head = "The TFLite model given as bytes", bytes(model_content[:8])
        else:
            self.path = os.fspath(path)
            if not os.path.isfile(self.path):
                raise FileNotFoundError(f"No TFLite model at {self.path!r}.")
            where = repr(self.path)
            with open(self.path, "rb") as f:
                head = f.read(8)
        if not _is_tflite(head):
            raise _not_tflite(where, " (no 'TFL3' identifier)" if head else " (the file is empty)")
        try:
            if model_content is not None:
                self.interpreter = Interpreter(model_content=bytes(model_content), **kwargs)
            else:
                self.interpreter = Interpreter(model_path=self.path, **kwargs)
        except ValueError as e:  # "The model is not a valid Flatbuffer buffer", "mmap of size 0 requested"
            raise _not_tflite(where, f" ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e
        self.num_threads = num_threads
        signatures = self.interpreter.get_signature_list()
        if signature not in signatures:
            raise ModelFileError(
                f"TFLite model {self.path or '<bytes>'} has no signature {signature!r} (it has {sorted(signatures)}); "
                "export it with mtlzoo.export so outputs keep their task names."
            )
        self.signature = signature
        self._runner = self.interpreter.get_signature_runner(signature)
        inputs = self._runner.get_input_details()
        if len(inputs) != 1:
            raise ValueError(f"mtlzoo models take one input; this TFLite model takes {sorted(inputs)}.")
        self.input_name, self.input_details = next(iter(inputs.items()))
        self.output_details = self._runner.get_output_details()
        if metadata is None:
            metadata = read_metadata(Path(self.path).parent) if self.path else {}
        self.metadata = metadata
        self.task_names = _order(list(self.output_details), metadata)
        self._rank = len(self.input_details["shape_signature"])
        #: The model's fixed batch size (1 for mtlzoo edge exports), or None when free.
        self.static_batch = int(self.input_details["shape_signature"][0]) if self._rank else None
        if self.static_batch is not None and self.static_batch < 1:
            self.static_batch = None

    @property
    def input_dtype(self):
        return np.dtype(self.input_details["dtype"])

    @property
    def quantized_io(self) -> bool:
        """True when the model takes integer inputs (int8 I/O)."""
        return np.issubdtype(self.input_dtype, np.integer)

    def _quantize(self, x):
        dtype = self.input_dtype
        if not np.issubdtype(dtype, np.integer):
            return np.asarray(x, dtype)
        scale, zero_point = self.input_details["quantization"]
        if not scale:
            return np.asarray(x, dtype)
        info = np.iinfo(dtype)
        q = np.round(np.asarray(x, np.float32) / scale) + zero_point
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize(self, name, value):
        details = self.output_details[name]
        if np.issubdtype(value.dtype, np.integer):
            scale, zero_point = details["quantization"]
            if scale:
                return ((value.astype(np.float32) - zero_point) * scale).astype(np.float32)
        return value

    def __call__(self, inputs, raw=False) -> dict:
        """Runs the model.

        Args:
            inputs: float array [B, ...] (or one example without batch), or a
                dict {input name: array}.
            raw: bool. Return integer outputs of int8 models as they are
                instead of dequantised. Defaults to False.

        Returns:
            dict task -> np.ndarray with a batch dimension, in task order.
        """
        if isinstance(inputs, dict):
            if len(inputs) != 1:
                raise ValueError(f"Expected one input ({self.input_name!r}); got {sorted(inputs)}.")
            inputs = next(iter(inputs.values()))
        x = self._quantize(_as_batch(inputs, self._rank))
        if self.static_batch == 1 and len(x) != 1:  # edge models take one example: run them in turn
            parts = [self._runner(**{self.input_name: x[i:i + 1]}) for i in range(len(x))]
            out = {t: np.concatenate([p[t] for p in parts]) for t in self.task_names}
        else:
            out = self._runner(**{self.input_name: x})
        if raw:
            return {t: out[t] for t in self.task_names}
        return {t: self._dequantize(t, out[t]) for t in self.task_names}

    def op_names(self) -> list:
        """Sorted names of the model's ops (e.g. `["CONV_2D", ...]`); Flex ops start with "Flex"."""
        return sorted({op["op_name"] for op in self.interpreter._get_ops_details()})

    def uses_flex(self) -> bool:
        """True when the model contains Flex (TF Select) ops, which ai-edge-litert cannot run."""
        return any(name.startswith("Flex") for name in self.op_names())

    def __repr__(self):
        io = "int8 I/O" if self.quantized_io else "float I/O"
        return f"Runner({self.path or '<bytes>'}, tasks={self.task_names}, {io}, backend={self.backend})"


class SavedModelFunction:
    """Calls a SavedModel signature on NumPy batches; outputs keyed by name.

    No trust check: a SavedModel is code, and this runs it. `mtlzoo.export`
    uses it on the SavedModel it has just written; for files from elsewhere
    use `mtlzoo.edge.load`, which accepts only mtlzoo exports unless trusted.

    Args:
        path: str. The SavedModel folder.
        signature: str. Defaults to "serving_default".
        loaded: the object `tf.saved_model.load(path)` returned, to reuse it
            (loading traces every function again, which takes seconds).
    """

    def __init__(self, path, signature: str = SIGNATURE, loaded=None):
        import tensorflow as tf

        self.path = os.fspath(path)
        self.loaded = tf.saved_model.load(self.path) if loaded is None else loaded
        if signature not in self.loaded.signatures:
            raise KeyError(
                f"SavedModel {self.path!r} has no signature {signature!r}; it has {sorted(self.loaded.signatures)}."
            )
        self.function = self.loaded.signatures[signature]
        _, kwargs = self.function.structured_input_signature
        if len(kwargs) != 1:
            raise ValueError(
                f"Signature {signature!r} of {self.path!r} takes {len(kwargs)} inputs; mtlzoo models take one."
            )
        self.input_name = next(iter(kwargs))
        self.output_names = list(self.function.structured_outputs)

    def __call__(self, x) -> dict:
        import tensorflow as tf

        out = self.function(**{self.input_name: tf.constant(np.asarray(x, np.float32))})
        return {k: v.numpy() for k, v in out.items()}


class SavedModelRunner:
    """A SavedModel signature called like the Keras model: `runner(images) -> {task: array}`.

    A SavedModel is a program: calling its signature runs the TensorFlow ops
    it holds, whatever they do. Only a SavedModel written by `mtlzoo.export`
    (the `saved_model/` folder beside its `mtlzoo_export.json`) is accepted
    by default; any other needs `trusted=True`. The metadata marks mtlzoo's
    own exports; it is not a signature (anyone can copy it), so accept
    SavedModels only from sources you would run code from.

    Args:
        path: str. The SavedModel folder.
        signature: str. Defaults to "serving_default" (`"serving_postprocessed"`
            gives the decoded outputs described in `mtlzoo.export.saved_model`).
        metadata: dict. Export metadata; read from the parent folder when None.
        trusted: bool. Accept a SavedModel that is not an mtlzoo export
            (its code will run). Defaults to False.

    Raises:
        UntrustedModelError: (a `ValueError`) not an mtlzoo export and
            `trusted` is False.

    Example:
    ```python
    runner = mtlzoo.edge.load("saved_models/driving_perception_lite/saved_model")
    runner(image)["segmentation"].shape
    ```
    """

    backend = "tf.saved_model"

    def __init__(self, path, signature=SIGNATURE, metadata=None, trusted=False):
        self.path = os.fspath(path)
        if not os.path.isfile(os.path.join(self.path, "saved_model.pb")):
            raise FileNotFoundError(f"No SavedModel (saved_model.pb) in folder {self.path!r}.")
        if not trusted and not is_mtlzoo_saved_model(self.path):
            raise UntrustedModelError(
                f"{self.path!r} is a SavedModel that mtlzoo did not export (no {METADATA_FILE} beside it): a "
                "SavedModel is code and its signature would run. Load it only if you trust its source: "
                "trusted=True (CLI: --trust-savedmodel)."
            )
        self._function = SavedModelFunction(self.path, signature)
        self.signature = signature
        self.input_name = self._function.input_name
        spec = self._function.function.structured_input_signature[1][self.input_name]
        self.input_details = {"name": self.input_name, "shape_signature": list(spec.shape), "dtype": np.float32}
        self.metadata = read_metadata(Path(self.path).parent) if metadata is None else metadata
        self.task_names = _order(self._function.output_names, self.metadata if signature == SIGNATURE else {})
        self._rank = len(spec.shape)

    quantized_io = False

    def __call__(self, inputs, raw=False) -> dict:
        if isinstance(inputs, dict):
            inputs = next(iter(inputs.values()))
        out = self._function(_as_batch(inputs, self._rank).astype(np.float32))
        return {t: out[t] for t in self.task_names}

    def op_names(self) -> list:
        """Names of the TF ops in the signature's graph."""
        graph = self._function.function.graph
        return sorted({op.type for op in graph.get_operations()})

    def uses_flex(self) -> bool:
        return False

    def __repr__(self):
        return f"SavedModelRunner({self.path}, tasks={self.task_names})"


def is_mtlzoo_saved_model(path) -> bool:
    """True when the SavedModel folder `path` was written by `mtlzoo.export`.

    That is: it is the `saved_model/` folder of an export folder whose
    `mtlzoo_export.json` lists it (`files["saved_model"]`).
    """
    folder = Path(os.path.realpath(path))
    try:
        metadata = read_metadata(folder.parent)
    except ModelFileError:
        return False
    return (metadata.get("files") or {}).get("saved_model") == folder.name


def load(path, num_threads=None, signature=SIGNATURE, trusted=False):
    """Loads an exported model for inference: a `.tflite` file, a SavedModel or an export folder.

    Args:
        path: str. A `.tflite` file, a SavedModel folder, a folder written by
            `mtlzoo.export` (its float32 TFLite model is used, else fp16, int8,
            then the SavedModel), or a shipped model `zoo:NAME` /
            `zoo:NAME/model_int8.tflite` (see `mtlzoo.zoo`).
        num_threads: int or None. TFLite interpreter threads. Defaults to None.
        signature: str. Signature to call. Defaults to "serving_default".
        trusted: bool. Accept a SavedModel that `mtlzoo.export` did not write
            (no `mtlzoo_export.json` beside it): a SavedModel is code, and
            its signature will run. Defaults to False.

    Returns:
        `Runner` (TFLite) or `SavedModelRunner`; calling it returns a dict keyed by task.

    Raises:
        FileNotFoundError: nothing loadable at `path`.
        ModelFileError: (a `ValueError`) a truncated or corrupt `.tflite`
            file, or damaged export metadata; the message names the file.
        UntrustedModelError: (a `ValueError`) a SavedModel that is not an
            mtlzoo export, without `trusted=True`.

    Example:
    ```python
    import mtlzoo.edge
    runner = mtlzoo.edge.load("saved_models/driving_perception_lite/model_int8.tflite")
    outputs = runner(image)                # same keys and shapes as model(image)
    ```
    """
    spec = None
    if isinstance(path, str) and path.startswith("zoo:"):
        from mtlzoo import zoo

        spec, path = path, zoo.resolve(path)

    def inside(file):  # a file chosen inside a zoo folder must stay inside the zoo too
        if spec is not None:
            from mtlzoo import zoo

            zoo.check_inside(file, spec)
        return file

    path = Path(path)
    if path.is_file():
        return Runner(path, num_threads=num_threads, signature=signature)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return SavedModelRunner(path, signature=signature, trusted=trusted)
        for name in _PREFERENCE:
            if (path / name).is_file():
                return Runner(inside(path / name), num_threads=num_threads, signature=signature)
        if (path / "saved_model" / "saved_model.pb").is_file():
            return SavedModelRunner(inside(path / "saved_model"), signature=signature, trusted=trusted)
        raise FileNotFoundError(f"No .tflite model or SavedModel in folder {str(path)!r}.")
    raise FileNotFoundError(f"No exported model at {str(path)!r} (expected a .tflite file or an export folder).")


__all__ = ["METADATA_FILE", "ModelFileError", "Runner", "SavedModelFunction", "SavedModelRunner",
           "UntrustedModelError", "is_mtlzoo_saved_model", "load", "read_metadata"]
