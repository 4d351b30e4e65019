"""The FPN-style neck shared by the sharing builders."""

import keras

from mtlzoo.heads.base import conv_bn_relu


def build_neck(features, channels=64, name="neck"):
    """Builds the neck as one nested model and applies it to `features`.

    For image features [C2, C3, C4, C5] (strides 4..32) it is a feature
    pyramid: 1×1 lateral convs to `channels`, a top-down pathway with ×2
    nearest upsampling and addition, and a 3×3 conv block on the finest level.
    It returns [P2, P3, P4, P5]. A single vector feature passes through.

    Args:
        features: list of KerasTensors from the backbone stages.
        channels: int. Width of every pyramid level. Defaults to 64.
        name: str. Name of the neck model (task columns use "{task}__neck").

    Reference:
        Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017.
    """
    if len(features) == 1 and len(features[0].shape) == 2:
        return list(features)
    inputs = [keras.Input(f.shape[1:], name=f"{name}_in{i}") for i, f in enumerate(features)]
    laterals = [
        keras.layers.Conv2D(channels, 1, name=f"{name}_lateral{i}")(x) for i, x in enumerate(inputs)
    ]
    outs = [None] * len(laterals)
    outs[-1] = laterals[-1]
    for i in range(len(laterals) - 2, -1, -1):
        up = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_up{i}")(outs[i + 1])
        outs[i] = keras.layers.Add(name=f"{name}_add{i}")([laterals[i], up])
    outs[0] = conv_bn_relu(outs[0], channels, f"{name}_smooth")
    neck = keras.Model(inputs, outs, name=name)
    return list(neck(list(features)))
