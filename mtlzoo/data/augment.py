"""Augmentations of raw examples: a horizontal flip of image and labels together, photometric jitter of the image.

`mtlzoo.data.pipeline.finish(..., augment=True, color_jitter=s)` applies them to a training split; they are
re-exported from `mtlzoo.data.pipeline`.
"""

from __future__ import annotations

import tensorflow as tf


def horizontal_flip(example: dict) -> dict:
    """Mirrors one raw example left-right: image and every label together.

    Flips `image`, `segmentation` and `depth` along the width and maps each valid
    box (ymin, xmin, ymax, xmax) to (ymin, W - xmax, ymax, W - xmin) (pixel-edge
    coordinates, so a flipped box covers exactly the flipped pixels); padding
    rows beyond `num_boxes` stay zero. Scene tags are unchanged.

    Args:
        example: dict of tensors in the raw format (see the module docstring);
            keys that are absent are skipped.

    Returns:
        A new dict with the same keys.

    Example:
    ```python
    from mtlzoo.data.augment import horizontal_flip
    from mtlzoo.data.synthetic_driving import raw_example
    mirrored = horizontal_flip(raw_example(0, 0))
    ```
    """
    out = dict(example)
    width = None
    for key in ("image", "segmentation", "depth"):
        if key in example:
            tensor = tf.convert_to_tensor(example[key])
            out[key] = tf.reverse(tensor, axis=[1])
            width = tf.cast(tf.shape(tensor)[1], tf.float32)
    if "boxes" in example and width is not None:
        boxes = tf.convert_to_tensor(example["boxes"], tf.float32)
        ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
        flipped = tf.stack([ymin, width - xmax, ymax, width - xmin], axis=-1)
        if "num_boxes" in example:
            valid = tf.range(tf.shape(boxes)[0]) < tf.cast(example["num_boxes"], tf.int32)
        else:
            valid = tf.reduce_any(boxes != 0, axis=-1)
        out["boxes"] = tf.where(valid[:, None], flipped, boxes)
    return out


def color_jitter_image(image, strength: float, seed):
    """Random brightness, contrast and saturation of one RGB image in [0, 255] (float32 out, clipped).

    Args:
        image: [H, W, 3] tensor (any numeric dtype), values in [0, 255].
        strength: float in [0, 1). Brightness shift up to ±strength·255; contrast and saturation factors in
            [1 - strength, 1 + strength].
        seed: int tensor of shape [2] (stateless random ops: the same seed gives the same image).
    """
    image = tf.cast(image, tf.float32)
    seed = tf.cast(seed, tf.int64)
    draws = tf.random.stateless_uniform([3], seed, -strength, strength)
    mean = tf.reduce_mean(image, axis=[0, 1], keepdims=True)
    image = (image - mean) * (1.0 + draws[1]) + mean + draws[0] * 255.0
    grey = tf.reduce_mean(image, axis=-1, keepdims=True)
    image = (image - grey) * (1.0 + draws[2]) + grey
    return tf.clip_by_value(image, 0.0, 255.0)
