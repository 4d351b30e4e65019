"""The public entry points `build` and `load`."""

from __future__ import annotations

import os

from mtlzoo.recipe import get_recipe


def build(recipe="driving_perception", *, compile=True, **overrides):
    """Builds a compiled multi-task model from a recipe, offline.

    Args:
        recipe: str, path or `Recipe`. A registered recipe name
            (`mtlzoo.list_recipes()`), a YAML file, or a Recipe.
        compile: bool. Compile with the recipe's optimizer. Defaults to True.
        **overrides: recipe keys to replace, validated like the recipe:
            `sharing="cross_stitch"`, `input_shape=(128, 256, 3)`,
            `tasks=["segmentation", "depth"]` (a subset), `backbone="mobilenetv3_small"`,
            `neck_channels=32`, `"tasks.depth.loss_weight"=2.0` (via `**{...}`), ...

    Returns:
        A `mtlzoo.MultiTaskModel` whose outputs are a dict keyed by task name.

    Example:
    ```python
    model = mtlzoo.build("driving_perception", sharing="cross_stitch",
                         input_shape=(128, 256, 3), tasks=["segmentation", "depth"],
                         backbone="mobilenetv3_small")
    ```
    """
    return get_recipe(recipe, **overrides).build(compile=compile)


def load(path, compile=True):
    """Loads a model saved with `model.save("m.keras")`, custom objects resolved, safe_mode on.

    A `.keras` file is data: it is read in Keras's safe mode, which refuses
    to deserialise Python code (`Lambda` layers, pickled functions). Exported
    SavedModels are code and are read by `mtlzoo.edge.load` only when trusted.

    Args:
        path: str. A `.keras` file, or a model shipped with mtlzoo as
            `zoo:NAME` (e.g. `zoo:driving_perception_lite`; `mtlzoo.zoo.list_models()`).
        compile: bool. Restore the compiled state (optimizer). Defaults to True.

    Raises:
        FileNotFoundError: nothing at `path`.
        mtlzoo.edge.ModelFileError: (a `ValueError`) `path` is not a `.keras`
            file, or it is truncated or corrupt (the message names the file).
        mtlzoo.zoo.ZooSpecError: a `zoo:` spec that leads outside the zoo.

    Example:
    ```python
    model.save("m.keras")
    model = mtlzoo.load("m.keras")
    zoo_model = mtlzoo.load("zoo:driving_perception_lite")
    ```
    """
    import zipfile
    import zlib

    import keras

    import mtlzoo.layers  # noqa: F401  (registers custom objects)
    import mtlzoo.losses  # noqa: F401
    import mtlzoo.metrics  # noqa: F401
    import mtlzoo.model  # noqa: F401
    import mtlzoo.optimizers  # noqa: F401

    from mtlzoo import zoo
    from mtlzoo.fileio import ModelFileError  # light (NumPy only); one error class for every model file

    if zoo.is_zoo_spec(path):
        path = zoo.resolve(path, default_file=zoo.MODEL_FILE)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No saved model at {path!r}.")
    if os.path.isdir(path):
        raise ModelFileError(
            f"{path!r} is a folder; mtlzoo.load reads a '.keras' file (a training run's is its best.keras or "
            "last.keras). Export folders and SavedModels are read by mtlzoo.edge.load."
        )
    if not path.endswith(".keras"):
        raise ModelFileError(
            f"mtlzoo.load reads Keras v3 '.keras' files; got {path!r}. Export formats are read by mtlzoo.edge.load."
        )
    corrupt = (
        f"{path!r} is not a valid .keras file (a zip archive of config and weights): it may be truncated "
        "(an interrupted save or copy) or corrupt; save or copy it again."
    )
    if not zipfile.is_zipfile(path):
        raise ModelFileError(corrupt)
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise ModelFileError(f"{corrupt} ({e})") from e
    except (OSError, KeyError) as e:  # h5py reading a damaged weights file; a member missing from the archive
        raise ModelFileError(f"{corrupt} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    recipe = getattr(model, "metadata", {}).get("recipe")
    if compile and recipe and getattr(model, "compiled", False):
        from mtlzoo import training_hooks
        from mtlzoo.recipe import Recipe

        training_hooks.install(model, Recipe.from_dict(recipe))
    return model
