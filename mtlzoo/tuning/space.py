"""The search space of `tune`: tuners, searched methods and their hyperparameter ranges."""

from __future__ import annotations

from mtlzoo.registry import suggestion

__all__ = [
    "AGGREGATOR_SPACE",
    "BUILTIN_OBJECTIVES",
    "DEFAULT_AGGREGATORS",
    "DEFAULT_WEIGHTINGS",
    "hp_choices",
    "hp_float",
    "SEEDED_AGGREGATORS",
    "SHARING_SPACE",
    "TUNERS",
    "TuningError",
    "WEIGHT_MODES",
    "WEIGHTING_SPACE",
]


TUNERS = ("random", "bayesian", "hyperband")


BUILTIN_OBJECTIVES = ("val_norm_loss", "val_delta_m")


WEIGHT_MODES = ("log_uniform", "simplex")


# Defaults when `search_weighting=True` / `search_aggregator=True`.
DEFAULT_WEIGHTINGS = ("fixed", "dwa", "uncertainty", "gradnorm")


DEFAULT_AGGREGATORS = ("none", "pcgrad", "mgda", "cagrad")


# Searched hyperparameters of the methods: name -> {argument: (low, high, sampling)}.
WEIGHTING_SPACE = {
    "dwa": {"temperature": (0.5, 5.0, "log")},
    "gradnorm": {"alpha": (0.0, 3.0, "linear")},
    "dtp": {"gamma": (0.5, 4.0, "linear")},
}


AGGREGATOR_SPACE = {
    "cagrad": {"c": (0.1, 0.9, "linear")},
    "gradvac": {"beta": (0.001, 0.1, "log")},
    "graddrop": {"leak": (0.0, 0.5, "linear")},
}


SHARING_SPACE = {
    "soft_l2": {"weight": (1e-4, 1e-1, "log")},
    "cross_stitch": {"alpha_self": (0.5, 0.99, "linear")},
}


# Aggregators with random draws get the recipe's seed, so trials are reproducible.
SEEDED_AGGREGATORS = ("pcgrad", "graddrop", "gradvac")


class TuningError(ValueError):
    """A tuning setup that cannot run (raised before any trial)."""


def hp_choices(value, default, registry, kind, extra=()):
    """Normalises a search_* argument to a list of canonical names (or [] when not searched)."""
    if value is False or value is None:
        return []
    names = list(default) if value is True else list(value) if isinstance(value, (list, tuple)) else [value]
    out = []
    for name in names:
        if not isinstance(name, str):
            raise TuningError(f"search_{kind}: entries must be names, got {name!r}.")
        if name in extra:
            out.append(name)
            continue
        if name not in registry:
            known = registry.list() + list(extra)
            raise TuningError(
                f"search_{kind}: unknown {registry.kind} {name!r}.{suggestion(name, known)} Known: {', '.join(known)}."
            )
        out.append(registry.canonical(name))
    if len(set(out)) != len(out):
        raise TuningError(f"search_{kind}: {out} lists a name twice.")
    return out


def hp_float(hp, name, low, high, sampling, default=None):
    return hp.Float(name, low, high, sampling=sampling, default=default)
