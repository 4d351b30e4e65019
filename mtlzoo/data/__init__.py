"""Datasets of mtlzoo: one `load` for every dataset, returning model-ready batches.

`load(name, ...)` returns a batched, prefetched `tf.data.Dataset` of
`(image, labels)` ready for `model.fit`: `image` float32 [B, H, W, 3] in
[0, 255] and `labels` a dict keyed by task name (`segmentation`, `depth`,
`detection`, `scene`; see `mtlzoo.data.pipeline` for shapes and the values
that mark a missing label).

Built in: `synthetic_driving` (rendered procedurally, no download; see
`mtlzoo.data.synthetic_driving`). Importing this package also registers the
`synthetic_driving` tfds builder, so `tfds.load("synthetic_driving")` works.

Other readers plug in with `register_reader(name, "module:function")` (lazy) or
a callable; a reader is called as
`reader(split=..., image_size=..., batch_size=..., data_dir=..., num_examples=...,
seed=..., label_fractions=..., shuffle=..., **options)` and returns the same
kind of dataset (the shared stages are in `mtlzoo.data.pipeline`).

Example:
```python
import mtlzoo.data
ds = mtlzoo.data.load("synthetic_driving", split="train", batch_size=8, num_examples=256)
model.fit(ds, epochs=2)
```
"""

from __future__ import annotations

import importlib
import numbers

from mtlzoo.data import pipeline
from mtlzoo.data.pipeline import TASKS, validate_image_size, validate_label_fractions, validate_tasks
from mtlzoo.registry import suggestion

# Registers the "synthetic_driving" tfds builder as a side effect.
from mtlzoo.data import synthetic_driving  # noqa: E402  isort: skip

# name -> reader callable, or "module:function" imported on first use.
_READERS: dict = {
    "synthetic_driving": "mtlzoo.data.synthetic_driving:load",
}
DATASETS: list = list(_READERS)


def register_reader(name: str, reader) -> None:
    """Adds a dataset reader under `name` (a callable or a lazy "module:function" path).

    Args:
        name: str. Dataset name used by `load`.
        reader: callable or "package.module:function".

    Raises:
        ValueError: when `name` is taken already.

    Example:
    ```python
    import mtlzoo.data
    mtlzoo.data.register_reader("cityscapes", "mtlzoo.data.cityscapes:load")
    ```
    """
    if name in _READERS:
        raise ValueError(f"A dataset named {name!r} is registered already.")
    _READERS[name] = reader
    DATASETS.append(name)


# The on-disk readers, adapted to the common signature (folder = data_dir).
for _name in ("nyuv2_npy", "cityscapes_npy", "cityscapes", "bdd100k"):
    register_reader(_name, f"mtlzoo.data.adapters:{_name}")
register_reader("correlated_tasks", "mtlzoo.data.correlated_tasks:load")  # Ma et al. 2018 synthetic pair


def get_reader(name: str):
    if not isinstance(name, str) or name not in _READERS:
        raise ValueError(
            f"Unknown dataset {name!r}.{suggestion(str(name), DATASETS)} Known datasets: {', '.join(DATASETS)}."
        )
    reader = _READERS[name]
    if isinstance(reader, str):
        module, attr = reader.split(":")
        reader = getattr(importlib.import_module(module), attr)
        _READERS[name] = reader
    return reader


def load(
    name: str,
    split: str = "train",
    batch_size: int = 8,
    image_size=(128, 256),
    data_dir=None,
    num_examples=None,
    seed: int = 0,
    label_fractions=None,
    shuffle=None,
    **options,
):
    """Loads dataset `name` as a batched, prefetched `tf.data.Dataset` of (image, labels).

    Args:
        name: str. One of `DATASETS` (e.g. "synthetic_driving").
        split: str. "train", "validation" or "test". Defaults to "train".
        batch_size: int > 0. Defaults to 8.
        image_size: (H, W), both positive multiples of 32, or None for datasets of vectors. Defaults to
            (128, 256).
        data_dir: str or None. Where prepared files live; for
            `synthetic_driving`, giving one switches from on-the-fly rendering to
            tfds files prepared there (no download either way).
        num_examples: int > 0 or None. Use the first `num_examples` examples of
            the split; None for the dataset's default.
        seed: int >= 0. Dataset seed (scenes of synthetic data, shuffling,
            augmentation, label dropping).
        label_fractions: dict {task: fraction in [0, 1]}, e.g. {"depth": 0.3}:
            keep that task's label on about that fraction of training examples
            (deterministic per seed and example index); the others carry the
            task's missing value (segmentation -1, depth 0.0, detection -1,
            scene -1).
        shuffle: bool or None. None shuffles the train split only.
        **options: reader options; for `synthetic_driving`: `tasks` (label
            keys to emit), `augment` (random horizontal flip, default on train),
            `with_boxes` (add raw `boxes`/`box_classes`/`num_boxes`),
            `max_boxes`, `cache`, `drop_remainder`, `source` ("memory"/"tfds"),
            `split_sizes`, `shuffle_buffer`.

    Returns:
        `tf.data.Dataset` yielding `(image, labels)`; see `mtlzoo.data.pipeline`.

    Raises:
        ValueError: unknown dataset (with a near-match suggestion), bad
            image_size, batch_size, seed or num_examples, label fraction
            outside [0, 1] or naming an unknown task, unknown task in `tasks`.

    Example:
    ```python
    import mtlzoo.data
    train = mtlzoo.data.load("synthetic_driving", batch_size=8, num_examples=512,
                             label_fractions={"depth": 0.3})
    val = mtlzoo.data.load("synthetic_driving", split="validation", batch_size=8)
    ```
    """
    reader = get_reader(name)
    image_size = None if image_size is None else validate_image_size(image_size)  # None: vector inputs
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}.")
    if num_examples is not None:
        if isinstance(num_examples, bool) or not isinstance(num_examples, numbers.Integral):
            raise ValueError(f"num_examples must be a positive int or None, got {num_examples!r}.")
        if num_examples <= 0:
            raise ValueError(
                f"num_examples={num_examples} would give an empty {split} split; pass a positive count "
                "or None for the dataset's default."
            )
    validate_label_fractions(label_fractions)
    return reader(
        split=split,
        batch_size=int(batch_size),
        image_size=image_size,
        data_dir=data_dir,
        num_examples=None if num_examples is None else int(num_examples),
        seed=int(seed),
        label_fractions=label_fractions,
        shuffle=shuffle,
        **options,
    )


__all__ = [
    "DATASETS",
    "TASKS",
    "load",
    "pipeline",
    "register_reader",
    "synthetic_driving",
    "validate_image_size",
]
