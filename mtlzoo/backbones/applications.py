"""keras.applications backbones (built offline, `weights=None` or a local file)."""

import math

import keras

from mtlzoo.backbones.base import check_image_shape, check_weights, split_application
from mtlzoo.registry import BACKBONES

# Stride-4/8/16/32 taps with stable names (see docs/backbones.md). MobileNetV3's
# activation layers get generated names, so only block outputs are tapped.
_SPECS = {
    "mobilenetv3_small": (
        keras.applications.MobileNetV3Small,
        ["expanded_conv_project_bn", "expanded_conv_2_add", "expanded_conv_7_add", "expanded_conv_10_add"],
        "symmetric",
        {"include_preprocessing": False, "minimalistic": False},
    ),
    "mobilenetv3_large": (
        keras.applications.MobileNetV3Large,
        ["expanded_conv_2_add", "expanded_conv_5_add", "expanded_conv_11_add", "expanded_conv_14_add"],
        "symmetric",
        {"include_preprocessing": False, "minimalistic": False},
    ),
    "efficientnetv2_b0": (
        keras.applications.EfficientNetV2B0,
        ["block2b_add", "block3b_add", "block5e_add", "top_activation"],
        "torch",
        {"include_preprocessing": False},
    ),
    "resnet50": (
        keras.applications.ResNet50,
        ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"],
        "caffe",
        {},
    ),
}


#: The backbones with a width multiplier (`alpha` of keras.applications: the channels of every block × alpha,
#: rounded to multiples of 8). The tap layers are named by block, so they are the same at every width.
WIDTH_MULTIPLIER = ("mobilenetv3_small", "mobilenetv3_large")


def check_alpha(alpha, name) -> float:
    """`alpha` as a float: > 0 for a backbone with a width multiplier, exactly 1.0 for the others."""
    if name not in WIDTH_MULTIPLIER:
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or float(alpha) != 1.0:
            raise ValueError(
                f"Backbone {name!r} has no width multiplier: alpha must be 1.0, got {alpha!r}. Leave "
                f"`backbone_args.alpha` out, or use a backbone that has one ({', '.join(WIDTH_MULTIPLIER)}).")
        return 1.0
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(
            f"Backbone {name!r}: alpha (the width multiplier) must be a number > 0, got {alpha!r}; "
            "e.g. `backbone_args: {alpha: 0.5}` for half the channels (1.0: the architecture of the paper).")
    return float(alpha)


def _make(name):
    app_fn, taps, preprocessing, extra = _SPECS[name]

    def factory(input_shape, prefix="backbone_", weights=None, bn_momentum=0.99, alpha=1.0):
        check_image_shape(input_shape, name)
        weights = check_weights(weights, name)
        if bn_momentum is not None and not 0.0 <= float(bn_momentum) < 1.0:
            raise ValueError(f"Backbone {name!r}: bn_momentum must be in [0, 1), got {bn_momentum}.")
        alpha = check_alpha(alpha, name)
        width = {"alpha": alpha} if name in WIDTH_MULTIPLIER else {}
        app = app_fn(input_shape=tuple(input_shape), include_top=False, weights=weights, **width, **extra)
        if bn_momentum is not None:
            # keras.applications' MobileNetV3 uses 0.999: trained from scratch for
            # a few thousand steps its moving statistics stay near their
            # initial values and inference-mode outputs are wrong.
            for layer in app.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = float(bn_momentum)
        return split_application(app, taps, tuple(input_shape), preprocessing, prefix)

    factory.__name__ = name
    factory.__doc__ = (
        f"{app_fn.__name__} from keras.applications as four stages (strides 4, 8, 16, 32).\n\n"
        f"Taps: {', '.join(taps)}. Input: RGB in [0, 255], normalised inside the model ({preprocessing!r}).\n\n"
        "Args:\n    input_shape: tuple. (H, W, 3), H and W divisible by 32.\n"
        "    prefix: str. Prefix of the stage model names.\n"
        "    weights: str or None. A local weights file of the same architecture; never downloaded.\n"
        "    bn_momentum: float or None. BatchNorm moving-average momentum (0.99; None keeps\n"
        "        the application's own, 0.999 for MobileNetV3, which is too slow from scratch).\n"
        + ("    alpha: float > 0. Width multiplier: every block's channels × alpha, rounded to multiples\n"
           "        of 8 (1.0, the paper's; 0.75 and 0.5 are narrower). The taps are the same at every\n"
           "        width. A recipe sets it as `backbone_args: {alpha: 0.5}`; a weights file must be of\n"
           "        the same alpha.\n\n"
           if name in WIDTH_MULTIPLIER else
           "    alpha: float. Must be 1.0: this backbone has no width multiplier (ValueError otherwise).\n\n")
        + "Raises:\n    ValueError: a bad input shape, bn_momentum or alpha, or weights='imagenet'.\n\n"
        + (f"Example:\n```python\nstages = mtlzoo.backbones.get({name!r})((128, 256, 3)"
           + (", alpha=0.5" if name in WIDTH_MULTIPLIER else "") + ")\n```\n")
    )
    return factory


for _name in _SPECS:
    BACKBONES.register(_name, obj=_make(_name))
