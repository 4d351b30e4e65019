"""Penalties added to the multi-task loss (soft parameter sharing's `soft_l2`)."""

from __future__ import annotations

from keras import ops

def penalty_losses(model):
    """`MultiTaskModel.penalty_losses` (its docstring says what it does)."""
    out = {}
    for p in model.penalties:
        total = ops.convert_to_tensor(0.0)
        for group in p["groups"]:
            columns = [model.get_layer(n).trainable_variables for n in group]
            for i in range(len(columns)):
                for j in range(i + 1, len(columns)):
                    for a, b in zip(columns[i], columns[j]):
                        total = total + ops.sum(ops.square(a - b))
        out[p["kind"]] = p["weight"] * total
    return out
