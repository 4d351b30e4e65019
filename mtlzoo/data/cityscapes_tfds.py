"""Cityscapes for multi-task learning: segmentation (19 train ids or 7 categories) and depth.

Two ways in, both yielding the same examples:

- `load_cityscapes(root, split)` reads the official on-disk layout (the unzipped
  `leftImg8bit_trainvaltest.zip`, `gtFine_trainvaltest.zip` and
  `disparity_trainvaltest.zip`) directly with tf.data;
- `load_cityscapes_tfds(split, manual_dir=...)` goes through tfds's `cityscapes`
  builder with a builder config of its own (`tfds_builder_config()`), which
  enables both the gtFine label ids and the disparity maps (tfds's stock
  configs give one or the other). tfds stores the original PNG bytes; the
  disparity maps are 16-bit PNGs which tfds's default decoder would squeeze to
  8 bits, so they are read with `tfds.decode.SkipDecoding` and decoded here.

Label remapping. Cityscapes ground truth (`*_gtFine_labelIds.png`) holds the 34
label ids 0..33 of the official definition (cityscapesScripts
`helpers/labels.py`). `num_classes=19` maps them to the 19 train ids (labels
with train id 255 — void, parking, rail track, guard rail, bridge, tunnel,
polegroup, caravan, trailer — become -1, ignore). `num_classes=7` maps the 19
evaluated classes to their 7 categories flat, construction, object, nature,
sky, human, vehicle (ids 0..6), as the MTL papers' 7-class Cityscapes does;
labels ignored in the 19-class evaluation stay ignored (-1), which is how the
official category-level evaluation treats them. Ids outside the table map to -1.

Depth. `disparity/*_disparity.png` are 16-bit PNGs: a pixel value p > 0 is the
disparity d = (p − 1) / 256 pixels, p = 0 an invalid measurement. With
`depth_mode="depth"` (default) the target is metric depth z = b·f / d in
metres, with the stereo baseline b = 0.209313 m and focal length
f = 2262.52 px of the Cityscapes camera (`camera/*.json`; the values vary by
well under 1 % between cities), and 0 where d ≤ 0 (invalid). With
`depth_mode="disparity"` the target is d itself, in pixels of the output image
(scaled by output width / 2048 when `image_size` changes the width), 0 invalid.
Depth is computed at full resolution, then resized with nearest neighbour.

Reference:
    Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene
    Understanding", CVPR 2016; https://github.com/mcordts/cityscapesScripts
    (label definitions, README of the disparity and camera packages).
"""

from __future__ import annotations

import os
import re
import struct

import numpy as np
import tensorflow as tf

__all__ = [
    "CITYSCAPES_LABELS",
    "CITYSCAPES_TRAIN_CLASSES",
    "CITYSCAPES_CATEGORIES",
    "CITYSCAPES_BASELINE_M",
    "CITYSCAPES_FOCAL_PX",
    "label_id_to_train_id",
    "label_id_to_category",
    "disparity_to_depth",
    "load_cityscapes",
    "tfds_builder_config",
    "cityscapes_tfds_builder",
    "load_cityscapes_tfds",
]

# (name, label id, train id, category) of the official definition; train id 255 = not evaluated.
# ("license plate", id -1, is never written into the label-id PNGs.)
CITYSCAPES_LABELS = (
    ("unlabeled", 0, 255, "void"),
    ("ego vehicle", 1, 255, "void"),
    ("rectification border", 2, 255, "void"),
    ("out of roi", 3, 255, "void"),
    ("static", 4, 255, "void"),
    ("dynamic", 5, 255, "void"),
    ("ground", 6, 255, "void"),
    ("road", 7, 0, "flat"),
    ("sidewalk", 8, 1, "flat"),
    ("parking", 9, 255, "flat"),
    ("rail track", 10, 255, "flat"),
    ("building", 11, 2, "construction"),
    ("wall", 12, 3, "construction"),
    ("fence", 13, 4, "construction"),
    ("guard rail", 14, 255, "construction"),
    ("bridge", 15, 255, "construction"),
    ("tunnel", 16, 255, "construction"),
    ("pole", 17, 5, "object"),
    ("polegroup", 18, 255, "object"),
    ("traffic light", 19, 6, "object"),
    ("traffic sign", 20, 7, "object"),
    ("vegetation", 21, 8, "nature"),
    ("terrain", 22, 9, "nature"),
    ("sky", 23, 10, "sky"),
    ("person", 24, 11, "human"),
    ("rider", 25, 12, "human"),
    ("car", 26, 13, "vehicle"),
    ("truck", 27, 14, "vehicle"),
    ("bus", 28, 15, "vehicle"),
    ("caravan", 29, 255, "vehicle"),
    ("trailer", 30, 255, "vehicle"),
    ("train", 31, 16, "vehicle"),
    ("motorcycle", 32, 17, "vehicle"),
    ("bicycle", 33, 18, "vehicle"),
)
NUM_LABEL_IDS = 34
CITYSCAPES_TRAIN_CLASSES = tuple(
    name for name, _, train_id, _ in sorted(CITYSCAPES_LABELS, key=lambda row: row[2]) if train_id != 255
)
CITYSCAPES_CATEGORIES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
CITYSCAPES_BASELINE_M = 0.209313
CITYSCAPES_FOCAL_PX = 2262.52
IGNORE_LABEL = -1


def _lookup_tables():
    to_train = np.full(256, IGNORE_LABEL, np.int32)
    to_category = np.full(256, IGNORE_LABEL, np.int32)
    for _, label_id, train_id, category in CITYSCAPES_LABELS:
        if train_id != 255:
            to_train[label_id] = train_id
            to_category[label_id] = CITYSCAPES_CATEGORIES.index(category)
    return to_train, to_category


_ID_TO_TRAIN_ID, _ID_TO_CATEGORY = _lookup_tables()


def label_id_to_train_id(label_ids) -> np.ndarray:
    """Maps Cityscapes label ids (0..33) to the 19 train ids, -1 for ignored labels.

    Args:
        label_ids: int array of label ids (the values of `*_gtFine_labelIds.png`).

    Returns:
        int32 array of the same shape, values in 0..18 or -1.

    Example:
    ```python
    from mtlzoo.data.cityscapes_tfds import label_id_to_train_id
    label_id_to_train_id([7, 26, 9])   # [0, 13, -1]: road, car, parking (ignored)
    ```

    Reference:
        Cityscapes label definition, cityscapesScripts `helpers/labels.py`.
    """
    ids = np.asarray(label_ids)
    out = np.full(ids.shape, IGNORE_LABEL, np.int32)
    inside = (ids >= 0) & (ids < 256)
    out[inside] = _ID_TO_TRAIN_ID[ids[inside].astype(np.int64)]
    return out


def label_id_to_category(label_ids) -> np.ndarray:
    """Maps Cityscapes label ids to the 7 categories of `CITYSCAPES_CATEGORIES`, -1 for ignored.

    Args:
        label_ids: int array of label ids (0..33).

    Returns:
        int32 array of the same shape, values in 0..6 or -1.

    Example:
    ```python
    from mtlzoo.data.cityscapes_tfds import label_id_to_category
    label_id_to_category([7, 26, 24, 0])   # [0, 6, 5, -1]: flat, vehicle, human, void
    ```

    Reference:
        Cityscapes label definition, cityscapesScripts `helpers/labels.py`.
    """
    ids = np.asarray(label_ids)
    out = np.full(ids.shape, IGNORE_LABEL, np.int32)
    inside = (ids >= 0) & (ids < 256)
    out[inside] = _ID_TO_CATEGORY[ids[inside].astype(np.int64)]
    return out


def disparity_to_depth(png_values, baseline: float = CITYSCAPES_BASELINE_M,
                       focal_length: float = CITYSCAPES_FOCAL_PX, depth_mode: str = "depth"):
    """Converts raw 16-bit disparity PNG values to depth (or disparity), 0 where invalid.

    d = (p − 1) / 256 for p > 0; p = 0 is invalid. Depth is baseline·focal / d
    for d > 0, and 0 elsewhere.

    Args:
        png_values: uint16 tensor or array of raw PNG values.
        baseline: Stereo baseline in metres.
        focal_length: Focal length in pixels.
        depth_mode: "depth" (metres) or "disparity" (pixels).

    Returns:
        float32 tensor of the same shape.

    Example:
    ```python
    from mtlzoo.data.cityscapes_tfds import disparity_to_depth
    disparity_to_depth([0, 1, 257, 25601])   # [0, 0, 473.58, 4.7358] metres
    ```

    Reference:
        Cityscapes README (disparity package) and `camera/*.json` calibration files.
    """
    if depth_mode not in ("depth", "disparity"):
        raise ValueError(f"depth_mode must be 'depth' or 'disparity', got {depth_mode!r}.")
    p = tf.cast(png_values, tf.float32)
    disparity = tf.where(p > 0, (p - 1.0) / 256.0, tf.zeros_like(p))
    if depth_mode == "disparity":
        return disparity
    return tf.math.divide_no_nan(tf.fill(tf.shape(disparity), float(baseline) * float(focal_length)), disparity)


_LAYOUT = """Expected layout (official Cityscapes packages, unzipped into one root):
  {root}/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png   8-bit RGB
  {root}/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png    8-bit gray, label ids 0..33
  {root}/disparity/{split}/{city}/{city}_{seq}_{frame}_disparity.png       16-bit gray, d = (p - 1) / 256, p = 0 invalid
with split in {train, val, test}."""

_TASKS = ("segmentation", "depth")
_IMAGE_RE = re.compile(r"^(.+)_leftImg8bit\.png$")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _error(cls, message):
    return cls(f"Cityscapes: {message}\n{_LAYOUT}")


def _png_header(data: bytes, source: str):
    """(height, width, bit depth, color type) from the IHDR chunk of PNG bytes."""
    if len(data) < 26 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise _error(ValueError, f"{source} is not a PNG file.")
    width, height, bit_depth, color_type = struct.unpack(">IIBB", data[16:26])
    return height, width, bit_depth, color_type


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise _error(FileNotFoundError, f"file {path!r} does not exist.") from None


def _validate_example(image: bytes, label: bytes | None, disparity: bytes | None, sources) -> None:
    """Checks one example's PNG bytes (formats, sizes, label values); raises ValueError naming the file."""
    height, width, _, _ = _png_header(image, sources[0])
    try:
        tf.io.decode_png(image, channels=3)
    except tf.errors.OpError as error:
        raise _error(ValueError, f"cannot decode image {sources[0]} ({error.message}).") from None
    if label is not None:
        lh, lw, depth, color = _png_header(label, sources[1])
        if depth != 8 or color != 0:
            raise _error(
                ValueError,
                f"label {sources[1]} is a PNG of bit depth {depth}, color type {color}; expected 8-bit "
                "grayscale label ids (use *_gtFine_labelIds.png, not *_color.png or *_labelTrainIds.png).",
            )
        if (lh, lw) != (height, width):
            raise _error(ValueError, f"label {sources[1]} is {lh}x{lw} but its image is {height}x{width}.")
        values = tf.io.decode_png(label, channels=1).numpy()
        if values.size and values.max() >= NUM_LABEL_IDS:
            raise _error(
                ValueError, f"label {sources[1]} holds id {values.max()}; Cityscapes label ids are 0..33."
            )
    if disparity is not None:
        dh, dw, depth, color = _png_header(disparity, sources[2])
        if depth != 16 or color != 0:
            raise _error(
                ValueError,
                f"disparity {sources[2]} is a PNG of bit depth {depth}, color type {color}; expected a "
                "16-bit grayscale PNG.",
            )
        if (dh, dw) != (height, width):
            raise _error(ValueError, f"disparity {sources[2]} is {dh}x{dw} but its image is {height}x{width}.")
        try:
            tf.io.decode_png(disparity, channels=1, dtype=tf.uint16)
        except tf.errors.OpError as error:
            raise _error(ValueError, f"cannot decode disparity {sources[2]} ({error.message}).") from None


def _check_common(batch_size, num_classes, depth_mode, image_size, tasks, validate="first"):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if num_classes not in (7, 19):
        raise ValueError(f"num_classes must be 7 (categories) or 19 (train ids), got {num_classes!r}.")
    if depth_mode not in ("depth", "disparity"):
        raise ValueError(f"depth_mode must be 'depth' or 'disparity', got {depth_mode!r}.")
    if validate not in ("first", "all"):
        raise ValueError(f"validate must be 'first' or 'all', got {validate!r}.")
    if image_size is not None:
        try:
            image_size = tuple(int(v) for v in image_size)
        except (TypeError, ValueError):
            raise ValueError(f"image_size must be None or (height, width), got {image_size!r}.") from None
        if len(image_size) != 2 or min(image_size) <= 0:
            raise ValueError(f"image_size must be None or positive (height, width), got {image_size!r}.")
    if tasks is None:
        tasks = list(_TASKS)
    else:
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        unknown = [t for t in tasks if t not in _TASKS]
        if unknown or not tasks:
            raise ValueError(f"Cityscapes: unknown task(s) {unknown or tasks!r}; available tasks are {list(_TASKS)}.")
        tasks = list(dict.fromkeys(tasks))
    return image_size, tasks


def _decoder(tasks, num_classes, depth_mode, baseline, focal_length, image_size):
    """A tf function (image_png, label_png, disparity_png) -> (image, labels dict)."""
    table = tf.constant(_ID_TO_CATEGORY if num_classes == 7 else _ID_TO_TRAIN_ID)

    def decode(image_png, label_png, disparity_png):
        image = tf.cast(tf.io.decode_png(image_png, channels=3), tf.float32)
        width = tf.cast(tf.shape(image)[1], tf.float32)
        labels = {}
        if "segmentation" in tasks:
            ids = tf.cast(tf.io.decode_png(label_png, channels=1)[..., 0], tf.int32)
            labels["segmentation"] = tf.gather(table, ids)
        if "depth" in tasks:
            raw = tf.io.decode_png(disparity_png, channels=1, dtype=tf.uint16)
            labels["depth"] = disparity_to_depth(raw, baseline, focal_length, depth_mode)
        if image_size is not None:
            image = tf.image.resize(image, image_size, method="bilinear")
            if "segmentation" in labels:
                labels["segmentation"] = tf.image.resize(
                    labels["segmentation"][..., None], image_size, method="nearest"
                )[..., 0]
            if "depth" in labels:
                depth = tf.image.resize(labels["depth"], image_size, method="nearest")
                if depth_mode == "disparity":
                    depth = depth * (float(image_size[1]) / width)
                labels["depth"] = depth
        height, width_ = image_size if image_size is not None else (None, None)
        image = tf.ensure_shape(image, [height, width_, 3])
        if "segmentation" in labels:
            labels["segmentation"] = tf.ensure_shape(labels["segmentation"], [height, width_])
        if "depth" in labels:
            labels["depth"] = tf.ensure_shape(labels["depth"], [height, width_, 1])
        return image, labels

    return decode


def _finish(dataset, batch_size, drop_remainder):
    return dataset.batch(int(batch_size), drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def load_cityscapes(root, split: str = "train", batch_size: int = 8, *, num_classes: int = 7, image_size=None,
                    depth_mode: str = "depth", baseline: float = CITYSCAPES_BASELINE_M,
                    focal_length: float = CITYSCAPES_FOCAL_PX, tasks=None, shuffle: bool = False,
                    seed: int | None = None, validate: str = "first",
                    drop_remainder: bool = False) -> tf.data.Dataset:
    """Reads Cityscapes segmentation and depth from the official on-disk layout.

    When the dataset is created, the folders are checked, every image is paired
    with its label-id and disparity PNG (for the selected tasks), and the first
    example (or all, with `validate="all"`) is decoded and checked: label PNGs
    are 8-bit grayscale with ids 0..33, disparity PNGs 16-bit grayscale, all of
    the image's size.

    Args:
        root: Folder holding `leftImg8bit/`, `gtFine/` and `disparity/`.
        split: "train", "val" or "test".
        batch_size: Examples per batch.
        num_classes: 7 (categories, the MTL papers' setting) or 19 (train ids).
        image_size: None to keep 1024×2048 (examples must then share one size),
            or (height, width): images resized bilinearly, labels and depth
            with nearest neighbour.
        depth_mode: "depth" (metres, b·f/d) or "disparity" (pixels of the
            output image). See the module docstring.
        baseline: Stereo baseline in metres used for "depth".
        focal_length: Focal length in pixels used for "depth".
        tasks: None for ("segmentation", "depth"), or a subset; only the
            folders of the selected tasks are required.
        shuffle: Shuffle the examples, anew each epoch.
        seed: Shuffle seed.
        validate: "first" or "all" examples checked up front.
        drop_remainder: Drop the last incomplete batch.

    Returns:
        A `tf.data.Dataset` of `(image float32 [B, H, W, 3] in [0, 255],
        {"segmentation": int32 [B, H, W] (-1 = ignore), "depth": float32
        [B, H, W, 1] (0 = invalid)})`, restricted to `tasks`.

    Raises:
        FileNotFoundError: a missing folder, or an image without its label or disparity file.
        ValueError: a malformed file (not a PNG, wrong bit depth or channels,
            size mismatch, label id > 33) or bad arguments.

    Example:
    ```python
    from mtlzoo.data.cityscapes_tfds import load_cityscapes

    train = load_cityscapes("~/data/cityscapes", "train", batch_size=8, image_size=(128, 256),
                            num_classes=7, shuffle=True, seed=0)
    image, labels = next(iter(train))   # labels["segmentation"] (8, 128, 256), ["depth"] (8, 128, 256, 1)
    ```

    Reference:
        Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene Understanding", CVPR 2016.
    """
    image_size, tasks = _check_common(batch_size, num_classes, depth_mode, image_size, tasks, validate)
    root = os.path.expanduser(os.fspath(root))
    if not os.path.isdir(root):
        raise _error(FileNotFoundError, f"root folder {root!r} does not exist.")
    folders = {"image": os.path.join(root, "leftImg8bit", split)}
    if "segmentation" in tasks:
        folders["segmentation"] = os.path.join(root, "gtFine", split)
    if "depth" in tasks:
        folders["depth"] = os.path.join(root, "disparity", split)
    for folder in folders.values():
        if not os.path.isdir(folder):
            raise _error(FileNotFoundError, f"folder {folder!r} does not exist.")

    suffix = {"segmentation": "_gtFine_labelIds.png", "depth": "_disparity.png"}
    columns = {key: [] for key in folders}
    for city in sorted(os.listdir(folders["image"])):
        city_dir = os.path.join(folders["image"], city)
        if not os.path.isdir(city_dir):
            continue
        for name in sorted(os.listdir(city_dir)):
            match = _IMAGE_RE.match(name)
            if not match:
                continue
            columns["image"].append(os.path.join(city_dir, name))
            for task in tasks:
                path = os.path.join(folders[task], city, match.group(1) + suffix[task])
                if not os.path.isfile(path):
                    raise _error(
                        FileNotFoundError,
                        f"image {os.path.join(city_dir, name)!r} has no {task} file {path!r}.",
                    )
                columns[task].append(path)
    if not columns["image"]:
        raise _error(FileNotFoundError, f"no *_leftImg8bit.png images under {folders['image']!r}/{{city}}/.")

    count = len(columns["image"])
    for index in range(count if validate == "all" else 1):
        paths = [columns["image"][index], columns.get("segmentation", [None] * count)[index],
                 columns.get("depth", [None] * count)[index]]
        _validate_example(*[_read_bytes(p) if p else None for p in paths], [repr(p) for p in paths])

    empty = tf.constant([""] * count)
    slices = (
        tf.constant(columns["image"]),
        tf.constant(columns["segmentation"]) if "segmentation" in tasks else empty,
        tf.constant(columns["depth"]) if "depth" in tasks else empty,
    )
    decode = _decoder(tasks, num_classes, depth_mode, baseline, focal_length, image_size)

    def load(image_path, label_path, disparity_path):
        read = tf.io.read_file
        return decode(
            read(image_path),
            read(label_path) if "segmentation" in tasks else None,
            read(disparity_path) if "depth" in tasks else None,
        )

    dataset = tf.data.Dataset.from_tensor_slices(slices)
    if shuffle:
        dataset = dataset.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _finish(dataset, batch_size, drop_remainder)


# --------------------------------------------------------------------------- tfds


TFDS_CONFIG_NAME = "mtlzoo_segmentation_disparity"
TFDS_REQUIRED_ZIPS = ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip", "disparity_trainvaltest.zip")
_TFDS_SPLITS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


def _tfds_classes():
    import tensorflow_datasets as tfds

    try:
        from tensorflow_datasets.datasets.cityscapes import cityscapes_dataset_builder as module
    except ImportError:  # older tfds layouts
        import importlib

        module = importlib.import_module(tfds.builder_cls("cityscapes").__module__)
    return tfds, module.Builder, module.CityscapesConfig


def tfds_builder_config():
    """A tfds `CityscapesConfig` with both gtFine label ids and disparity maps enabled.

    tfds's stock `cityscapes` configs hold either segmentation
    (`semantic_segmentation`) or disparity (`stereo_disparity`, with right
    images); this one, named "mtlzoo_segmentation_disparity", holds
    `image_left`, `segmentation_label` and `disparity_map`. It needs
    `leftImg8bit_trainvaltest.zip`, `gtFine_trainvaltest.zip` and
    `disparity_trainvaltest.zip` in the manual download folder.

    Returns:
        A `tensorflow_datasets` `CityscapesConfig`.

    Example:
    ```python
    import tensorflow_datasets as tfds
    from mtlzoo.data.cityscapes_tfds import tfds_builder_config

    builder = tfds.builder("cityscapes", config=tfds_builder_config())
    ```

    Reference:
        tensorflow_datasets `cityscapes` builder (manual download).
    """
    _, _, config_cls = _tfds_classes()
    return config_cls(
        name=TFDS_CONFIG_NAME,
        description="Cityscapes left images with gtFine label ids and disparity maps (mtlzoo).",
        right_images=False,
        segmentation_labels=True,
        disparity_maps=True,
        train_extra_split=False,
    )


def cityscapes_tfds_builder(data_dir=None):
    """The tfds `cityscapes` builder with `tfds_builder_config()`.

    Args:
        data_dir: tfds data folder (default: tfds's, usually ~/tensorflow_datasets).

    Returns:
        A `tfds.core.DatasetBuilder`; call `download_and_prepare` with a
        `DownloadConfig(manual_dir=...)` holding the official zips.

    Example:
    ```python
    import tensorflow_datasets as tfds
    from mtlzoo.data.cityscapes_tfds import cityscapes_tfds_builder

    builder = cityscapes_tfds_builder()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir="~/zips"))
    ```

    Reference:
        tensorflow_datasets `cityscapes` builder (manual download).
    """
    _, builder_cls, _ = _tfds_classes()
    return builder_cls(config=tfds_builder_config(), data_dir=data_dir)


def _is_prepared(builder) -> bool:
    method = getattr(builder, "is_prepared", None)
    if callable(method):
        return bool(method())
    return tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json"))


def load_cityscapes_tfds(split: str = "train", batch_size: int = 8, *, data_dir=None, manual_dir=None,
                         num_classes: int = 7, image_size=None, depth_mode: str = "depth",
                         baseline: float = CITYSCAPES_BASELINE_M, focal_length: float = CITYSCAPES_FOCAL_PX,
                         tasks=None, shuffle: bool = False, seed: int | None = None,
                         drop_remainder: bool = False) -> tf.data.Dataset:
    """Cityscapes segmentation and depth through tfds's `cityscapes` builder.

    Prepares the dataset from the manual download folder on first use (no
    network access: the files come from `manual_dir`), then reads it with the
    same decoding as `load_cityscapes`, so both give identical examples.

    Args:
        split: "train", "val" (or "validation") or "test".
        batch_size: Examples per batch.
        data_dir: tfds data folder for the prepared TFRecords.
        manual_dir: Folder holding the official `leftImg8bit_trainvaltest.zip`,
            `gtFine_trainvaltest.zip` and `disparity_trainvaltest.zip`; needed
            only while the dataset is not yet prepared.
        num_classes: 7 (categories) or 19 (train ids).
        image_size: None or (height, width), as in `load_cityscapes`.
        depth_mode: "depth" (metres) or "disparity" (pixels).
        baseline: Stereo baseline in metres.
        focal_length: Focal length in pixels.
        tasks: None for ("segmentation", "depth"), or a subset.
        shuffle: Shuffle files and examples.
        seed: Shuffle seed.
        drop_remainder: Drop the last incomplete batch.

    Returns:
        The dataset of `load_cityscapes`.

    Raises:
        FileNotFoundError: the dataset is not prepared and `manual_dir` lacks a zip.
        ValueError: bad arguments, or a malformed first example.

    Example:
    ```python
    from mtlzoo.data.cityscapes_tfds import load_cityscapes_tfds

    val = load_cityscapes_tfds("val", batch_size=4, manual_dir="~/downloads/cityscapes",
                               image_size=(128, 256))
    ```

    Reference:
        Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene Understanding", CVPR 2016.
    """
    image_size, tasks = _check_common(batch_size, num_classes, depth_mode, image_size, tasks)
    if split not in _TFDS_SPLITS:
        raise ValueError(f"Cityscapes (tfds): split must be one of {sorted(_TFDS_SPLITS)}, got {split!r}.")
    tfds, _, _ = _tfds_classes()
    builder = cityscapes_tfds_builder(os.path.expanduser(os.fspath(data_dir)) if data_dir else None)
    if not _is_prepared(builder):
        if manual_dir is None:
            raise FileNotFoundError(
                f"Cityscapes (tfds): the dataset is not prepared in {builder.data_dir!r}; pass manual_dir= "
                f"the folder holding {', '.join(TFDS_REQUIRED_ZIPS)} (downloaded from "
                "https://www.cityscapes-dataset.com after registration)."
            )
        manual_dir = os.path.expanduser(os.fspath(manual_dir))
        missing = [z for z in TFDS_REQUIRED_ZIPS if not os.path.isfile(os.path.join(manual_dir, z))]
        if missing:
            raise FileNotFoundError(
                f"Cityscapes (tfds): {[os.path.join(manual_dir, z) for z in missing]} not found. Expected "
                f"layout: {manual_dir}/{{{', '.join(TFDS_REQUIRED_ZIPS)}}}, the official zips unchanged."
            )
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    skip = tfds.decode.SkipDecoding()
    dataset = builder.as_dataset(
        split=_TFDS_SPLITS[split],
        shuffle_files=shuffle,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
        decoders={"image_left": skip, "segmentation_label": skip, "disparity_map": skip},
    )
    for example in dataset.take(1):
        name = example["image_id"].numpy().decode()
        _validate_example(
            example["image_left"].numpy(),
            example["segmentation_label"].numpy() if "segmentation" in tasks else None,
            example["disparity_map"].numpy() if "depth" in tasks else None,
            [f"{name} ({key} in tfds {builder.data_dir})" for key in
             ("image_left", "segmentation_label", "disparity_map")],
        )
    decode = _decoder(tasks, num_classes, depth_mode, baseline, focal_length, image_size)
    dataset = dataset.map(
        lambda ex: decode(ex["image_left"], ex["segmentation_label"], ex["disparity_map"]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if shuffle:
        dataset = dataset.shuffle(256, seed=seed, reshuffle_each_iteration=True)
    return _finish(dataset, batch_size, drop_remainder)
