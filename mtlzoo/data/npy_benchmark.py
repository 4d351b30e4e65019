"""Readers for the pre-processed NYUv2 and Cityscapes `.npy` benchmarks of the MTL literature.

The multi-task-learning papers built on MTAN (Liu et al., CVPR 2019) — Nash-MTL,
LibMTL, CAGrad, FAMO and many more — train on one shared pre-processing of
NYUv2 (288×384, 13 classes, depth, surface normals) and Cityscapes (128×256,
7 or 19 classes, depth), stored as one `.npy` file per example and task:

    {root}/{split}/image/{i}.npy      float [H, W, 3], values in [0, 1]
    {root}/{split}/label/{i}.npy      NYUv2: [H, W], class ids 0..12, -1 = ignore
    {root}/{split}/label_7/{i}.npy    Cityscapes: [H, W], ids 0..6, -1 = ignore
    {root}/{split}/label_19/{i}.npy   Cityscapes: [H, W], ids 0..18, -1 = ignore
    {root}/{split}/depth/{i}.npy      [H, W] or [H, W, 1], 0 = invalid
    {root}/{split}/normal/{i}.npy     NYUv2: [H, W, 3], zero vector = invalid

with `split` in {train, val} and `i` = 0, 1, 2, .... The image files hold floats
in [0, 1] (MTAN's loader feeds them to the network unchanged); these readers
multiply them by 255 so that every mtlzoo reader yields images in [0, 255]
(`image_range="byte"` reads files that already hold [0, 255]).

Labels are stored as floats in the original files; they are checked to be
integral and returned as int32 with -1 kept as the ignore value.

Reference:
    Liu, Johns and Davison, "End-to-End Multi-Task Learning with Attention",
    CVPR 2019 (https://github.com/lorenmt/mtan). Navon et al., "Multi-Task
    Learning as a Bargaining Game", ICML 2022. Lin and Zhang, "LibMTL: A Python
    Library for Multi-Task Learning", JMLR 2023.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

__all__ = ["load_nyuv2_npy", "load_cityscapes_npy", "NYUV2_NUM_CLASSES", "IGNORE_LABEL"]

NYUV2_NUM_CLASSES = 13
IGNORE_LABEL = -1
_IMAGE_TOLERANCE = 1e-3
_INDEX_RE = re.compile(r"^(\d+)\.npy$")

_NYUV2_LAYOUT = """Expected layout (MTAN / Nash-MTL / LibMTL NYUv2 pre-processing):
  {root}/{split}/image/{i}.npy    float [H, W, 3] in [0, 1]
  {root}/{split}/label/{i}.npy    [H, W] class ids 0..12, -1 = ignore
  {root}/{split}/depth/{i}.npy    [H, W] or [H, W, 1], 0 = invalid
  {root}/{split}/normal/{i}.npy   [H, W, 3], zero vector = invalid
with split in {train, val} and i = 0, 1, 2, ..."""

_CITYSCAPES_LAYOUT = """Expected layout (MTAN / Nash-MTL / LibMTL Cityscapes pre-processing):
  {root}/{split}/image/{i}.npy       float [H, W, 3] in [0, 1]
  {root}/{split}/label_7/{i}.npy     [H, W] class ids 0..6, -1 = ignore (num_classes=7)
  {root}/{split}/label_19/{i}.npy    [H, W] class ids 0..18, -1 = ignore (num_classes=19)
  {root}/{split}/depth/{i}.npy       [H, W] or [H, W, 1], 0 = invalid
with split in {train, val} and i = 0, 1, 2, ..."""


@dataclass(frozen=True)
class _Spec:
    name: str
    layout: str
    num_classes: int
    folders: dict  # task -> folder name


def _layout_error(cls, message: str, spec: _Spec):
    return cls(f"{spec.name}: {message}\n{spec.layout}")


def _select_tasks(tasks, available, dataset: str) -> list[str]:
    if tasks is None:
        return list(available)
    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in available]
    if unknown or not tasks:
        raise ValueError(
            f"{dataset}: unknown task(s) {unknown or tasks!r}; available tasks are {list(available)}."
        )
    return list(dict.fromkeys(tasks))


def _check_image_size(image_size):
    if image_size is None:
        return None
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be None or (height, width), got {image_size!r}.") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be positive, got {image_size!r}.")
    return height, width


def _list_npy(folder: str, spec: _Spec) -> dict[int, str]:
    """Index -> path of the `{i}.npy` files in `folder`."""
    if not os.path.isdir(folder):
        raise _layout_error(FileNotFoundError, f"folder {folder!r} does not exist.", spec)
    found = {}
    for name in os.listdir(folder):
        if not name.endswith(".npy"):
            continue
        match = _INDEX_RE.match(name)
        if not match:
            raise _layout_error(
                ValueError,
                f"file {os.path.join(folder, name)!r} is not named {{i}}.npy with an integer index i.",
                spec,
            )
        found[int(match.group(1))] = os.path.join(folder, name)
    return found


def _load_npy(path: str, spec: _Spec) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise _layout_error(FileNotFoundError, f"file {path!r} does not exist.", spec) from None
    except Exception as error:  # noqa: BLE001 - any unreadable file is a malformed record.
        raise _layout_error(ValueError, f"cannot read {path!r} as a .npy array ({error}).", spec) from None
    if not isinstance(array, np.ndarray):
        raise _layout_error(ValueError, f"{path!r} does not hold a single array.", spec)
    return array


def _check_numeric(array, path, what, spec, allow_int=True):
    kinds = "fiu" if allow_int else "f"
    if array.dtype.kind not in kinds:
        expected = "a float or integer" if allow_int else "a float"
        raise _layout_error(
            ValueError, f"{what} {path!r} has dtype {array.dtype}; expected {expected} array.", spec
        )
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise _layout_error(ValueError, f"{what} {path!r} contains NaN or inf values.", spec)


def _read_image(path, spec, image_range, expected_hw):
    image = _load_npy(path, spec)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise _layout_error(ValueError, f"image {path!r} has shape {image.shape}; expected [H, W, 3].", spec)
    if expected_hw is not None and image.shape[:2] != expected_hw:
        raise _layout_error(
            ValueError,
            f"image {path!r} has size {image.shape[:2]} but the first image has {expected_hw}; "
            "pass image_size=(H, W) to resize examples of different sizes.",
            spec,
        )
    _check_numeric(image, path, "image", spec, allow_int=image_range == "byte")
    top = 1.0 if image_range == "unit" else 255.0
    low, high = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
    if low < -_IMAGE_TOLERANCE * top or high > top * (1 + _IMAGE_TOLERANCE):
        hint = (
            " The benchmark files hold [0, 1]; pass image_range='byte' for files holding [0, 255]."
            if image_range == "unit"
            else ""
        )
        raise _layout_error(
            ValueError,
            f"image {path!r} has values in [{low:g}, {high:g}], outside [0, {top:g}] "
            f"(image_range={image_range!r}).{hint}",
            spec,
        )
    image = image.astype(np.float32)
    if image_range == "unit":
        image = image * np.float32(255.0)
    return np.clip(image, 0.0, 255.0)


def _read_label(path, spec, hw):
    label = _load_npy(path, spec)
    if label.ndim == 3 and label.shape[-1] == 1:
        label = label[..., 0]
    if label.shape != hw:
        raise _layout_error(
            ValueError, f"label {path!r} has shape {label.shape}; expected {hw} (the image's [H, W]).", spec
        )
    _check_numeric(label, path, "label", spec)
    if label.dtype.kind == "f" and not np.all(label == np.round(label)):
        raise _layout_error(ValueError, f"label {path!r} holds non-integer class ids.", spec)
    if label.size and (label.min() < IGNORE_LABEL or label.max() >= spec.num_classes):
        raise _layout_error(
            ValueError,
            f"label {path!r} has ids in [{label.min():g}, {label.max():g}]; expected 0..{spec.num_classes - 1} "
            f"or {IGNORE_LABEL} (ignore).",
            spec,
        )
    return label.astype(np.int32)


def _read_depth(path, spec, hw):
    depth = _load_npy(path, spec)
    if depth.ndim == 2:
        depth = depth[..., None]
    if depth.ndim != 3 or depth.shape != hw + (1,):
        raise _layout_error(
            ValueError, f"depth {path!r} has shape {depth.shape}; expected {hw} or {hw + (1,)}.", spec
        )
    _check_numeric(depth, path, "depth", spec)
    if depth.size and depth.min() < 0:
        raise _layout_error(ValueError, f"depth {path!r} has negative values (0 marks invalid pixels).", spec)
    return depth.astype(np.float32)


def _read_normal(path, spec, hw):
    normal = _load_npy(path, spec)
    if normal.shape != hw + (3,):
        raise _layout_error(
            ValueError, f"normal {path!r} has shape {normal.shape}; expected {hw + (3,)}.", spec
        )
    _check_numeric(normal, path, "normal", spec, allow_int=False)
    return normal.astype(np.float32)


_READERS = {"segmentation": _read_label, "depth": _read_depth, "normal": _read_normal}
_CHANNELS = {"depth": 1, "normal": 3}


def _build(root, split, spec: _Spec, *, batch_size, image_size, shuffle, seed, tasks, image_range,
           validate, drop_remainder):
    if image_range not in ("unit", "byte"):
        raise ValueError(f"image_range must be 'unit' (files hold [0, 1]) or 'byte' ([0, 255]), got {image_range!r}.")
    if validate not in ("first", "all"):
        raise ValueError(f"validate must be 'first' or 'all', got {validate!r}.")
    if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    image_size = _check_image_size(image_size)
    tasks = _select_tasks(tasks, list(spec.folders), spec.name)
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise _layout_error(FileNotFoundError, f"root folder {root!r} does not exist.", spec)
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        present = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        raise _layout_error(
            FileNotFoundError, f"split folder {split_dir!r} does not exist (found: {present}).", spec
        )

    images = _list_npy(os.path.join(split_dir, "image"), spec)
    if not images:
        raise _layout_error(ValueError, f"no {{i}}.npy files in {os.path.join(split_dir, 'image')!r}.", spec)
    ids = sorted(images)
    columns = {"image": [images[i] for i in ids]}
    for task in tasks:
        folder = os.path.join(split_dir, spec.folders[task])
        files = _list_npy(folder, spec)
        missing = [i for i in ids if i not in files]
        if missing:
            raise _layout_error(
                FileNotFoundError,
                f"{len(missing)} image(s) have no {task} file, e.g. {os.path.join(folder, f'{missing[0]}.npy')!r} "
                f"is missing for image {images[missing[0]]!r}.",
                spec,
            )
        orphans = sorted(set(files) - set(images))
        if orphans:
            raise _layout_error(
                FileNotFoundError,
                f"{len(orphans)} {task} file(s) have no image, e.g. {files[orphans[0]]!r} has no "
                f"{os.path.join(split_dir, 'image', f'{orphans[0]}.npy')!r}.",
                spec,
            )
        columns[task] = [files[i] for i in ids]

    first_hw = None

    def load(index: int):
        image = _read_image(columns["image"][index], spec, image_range, None if image_size else first_hw)
        hw = image.shape[:2]
        return (image,) + tuple(_READERS[t](columns[t][index], spec, hw) for t in tasks)

    first = load(0)
    first_hw = first[0].shape[:2]
    if validate == "all":
        for index in range(1, len(ids)):
            load(index)

    dtypes = [tf.float32] + [tf.int32 if t == "segmentation" else tf.float32 for t in tasks]

    def fetch(index):
        values = tf.numpy_function(lambda i: load(int(i)), [index], dtypes, stateful=False)
        height, width = (None, None) if image_size else first_hw
        image = tf.ensure_shape(values[0], [height, width, 3])
        labels = {}
        for task, value in zip(tasks, values[1:]):
            shape = [height, width] if task == "segmentation" else [height, width, _CHANNELS[task]]
            labels[task] = tf.ensure_shape(value, shape)
        if image_size is not None:
            image = tf.image.resize(image, image_size, method="bilinear")
            for task, value in labels.items():
                value = value[..., None] if task == "segmentation" else value
                value = tf.image.resize(value, image_size, method="nearest")
                labels[task] = value[..., 0] if task == "segmentation" else value
            image = tf.ensure_shape(image, [*image_size, 3])
        return image, labels

    dataset = tf.data.Dataset.range(len(ids))
    if shuffle:
        dataset = dataset.shuffle(len(ids), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(fetch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(int(batch_size), drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)


def load_nyuv2_npy(root, split: str = "train", batch_size: int = 8, *, image_size=None, shuffle: bool = False,
                   seed: int | None = None, tasks=None, image_range: str = "unit", validate: str = "first",
                   drop_remainder: bool = False) -> tf.data.Dataset:
    """Reads the MTAN pre-processed NYUv2 (13-class segmentation, depth, normals) from `.npy` files.

    The folder layout is checked when the dataset is created: the split folder
    and the task folders exist, every image has one file per selected task and
    vice versa, and the first example (or every example, with `validate="all"`)
    has the right shapes, dtypes, value ranges and no NaN/inf. A malformed
    later record found while iterating raises the same `ValueError` message
    inside the tf.data pipeline (surfaced by TensorFlow as an
    `InvalidArgumentError`/`UnknownError` that contains it).

    Args:
        root: Folder holding `train/` and `val/` (the unzipped `nyuv2` download of MTAN).
        split: Sub-folder to read, "train" or "val".
        batch_size: Examples per batch.
        image_size: None to keep the stored size (288×384), or (height, width):
            images are resized bilinearly, segmentation, depth and normals with
            nearest neighbour (so ignore ids and invalid zeros are never mixed in).
        shuffle: Shuffle the examples, anew each epoch.
        seed: Shuffle seed.
        tasks: None for all of ("segmentation", "depth", "normal"), or a subset
            (only those folders are then required).
        image_range: "unit" (default): the image files hold [0, 1], as in MTAN's
            release, and are multiplied by 255; "byte": they already hold [0, 255].
        validate: "first" checks the first example up front; "all" reads and
            checks every example up front.
        drop_remainder: Drop the last incomplete batch.

    Returns:
        A `tf.data.Dataset` of `(image, labels)`: image float32 [B, H, W, 3] in
        [0, 255]; labels a dict with "segmentation" int32 [B, H, W] (ids 0..12,
        -1 = ignore), "depth" float32 [B, H, W, 1] (0 = invalid) and "normal"
        float32 [B, H, W, 3] (zero vector = invalid), restricted to `tasks`.

    Raises:
        FileNotFoundError: a missing root, split or task folder, or an image
            without its label file (or a label file without its image).
        ValueError: a malformed record (unreadable file, wrong shape or dtype,
            NaN/inf, non-integer or out-of-range class id, image values outside
            `image_range`), or bad arguments.

    Example:
    ```python
    from mtlzoo.data.npy_benchmark import load_nyuv2_npy

    train = load_nyuv2_npy("~/data/nyuv2", "train", batch_size=8, shuffle=True, seed=0)
    image, labels = next(iter(train))
    image.shape, labels["segmentation"].shape   # (8, 288, 384, 3), (8, 288, 384)
    ```

    Reference:
        Liu et al., "End-to-End Multi-Task Learning with Attention", CVPR 2019;
        Silberman et al., "Indoor Segmentation and Support Inference from RGBD
        Images", ECCV 2012.
    """
    spec = _Spec(
        name="NYUv2 (npy)",
        layout=_NYUV2_LAYOUT,
        num_classes=NYUV2_NUM_CLASSES,
        folders={"segmentation": "label", "depth": "depth", "normal": "normal"},
    )
    return _build(os.path.expanduser(os.fspath(root)), split, spec, batch_size=batch_size, image_size=image_size,
                  shuffle=shuffle, seed=seed, tasks=tasks, image_range=image_range, validate=validate,
                  drop_remainder=drop_remainder)


def load_cityscapes_npy(root, split: str = "train", batch_size: int = 8, num_classes: int = 7, *,
                        image_size=None, shuffle: bool = False, seed: int | None = None, tasks=None,
                        image_range: str = "unit", validate: str = "first",
                        drop_remainder: bool = False) -> tf.data.Dataset:
    """Reads the MTAN pre-processed Cityscapes (7- or 19-class segmentation, depth) from `.npy` files.

    Segmentation is read from `label_{num_classes}/`; the depth files are passed
    through unchanged (MTAN stores them at 128×256 with 0 marking invalid
    pixels). Checks and error behaviour are those of `load_nyuv2_npy`.

    Args:
        root: Folder holding `train/` and `val/` (the unzipped `cityscapes` download of MTAN).
        split: Sub-folder to read, "train" or "val".
        batch_size: Examples per batch.
        num_classes: 7 (the categories used by MTAN / Nash-MTL / LibMTL) or 19;
            any N whose `label_N/` folder exists is accepted.
        image_size: None to keep the stored size, or (height, width): images
            are resized bilinearly, labels and depth with nearest neighbour.
        shuffle: Shuffle the examples, anew each epoch.
        seed: Shuffle seed.
        tasks: None for ("segmentation", "depth"), or a subset.
        image_range: "unit" (default, files hold [0, 1], multiplied by 255) or
            "byte" (files hold [0, 255]).
        validate: "first" or "all" examples checked when the dataset is created.
        drop_remainder: Drop the last incomplete batch.

    Returns:
        A `tf.data.Dataset` of `(image float32 [B, H, W, 3] in [0, 255],
        {"segmentation": int32 [B, H, W] (-1 = ignore), "depth": float32
        [B, H, W, 1] (0 = invalid)})`, restricted to `tasks`.

    Raises:
        FileNotFoundError: a missing root, split or task folder, or unpaired files.
        ValueError: a malformed record or bad arguments.

    Example:
    ```python
    from mtlzoo.data.npy_benchmark import load_cityscapes_npy

    val = load_cityscapes_npy("~/data/cityscapes", "val", batch_size=8, num_classes=7)
    image, labels = next(iter(val))   # image (8, 128, 256, 3); labels["depth"] (8, 128, 256, 1)
    ```

    Reference:
        Liu et al., "End-to-End Multi-Task Learning with Attention", CVPR 2019;
        Cordts et al., "The Cityscapes Dataset for Semantic Urban Scene
        Understanding", CVPR 2016.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2 (7 or 19 in the benchmark), got {num_classes!r}.")
    spec = _Spec(
        name="Cityscapes (npy)",
        layout=_CITYSCAPES_LAYOUT,
        num_classes=int(num_classes),
        folders={"segmentation": f"label_{int(num_classes)}", "depth": "depth"},
    )
    return _build(os.path.expanduser(os.fspath(root)), split, spec, batch_size=batch_size, image_size=image_size,
                  shuffle=shuffle, seed=seed, tasks=tasks, image_range=image_range, validate=validate,
                  drop_remainder=drop_remainder)
