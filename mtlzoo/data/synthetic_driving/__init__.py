"""`synthetic_driving`: procedurally rendered street scenes for multi-task learning.

One scene gives an RGB image and four geometrically consistent labels:
semantic segmentation (10 classes), metric Z-depth, object boxes (car,
pedestrian, traffic light, stop sign) and multi-hot scene tags. See
`renderer` for the scene model and the label conventions, `builder` for the
tfds builder.

Two ways to get the data, both giving the same scenes for the same seed:

- in memory (default of `mtlzoo.data.load` when `data_dir` is None): scenes are
  rendered on the fly inside the tf.data pipeline (`Dataset.range` mapped with
  a `tf.numpy_function` around `render_scene`), optionally cached in memory;
  nothing is written to disk;
- tfds (default when `data_dir` is given, or `source="tfds"`): the
  `synthetic_driving` tfds builder renders the splits once into TFRecord files
  under `data_dir`, which are read back afterwards.

Example:
```python
import mtlzoo.data
ds = mtlzoo.data.load("synthetic_driving", split="train", batch_size=8, num_examples=64)
image, labels = next(iter(ds))
```
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import tensorflow as tf

from mtlzoo.data import pipeline
from mtlzoo.data.synthetic_driving.builder import (
    DEFAULT_SPLIT_SIZES,
    SPLIT_OFFSETS,
    SPLITS,
    SyntheticDriving,
    SyntheticDrivingConfig,
    make_config,
)
from mtlzoo.data.synthetic_driving.renderer import (
    DETECTION_CLASSES,
    LIGHT_STATES,
    MAX_DEPTH,
    MAX_OBJECTS,
    SCENE_TAGS,
    SEGMENTATION_CLASSES,
    render,
    render_scene,
    sample_scene,
)
from mtlzoo.registry import suggestion

__all__ = [
    "DEFAULT_SPLIT_SIZES",
    "DETECTION_CLASSES",
    "LIGHT_STATES",
    "MAX_DEPTH",
    "MAX_OBJECTS",
    "SCENE_TAGS",
    "SEGMENTATION_CLASSES",
    "SPLITS",
    "SPLIT_OFFSETS",
    "SyntheticDriving",
    "SyntheticDrivingConfig",
    "load",
    "make_config",
    "prepare",
    "raw_example",
    "render",
    "render_scene",
    "sample_scene",
]

SOURCES = ("memory", "tfds")


def raw_example(seed: int, index: int, image_size=(128, 256)) -> dict:
    """`render_scene` in the pipeline's raw format (boxes padded to `MAX_OBJECTS`).

    Args:
        seed: int >= 0. Dataset seed.
        index: int >= 0. Render index.
        image_size: (H, W). Defaults to (128, 256).

    Returns:
        dict of NumPy arrays: image uint8 [H, W, 3], segmentation uint8 [H, W],
        depth float32 [H, W, 1], boxes float32 [MAX_OBJECTS, 4], box_classes
        int32 [MAX_OBJECTS] (-1 padded), num_boxes int32, scene float32 [5],
        index int64.

    Example:
    ```python
    from mtlzoo.data.synthetic_driving import raw_example
    ex = raw_example(0, 7)
    ex["boxes"][: ex["num_boxes"]]
    ```
    """
    scene = render_scene(seed, index, image_size)
    n = len(scene["boxes"])
    boxes = np.zeros((MAX_OBJECTS, 4), np.float32)
    boxes[:n] = scene["boxes"]
    classes = np.full((MAX_OBJECTS,), -1, np.int32)
    classes[:n] = scene["box_classes"]
    return {
        "image": scene["image"],
        "segmentation": scene["segmentation"].astype(np.uint8),
        "depth": scene["depth"],
        "boxes": boxes,
        "box_classes": classes,
        "num_boxes": np.int32(n),
        "scene": scene["scene"],
        "index": np.int64(index),
    }


_RAW_KEYS = ("image", "segmentation", "depth", "boxes", "box_classes", "num_boxes", "scene")
_RAW_TYPES = (tf.uint8, tf.uint8, tf.float32, tf.float32, tf.int32, tf.int32, tf.float32)


def _raw_shapes(image_size):
    height, width = image_size
    return ([height, width, 3], [height, width], [height, width, 1], [MAX_OBJECTS, 4], [MAX_OBJECTS], [],
            [len(SCENE_TAGS)])


def _memory_index_fn(seed: int, offset: int, image_size):
    def render_np(index):
        ex = raw_example(seed, int(index), image_size)
        return tuple(ex[k] for k in _RAW_KEYS)

    def index_to_raw(i):
        index = tf.cast(i, tf.int64) + offset
        outs = tf.numpy_function(render_np, [index], list(_RAW_TYPES), stateful=False)
        example = {}
        for key, tensor, shape in zip(_RAW_KEYS, outs, _raw_shapes(image_size)):
            tensor.set_shape(shape)
            example[key] = tensor
        example["index"] = index
        return example

    return index_to_raw


def _from_tfds_example(example):
    boxes = tf.cast(example["objects"]["bbox"], tf.float32)[:MAX_OBJECTS]
    classes = tf.cast(example["objects"]["label"], tf.int32)[:MAX_OBJECTS]
    n = tf.shape(boxes)[0]
    return {
        "image": example["image"],
        "segmentation": example["segmentation"],
        "depth": example["depth"],
        "boxes": tf.ensure_shape(tf.pad(boxes, [[0, MAX_OBJECTS - n], [0, 0]]), [MAX_OBJECTS, 4]),
        "box_classes": tf.ensure_shape(tf.pad(classes, [[0, MAX_OBJECTS - n]], constant_values=-1), [MAX_OBJECTS]),
        "num_boxes": tf.cast(n, tf.int32),
        "scene": example["scene"],
        "index": example["index"],
    }


def prepare(data_dir, image_size=(128, 256), seed: int = 0, split_sizes=None):
    """Renders the tfds files of one config into `data_dir` (no-op when present).

    Args:
        data_dir: str. tfds data directory.
        image_size: (H, W).
        seed: int >= 0.
        split_sizes: optional {split: size} overriding `DEFAULT_SPLIT_SIZES`.

    Returns:
        The prepared `tfds.core.DatasetBuilder`.

    Example:
    ```python
    from mtlzoo.data.synthetic_driving import prepare
    builder = prepare("/tmp/tfds", image_size=(64, 128), split_sizes={"train": 16})
    ds = builder.as_dataset(split="train")
    ```
    """
    import tensorflow_datasets as tfds

    sizes = dict(DEFAULT_SPLIT_SIZES, **(split_sizes or {}))
    unknown = [s for s in sizes if s not in SPLITS]
    if unknown:
        raise ValueError(f"split_sizes names unknown split(s) {unknown}; the splits are {', '.join(SPLITS)}.")
    config = make_config(image_size, seed, sizes["train"], sizes["validation"], sizes["test"])
    builder = tfds.builder("synthetic_driving", config=config, data_dir=str(data_dir))
    # tfds announces "Downloading and preparing dataset Unknown size ..." on stdout: nothing is downloaded
    # here (the scenes are rendered locally), so that line would only mislead.
    with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare(file_format="tfrecord")
    return builder


def load(
    split: str = "train",
    *,
    image_size=(128, 256),
    batch_size: int = 8,
    data_dir=None,
    num_examples=None,
    seed: int = 0,
    label_fractions=None,
    shuffle=None,
    tasks=None,
    augment=None,
    with_boxes: bool = False,
    max_boxes: int = 32,
    cache=None,
    drop_remainder: bool = False,
    source=None,
    split_sizes=None,
    shuffle_buffer: int = 512,
    color_jitter: float = 0.0,
) -> tf.data.Dataset:
    """Model-ready `synthetic_driving` batches; normally called via `mtlzoo.data.load`.

    Args:
        split: "train", "validation" or "test".
        image_size: (H, W), multiples of 32. Defaults to (128, 256).
        batch_size: int > 0. Defaults to 8.
        data_dir: tfds data directory; when given (and `source` is None) the
            split is prepared there with tfds and read from the files.
        num_examples: int > 0 or None. Examples to use: the first
            `num_examples` of the split. None: `DEFAULT_SPLIT_SIZES[split]` in
            memory, the whole prepared split with tfds.
        seed: int >= 0. Selects the scenes and seeds shuffling, flips and
            label dropping.
        label_fractions: {task: fraction}. On the train split only, keep that
            task's label on about that fraction of examples (deterministic per
            seed and index); other splits always have every label.
        shuffle: bool. Defaults to True on train, False otherwise.
        tasks: label keys to emit (subset of `pipeline.TASKS`, plus the optional `intruder`); default the four.
        augment: bool. Random horizontal flips. Defaults to True on train.
        with_boxes: bool. Also emit raw boxes (see `pipeline`).
        max_boxes: int. Padding length of the raw boxes. Defaults to 32.
        cache: None (auto: in memory when it fits 512 MiB), bool or file path.
        drop_remainder: bool. Drop a last partial batch.
        source: "memory", "tfds" or None (tfds iff `data_dir` is given).
        split_sizes: {split: size} of the tfds config to prepare (tfds source);
            defaults to `DEFAULT_SPLIT_SIZES`.
        shuffle_buffer: int. Shuffle buffer after a cache. Defaults to 512.
        color_jitter: float in [0, 1). Photometric augmentation of the train split's images (brightness,
            contrast, saturation; `pipeline.color_jitter_image`). Defaults to 0 (off).

    Returns:
        `tf.data.Dataset` of (image float32 [B, H, W, 3], labels dict).

    Example:
    ```python
    import mtlzoo.data
    ds = mtlzoo.data.load("synthetic_driving", batch_size=4, num_examples=32,
                          label_fractions={"depth": 0.3})
    ```
    """
    if split not in SPLITS:
        raise ValueError(
            f"synthetic_driving has no split {split!r}.{suggestion(str(split), SPLITS)} Splits: {', '.join(SPLITS)}."
        )
    if source is None:
        source = "memory" if data_dir is None else "tfds"
    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}.{suggestion(str(source), SOURCES)} Use one of {SOURCES}.")
    if source == "tfds" and data_dir is None:
        raise ValueError("source='tfds' needs a data_dir to prepare the files in; pass data_dir=... or source='memory'.")
    image_size = pipeline.validate_image_size(image_size)
    train = split == "train"
    shuffle = train if shuffle is None else bool(shuffle)
    augment = train if augment is None else bool(augment)
    fractions = pipeline.validate_label_fractions(label_fractions) if train else {}
    common = dict(
        image_size=image_size,
        batch_size=batch_size,
        seed=seed,
        shuffle=shuffle,
        cache=cache,
        tasks=tasks,
        label_fractions=fractions,
        augment=augment,
        color_jitter=float(color_jitter) if augment else 0.0,
        with_boxes=with_boxes,
        max_boxes=max_boxes,
        num_detection_classes=len(DETECTION_CLASSES),
        stride=4,
        drop_remainder=drop_remainder,
        shuffle_buffer=shuffle_buffer,
    )

    if source == "memory":
        n = DEFAULT_SPLIT_SIZES[split] if num_examples is None else int(num_examples)
        if n <= 0:
            raise ValueError(f"num_examples must be > 0, got {num_examples}: the {split} split would be empty.")
        index_fn = _memory_index_fn(seed, SPLIT_OFFSETS[split], image_size)
        return pipeline.build_from_indices(n, index_fn, **common)

    builder = prepare(data_dir, image_size, seed, split_sizes)
    available = builder.info.splits[split].num_examples if split in builder.info.splits else 0
    if available == 0:
        raise ValueError(
            f"The prepared synthetic_driving config {builder.builder_config.name!r} has an empty {split} split; "
            f"pass split_sizes={{{split!r}: N}} with N > 0."
        )
    n = available if num_examples is None else int(num_examples)
    if n <= 0:
        raise ValueError(f"num_examples must be > 0, got {num_examples}: the {split} split would be empty.")
    if n > available:
        raise ValueError(
            f"num_examples={n} exceeds the {available} prepared {split} examples in {data_dir}; "
            f"pass split_sizes={{{split!r}: {n}}} to prepare a larger config, or use source='memory'."
        )
    import tensorflow_datasets as tfds

    read_config = tfds.ReadConfig(shuffle_seed=seed, try_autocache=False)
    raw = builder.as_dataset(split=f"{split}[:{n}]", shuffle_files=shuffle, read_config=read_config)
    raw = raw.map(_from_tfds_example, num_parallel_calls=tf.data.AUTOTUNE)
    return pipeline.build_from_dataset(raw, num_examples=n, **common)
