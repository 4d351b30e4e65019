"""What a recipe's build sets around the Keras calls: the seeds it draws from and the dtype policy.

Split from `mtlzoo.recipe` (which re-exports these names).
"""

from __future__ import annotations

import contextlib


#: Values of a recipe's `precision`: Keras dtype policies a model can be built under.
PRECISIONS = ("float32", "mixed_bfloat16")


@contextlib.contextmanager
def dtype_policy(name: str):
    """Builds the layers created inside under Keras's dtype policy `name`, then restores the previous policy.

    Example:
    ```python
    with dtype_policy("mixed_bfloat16"):
        x = keras.layers.Conv2D(8, 3)(inputs)   # bfloat16 compute, float32 variables
    ```
    """
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def seed_model_building(seed: int) -> None:
    """Seeds what building a model draws from, leaving TensorFlow's global seed alone.

    Keras initializers and dropout layers created without a `seed` draw one
    from Python's `random` when they are constructed; seeding it (and NumPy,
    and restarting Keras's global `SeedGenerator`) makes the same recipe and
    seed give the same initial weights. `keras.utils.set_random_seed` does
    this and also calls `tf.random.set_seed`, which clears the eager context's
    kernel caches: every model built earlier in the process then re-creates
    the kernels of its compiled train step on its next call (seconds; 7-12 s
    for driving_perception_lite). Nothing mtlzoo builds needs TensorFlow's
    global seed: data pipelines pass their own seed to `shuffle`, and
    aggregators hold seeded `tf.random.Generator`s.

    Args:
        seed: int. The recipe's seed.

    Example:
    ```python
    seed_model_building(0)
    model = recipe.build()   # Recipe.build calls it with recipe.seed
    ```
    """
    import random

    import numpy as np
    from keras.src.backend.common import global_state
    from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR

    random.seed(seed)
    np.random.seed(seed)
    global_state.set_global_attribute(GLOBAL_SEED_GENERATOR, None)
