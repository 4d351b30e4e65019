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

    Args:
        path: str. A `.keras` file, or a model shipped with mtlzoo as
            `zoo:NAME` (e.g. `zoo:driving_perception_lite`; `mtlzoo.zoo.list_models()`).
        compile: bool. Restore the compiled state (optimizer). Defaults to True.

    Example:
    ```python
    model.save("m.keras")
    model = mtlzoo.load("m.keras")
    zoo_model = mtlzoo.load("zoo:driving_perception_lite")
    ```
    """
    import keras

    import mtlzoo.layers  # noqa: F401  (registers custom objects)
    import mtlzoo.losses  # noqa: F401
    import mtlzoo.metrics  # noqa: F401
    import mtlzoo.model  # noqa: F401

    from mtlzoo import zoo

    if zoo.is_zoo_spec(path):
        resolved = zoo.resolve(path)
        path = os.fspath(resolved / zoo.MODEL_FILE if resolved.is_dir() else resolved)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No saved model at {path!r}.")
    if not path.endswith(".keras"):
        raise ValueError(f"mtlzoo.load reads Keras v3 '.keras' files; got {path!r}. Export formats are read by mtlzoo.edge.")
    model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    recipe = getattr(model, "metadata", {}).get("recipe")
    if compile and recipe and getattr(model, "compiled", False):
        from mtlzoo import training_hooks
        from mtlzoo.recipe import Recipe

        training_hooks.install(model, Recipe.from_dict(recipe))
    return model
