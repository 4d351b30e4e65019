"""Model cost: parameters, FLOPs and the measured inference step time."""

from __future__ import annotations

import time

import numpy as np

__all__ = ["measure_step_time", "model_cost"]


def measure_step_time(model, inputs, repeats=10, warmup=2):
    """Median seconds of one inference call `model(inputs, training=False)` (compiled with tf.function).

    Args:
        model: a Keras model.
        inputs: one batch of inputs.
        repeats: int. Timed calls. Defaults to 10.
        warmup: int. Untimed calls first (tracing). Defaults to 2.

    Returns:
        float seconds.

    Example:
    ```python
    from mtlzoo.evaluation import measure_step_time
    measure_step_time(model, images)     # e.g. 0.012
    ```
    """
    import tensorflow as tf

    def forward(x):
        return model(x, training=False)

    fn = tf.function(forward, autograph=False)
    x = tf.convert_to_tensor(inputs)
    for _ in range(max(1, warmup)):
        tf.nest.map_structure(lambda t: t.numpy(), fn(x))
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn(x))
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def model_cost(model, inputs=None, repeats=10):
    """dict `params`, `flops` (per example) and, given a batch, `step_time_s` and `batch_size`.

    Args:
        model: a Keras model.
        inputs: one batch of inputs, or None to skip the timing.
        repeats: int. Timed inference calls. Defaults to 10.

    Example:
    ```python
    import numpy as np, mtlzoo
    from mtlzoo.evaluation import model_cost
    model = mtlzoo.build("driving_perception_lite")
    model_cost(model, np.zeros((16, 128, 256, 3), "float32"))
    ```
    """
    from mtlzoo.flops import count_flops

    out = {"params": int(model.count_params()), "flops": int(count_flops(model))}
    if inputs is not None:
        out["step_time_s"] = measure_step_time(model, inputs, repeats=repeats)
        out["batch_size"] = int(np.shape(inputs)[0])
    return out
