"""Random inputs and labels shaped for a model's tasks (tests, benchmarks, smoke checks)."""

from __future__ import annotations

import numpy as np

from mtlzoo.heads.centernet_targets import encode_centernet_targets

#: Recipe overrides that shrink an image recipe to test size: a 4-channel tiny trunk at 32×64.
#: Example: `mtlzoo.build("driving_perception_lite", **mtlzoo.testing.TINY_IMAGE)`.
TINY_IMAGE = {"backbone": "tiny", "backbone_args": {"width": 4}, "neck_channels": 16, "input_shape": (32, 64, 3)}


def random_labels(model, n, seed=0):
    """A random labelled batch of `n` examples matching every task head of `model`.

    Example:
    ```python
    y = mtlzoo.testing.random_labels(model, 4)
    ```
    """
    rng = np.random.default_rng(seed)
    input_shape = tuple(model.input_shape[1:])
    labels = {}
    for task, head in model.heads.items():
        kind = model.tasks[task]["kind"]
        shape, _ = head.label_spec(input_shape)
        if kind in ("segmentation", "classification"):
            labels[task] = rng.integers(0, head.num_classes, (n,) + shape).astype("int32")
        elif kind == "depth":
            labels[task] = rng.uniform(1.0, 50.0, (n,) + shape).astype("float32")
        elif kind == "multilabel":
            labels[task] = rng.integers(0, 2, (n,) + shape).astype("float32")
        elif kind == "detection":
            targets = []
            h, w = input_shape[:2]
            for _ in range(n):
                y0, x0 = rng.uniform(0, h / 2), rng.uniform(0, w / 2)
                box = [[y0, x0, y0 + h / 3, x0 + w / 3]]
                targets.append(encode_centernet_targets(box, [rng.integers(head.num_classes)], (h, w), head.num_classes))
            labels[task] = np.stack(targets)
        else:
            labels[task] = rng.normal(size=(n,) + shape).astype("float32")
    return labels


def random_inputs(model, n, seed=0):
    """`n` random inputs for `model`: images in [0, 255] or standard-normal-ish vectors in [0, 1)."""
    rng = np.random.default_rng(seed)
    shape = tuple(model.input_shape[1:])
    scale = 255.0 if len(shape) == 3 else 1.0
    return (rng.uniform(0, 1, (n,) + shape) * scale).astype("float32")


def predict_eager(model, x):
    """Inference-mode outputs of `model` on `x` as NumPy, from one eager call.

    For tests on tiny inputs: `predict_on_batch` traces a predict function
    first (seconds for a multi-task model), an eager call does not.

    Example:
    ```python
    from mtlzoo.testing import predict_eager
    outputs = predict_eager(model, x)   # {task: np.ndarray}
    ```
    """
    import numpy as np

    out = model(x, training=False)
    if isinstance(out, dict):
        return {task: np.asarray(value) for task, value in out.items()}
    return np.asarray(out)
