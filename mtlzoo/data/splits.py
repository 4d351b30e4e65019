"""One split of a named dataset, loaded from a recipe's `data` mapping."""

from __future__ import annotations

import inspect

from mtlzoo.registry import suggestion

__all__ = ["check_dataset_name", "DATA_KEYS", "DataCheckError", "EVALUATION_KEYS", "load_split"]


# Keys of `recipe.data` used by `train` itself; every other key is passed to the reader.
DATA_KEYS = ("name", "data_dir", "train_split", "validation_split", "num_examples", "num_validation_examples")


# Keys of a batch's label dict that are evaluation extras, never model targets.
EVALUATION_KEYS = ("boxes", "box_classes", "num_boxes")


class DataCheckError(ValueError):
    """The data does not fit the recipe; the message names the problem and the fix."""


# ---------------------------------------------------------------------------- data
def _dataset_names():
    import mtlzoo.data

    return list(mtlzoo.data.DATASETS)


def check_dataset_name(name) -> str:
    """Returns `name` if it is a registered dataset, else raises `DataCheckError` with near matches.

    Example:
    ```python
    from mtlzoo.data.splits import check_dataset_name
    check_dataset_name("synthetic_drivng")   # DataCheckError: ... Did you mean 'synthetic_driving'?
    ```
    """
    names = _dataset_names()
    if not isinstance(name, str) or name not in names:
        raise DataCheckError(
            f"Unknown dataset {name!r}.{suggestion(str(name), names)} Known datasets: {', '.join(names)}. "
            "Fix: set data.name (e.g. data.name=synthetic_driving) or register a reader with "
            "mtlzoo.data.register_reader(name, reader)."
        )
    return name


def _reader_parameters(name):
    import mtlzoo.data

    try:
        reader = mtlzoo.data.get_reader(name)
        params = inspect.signature(reader).parameters
    except (TypeError, ValueError, AttributeError):
        return None
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return None
    return set(params)


def load_split(data_config, split, *, image_size, batch_size, seed=0, tasks=None, training=False,
               with_boxes=False):
    """Loads one split of the dataset described by a recipe's `data` mapping.

    Args:
        data_config: dict. `name` (a registered dataset), optionally
            `data_dir`, `train_split` / `validation_split` (split names,
            defaults "train" / "validation"), `num_examples` /
            `num_validation_examples`, and reader options (e.g.
            `label_fractions`, `augment`, `cache`) passed to the reader.
        split: str. "train" or "validation" (mapped through `train_split` /
            `validation_split`), or a literal split name.
        image_size: (H, W) of the model input.
        batch_size: int.
        seed: int. Data seed.
        tasks: list of label keys wanted (passed to readers that take
            `tasks`); None for all.
        training: bool. A training split: reader options such as `augment`
            and `label_fractions` apply; otherwise no shuffling or
            augmentation.
        with_boxes: bool. Ask for raw boxes (for detection mAP) when the
            reader can give them.

    Returns:
        A batched `tf.data.Dataset` of (image, labels).

    Example:
    ```python
    from mtlzoo.data.splits import load_split
    val = load_split({"name": "synthetic_driving", "num_validation_examples": 64}, "validation",
                     image_size=(128, 256), batch_size=16)
    ```
    """
    import mtlzoo.data

    config = dict(data_config or {})
    if "name" not in config:
        raise DataCheckError(
            "The recipe names no dataset: set data.name (e.g. data.name=synthetic_driving) or pass data=."
        )
    name = check_dataset_name(config["name"])
    split_name = {"train": config.get("train_split", "train"),
                  "validation": config.get("validation_split", "validation")}.get(split, split)
    count = config.get("num_examples") if split == "train" else config.get("num_validation_examples")
    options = {k: v for k, v in config.items() if k not in DATA_KEYS}
    if not training:
        options.pop("label_fractions", None)
        options.pop("augment", None)
    auto = {}
    if tasks:
        auto["tasks"] = [t for t in tasks if t not in EVALUATION_KEYS]
    if with_boxes:
        auto["with_boxes"] = True
    if not training:
        auto["augment"] = False
    accepted = _reader_parameters(name)
    if accepted is not None:
        unknown = [k for k in options if k not in accepted]
        if unknown:
            raise DataCheckError(
                f"Dataset {name!r} has no option {unknown[0]!r}.{suggestion(unknown[0], sorted(accepted))} "
                f"Its options: {', '.join(sorted(accepted))}."
            )
        auto = {k: v for k, v in auto.items() if k in accepted}
    kwargs = dict(split=split_name, batch_size=int(batch_size), image_size=None if image_size is None else tuple(image_size), seed=int(seed),
                  data_dir=config.get("data_dir"), num_examples=count, **options)
    if not training:
        kwargs["shuffle"] = False
    try:
        return mtlzoo.data.load(name, **kwargs, **auto)
    except (ValueError, FileNotFoundError) as first:
        error = first
        if "tasks" in auto and not isinstance(first, FileNotFoundError):
            # The reader may not know some task name: load every label instead,
            # so that check_dataset names the task that is missing.
            auto.pop("tasks")
            try:
                return mtlzoo.data.load(name, **kwargs, **auto)
            except (ValueError, FileNotFoundError) as second:
                error = second
    raise DataCheckError(f"Dataset {name!r}, split {split_name!r}: {error}") from error
