"""Backbones as lists of stage models, and the helpers to cut them."""

from __future__ import annotations

import os

import keras

from mtlzoo.layers import ImagePreprocessing


def check_image_shape(input_shape, backbone):
    if len(input_shape) != 3:
        raise ValueError(f"Backbone {backbone!r} takes images (H, W, C); got input_shape={tuple(input_shape)}.")
    h, w, c = input_shape
    if h is None or w is None or h % 32 or w % 32:
        raise ValueError(
            f"Backbone {backbone!r} needs an image height and width divisible by 32 (strides 4..32); "
            f"got {h}x{w}. Use e.g. {max(32, (h or 32) // 32 * 32)}x{max(32, (w or 32) // 32 * 32)}."
        )
    if c != 3:
        raise ValueError(f"Backbone {backbone!r} takes 3-channel RGB images; got {c} channels.")


def check_weights(weights, backbone):
    if weights is None:
        return None
    if weights == "imagenet":
        raise ValueError(
            f"Backbone {backbone!r}: mtlzoo never downloads weights. Pass weights=None, or the path "
            "of a local Keras weights file (.weights.h5 / .h5) for the same architecture."
        )
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"Backbone {backbone!r}: weights file {weights!r} does not exist.")
    return weights


def split_application(app, tap_names, input_shape, preprocessing, prefix):
    """Cuts a keras.applications model into stage models ending at `tap_names`.

    Stage 0 takes raw [0, 255] RGB images and applies `preprocessing` first;
    stage i > 0 maps tap i-1 to tap i. Each tap must be the only tensor alive
    at its cut (true at block outputs), which the cut verifies.
    """
    taps = [app.get_layer(n).output for n in tap_names]
    stages = []
    image = keras.Input(input_shape, name=f"{prefix}image")
    x = ImagePreprocessing(preprocessing, name=f"{prefix}preprocess")(image)
    core0 = keras.Model(app.input, taps[0], name=f"{prefix}stem")
    stages.append(keras.Model(image, core0(x), name=f"{prefix}stage0"))
    for i in range(1, len(taps)):
        stages.append(keras.Model(taps[i - 1], taps[i], name=f"{prefix}stage{i}"))
    return stages
