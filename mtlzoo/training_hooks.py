"""Installs a recipe's gradient aggregator on a compiled model (weightings attach at fit time)."""

from __future__ import annotations


def make_aggregator_hook(name, args=None):
    """An `AggregatorHook` for a registered aggregator; names ending in `_ub` are representation-level."""
    from mtlzoo.aggregators import get as get_aggregator
    from mtlzoo.gradient_hook import AggregatorHook

    args = dict(args or {})
    representation = bool(args.pop("representation", False))
    return AggregatorHook(get_aggregator(name, **args), representation=representation)


def install(model, recipe):
    """Attaches the recipe's aggregator (if any) as the model's gradient hook."""
    if recipe.aggregator is None:
        return None
    hook = make_aggregator_hook(recipe.aggregator, recipe.aggregator_args)
    model.set_step_hook(hook)
    return hook
