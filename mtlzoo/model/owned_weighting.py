"""The loss weighting a multi-task model owns: set, run first under `fit`, saved with it."""

from __future__ import annotations

import keras

def set_weighting(model, weighting):
    """`MultiTaskModel.set_weighting` (its docstring says what it does)."""
    from mtlzoo import weighting as weighting_lib

    if weighting is None or weighting == "fixed":
        model._weighting = None
        return None
    if isinstance(weighting, str):
        callback = weighting_lib.get(weighting)
    elif isinstance(weighting, dict):
        if "name" not in weighting:
            raise ValueError(f"weighting= as a dict needs a 'name' (and optional 'config'), got {weighting!r}.")
        callback = weighting_lib.get(weighting["name"], **dict(weighting.get("config") or {}))
    elif isinstance(weighting, weighting_lib.LossWeighting):
        callback = weighting
    else:
        raise TypeError(
            f"weighting= must be a registered name ({', '.join(weighting_lib.list())}), "
            f"a config dict or a mtlzoo.weighting callback; got {type(weighting).__name__}."
        )
    if callback is None:  # "fixed"
        model._weighting = None
        return None
    # Its state exists from now on, so it is saved with the model's weights
    # (and a checkpoint's values can be loaded into it).
    callback.attach(model)
    model._weighting = callback
    return callback


def weighting_config(model):
    """The owned weighting as `{name, config}` for `get_config`, or None."""
    w = model._weighting
    return None if w is None else {"name": w.name, "config": w.get_config()}


def weighting_state(model):
    """The owned weighting's state variables that are not already the model's own (saved with the model)."""
    w = model._weighting
    if w is None:
        return []
    own = {id(v) for v in model._trainable_variables + model._non_trainable_variables}
    return [v for v in w.state_variables() if id(v) not in own]


def callbacks_with_weighting(model, callbacks):
    """The fit callbacks with the model's weighting in front, once; a different method is an error."""
    from mtlzoo.weighting import LossWeighting

    w = model._weighting
    if w is None or isinstance(callbacks, keras.callbacks.CallbackList):
        return callbacks
    callbacks = list(callbacks or [])
    given = [cb for cb in callbacks if isinstance(cb, LossWeighting)]
    if not given:
        return [w] + callbacks
    other = [cb for cb in given if type(cb) is not type(w)]
    if other:
        raise ValueError(
            f"Model {model.name!r} trains with the loss weighting {w!r} (built with weighting="
            f"{w.name!r}), but fit() was also given {other[0]!r}. Use one method: drop that callback, or "
            f"change the model's method with model.set_weighting({other[0].name!r}) "
            "(or build it with that weighting)."
        )
    if len(given) > 1:
        raise ValueError(f"fit() was given {len(given)} loss-weighting callbacks {given}; use one.")
    cb = given[0]
    if cb is not w:
        # The user's callback runs, once, and becomes the model's: it takes
        # over the state so far (e.g. after a reload) and is saved with it.
        cb.attach(model)
        if cb.get_config() == w.get_config():
            cb.copy_state_from(w)
        model._weighting = cb
    return callbacks


def training_methods(model) -> str:
    """`MultiTaskModel.training_methods` (its docstring says what it does)."""
    w = model._weighting
    hook = model._hooks.gradient
    inner = getattr(hook, "inner", None) if hook is not None and hasattr(hook, "owner") else hook
    aggregator = getattr(inner, "aggregator", None)
    if aggregator is not None:
        agg = type(aggregator).__name__ + ("-UB (representation)" if getattr(inner, "representation", False) else "")
    else:
        agg = "none (one backward pass of the weighted sum)"
    weighting = repr(w) if w is not None else f"fixed loss weights {model.get_loss_weights()}"
    return f"weighting: {weighting}; aggregator: {agg}"
