"""The on-disk dataset readers under the common `mtlzoo.data.load` signature.

`mtlzoo.data.load(name, split=..., image_size=..., batch_size=..., data_dir=...,
num_examples=..., seed=..., label_fractions=..., shuffle=..., **options)` calls
a reader with those keywords. The readers of real datasets take the folder as
their first argument and know nothing of `num_examples` or `label_fractions`;
the functions here adapt them:

- `data_dir` is the dataset folder (required);
- the split "validation" is read from the folder `val`;
- `num_examples` keeps that many examples per pass (after shuffling, so a
  shuffled train split gives a different subset each epoch);
- `label_fractions` is not supported (an error);
- `shuffle=None` shuffles the train split only.

Example:
```python
import mtlzoo.data
val = mtlzoo.data.load("nyuv2_npy", split="validation", data_dir="~/data/nyuv2",
                       image_size=(288, 384), batch_size=8)
```
"""

from __future__ import annotations

from mtlzoo.data.bdd100k import load_bdd100k
from mtlzoo.data.cityscapes_tfds import load_cityscapes
from mtlzoo.data.npy_benchmark import load_cityscapes_npy, load_nyuv2_npy

_SPLITS = {"validation": "val"}


def _read(name, loader, split, image_size, batch_size, data_dir, num_examples, seed, label_fractions, shuffle,
          **options):
    if data_dir is None:
        raise ValueError(
            f"Dataset {name!r} is read from disk: pass data_dir= (on the command line --data-dir DIR, "
            "in a recipe data.data_dir)."
        )
    if label_fractions:
        raise ValueError(
            f"Dataset {name!r} does not support label_fractions; drop labels in a dataset.map instead."
        )
    split = _SPLITS.get(split, split)
    shuffle = split == "train" if shuffle is None else bool(shuffle)
    ds = loader(data_dir, split, batch_size=batch_size, image_size=tuple(image_size), shuffle=shuffle, seed=seed,
                **options)
    if num_examples is not None:
        ds = ds.unbatch().take(int(num_examples)).batch(batch_size)
    return ds


def nyuv2_npy(split="train", *, image_size, batch_size, data_dir=None, num_examples=None, seed=0,
              label_fractions=None, shuffle=None, tasks=None, image_range="unit", validate="first",
              drop_remainder=False):
    """`load_nyuv2_npy` as a `mtlzoo.data.load` reader (registered as "nyuv2_npy")."""
    return _read("nyuv2_npy", load_nyuv2_npy, split, image_size, batch_size, data_dir, num_examples, seed,
                 label_fractions, shuffle, tasks=tasks, image_range=image_range, validate=validate,
                 drop_remainder=drop_remainder)


def cityscapes_npy(split="train", *, image_size, batch_size, data_dir=None, num_examples=None, seed=0,
                   label_fractions=None, shuffle=None, tasks=None, num_classes=7, image_range="unit",
                   validate="first", drop_remainder=False):
    """`load_cityscapes_npy` as a `mtlzoo.data.load` reader (registered as "cityscapes_npy")."""
    return _read("cityscapes_npy", load_cityscapes_npy, split, image_size, batch_size, data_dir, num_examples,
                 seed, label_fractions, shuffle, tasks=tasks, num_classes=num_classes, image_range=image_range,
                 validate=validate, drop_remainder=drop_remainder)


def cityscapes(split="train", *, image_size, batch_size, data_dir=None, num_examples=None, seed=0,
               label_fractions=None, shuffle=None, tasks=None, num_classes=7, depth_mode="depth",
               validate="first", drop_remainder=False):
    """`load_cityscapes` (official layout) as a `mtlzoo.data.load` reader (registered as "cityscapes")."""
    return _read("cityscapes", load_cityscapes, split, image_size, batch_size, data_dir, num_examples, seed,
                 label_fractions, shuffle, tasks=tasks, num_classes=num_classes, depth_mode=depth_mode,
                 validate=validate, drop_remainder=drop_remainder)


def bdd100k(split="train", *, image_size, batch_size, data_dir=None, num_examples=None, seed=0,
            label_fractions=None, shuffle=None, tasks=None, lane_mode="binary", missing_detection="error",
            validate="first", drop_remainder=False):
    """`load_bdd100k` as a `mtlzoo.data.load` reader (registered as "bdd100k")."""
    return _read("bdd100k", load_bdd100k, split, image_size, batch_size, data_dir, num_examples, seed,
                 label_fractions, shuffle, tasks=tasks, lane_mode=lane_mode, missing_detection=missing_detection,
                 validate=validate, drop_remainder=drop_remainder)
