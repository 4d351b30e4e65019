"""The shared tf.data pipeline that turns raw examples into model-ready batches.

Dataset readers produce a *raw* stream of single examples, each a dict:

- `image`: uint8 [H, W, 3];
- `segmentation`: uint8 or int32 [H, W] class ids;
- `depth`: float32 [H, W, 1] metres, 0 = invalid;
- `boxes`: float32 [M, 4] (ymin, xmin, ymax, xmax) in pixels, zero-padded to a
  fixed M; `box_classes`: int32 [M], -1 padded; `num_boxes`: int32 [];
- `scene`: float32 [T] multi-hot tags;
- `index`: int64 [], the example's stable id (used to decide, deterministically,
  which labels are dropped by `label_fractions`).

`build_from_indices` (render on the fly from an index) and `build_from_dataset`
(e.g. read from tfds files) then apply, in this order: parallel decode/render,
cache, shuffle, augmentation (a random horizontal flip applied to the image and
every label together), label encoding (CenterNet targets for detection, missing
labels filled in), batching and prefetching. Each batch is `(image, labels)`:

- `image`: float32 [B, H, W, 3] in [0, 255];
- `labels["segmentation"]`: int32 [B, H, W] (missing: all -1);
- `labels["depth"]`: float32 [B, H, W, 1] (missing: all 0.0 = invalid);
- `labels["detection"]`: float32 [B, H/s, W/s, C + 5] CenterNet target of
  `mtlzoo.heads.centernet_targets` (missing: all -1);
- `labels["scene"]`: float32 [B, T] (missing: all -1);
- with `with_boxes=True` also `boxes` [B, max_boxes, 4], `box_classes`
  [B, max_boxes] (-1 padded) and `num_boxes` [B], the raw boxes for evaluation
  (always the true boxes, even where `detection` is marked missing).

Example:
```python
import tensorflow as tf
from mtlzoo.data import pipeline
from mtlzoo.data.synthetic_driving import raw_example
raw = tf.data.Dataset.from_tensors(raw_example(seed=0, index=0))
ds = pipeline.build_from_dataset(raw, num_examples=1, image_size=(128, 256), batch_size=1)
image, labels = next(iter(ds))
```

Reference:
    Zhou et al., "Objects as Points", arXiv:1904.07850, 2019 (CenterNet targets).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mtlzoo.data.augment import color_jitter_image, horizontal_flip  # noqa: F401  (re-exported)
from mtlzoo.heads.centernet_targets import encode_centernet_targets, missing_centernet_target
from mtlzoo.registry import suggestion

TASKS = ("segmentation", "depth", "detection", "scene")
SEGMENTATION_MISSING = -1
DEPTH_MISSING = 0.0
SCENE_MISSING = -1.0
_TASK_SALT = {"segmentation": 0x51, "depth": 0xD3, "detection": 0xB0, "scene": 0x5C}
#: Optional label key, emitted only when asked for in `tasks`: the intruder task of `mtlzoo bench claims`
#: (`intruder_labels`), multi-hot over `INTRUDER_BITS` bits that have nothing to do with the scene.
INTRUDER = "intruder"
INTRUDER_BITS = 5
OPTIONAL_TASKS = (INTRUDER,)
_INTRUDER_SALT = 0x1E
_CACHE_AUTO_BYTES = 512 * 2**20
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def validate_image_size(image_size, multiple: int = 32) -> tuple:
    """Checks that `image_size` is a (H, W) pair of positive multiples of `multiple`.

    Args:
        image_size: (H, W) pair of ints.
        multiple: int. Both sides must be divisible by it (the backbones
            downsample by 32). Defaults to 32.

    Returns:
        (H, W) as a tuple of Python ints.

    Raises:
        ValueError: naming the problem and a valid size nearby.
    """
    try:
        height, width = (int(v) for v in image_size)
        ok_type = all(float(v) == int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be a (height, width) pair of ints, got {image_size!r}.") from None
    if not ok_type:
        raise ValueError(f"image_size must be a (height, width) pair of ints, got {image_size!r}.")
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}; e.g. use (128, 256).")
    if height % multiple or width % multiple:
        near = tuple(max(multiple, int(round(v / multiple)) * multiple) for v in (height, width))
        raise ValueError(
            f"image_size {tuple(image_size)} is not divisible by {multiple} (the backbone's total stride); "
            f"use a multiple of {multiple} such as {near}."
        )
    return height, width


def validate_tasks(tasks, known=TASKS) -> tuple:
    """Returns `tasks` as a tuple after checking each name against `known`."""
    if tasks is None:
        return tuple(known)
    if isinstance(tasks, str):
        tasks = (tasks,)
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError(f"tasks must name at least one of {', '.join(known)}; got an empty list.")
    for task in tasks:
        if task not in known:
            raise ValueError(f"Unknown task {task!r}.{suggestion(str(task), known)} Known tasks: {', '.join(known)}.")
    return tasks


def validate_label_fractions(label_fractions, known=TASKS) -> dict:
    """Checks a {task: fraction} dict: known task names, fractions in [0, 1]."""
    if label_fractions is None:
        return {}
    if not isinstance(label_fractions, dict):
        raise ValueError(f"label_fractions must be a dict like {{'depth': 0.3}}, got {label_fractions!r}.")
    out = {}
    for task, frac in label_fractions.items():
        if task not in known:
            raise ValueError(
                f"label_fractions names an unknown task {task!r}.{suggestion(str(task), known)} "
                f"Known tasks: {', '.join(known)}."
            )
        try:
            frac = float(frac)
        except (TypeError, ValueError):
            raise ValueError(f"label_fractions[{task!r}] must be a number in [0, 1], got {frac!r}.") from None
        if not 0.0 <= frac <= 1.0 or frac != frac:
            raise ValueError(
                f"label_fractions[{task!r}] = {frac} is outside [0, 1]; it is the fraction of training "
                f"examples that keep their {task} label, e.g. 0.3."
            )
        out[task] = frac
    return out


def _splitmix64(x):
    x = np.asarray(x, np.uint64)
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return x ^ (x >> np.uint64(31))


def label_presence(seed: int, indices, task: str, fraction: float) -> np.ndarray:
    """Whether example `indices` keep their `task` label under `label_fractions`.

    A stable hash of (seed, task, index) gives each example a uniform number in
    [0, 1); the label is kept when it is below `fraction`. So presence is fixed
    per (seed, index), independent of order, batch size or dataset length, and
    the kept share converges to `fraction`.

    Args:
        seed: int. Dataset seed.
        indices: int array of example indices.
        task: str. Task name.
        fraction: float in [0, 1].

    Returns:
        bool array shaped like `indices`.

    Example:
    ```python
    import numpy as np
    from mtlzoo.data.pipeline import label_presence
    label_presence(0, np.arange(1000), "depth", 0.3).mean()  # about 0.3
    ```
    """
    key = _splitmix64(np.uint64((int(seed) & 0xFFFFFFFF) << 8 | _TASK_SALT[task]))
    u = _splitmix64(key ^ np.asarray(indices, np.int64).astype(np.uint64))
    uniform = (u >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return uniform < float(fraction)


def intruder_labels(seed: int, indices) -> np.ndarray:
    """The intruder task's labels: `INTRUDER_BITS` bits of a hidden variable unrelated to the scene.

    The hidden variable is a stable 64-bit hash of (seed, index) drawn apart from the scene's own random numbers, so
    the image says nothing about it; the label is a fixed function of it (its low bits). A model can only memorise
    these labels on its training scenes, which makes them a task with no relation to the others (negative transfer
    experiments, `mtlzoo bench claims --claim intruder`).

    Args:
        seed: int. Dataset seed.
        indices: int array of example indices.

    Returns:
        float32 array [..., INTRUDER_BITS] of 0/1.

    Example:
    ```python
    import numpy as np
    from mtlzoo.data.pipeline import intruder_labels
    intruder_labels(0, np.arange(1000)).mean(axis=0)  # about 0.5 each
    ```
    """
    key = _splitmix64(np.uint64((int(seed) & 0xFFFFFFFF) << 8 | _INTRUDER_SALT))
    hidden = _splitmix64(key ^ np.asarray(indices, np.int64).astype(np.uint64))
    bits = [(hidden >> np.uint64(13 + 7 * k)) & np.uint64(1) for k in range(INTRUDER_BITS)]
    return np.stack(bits, axis=-1).astype(np.float32)


def resolve_cache(cache, num_examples: int, bytes_per_example: int):
    """`cache` argument -> False, True (in memory) or a file path prefix.

    None (auto) caches in memory when the decoded split needs at most 512 MiB.
    """
    if cache is None:
        return num_examples * bytes_per_example <= _CACHE_AUTO_BYTES
    if isinstance(cache, (bool, np.bool_)):
        return bool(cache)
    return str(cache)


def raw_bytes_per_example(image_size) -> int:
    """Approximate bytes of one decoded raw example (for the cache decision)."""
    height, width = image_size
    return height * width * (3 + 1 + 4) + 1024


def _apply_cache(ds, cache):
    if cache is True:
        return ds.cache()
    if cache:
        return ds.cache(cache)
    return ds


def build_from_indices(
    num_examples: int,
    index_to_raw,
    *,
    image_size,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = False,
    cache=None,
    **kwargs,
) -> tf.data.Dataset:
    """Builds the pipeline over examples produced from their position 0..n-1.

    Without a cache the positions are shuffled before producing the examples
    (a full shuffle for free); with one, the produced examples are cached and
    then shuffled through a buffer.

    Args:
        num_examples: int > 0. Number of examples.
        index_to_raw: function int64 scalar tensor -> raw example dict (see the
            module docstring); run with `num_parallel_calls=AUTOTUNE`.
        image_size: (H, W).
        batch_size: int > 0.
        seed: int. Seeds shuffling, augmentation and label dropping.
        shuffle: bool. Shuffle (reshuffled every epoch).
        cache: None (auto), bool, or a file path prefix.
        **kwargs: forwarded to `finish`.

    Returns:
        The batched, prefetched `tf.data.Dataset` of (image, labels).
    """
    cache = resolve_cache(cache, num_examples, raw_bytes_per_example(image_size))
    ds = tf.data.Dataset.range(num_examples)
    if shuffle and not cache:
        ds = ds.shuffle(num_examples, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(index_to_raw, num_parallel_calls=tf.data.AUTOTUNE)
    ds = _apply_cache(ds, cache)
    if shuffle and cache:
        ds = ds.shuffle(min(num_examples, kwargs.pop("shuffle_buffer", 512)), seed=seed, reshuffle_each_iteration=True)
    kwargs.pop("shuffle_buffer", None)
    return finish(ds, image_size=image_size, batch_size=batch_size, seed=seed, **kwargs)


def build_from_dataset(
    raw: tf.data.Dataset,
    *,
    num_examples: int,
    image_size,
    batch_size: int,
    seed: int = 0,
    shuffle: bool = False,
    cache=None,
    shuffle_buffer: int = 512,
    **kwargs,
) -> tf.data.Dataset:
    """Builds the pipeline over an existing raw dataset (e.g. read from tfds files).

    Args:
        raw: `tf.data.Dataset` of raw example dicts.
        num_examples: int. Its length (for the cache decision and shuffle buffer).
        image_size: (H, W).
        batch_size: int > 0.
        seed: int. Seeds shuffling, augmentation and label dropping.
        shuffle: bool. Shuffle through a buffer of `shuffle_buffer` examples.
        cache: None (auto), bool, or a file path prefix.
        shuffle_buffer: int. Defaults to 512.
        **kwargs: forwarded to `finish`.

    Returns:
        The batched, prefetched `tf.data.Dataset` of (image, labels).
    """
    cache = resolve_cache(cache, num_examples, raw_bytes_per_example(image_size))
    ds = _apply_cache(raw, cache)
    if shuffle:
        ds = ds.shuffle(max(1, min(num_examples, shuffle_buffer)), seed=seed, reshuffle_each_iteration=True)
    return finish(ds, image_size=image_size, batch_size=batch_size, seed=seed, **kwargs)


def finish(
    ds: tf.data.Dataset,
    *,
    image_size,
    batch_size: int,
    seed: int = 0,
    tasks=TASKS,
    label_fractions=None,
    augment: bool = False,
    with_boxes: bool = False,
    max_boxes: int = 32,
    num_detection_classes: int = 4,
    stride: int = 4,
    drop_remainder: bool = False,
    color_jitter: float = 0.0,
) -> tf.data.Dataset:
    """Augments, encodes labels, batches and prefetches a raw example stream.

    Args:
        ds: `tf.data.Dataset` of raw example dicts.
        image_size: (H, W).
        batch_size: int > 0.
        seed: int. Seeds the flips and the label dropping.
        tasks: label keys to emit, a subset of `TASKS` plus `OPTIONAL_TASKS` (`intruder`: `intruder_labels`).
        label_fractions: dict {task: fraction}: keep that task's label on that
            fraction of examples (decided by `label_presence` from the example's
            `index`), fill the rest with the task's missing value.
        augment: bool. Random horizontal flip (p = 0.5) of image and labels.
        with_boxes: bool. Also emit raw `boxes`, `box_classes`, `num_boxes`.
        max_boxes: int. Padding length of the raw boxes. Defaults to 32.
        num_detection_classes: int. C of the CenterNet target. Defaults to 4.
        stride: int. CenterNet output stride. Defaults to 4.
        drop_remainder: bool. Drop a last partial batch.
        color_jitter: float in [0, 1). Photometric augmentation of the image only (labels unchanged): brightness
            shifted by up to ±color_jitter·255, contrast and saturation scaled by 1 ± color_jitter, one draw per
            example (`color_jitter_image`). 0 (the default) leaves images as they are.

    Returns:
        `tf.data.Dataset` of (image float32 [B, H, W, 3], labels dict).
    """
    height, width = image_size
    if not 0.0 <= float(color_jitter) < 1.0:
        raise ValueError(f"color_jitter must be in [0, 1), got {color_jitter!r} (e.g. 0.2).")
    tasks = TASKS if tasks is None else validate_tasks(tasks, known=TASKS + OPTIONAL_TASKS)
    fractions = validate_label_fractions(label_fractions)
    fractions = {t: f for t, f in fractions.items() if f < 1.0}
    grid = (height // stride, width // stride, num_detection_classes + 5)

    if augment:
        coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, coins))

        def flip(example, coin):
            return tf.cond(
                tf.equal(tf.math.floormod(coin, 2), 1),
                lambda: horizontal_flip(example),
                lambda: dict(example),
            )

        ds = ds.map(flip, num_parallel_calls=tf.data.AUTOTUNE)

    if color_jitter:
        keys = tf.data.Dataset.random(seed=seed + 7919, rerandomize_each_iteration=True)

        def jitter(example, key):
            out = dict(example)
            out["image"] = color_jitter_image(example["image"], float(color_jitter), tf.stack([key, key // 3 + 1]))
            return out

        ds = tf.data.Dataset.zip((ds, keys)).map(jitter, num_parallel_calls=tf.data.AUTOTUNE)

    def presence(index):
        keep = [label_presence(seed, index, t, fractions[t]) if t in fractions else True for t in TASKS]
        return np.asarray([bool(k) for k in keep], bool)

    def encode(boxes, classes, num, present):
        if not present:
            return missing_centernet_target((height, width), num_detection_classes, stride)
        n = int(num)
        return encode_centernet_targets(boxes[:n], classes[:n], (height, width), num_detection_classes, stride)

    def to_model(example):
        if fractions:
            present = tf.numpy_function(presence, [example["index"]], tf.bool, stateful=False)
            present.set_shape([len(TASKS)])
        else:
            present = tf.ones([len(TASKS)], tf.bool)
        has = {t: present[i] for i, t in enumerate(TASKS)}
        labels = {}
        if "segmentation" in tasks:
            seg = tf.cast(example["segmentation"], tf.int32)
            seg = tf.where(has["segmentation"], seg, tf.fill(tf.shape(seg), SEGMENTATION_MISSING))
            labels["segmentation"] = tf.ensure_shape(seg, [height, width])
        if "depth" in tasks:
            depth = tf.cast(example["depth"], tf.float32)
            depth = tf.where(has["depth"], depth, tf.fill(tf.shape(depth), DEPTH_MISSING))
            labels["depth"] = tf.ensure_shape(depth, [height, width, 1])
        if "detection" in tasks:
            target = tf.numpy_function(
                encode,
                [example["boxes"], example["box_classes"], example["num_boxes"], has["detection"]],
                tf.float32,
                stateful=False,
            )
            target.set_shape(grid)
            labels["detection"] = target
        if "scene" in tasks:
            scene = tf.cast(example["scene"], tf.float32)
            labels["scene"] = tf.where(has["scene"], scene, tf.fill(tf.shape(scene), SCENE_MISSING))
        if INTRUDER in tasks:
            bits = tf.numpy_function(lambda i: intruder_labels(seed, i), [example["index"]], tf.float32, stateful=False)
            labels[INTRUDER] = tf.ensure_shape(bits, [INTRUDER_BITS])
        if with_boxes:
            boxes = tf.cast(example["boxes"], tf.float32)[:max_boxes]
            classes = tf.cast(example["box_classes"], tf.int32)[:max_boxes]
            pad = max_boxes - tf.shape(boxes)[0]
            labels["boxes"] = tf.ensure_shape(tf.pad(boxes, [[0, pad], [0, 0]]), [max_boxes, 4])
            labels["box_classes"] = tf.ensure_shape(tf.pad(classes, [[0, pad]], constant_values=-1), [max_boxes])
            labels["num_boxes"] = tf.minimum(tf.cast(example["num_boxes"], tf.int32), max_boxes)
        image = tf.ensure_shape(tf.cast(example["image"], tf.float32), [height, width, 3])
        return image, labels

    ds = ds.map(to_model, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
