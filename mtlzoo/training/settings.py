"""What `train` runs with: the checked `training` settings, the strategy and the training data."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mtlzoo.data.splits import DataCheckError, check_dataset_name, load_split
from mtlzoo.recipe import RecipeError
from mtlzoo.registry import suggestion

__all__ = ["resolve_train_data", "strategy_or_none", "TRAINING_KEYS", "training_settings"]


# Keys of `recipe.training` understood by `train`.
TRAINING_KEYS = {
    "epochs": "number of epochs (int >= 1)",
    "batch_size": "examples per batch (int >= 1)",
    "steps_per_epoch": "batches per epoch; the data is repeated (int >= 1 or null)",
    "validation_steps": "batches per validation pass (int >= 1 or null)",
    "validation_freq": "validate every N epochs (int >= 1)",
    "monitor": "log value selecting best.keras (default val_loss, or loss without validation)",
    "nonfinite_patience": "consecutive non-finite steps before stopping (int >= 1, default 20)",
    "check_batches": "batches inspected for NaN/inf and out-of-range labels before training (int >= 0, default 1; "
                     "arrays passed as data are checked whole)",
    "train_metrics": "update the task metrics at every training step (true, the default) or only on validation and "
                     "in evaluate (false: the training logs hold the losses, each step saves the metrics' work)",
    "run_eagerly": "run each step as Python instead of a traced graph (Keras's debugging switch: same arithmetic, no "
                   "tracing, slower steps; default false)",
}


# ---------------------------------------------------------------------------- settings
def _positive_int(value, where, allow_none=False, minimum=1):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise RecipeError(f"{where} must be an int >= {minimum}{' or null' if allow_none else ''}, got {value!r}.")
    return int(value)


def training_settings(recipe, epochs=None, steps_per_epoch=None) -> dict:
    """The recipe's `training` mapping, checked, with defaults and call overrides applied.

    Args:
        recipe: a `Recipe`.
        epochs: int or None. Replaces `training.epochs`.
        steps_per_epoch: int or None. Replaces `training.steps_per_epoch`.

    Returns:
        dict with every key of `TRAINING_KEYS`.

    Raises:
        RecipeError: an unknown key (with a near match) or a bad value.

    Example:
    ```python
    import mtlzoo
    from mtlzoo.training import training_settings
    training_settings(mtlzoo.get_recipe("driving_perception_lite"), epochs=2)["batch_size"]   # 16
    ```
    """
    given = dict(recipe.training)
    for key in given:
        if key not in TRAINING_KEYS:
            raise RecipeError(
                f"recipe {recipe.name!r}: unknown key training.{key}.{suggestion(key, TRAINING_KEYS)} "
                "Valid keys: " + "; ".join(f"{k} ({v})" for k, v in TRAINING_KEYS.items()) + "."
            )
    out = {"epochs": 10, "batch_size": 8, "steps_per_epoch": None, "validation_steps": None,
           "validation_freq": 1, "monitor": None, "nonfinite_patience": 20, "check_batches": 1, "train_metrics": True,
           "run_eagerly": False}
    out.update(given)
    if epochs is not None:
        out["epochs"] = epochs
    if steps_per_epoch is not None:
        out["steps_per_epoch"] = steps_per_epoch
    where = f"recipe {recipe.name!r}: training"
    out["epochs"] = _positive_int(out["epochs"], f"{where}.epochs (or epochs=)")
    out["batch_size"] = _positive_int(out["batch_size"], f"{where}.batch_size")
    out["steps_per_epoch"] = _positive_int(out["steps_per_epoch"], f"{where}.steps_per_epoch", allow_none=True)
    out["validation_steps"] = _positive_int(out["validation_steps"], f"{where}.validation_steps", allow_none=True)
    out["validation_freq"] = _positive_int(out["validation_freq"], f"{where}.validation_freq")
    out["nonfinite_patience"] = _positive_int(out["nonfinite_patience"], f"{where}.nonfinite_patience")
    out["check_batches"] = _positive_int(out["check_batches"], f"{where}.check_batches", minimum=0)
    if not isinstance(out["train_metrics"], bool):
        raise RecipeError(f"{where}.train_metrics must be true or false, got {out['train_metrics']!r}.")
    monitor = out["monitor"]
    if out["train_metrics"] is False and isinstance(monitor, str) and not monitor.startswith("val_") \
            and not monitor.endswith("loss"):
        raise RecipeError(f"{where}.monitor is {monitor!r}, a training metric, but train_metrics is false: the training "
                          f"logs hold only the losses. Monitor 'val_{monitor}' or a loss, or set train_metrics: true.")
    return out


def strategy_or_none(strategy):
    if strategy is None:
        return None
    try:
        from mtlzoo.distribute import resolve_strategy
    except ModuleNotFoundError as e:
        if e.name != "mtlzoo.distribute":
            raise
        if isinstance(strategy, tf.distribute.Strategy):
            return strategy
        raise ValueError(
            f"strategy={strategy!r}: strategy names need mtlzoo.distribute; pass None or a "
            "tf.distribute.Strategy instance."
        ) from None
    return resolve_strategy(strategy)


def _as_dataset(data, batch_size, seed, shuffle):
    """numpy (x, y) or (x, y, w) -> batched tf.data.Dataset; datasets pass through."""
    if isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        tensors = tuple(data)
        ds = tf.data.Dataset.from_tensor_slices(tensors)
        n = len(np.asarray(data[0]))
        if n == 0:
            raise DataCheckError("The data arrays are empty (0 examples).")
        if shuffle:
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size)
    raise DataCheckError(
        f"data= must be None (the recipe's dataset), a dataset name, a dict of data settings, a "
        f"tf.data.Dataset or an (x, y) tuple of arrays; got {type(data).__name__}."
    )


def resolve_train_data(recipe, data, validation_data, settings):
    """(train dataset, validation dataset or None), loaded as the recipe says when not given."""
    seed = int(recipe.seed)
    batch = settings["batch_size"]
    config = None
    if data is None:
        config = dict(recipe.data)
    elif isinstance(data, str):
        config = {**recipe.data, "name": data} if recipe.data.get("name") == data else {"name": data}
    elif isinstance(data, dict):
        config = {**recipe.data, **data}
    if config is not None:
        if "name" in config:
            check_dataset_name(config["name"])
        image_size = tuple(recipe.input_shape[:2]) if len(recipe.input_shape) == 3 else None  # vectors: no size
        train_ds = load_split(config, "train", image_size=image_size, batch_size=batch, seed=seed,
                              tasks=list(recipe.tasks), training=True)
        if validation_data is None and config.get("validation_split", "validation") not in (None, False):
            validation_data = load_split(config, "validation", image_size=image_size, batch_size=batch,
                                         seed=seed, tasks=list(recipe.tasks), training=False)
    else:
        train_ds = _as_dataset(data, batch, seed, shuffle=True)
    if validation_data is False:
        validation_data = None
    if validation_data is not None:
        validation_data = _as_dataset(validation_data, batch, seed, shuffle=False)
    return train_ds, validation_data
