"""TensorFlow Datasets builder `synthetic_driving` (rendered locally, no download).

Importing this module (done by `import mtlzoo.data`) registers the builder with
tfds, after which `tfds.load("synthetic_driving", data_dir=...)` renders the
scenes with `renderer.render_scene` and writes them as TFRecord files.

Configs: `128x256` (default), `256x512` and a tiny `64x128` for smoke tests,
each with train/validation/test splits of `DEFAULT_SPLIT_SIZES` examples and
seed 0. Other sizes, seeds or split sizes: pass a custom config, e.g.
`make_config(image_size=(128, 256), seed=1, num_train=50)`, as
`tfds.load("synthetic_driving", builder_kwargs={"config": cfg})`; its name
encodes the settings so differently built variants never share files.

Example `i` of split `s` is `render_scene(seed, SPLIT_OFFSETS[s] + i)`, stored
with that render index under `index`, so tfds files and the in-memory path of
`mtlzoo.data.load` hold identical scenes.

Features: `image` (PNG uint8 [H, W, 3]), `segmentation` (uint8 [H, W], zlib),
`depth` (float32 [H, W, 1] metres, zlib), `objects` (a variable-length
`Sequence` of `bbox` float32 [4] pixel (ymin, xmin, ymax, xmax) and `label`
`ClassLabel(DETECTION_CLASSES)`), `scene` (float32 [5]) and `index` (int64).

Example:
```python
import tensorflow_datasets as tfds
import mtlzoo.data  # registers "synthetic_driving"
ds = tfds.load("synthetic_driving/64x128", split="train", data_dir="/tmp/tfds")
```
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from mtlzoo.data.synthetic_driving.renderer import DETECTION_CLASSES, SCENE_TAGS, render_scene

SPLITS = ("train", "validation", "test")
# Render-index offset of each split: disjoint scene streams for one seed.
SPLIT_OFFSETS = {"train": 0, "validation": 1_000_000_000, "test": 2_000_000_000}
DEFAULT_SPLIT_SIZES = {"train": 1000, "validation": 100, "test": 100}


@dataclasses.dataclass(eq=False)
class SyntheticDrivingConfig(tfds.core.BuilderConfig):
    """BuilderConfig of `synthetic_driving`.

    Attributes:
        image_size: (H, W) rendered size.
        seed: int >= 0. Dataset seed.
        num_train: int. Examples in the train split.
        num_validation: int. Examples in the validation split.
        num_test: int. Examples in the test split.
    """

    image_size: tuple = (128, 256)
    seed: int = 0
    num_train: int = DEFAULT_SPLIT_SIZES["train"]
    num_validation: int = DEFAULT_SPLIT_SIZES["validation"]
    num_test: int = DEFAULT_SPLIT_SIZES["test"]

    def split_sizes(self) -> dict:
        return {"train": self.num_train, "validation": self.num_validation, "test": self.num_test}


def config_name(image_size, seed: int = 0, split_sizes=None) -> str:
    """Canonical config name for these settings, e.g. '128x256' or '128x256-s3-n50.10.10'."""
    sizes = dict(DEFAULT_SPLIT_SIZES, **(split_sizes or {}))
    name = f"{int(image_size[0])}x{int(image_size[1])}"
    if seed:
        name += f"-s{int(seed)}"
    if sizes != DEFAULT_SPLIT_SIZES:
        name += "-n" + ".".join(str(int(sizes[s])) for s in SPLITS)
    return name


_PREDEFINED = {
    "128x256": SyntheticDrivingConfig(name="128x256", image_size=(128, 256), description="128x256 scenes (default)."),
    "256x512": SyntheticDrivingConfig(name="256x512", image_size=(256, 512), description="256x512 scenes."),
    "64x128": SyntheticDrivingConfig(name="64x128", image_size=(64, 128), description="64x128 scenes, for smoke tests."),
}


def make_config(image_size=(128, 256), seed: int = 0, num_train=None, num_validation=None, num_test=None):
    """A `SyntheticDrivingConfig` for these settings (a predefined one when it exists).

    Args:
        image_size: (H, W).
        seed: int >= 0.
        num_train: int or None (default size).
        num_validation: int or None (default size).
        num_test: int or None (default size).

    Returns:
        `SyntheticDrivingConfig` named by `config_name`.

    Example:
    ```python
    from mtlzoo.data.synthetic_driving.builder import make_config
    cfg = make_config((64, 128), num_train=8, num_validation=2, num_test=2)
    tfds.load("synthetic_driving", builder_kwargs={"config": cfg}, data_dir="/tmp/tfds")
    ```
    """
    sizes = {
        s: int(DEFAULT_SPLIT_SIZES[s] if n is None else n)
        for s, n in zip(SPLITS, (num_train, num_validation, num_test))
    }
    for split, n in sizes.items():
        if n < 0:
            raise ValueError(f"num_{split} must be >= 0, got {n}.")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}.")
    name = config_name(image_size, seed, sizes)
    if name in _PREDEFINED:
        return _PREDEFINED[name]
    return SyntheticDrivingConfig(
        name=name,
        image_size=(int(image_size[0]), int(image_size[1])),
        seed=int(seed),
        num_train=sizes["train"],
        num_validation=sizes["validation"],
        num_test=sizes["test"],
        description=f"{image_size[0]}x{image_size[1]} scenes, seed {seed}, splits {sizes}.",
    )


def to_tfds_example(scene: dict, index: int) -> dict:
    """Converts a `render_scene` dict into the builder's feature dict."""
    return {
        "image": scene["image"],
        "segmentation": scene["segmentation"].astype(np.uint8),
        "depth": scene["depth"].astype(np.float32),
        "objects": {"bbox": scene["boxes"].reshape(-1, 4), "label": scene["box_classes"].astype(np.int64)},
        "scene": scene["scene"],
        "index": np.int64(index),
    }


class SyntheticDriving(tfds.core.GeneratorBasedBuilder):
    """Procedurally rendered street scenes with segmentation, depth, boxes and scene tags.

    Rendered locally by `mtlzoo.data.synthetic_driving.renderer`; nothing is
    downloaded. See the module docstring for configs and features.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = list(_PREDEFINED.values())
    DEFAULT_BUILDER_CONFIG_NAME = "128x256"

    def _info(self) -> tfds.core.DatasetInfo:
        height, width = self.builder_config.image_size
        zlib = tfds.features.Encoding.ZLIB
        return tfds.core.DatasetInfo(
            builder=self,
            description="Synthetic driving scenes rendered by mtlzoo (pinhole camera over a ground plane).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(height, width, 3)),
                    "segmentation": tfds.features.Tensor(shape=(height, width), dtype=np.uint8, encoding=zlib),
                    "depth": tfds.features.Tensor(shape=(height, width, 1), dtype=np.float32, encoding=zlib),
                    "objects": tfds.features.Sequence(
                        {
                            "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
                            "label": tfds.features.ClassLabel(names=list(DETECTION_CLASSES)),
                        }
                    ),
                    "scene": tfds.features.Tensor(shape=(len(SCENE_TAGS),), dtype=np.float32),
                    "index": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Everything is rendered locally.
        sizes = self.builder_config.split_sizes()
        return {split: self._generate_examples(split, sizes[split]) for split in SPLITS if sizes[split] > 0}

    def _generate_examples(self, split: str, num_examples: int):
        config = self.builder_config
        for i in range(num_examples):
            index = SPLIT_OFFSETS[split] + i
            scene = render_scene(config.seed, index, config.image_size)
            yield index, to_tfds_example(scene, index)
