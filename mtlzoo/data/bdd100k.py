"""BDD100K for multi-task learning: detection (CenterNet targets), drivable area and lane marking.

Reads the official BDD100K release layout:

    {root}/images/100k/{split}/{name}.jpg                 1280×720 RGB JPEG
    {root}/labels/det_20/det_{split}.json                 detection labels (Scalabel format)
    {root}/labels/drivable/masks/{split}/{name}.png       8-bit: 0 direct, 1 alternative, 2 background
    {root}/labels/lane/masks/{split}/{name}.png           8-bit lane-marking bit field (below)

Detection. `det_{split}.json` is a list of frames `{"name": "<name>.jpg",
"labels": [{"category": ..., "box2d": {"x1", "y1", "x2", "y2"}}, ...]}` (box
corners in pixels of the original image; `labels` may be absent or null for an
image without objects). The 10 evaluated categories of the BDD100K detection
benchmark are the classes, in the official order (category_id − 1):

    0 pedestrian, 1 rider, 2 car, 3 truck, 4 bus, 5 train, 6 motorcycle,
    7 bicycle, 8 traffic light, 9 traffic sign

The 2018 label names "person", "bike" and "motor" are read as pedestrian,
bicycle and motorcycle. Boxes of other categories ("other vehicle",
"other person", "trailer") and labels without `box2d` are skipped. Boxes are
scaled to `image_size` and encoded with
`mtlzoo.heads.centernet_targets.encode_centernet_targets` (stride 4).

Lane masks. The official conversion (bdd100k `label/to_mask.py`) writes, per
pixel, `category + (style << 4) + (direction << 5)` with category in 0..7
(crosswalk, double other, double white, double yellow, road curb, single other,
single white, single yellow), style 0 solid / 1 dashed, direction 0 parallel /
1 vertical, and 255 for background. This reader treats a pixel as background
when bit 3 is set (255 sets it; no lane value does), and by default returns a
binary lane map (1 lane marking, 0 background); `lane_mode` selects the
category (0..7, 8 background), direction or style (0/1, 2 background), or the
raw value.

Reference:
    Yu et al., "BDD100K: A Diverse Driving Dataset for Heterogeneous Multitask
    Learning", CVPR 2020; label format at https://doc.bdd100k.com/format.html.
"""

from __future__ import annotations

import json
import math
import os
import struct

import numpy as np
import tensorflow as tf

from mtlzoo.heads.centernet_targets import encode_centernet_targets, missing_centernet_target

__all__ = [
    "BDD100K_DETECTION_CLASSES",
    "BDD100K_CATEGORY_ALIASES",
    "BDD100K_DRIVABLE_CLASSES",
    "BDD100K_LANE_CATEGORIES",
    "decode_lane_mask",
    "load_bdd100k",
]

BDD100K_DETECTION_CLASSES = (
    "pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle", "traffic light", "traffic sign",
)
BDD100K_CATEGORY_ALIASES = {"person": "pedestrian", "bike": "bicycle", "motor": "motorcycle"}
BDD100K_DRIVABLE_CLASSES = ("direct", "alternative", "background")
BDD100K_LANE_CATEGORIES = (
    "crosswalk", "double other", "double white", "double yellow", "road curb", "single other", "single white",
    "single yellow",
)
_TASKS = ("detection", "drivable", "lane")
_LANE_MODES = ("binary", "category", "direction", "style", "raw")
_BACKGROUND_BIT = 0x08
_LANE_VALUE_BITS = 0x37  # category bits 0-2, style bit 4, direction bit 5

_LAYOUT = """Expected layout (official BDD100K release):
  {root}/images/100k/{split}/{name}.jpg
  {root}/labels/det_20/det_{split}.json              [{"name": "{name}.jpg", "labels": [{"category": str,
                                                       "box2d": {"x1", "y1", "x2", "y2"}}, ...]}, ...]
  {root}/labels/drivable/masks/{split}/{name}.png    8-bit gray: 0 direct, 1 alternative, 2 background
  {root}/labels/lane/masks/{split}/{name}.png        8-bit gray: category | style << 4 | direction << 5, 255 background
with split in {train, val}."""


def _error(cls, message):
    return cls(f"BDD100K: {message}\n{_LAYOUT}")


def decode_lane_mask(values, lane_mode: str = "binary"):
    """Decodes raw BDD100K lane-mask values into the target of `lane_mode`.

    Args:
        values: uint8/int tensor of raw mask values.
        lane_mode: "binary" (1 lane marking, 0 background), "category" (0..7,
            8 background), "direction" (0 parallel, 1 vertical, 2 background),
            "style" (0 solid, 1 dashed, 2 background) or "raw" (unchanged).

    Returns:
        int32 tensor of the same shape.

    Example:
    ```python
    from mtlzoo.data.bdd100k import decode_lane_mask
    decode_lane_mask([255, 6, 6 | 16 | 32], "category")   # [8, 6, 6]
    decode_lane_mask([255, 6, 6 | 16 | 32], "style")      # [2, 0, 1]
    ```

    Reference:
        BDD100K label format (https://doc.bdd100k.com/format.html) and the
        official mask conversion, bdd100k `label/to_mask.py`.
    """
    if lane_mode not in _LANE_MODES:
        raise ValueError(f"lane_mode must be one of {_LANE_MODES}, got {lane_mode!r}.")
    v = tf.cast(values, tf.int32)
    if lane_mode == "raw":
        return v
    background = tf.not_equal(tf.bitwise.bitwise_and(v, _BACKGROUND_BIT), 0)
    if lane_mode == "binary":
        return tf.where(background, 0, 1)
    if lane_mode == "category":
        return tf.where(background, len(BDD100K_LANE_CATEGORIES), tf.bitwise.bitwise_and(v, 7))
    shift = 4 if lane_mode == "style" else 5
    return tf.where(background, 2, tf.bitwise.bitwise_and(tf.bitwise.right_shift(v, shift), 1))


def _parse_detections(path: str):
    """name -> (boxes [N, 4] (ymin, xmin, ymax, xmax) float32, classes [N] int64) from a det JSON file."""
    try:
        with open(path, encoding="utf-8") as handle:
            frames = json.load(handle)
    except FileNotFoundError:
        raise _error(FileNotFoundError, f"detection labels {path!r} do not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise _error(ValueError, f"detection labels {path!r} are not valid JSON ({error}).") from None
    if not isinstance(frames, list):
        raise _error(ValueError, f"detection labels {path!r} must hold a JSON list of frames, got "
                                 f"{type(frames).__name__}.")
    index = {name: i for i, name in enumerate(BDD100K_DETECTION_CLASSES)}
    index.update({alias: index[name] for alias, name in BDD100K_CATEGORY_ALIASES.items()})
    table = {}
    for f, frame in enumerate(frames):
        where = f"{path!r}, frame {f}"
        if not isinstance(frame, dict) or not isinstance(frame.get("name"), str):
            raise _error(ValueError, f"{where}: a frame must be an object with a string \"name\".")
        name = os.path.basename(frame["name"])
        where = f"{path!r}, frame {f} ({name})"
        if name in table:
            raise _error(ValueError, f"{where}: image listed twice.")
        labels = frame.get("labels")
        labels = [] if labels is None else labels
        if not isinstance(labels, list):
            raise _error(ValueError, f"{where}: \"labels\" must be a list.")
        boxes, classes = [], []
        for k, label in enumerate(labels):
            if not isinstance(label, dict) or not isinstance(label.get("category"), str):
                raise _error(ValueError, f"{where}, label {k}: a label must be an object with a string \"category\".")
            box = label.get("box2d")
            if box is None or label["category"] not in index:
                continue
            try:
                x1, y1, x2, y2 = (float(box[key]) for key in ("x1", "y1", "x2", "y2"))
            except (TypeError, KeyError, ValueError):
                raise _error(ValueError, f"{where}, label {k}: box2d must hold numbers x1, y1, x2, y2, got "
                                         f"{box!r}.") from None
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
                raise _error(ValueError, f"{where}, label {k}: box2d has NaN or inf: {box!r}.")
            if x2 < x1 or y2 < y1:
                raise _error(ValueError, f"{where}, label {k}: box2d has x2 < x1 or y2 < y1: {box!r}.")
            boxes.append((y1, x1, y2, x2))
            classes.append(index[label["category"]])
        table[name] = (np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64))
    return table


def _png_header(path: str):
    with open(path, "rb") as handle:
        head = handle.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise _error(ValueError, f"mask {path!r} is not a PNG file.")
    width, height, bit_depth, color_type = struct.unpack(">IIBB", head[16:26])
    return height, width, bit_depth, color_type


def _validate_example(image_path, mask_paths: dict, lane_allowed):
    """Decodes one example eagerly and checks formats, sizes and mask values."""
    try:
        image = tf.io.decode_jpeg(tf.io.read_file(image_path), channels=3)
    except tf.errors.OpError as error:
        raise _error(ValueError, f"cannot decode image {image_path!r} as JPEG ({error.message}).") from None
    height, width = int(image.shape[0]), int(image.shape[1])
    for task, path in mask_paths.items():
        mh, mw, depth, color = _png_header(path)
        if depth != 8 or color != 0:
            raise _error(
                ValueError,
                f"{task} mask {path!r} is a PNG of bit depth {depth}, color type {color}; expected 8-bit "
                f"grayscale (the labels/{task}/masks release, not the colormaps).",
            )
        if (mh, mw) != (height, width):
            raise _error(ValueError, f"{task} mask {path!r} is {mh}x{mw} but its image is {height}x{width}.")
        values = np.unique(tf.io.decode_png(tf.io.read_file(path), channels=1).numpy())
        if task == "drivable":
            bad = values[values > 2]
        else:
            bad = values[~lane_allowed[values]]
        if bad.size:
            expected = "0, 1 or 2" if task == "drivable" else "255 or category | style << 4 | direction << 5"
            raise _error(ValueError, f"{task} mask {path!r} holds value {int(bad[0])}; expected {expected}.")


def load_bdd100k(root, split: str = "train", image_size=(384, 640), batch_size: int = 8, *, tasks=None,
                 shuffle: bool = False, seed: int | None = None, lane_mode: str = "binary", stride: int = 4,
                 missing_detection: str = "error", validate: str = "first",
                 drop_remainder: bool = False) -> tf.data.Dataset:
    """Reads BDD100K images with detection, drivable-area and lane-marking targets.

    Checked when the dataset is created: the folders and the detection JSON
    exist, the JSON is well formed (all boxes finite, x1 <= x2, y1 <= y2),
    every image has its drivable and lane mask and a detection entry, and the
    first example (or all, with `validate="all"`) decodes, with 8-bit
    grayscale masks of the image's size holding valid values.

    Args:
        root: Folder holding `images/` and `labels/` of the BDD100K release.
        split: "train" or "val" (any split with the same layout works).
        image_size: (height, width) of the output; images resized bilinearly,
            masks with nearest neighbour, boxes scaled by the same factors.
            None keeps the original size (1280×720 for BDD100K).
        batch_size: Examples per batch.
        tasks: None for ("detection", "drivable", "lane"), or a subset; only
            the files of the selected tasks are required.
        shuffle: Shuffle the examples, anew each epoch.
        seed: Shuffle seed.
        lane_mode: "binary" (default), "category", "direction", "style" or
            "raw"; see `decode_lane_mask`.
        stride: Output stride of the detection head (CenterNet grid).
        missing_detection: What to do with an image that has no frame in the
            detection JSON: "error" (default), "skip" (drop the image) or
            "missing" (all -1 target, which mtlzoo's detection loss skips).
        validate: "first" or "all" examples checked up front.
        drop_remainder: Drop the last incomplete batch.

    Returns:
        A `tf.data.Dataset` of `(image float32 [B, H, W, 3] in [0, 255],
        {"detection": float32 [B, H // stride, W // stride, 10 + 5] CenterNet
        target, "drivable": int32 [B, H, W] (0 direct, 1 alternative,
        2 background), "lane": int32 [B, H, W]})`, restricted to `tasks`.

    Raises:
        FileNotFoundError: a missing folder or JSON file, or an image without its mask.
        ValueError: malformed JSON or box, an image without a detection entry
            (with missing_detection="error"), a bad mask (not 8-bit gray,
            wrong size, out-of-range value), or bad arguments.

    Example:
    ```python
    from mtlzoo.data.bdd100k import load_bdd100k, BDD100K_DETECTION_CLASSES

    train = load_bdd100k("~/data/bdd100k", "train", image_size=(384, 640), batch_size=8, shuffle=True)
    image, labels = next(iter(train))
    labels["detection"].shape   # (8, 96, 160, 15): 10 heatmaps, size, offset, center mask
    ```

    Reference:
        Yu et al., "BDD100K: A Diverse Driving Dataset for Heterogeneous
        Multitask Learning", CVPR 2020; Zhou et al., "Objects as Points", 2019.
    """
    if lane_mode not in _LANE_MODES:
        raise ValueError(f"lane_mode must be one of {_LANE_MODES}, got {lane_mode!r}.")
    if missing_detection not in ("error", "skip", "missing"):
        raise ValueError(f"missing_detection must be 'error', 'skip' or 'missing', got {missing_detection!r}.")
    if validate not in ("first", "all"):
        raise ValueError(f"validate must be 'first' or 'all', got {validate!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride <= 0:
        raise ValueError(f"stride must be a positive int, got {stride!r}.")
    if image_size is not None:
        try:
            image_size = tuple(int(v) for v in image_size)
        except (TypeError, ValueError):
            raise ValueError(f"image_size must be None or (height, width), got {image_size!r}.") from None
        if len(image_size) != 2 or min(image_size) < stride:
            raise ValueError(f"image_size must be (height, width) of at least stride={stride}, got {image_size!r}.")
    if tasks is None:
        tasks = list(_TASKS)
    else:
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        unknown = [t for t in tasks if t not in _TASKS]
        if unknown or not tasks:
            raise ValueError(f"BDD100K: unknown task(s) {unknown or tasks!r}; available tasks are {list(_TASKS)}.")
        tasks = list(dict.fromkeys(tasks))

    root = os.path.expanduser(os.fspath(root))
    if not os.path.isdir(root):
        raise _error(FileNotFoundError, f"root folder {root!r} does not exist.")
    image_dir = os.path.join(root, "images", "100k", split)
    mask_dirs = {t: os.path.join(root, "labels", t, "masks", split) for t in ("drivable", "lane") if t in tasks}
    for folder in [image_dir, *mask_dirs.values()]:
        if not os.path.isdir(folder):
            raise _error(FileNotFoundError, f"folder {folder!r} does not exist.")
    names = sorted(n for n in os.listdir(image_dir) if n.lower().endswith(".jpg"))
    if not names:
        raise _error(FileNotFoundError, f"no .jpg images in {image_dir!r}.")

    detections = None
    if "detection" in tasks:
        det_path = os.path.join(root, "labels", "det_20", f"det_{split}.json")
        detections = _parse_detections(det_path)
        unlabeled = [n for n in names if n not in detections]
        if len(unlabeled) == len(names):
            raise _error(ValueError, f"none of the {len(names)} images in {image_dir!r} has a frame in {det_path!r} "
                                     "(wrong split or file?).")
        if unlabeled and missing_detection == "error":
            raise _error(
                ValueError,
                f"{len(unlabeled)} image(s) have no frame in {det_path!r}, e.g. "
                f"{os.path.join(image_dir, unlabeled[0])!r}. Pass missing_detection='skip' to drop them or "
                "'missing' to mark their detection target as missing.",
            )
        if missing_detection == "skip":
            names = [n for n in names if n in detections]

    stems = [os.path.splitext(n)[0] for n in names]
    columns = {"image": [os.path.join(image_dir, n) for n in names]}
    for task, folder in mask_dirs.items():
        paths = [os.path.join(folder, s + ".png") for s in stems]
        for image_path, path in zip(columns["image"], paths):
            if not os.path.isfile(path):
                raise _error(FileNotFoundError, f"image {image_path!r} has no {task} mask {path!r}.")
        columns[task] = paths

    lane_allowed = np.zeros(256, bool)
    lane_allowed[[v for v in range(256) if v & ~_LANE_VALUE_BITS == 0]] = True
    lane_allowed[255] = True
    count = len(names)
    for index in range(count if validate == "all" else 1):
        _validate_example(columns["image"][index], {t: columns[t][index] for t in mask_dirs}, lane_allowed)

    num_classes = len(BDD100K_DETECTION_CLASSES)
    det_boxes = [detections.get(n) if detections is not None else None for n in names]

    def encode(index, height, width):
        entry = det_boxes[int(index)]
        out_shape = image_size if image_size is not None else (int(height), int(width))
        if entry is None:
            return missing_centernet_target(out_shape, num_classes, stride)
        boxes, classes = entry
        scale = np.array([out_shape[0] / height, out_shape[1] / width] * 2, np.float32)
        return encode_centernet_targets(boxes * scale, classes, out_shape, num_classes, stride)

    empty = tf.constant([""] * count)
    slices = (
        tf.range(count, dtype=tf.int64),
        tf.constant(columns["image"]),
        tf.constant(columns["drivable"]) if "drivable" in tasks else empty,
        tf.constant(columns["lane"]) if "lane" in tasks else empty,
    )
    out_h, out_w = image_size if image_size is not None else (None, None)

    def load(index, image_path, drivable_path, lane_path):
        image = tf.cast(tf.io.decode_jpeg(tf.io.read_file(image_path), channels=3), tf.float32)
        height, width = tf.shape(image)[0], tf.shape(image)[1]
        labels = {}
        if "detection" in tasks:
            target = tf.numpy_function(encode, [index, height, width], tf.float32, stateful=False)
            grid = [None if out_h is None else out_h // stride, None if out_w is None else out_w // stride]
            labels["detection"] = tf.ensure_shape(target, grid + [num_classes + 5])
        for task, path in (("drivable", drivable_path), ("lane", lane_path)):
            if task not in tasks:
                continue
            mask = tf.io.decode_png(tf.io.read_file(path), channels=1)
            if image_size is not None:
                mask = tf.image.resize(mask, image_size, method="nearest")
            mask = tf.cast(mask[..., 0], tf.int32) if task == "drivable" else decode_lane_mask(mask[..., 0], lane_mode)
            labels[task] = tf.ensure_shape(mask, [out_h, out_w])
        if image_size is not None:
            image = tf.image.resize(image, image_size, method="bilinear")
        return tf.ensure_shape(image, [out_h, out_w, 3]), labels

    dataset = tf.data.Dataset.from_tensor_slices(slices)
    if shuffle:
        dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(int(batch_size), drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)
