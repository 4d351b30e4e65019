"""Edge graphs for TFLite: a static batch and only ops that XNNPACK runs, in one delegated partition.

A TFLite model converted from the serving SavedModel (free batch size) keeps
the ops that compute shapes at run time: `SHAPE`, `STRIDED_SLICE`,
`EXPAND_DIMS`, `TILE` and shape-building `CONCATENATION`/`RESHAPE`. XNNPACK
does not delegate them, so the graph falls apart into many small partitions
with the reference kernels in between; on x86 this made int8 slower than
float32. `export_edge_saved_model` writes the SavedModel the TFLite files are
converted from:

- a static batch (1 by default) in the `serving_default` signature, so the
  converter folds every shape computation into constants (the serving
  SavedModel keeps its free batch);
- `UpSampling2D(interpolation="nearest")` traced as copies and reshapes
  (`CONCATENATION` + `RESHAPE`) instead of Keras's `ops.repeat` (`TILE`),
  with identical outputs (both copy each value to its 2×2, or h×w, block);
- for int8 only, `hard_swish` activations traced as
  `relu6(x + 3) * (x / 6)`: `ADD` with a fused ReLU6 and two `MUL`s, which
  XNNPACK runs in int8, where it leaves a fused int8 `HARD_SWISH` on the
  reference kernels (float32 keeps the fused op, which XNNPACK runs).

The rewrites apply while the edge signature is traced and are undone after:
the Keras model and its `.keras` file are unchanged.

Example:
```python
from mtlzoo.export.edge_graph import export_edge_saved_model
rewrites = export_edge_saved_model(model, "/tmp/edge_int8", precision="int8")
rewrites  # {"upsampling_nearest": 3, "hard_swish": 17}
```
"""

from __future__ import annotations

import contextlib
import os

import keras
from keras import ops

from mtlzoo.export.saved_model import SERVING_DEFAULT, input_spec, raw_outputs

#: Batch size of the TFLite (edge) signature.
EDGE_BATCH_SIZE = 1
#: Ops that only exist to compute shapes at run time; a static-batch edge model has none of them.
DYNAMIC_SHAPE_OPS = ("SHAPE", "STRIDED_SLICE", "TILE", "EXPAND_DIMS")


def _all_layers(model):
    from mtlzoo.layers.traversal import iter_layers

    return (layer for layer in iter_layers(model, sublayers=False) if layer is not model)


def nearest_upsample(x, size):
    """Nearest-neighbour upsampling by integer factors (channels last) with concatenations and reshapes.

    The same values as `keras.layers.UpSampling2D(size, interpolation="nearest")`
    (each input value fills its `size[0] × size[1]` output block), built from
    `CONCATENATION` and `RESHAPE` with static shapes instead of `TILE`.

    Args:
        x: tensor [B, H, W, C] with static H, W and C.
        size: (height factor, width factor), positive ints.
    """
    _, h, w, c = x.shape
    height, width = int(size[0]), int(size[1])
    if width > 1:  # [B, H, W, width * C] -> [B, H, W * width, C]: each pixel followed by its copies
        x = ops.reshape(ops.concatenate([x] * width, axis=-1), (-1, h, w * width, c))
    if height > 1:  # [B, H, height * W', C] -> [B, H * height, W', C]: each row followed by its copies
        x = ops.reshape(ops.concatenate([x] * height, axis=2), (-1, h * height, w * width, c))
    return x


def int8_hard_swish(x):
    """`x * relu6(x + 3) / 6` as `relu6(x + 3) * (x / 6)`: ops XNNPACK runs in int8 (no fused `HARD_SWISH`)."""
    return ops.relu6(x + 3.0) * (x * (1.0 / 6.0))


def _rewritable_upsampling(layer):
    if not isinstance(layer, keras.layers.UpSampling2D) or layer.interpolation != "nearest":
        return False
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return False
    shape = getattr(layer, "input", None)
    shape = getattr(shape, "shape", None)
    return shape is not None and len(shape) == 4 and all(d is not None for d in shape[1:])


@contextlib.contextmanager
def edge_friendly(model, precision="float32"):
    """Traces `model` with the edge rewrites of the module docstring while the block runs.

    Args:
        model: a Keras model (nested models are searched too).
        precision: str. `"int8"` adds the `hard_swish` rewrite. Defaults to `"float32"`.

    Yields:
        dict rewrite name -> number of layers rewritten.
    """
    undo = []
    counts = {"upsampling_nearest": 0, "hard_swish": 0}
    hard_swish = {keras.activations.hard_swish, getattr(keras.activations, "hard_silu", None)}
    try:
        for layer in _all_layers(model):
            if _rewritable_upsampling(layer):
                size = tuple(layer.size)
                object.__setattr__(layer, "call", lambda inputs, size=size: nearest_upsample(inputs, size))
                undo.append(lambda layer=layer: object.__delattr__(layer, "call"))
                counts["upsampling_nearest"] += 1
            elif (precision == "int8" and isinstance(layer, keras.layers.Activation)
                  and layer.activation in hard_swish):
                original = layer.activation
                object.__setattr__(layer, "activation", int8_hard_swish)
                undo.append(lambda layer=layer, original=original: object.__setattr__(layer, "activation", original))
                counts["hard_swish"] += 1
        yield counts
    finally:
        for restore in reversed(undo):
            restore()


def export_edge_saved_model(model, path, precision="float32", batch_size=EDGE_BATCH_SIZE) -> dict:
    """Writes the SavedModel that TFLite files are converted from (see the module docstring).

    Args:
        model: a `MultiTaskModel` (dict outputs keyed by task).
        path: str. Folder to write (must not exist or be empty).
        precision: str. `"float32"`, `"fp16"` or `"int8"` (int8 rewrites `hard_swish`).
        batch_size: int or None. Static batch of the `serving_default`
            signature; None keeps a free batch. Defaults to 1.

    Returns:
        dict rewrite name -> number of layers rewritten.

    Example:
    ```python
    export_edge_saved_model(model, "/tmp/edge_float")
    converter = tf.lite.TFLiteConverter.from_saved_model("/tmp/edge_float")
    ```
    """
    from keras.export import ExportArchive

    spec = input_spec(model, batch_size=batch_size)
    with edge_friendly(model, precision) as counts:
        archive = ExportArchive()
        archive.track(model)
        archive.add_endpoint(SERVING_DEFAULT, lambda inputs: raw_outputs(model, inputs), input_signature=[spec])
        archive.write_out(os.fspath(path), verbose=False)
    return dict(counts)


__all__ = ["DYNAMIC_SHAPE_OPS", "EDGE_BATCH_SIZE", "edge_friendly", "export_edge_saved_model", "int8_hard_swish",
           "nearest_upsample"]
