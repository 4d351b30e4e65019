"""Installs a recipe's loss weighting and gradient aggregator on a compiled model."""

from __future__ import annotations


def install(model, recipe):
    """Attaches the recipe's aggregator as the model's step hook (weightings attach at fit time)."""
    if recipe.aggregator is None:
        return None
    from mtlzoo.aggregators.hook import AggregatorHook
    from mtlzoo.aggregators import get as get_aggregator

    hook = AggregatorHook(get_aggregator(recipe.aggregator, **recipe.aggregator_args))
    model.set_step_hook(hook)
    return hook
