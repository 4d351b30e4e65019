"""SavedModel export with task-named signatures (TF Serving, TFLite conversion).

Two signatures, both taking one float32 input named like the model's input
(`image`: [B, H, W, 3] RGB in [0, 255], or `features`):

- `serving_default`: the raw model outputs, one per task, named by task
  (segmentation logits, depth in metres, detection heatmaps+size+offset,
  multilabel/classification logits, regression values);
- `serving_postprocessed` (optional): ready-to-use results computed with TF ops
  inside the graph (see `postprocess`): segmentation class map, detection
  boxes/scores/classes after max-pool peak extraction and top-k, sigmoid or
  softmax probabilities.

Example:
```python
from mtlzoo.export.saved_model import export_saved_model
export_saved_model(model, "/tmp/driving/saved_model")
loaded = tf.saved_model.load("/tmp/driving/saved_model")
outputs = loaded.signatures["serving_default"](image=tf.zeros([1, 128, 256, 3]))
```
"""

from __future__ import annotations

import os

import tensorflow as tf

from mtlzoo.edge import SavedModelFunction  # noqa: F401  (re-exported; it runs exports)

SERVING_DEFAULT = "serving_default"
SERVING_POSTPROCESSED = "serving_postprocessed"

#: Defaults of the in-graph detection decoding (same meaning as `decode_centernet`).
DETECTION_DEFAULTS = {"max_detections": 50, "score_threshold": 0.1, "pool_size": 3}


def input_name(model) -> str:
    """The model input's name (`image` or `features`), used as the signature input key."""
    name = getattr(model.inputs[0], "name", None) or "image"
    return name.split(":")[0]


def input_spec(model, batch_size=None) -> tf.TensorSpec:
    """`tf.TensorSpec` of the model input with a free (or fixed) batch size."""
    shape = (batch_size,) + tuple(model.inputs[0].shape[1:])
    return tf.TensorSpec(shape, tf.float32, name=input_name(model))


def task_kinds(model) -> dict:
    """dict task -> task kind, in the model's task order."""
    return {t: model.tasks[t]["kind"] for t in model.task_names}


def raw_outputs(model, x) -> dict:
    """The model's outputs on `x` (inference mode) as float32 tensors keyed by task, in task order."""
    out = model(x, training=False)
    return {t: tf.cast(out[t], tf.float32) for t in model.task_names}


def decode_detections(prediction, num_classes: int, stride: int = 4, max_detections: int = 50,
                      score_threshold: float = 0.1, pool_size: int = 3) -> dict:
    """CenterNet decoding of a batch with TF ops: max-pool peak extraction, then top-k.

    A cell is a peak when it equals the maximum of its `pool_size` neighbourhood
    in its class heatmap (the max-pool NMS of CenterNet); the `max_detections`
    best peaks over all classes are kept. Entries scoring below
    `score_threshold` are padding: score 0, box 0, class -1.

    Args:
        prediction: float tensor [B, h, w, C + 4] (heatmaps, size, offset).
        num_classes: int. C.
        stride: int. Output stride of the head. Defaults to 4.
        max_detections: int. K. Defaults to 50.
        score_threshold: float. Defaults to 0.1.
        pool_size: int. Peak neighbourhood. Defaults to 3.

    Returns:
        dict with `boxes` float32 [B, K, 4] (ymin, xmin, ymax, xmax in input
        pixels), `scores` float32 [B, K], `classes` int32 [B, K] and
        `num_detections` int32 [B]; sorted by decreasing score.

    Reference:
        Zhou et al., "Objects as Points", arXiv:1904.07850, 2019.
    """
    c = int(num_classes)
    heat = prediction[..., :c]
    size = prediction[..., c:c + 2]
    offset = prediction[..., c + 2:c + 4]
    h, w = int(prediction.shape[1]), int(prediction.shape[2])
    pooled = tf.nn.max_pool2d(heat, ksize=pool_size, strides=1, padding="SAME")
    peaks = tf.where(heat >= pooled, heat, tf.zeros_like(heat))
    batch = tf.shape(prediction)[0]
    k = min(int(max_detections), h * w * c)
    scores, index = tf.math.top_k(tf.reshape(peaks, [batch, h * w * c]), k=k)
    classes = index % c
    cell = index // c
    iy = tf.cast(cell // w, tf.float32)
    ix = tf.cast(cell % w, tf.float32)
    size = tf.gather(tf.reshape(size, [batch, h * w, 2]), cell, batch_dims=1)
    offset = tf.gather(tf.reshape(offset, [batch, h * w, 2]), cell, batch_dims=1)
    cy = iy + offset[..., 0]
    cx = ix + offset[..., 1]
    bh = tf.maximum(size[..., 0], 0.0)
    bw = tf.maximum(size[..., 1], 0.0)
    boxes = tf.stack([cy - bh / 2, cx - bw / 2, cy + bh / 2, cx + bw / 2], axis=-1) * float(stride)
    valid = scores >= score_threshold
    return {
        "boxes": tf.where(valid[..., None], boxes, tf.zeros_like(boxes)),
        "scores": tf.where(valid, scores, tf.zeros_like(scores)),
        "classes": tf.where(valid, classes, -tf.ones_like(classes)),
        "num_detections": tf.reduce_sum(tf.cast(valid, tf.int32), axis=-1),
    }


def postprocess(model, outputs, detection_options=None) -> dict:
    """Turns raw outputs into the `serving_postprocessed` outputs (TF ops).

    Output names, per task `t` of each kind:

    - segmentation: `t` int32 [B, H, W] class map (argmax of the logits);
    - depth: `t` float32 [B, H, W, 1] metres (unchanged);
    - detection: `t_boxes` [B, K, 4], `t_scores` [B, K], `t_classes` int32
      [B, K] (-1 = padding), `t_num_detections` int32 [B] (`decode_detections`);
    - multilabel: `t` float32 [B, C] sigmoid probabilities;
    - classification: `t` float32 [B, C] softmax probabilities and `t_class`
      int32 [B];
    - regression: `t` (unchanged).

    Args:
        model: the `MultiTaskModel`.
        outputs: dict task -> raw output tensor.
        detection_options: dict overriding `DETECTION_DEFAULTS`.
    """
    options = dict(DETECTION_DEFAULTS, **(detection_options or {}))
    result = {}
    for t in model.task_names:
        kind = model.tasks[t]["kind"]
        y = outputs[t]
        if kind == "segmentation":
            result[t] = tf.argmax(y, axis=-1, output_type=tf.int32)
        elif kind == "detection":
            head = model.heads[t]
            decoded = decode_detections(y, head.num_classes, getattr(head, "stride", 4), **options)
            for key, value in decoded.items():
                result[f"{t}_{key}"] = value
        elif kind == "multilabel":
            result[t] = tf.sigmoid(y)
        elif kind == "classification":
            result[t] = tf.nn.softmax(y, axis=-1)
            result[f"{t}_class"] = tf.argmax(y, axis=-1, output_type=tf.int32)
        else:  # depth, regression, unknown kinds: unchanged
            result[t] = y
    return result


def export_saved_model(model, path, postprocessed: bool = True, detection_options=None) -> dict:
    """Writes `model` as a SavedModel with the signatures described in the module docstring.

    Args:
        model: a `MultiTaskModel` (dict outputs keyed by task).
        path: str. Folder to write (must not exist or be empty).
        postprocessed: bool. Add the `serving_postprocessed` signature. Defaults to True.
        detection_options: dict. `max_detections`, `score_threshold`, `pool_size`
            of the in-graph detection decoding.

    Returns:
        dict signature name -> list of its output names.

    Example:
    ```python
    export_saved_model(model, "/tmp/driving/saved_model")
    ```
    """
    from keras.export import ExportArchive

    spec = input_spec(model)

    def serve(inputs):
        return raw_outputs(model, inputs)

    def serve_postprocessed(inputs):
        return postprocess(model, raw_outputs(model, inputs), detection_options)

    archive = ExportArchive()
    archive.track(model)
    archive.add_endpoint(SERVING_DEFAULT, serve, input_signature=[spec])
    signatures = {SERVING_DEFAULT: list(model.task_names)}
    if postprocessed:
        archive.add_endpoint(SERVING_POSTPROCESSED, serve_postprocessed, input_signature=[spec])
        probe = tf.zeros((1,) + tuple(spec.shape[1:]), tf.float32)
        signatures[SERVING_POSTPROCESSED] = list(postprocess(model, raw_outputs(model, probe), detection_options))
    archive.write_out(os.fspath(path), verbose=False)
    return signatures


#END


def keras_direct_call(model):
    """The Keras model called directly inside a `tf.function` on NumPy batches: the latency reference."""
    def forward(x):
        return model(x, training=False)

    fn = tf.function(forward, input_signature=[input_spec(model)], autograph=False)

    def call(x):
        return {k: v.numpy() for k, v in fn(tf.convert_to_tensor(x)).items()}

    return call
