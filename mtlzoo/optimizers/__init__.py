"""Optimizers: Keras's Adam/AdamW with a fused TensorFlow update (`FusedAdam`, `FusedAdamW`)."""

from mtlzoo.optimizers.fused_adam import FusedAdam, FusedAdamW

__all__ = ["FusedAdam", "FusedAdamW"]
