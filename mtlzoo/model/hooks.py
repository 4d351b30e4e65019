"""Train-step hooks of the multi-task model: one loss hook and one gradient hook."""

from __future__ import annotations


class StepHooks:
    """The step hooks, kept out of Keras's attribute tracking.

    Two slots: `loss` holds a hook with `combine` (it replaces the weighted
    sum), `gradient` one with `gradients` (it computes the update). One object
    may fill both.
    """

    def __init__(self):
        self.loss = None
        self.gradient = None


def set_step_hook(model, hook):
    """`MultiTaskModel.set_step_hook` (its docstring says what it does)."""
    if hook is None:
        model._hooks.loss = model._hooks.gradient = None
    else:
        has_combine, has_gradients = hasattr(hook, "combine"), hasattr(hook, "gradients")
        if not (has_combine or has_gradients):
            raise TypeError(f"{type(hook).__name__} is not a step hook: it defines neither `combine` nor `gradients`.")
        for slot, wanted in (("loss", has_combine), ("gradient", has_gradients)):
            current = getattr(model._hooks, slot)
            if wanted and current is not None and current is not hook:
                raise ValueError(
                    f"The model already has a {slot} hook ({type(current).__name__}); "
                    f"{type(hook).__name__} cannot be combined with it. Use one method that "
                    f"{'changes the loss' if slot == 'loss' else 'computes gradients'} at a time, "
                    "or call model.remove_step_hook(...) first."
                )
        if hasattr(hook, "build"):
            hook.build(model)
        if has_combine:
            model._hooks.loss = hook
        if has_gradients:
            model._hooks.gradient = hook
    model.train_function = None
    model.test_function = None


def remove_step_hook(model, hook):
    """`MultiTaskModel.remove_step_hook` (its docstring says what it does)."""
    if model._hooks.loss is hook:
        model._hooks.loss = None
    if model._hooks.gradient is hook:
        model._hooks.gradient = None
    model.train_function = None
    model.test_function = None
