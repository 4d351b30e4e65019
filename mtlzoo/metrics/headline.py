"""The headline metrics of each head kind and whether higher is better (they enter Δm)."""

from __future__ import annotations

__all__ = ["HEADLINE", "HIGHER_IS_BETTER"]


#: Whether a higher value is better, for every headline metric name.
HIGHER_IS_BETTER = {
    "miou": True,
    "pixel_acc": True,
    "abs_err": False,
    "abs_rel": False,
    "delta1": True,
    "map50": True,
    "map": True,
    "f1": True,
    "macro_f1": True,
    "accuracy": True,
    "mae": False,
    "mean_angle": False,
    "median_angle": False,
    "within_11_25": True,
    "within_22_5": True,
    "within_30": True,
}


#: The headline metrics of each head kind, in table order (these enter Δm).
HEADLINE = {
    "segmentation": ("miou", "pixel_acc"),
    "depth": ("abs_err", "abs_rel", "delta1"),
    "detection": ("map50",),
    "multilabel": ("map", "f1"),
    "classification": ("accuracy",),
    "regression": ("mae",),
    "normal": ("mean_angle", "median_angle", "within_11_25", "within_22_5", "within_30"),
}
