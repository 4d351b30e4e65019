"""Hyperparameter search for multi-task recipes with keras-tuner.

`tune(recipe, ...)` searches per-task loss weights (and optionally the
loss-weighting method with its hyperparameters, the gradient aggregator and
the sharing mode) with any keras-tuner tuner, and judges each trial by a
multi-task quality measure rather than by the weighted training loss (which
the loss weights themselves change):

- `val_norm_loss` (default): the mean over tasks of the validation loss
  divided by a per-task reference. The reference is, by default, the
  validation loss of the *freshly initialised* model (`norm_reference=
  "initial"`: the recipe's seed fixes the initial weights, so every trial of
  the same architecture shares it, in every worker process); the trial's own
  first-epoch value (`"first_epoch"`) or a fixed dict are the alternatives.
  Lower is better.
- `val_delta_m`: Δm (`mtlzoo.metrics_delta.delta_m`, percent, lower is
  better) of the validation metrics against single-task baselines given as
  `baselines={task: {metric: value}}`.
- any other logged name (`"val_segmentation_miou"`, ...), with its direction
  inferred from the name or given as `keras_tuner.Objective(name, direction)`.

The objective is computed at the end of each epoch by a callback that writes
it into the epoch `logs`, where keras-tuner reads it. A trial whose objective
or loss is not finite (diverged) ends as FAILED (`keras_tuner.errors.
FailedTrialError`) and the search goes on. The search is resumable: calling
`tune` again with the same `directory` and `project_name` (the default
`overwrite=False`) reloads the finished trials and reruns the one that was
interrupted. keras-tuner's chief/worker mode (`KERASTUNER_TUNER_ID`,
`KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`) works unchanged: the chief
serves the oracle and writes the results, the workers run trials.

Outputs of `tune` (in `out_dir`, by default the project folder; each written
to a temporary file and renamed into place, so a killed search never leaves
a truncated one):
`tuning_results.csv`, `tuning_results.md` (one row per trial, failed ones
included), `tuning_plot.png` (objective per trial; chosen loss weights per
task) and `best_recipe.yaml`, a recipe that `mtlzoo.get_recipe(path)` and
`mtlzoo train` accept.

Example:
```python
import mtlzoo.tuning
result = mtlzoo.tuning.tune("tabular_demo", tuner="bayesian", trials=20, epochs=5,
                            data=(x, y), validation_data=(x_val, y_val),
                            directory="tuning", search_weighting=["fixed", "dwa"])
result.best_recipe_path, result.best_hyperparameters
model = mtlzoo.build(result.best_recipe_path)
```

Reference:
    Maninis, Radosavovic and Kokkinos, "Attentive Single-Tasking of Multiple
    Tasks", CVPR 2019 (Δm). Li et al., "Hyperband: A Novel Bandit-Based
    Approach to Hyperparameter Optimization", JMLR 2018. Snoek, Larochelle and
    Adams, "Practical Bayesian Optimization of Machine Learning Algorithms",
    NeurIPS 2012. O'Malley et al., KerasTuner, https://github.com/keras-team/keras-tuner.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import math
import os
import warnings

import keras
import keras_tuner as kt
import numpy as np

from mtlzoo import fileio
from mtlzoo.recipe import BUILTIN_WEIGHTINGS, Recipe, get_recipe
from mtlzoo.registry import AGGREGATORS, HEADS, SHARING, WEIGHTINGS, suggestion

__all__ = [
    "MultiTaskHyperModel",
    "ObjectiveCallback",
    "TuneResult",
    "TUNERS",
    "infer_direction",
    "tune",
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
_SEEDED_AGGREGATORS = ("pcgrad", "graddrop", "gradvac")

# Metric-name endings (after the task prefix) and their direction.
_HIGHER = ("acc", "accuracy", "pixel_acc", "miou", "iou", "delta1", "delta2", "delta3", "f1", "auc",
           "recall", "center_recall", "precision", "map", "ap")
_LOWER = ("loss", "mae", "mse", "rmse", "abs_err", "abs_rel", "sq_rel", "err", "error", "delta_m", "norm_loss",
          "nonfinite_steps")


class TuningError(ValueError):
    """A tuning setup that cannot run (raised before any trial)."""


# ---------------------------------------------------------------- helpers
def infer_direction(name):
    """"min" or "max" for a logged metric name, or None when the name does not tell.

    Example:
    ```python
    infer_direction("val_segmentation_miou")   # "max"
    infer_direction("val_depth_abs_err")       # "min"
    ```
    """
    base = name[4:] if name.startswith("val_") else name
    for suffix in sorted(_HIGHER + _LOWER, key=len, reverse=True):
        if base == suffix or base.endswith("_" + suffix):
            return "max" if suffix in _HIGHER else "min"
    return None


def _choices(value, default, registry, kind, extra=()):
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


def _hp_float(hp, name, low, high, sampling, default=None):
    return hp.Float(name, low, high, sampling=sampling, default=default)


def _as_fit_data(data, batch_size):
    """(x, y, batch_size) for model.fit from a Dataset or an (x, y) pair."""
    if data is None:
        return None, None, None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1], batch_size
    return data, None, None


def _recipe_datasets(recipe, num_examples=None):
    """(train, validation) datasets from the recipe's `data` section via `mtlzoo.data.load`."""
    settings = dict(recipe.data)
    name = settings.pop("name", None)
    if not name:
        raise TuningError(
            f"recipe {recipe.name!r} has no `data: {{name: ...}}` section: pass data=(x, y) or a "
            "tf.data.Dataset, and validation_data=, to tune it."
        )
    import mtlzoo.data

    if len(recipe.input_shape) != 3:
        raise TuningError(
            f"recipe {recipe.name!r}: data {name!r} gives images but input_shape is {recipe.input_shape}."
        )
    batch_size = int(recipe.training.get("batch_size", 16))
    n = settings.pop("num_examples", num_examples)
    val_n = settings.pop("validation_examples", n)
    settings.pop("splits", None)
    common = dict(batch_size=batch_size, image_size=tuple(recipe.input_shape[:2]), tasks=list(recipe.tasks), **settings)
    fractions = common.pop("label_fractions", None)
    train = mtlzoo.data.load(name, split="train", num_examples=n, label_fractions=fractions, **common)
    val = mtlzoo.data.load(name, split="validation", num_examples=val_n, **common)
    return train, val


def logged_names(recipe, validation=True, weighting=False, sharing_modes=()):
    """The names a MultiTaskModel built from `recipe` (and the tuning callbacks) log per epoch.

    Args:
        recipe: a `Recipe`.
        validation: bool. Include the `val_` names.
        weighting: bool. A weighting callback runs (it logs `{task}_weight`).
        sharing_modes: extra sharing modes searched (their penalties are logged).

    Returns:
        sorted list of str.
    """
    from mtlzoo import metrics as metrics_lib

    names = {"loss", "nonfinite_steps"}
    for task, spec in recipe.tasks.items():
        head = HEADS.get(spec.kind)(**spec.head_args)
        names.add(f"{task}_loss")
        for m in head.metrics():
            names.add(f"{task}_{metrics_lib.get(m).name}")
        if weighting or recipe.weighting not in BUILTIN_WEIGHTINGS:
            names.add(f"{task}_weight")
    for mode in {recipe.sharing, *sharing_modes}:
        if mode == "soft_l2":
            names.add("soft_l2_penalty")
    if validation:
        names |= {f"val_{n}" for n in names if not n.endswith("_weight") and n != "nonfinite_steps"}
        names |= set(BUILTIN_OBJECTIVES)
    return sorted(names)


# ---------------------------------------------------------------- objective
class ObjectiveCallback(keras.callbacks.Callback):
    """Writes the tuning objective into the epoch logs (keras-tuner reads it there).

    Args:
        name: str. The log key written (`val_norm_loss`, `val_delta_m`) or read
            (any other logged name).
        tasks: list of task names.
        baselines: dict {task: {metric: value}}; `val_delta_m` only.
        higher_is_better: dict {task: {metric: bool}}; `val_delta_m` only.
        reference: dict {task: loss} or "first_epoch"; `val_norm_loss` only.

    A non-finite objective or training loss raises
    `keras_tuner.errors.FailedTrialError`: keras-tuner records the trial as
    FAILED and goes on with the next one.

    Example:
    ```python
    cb = ObjectiveCallback("val_norm_loss", ["label", "target"], reference={"label": 1.1, "target": 2.0})
    model.fit(x, y, validation_data=(xv, yv), callbacks=[cb])
    ```
    """

    def __init__(self, name, tasks, baselines=None, higher_is_better=None, reference="first_epoch"):
        super().__init__()
        self.name = name
        self.tasks = list(tasks)
        self.baselines = baselines
        self.higher_is_better = higher_is_better
        self.reference = reference if isinstance(reference, dict) else None
        self.history = []

    def _value(self, logs):
        if self.name == "val_norm_loss":
            losses = {}
            for t in self.tasks:
                key = f"val_{t}_loss"
                if key not in logs:
                    raise kt.errors.FatalValueError(f"val_norm_loss needs {key!r} in the logs; got {sorted(logs)}.")
                losses[t] = float(logs[key])
            if self.reference is None:
                self.reference = dict(losses)
            ratios = [losses[t] / self.reference[t] if self.reference[t] > 0 else math.nan for t in self.tasks]
            return float(np.mean(ratios))
        if self.name == "val_delta_m":
            from mtlzoo.metrics_delta import delta_m

            mtl, stl, hib = {}, {}, {}
            for t, metrics in self.baselines.items():
                for m, value in metrics.items():
                    key = f"val_{t}_{m}"
                    if key not in logs:
                        raise kt.errors.FatalValueError(f"val_delta_m needs {key!r} in the logs; got {sorted(logs)}.")
                    mtl[f"{t}/{m}"] = float(logs[key])
                    stl[f"{t}/{m}"] = float(value)
                    hib[f"{t}/{m}"] = bool(self.higher_is_better[t][m])
            if not all(math.isfinite(v) for v in mtl.values()):
                return math.nan
            return float(delta_m(mtl, stl, hib))
        if self.name not in logs:
            raise kt.errors.FatalValueError(f"The objective {self.name!r} is not in the logs; got {sorted(logs)}.")
        return float(logs[self.name])

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        value = self._value(logs)
        logs[self.name] = value
        self.history.append(value)
        loss = float(logs.get("loss", 0.0))
        if not math.isfinite(value) or not math.isfinite(loss):
            raise kt.errors.FailedTrialError(
                f"Trial diverged at epoch {epoch + 1}: {self.name}={value}, loss={loss} (not finite)."
            )


# ---------------------------------------------------------------- hypermodel
class MultiTaskHyperModel(kt.HyperModel):
    """A keras-tuner `HyperModel` over a multi-task recipe.

    The search space:

    - **Loss weights**, one per task: `search_weights="log_uniform"` draws each
      `w_t` log-uniformly in `weight_range` (hyperparameters `weight_{task}`);
      `"simplex"` draws `u_t ~ U(1e-4, 1)` (`simplex_{task}`) and sets
      `w_t = T · e_t / Σ e`, `e_t = −log u_t`: uniform on the simplex scaled to
      sum to T (only the ratios are searched). None: the recipe's weights.
      When the weighting method is searched, the weights are searched for
      `fixed` only (the other methods set the weights themselves).
    - **Weighting method** (`search_weighting=True` or a list of names, e.g.
      `["fixed", "dwa", "gradnorm"]`, hyperparameter `weighting`), with DWA's
      temperature (`dwa_temperature`), GradNorm's alpha (`gradnorm_alpha`)
      and DTP's gamma (`dtp_gamma`).
    - **Gradient aggregator** (`search_aggregator`, `"none"` = plain
      gradients; hyperparameter `aggregator`), with CAGrad's `c`, GradVac's
      `beta` and GradDrop's `leak`.
    - **Sharing mode** (`search_sharing`, hyperparameter `sharing`), with the
      soft-L2 penalty weight and the cross-stitch `alpha_self`.

    `build(hp)` returns the compiled `MultiTaskModel` of the trial's recipe
    (`recipe_for(hp)`), `fit(hp, model, ...)` trains it with the trial's
    weighting callback and the objective callback.

    Args:
        recipe: str, path or `Recipe`.
        data: training data: a `tf.data.Dataset` of (x, {task: y}), an (x, y)
            pair of arrays, or None for the recipe's `data` section.
        validation_data: same forms; needed by `val_*` objectives.
        baselines: dict {task: {metric: value}}: single-task results for
            `val_delta_m` (metric names as logged after the task prefix, e.g.
            `{"segmentation": {"miou": 0.41}}`).
        higher_is_better: dict {task: {metric: bool}} or None to infer from the
            metric names.
        search_weights: "log_uniform", "simplex" or None.
        weight_range: (low, high) with 0 < low < high. Defaults to (0.01, 10).
        search_weighting: False, True or a list of weighting names ("fixed" included).
        search_aggregator: False, True or a list of aggregator names ("none" included).
        search_sharing: False, True or a list of sharing modes.
        epochs: int. Epochs per trial; defaults to the recipe's `training.epochs` or 3.
        objective: str or `keras_tuner.Objective`. Defaults to "val_norm_loss".
        norm_reference: "initial", "first_epoch" or dict {task: loss}, for `val_norm_loss`.
        callbacks: extra Keras callbacks for every trial's `fit`.
        **overrides: recipe overrides applied first (`input_shape=...`, ...).

    Raises:
        ValueError: an invalid search space (nothing tunable, unknown names,
            bad range) or objective, before any trial.

    Example:
    ```python
    hm = MultiTaskHyperModel("tabular_demo", data=(x, y), validation_data=(xv, yv),
                             search_weights="simplex", search_aggregator=["none", "pcgrad"])
    tuner = keras_tuner.RandomSearch(hm, objective=hm.objective, max_trials=5)
    tuner.search()
    ```
    """

    def __init__(
        self,
        recipe,
        data=None,
        validation_data=None,
        baselines=None,
        higher_is_better=None,
        search_weights="log_uniform",
        weight_range=(0.01, 10.0),
        search_weighting=False,
        search_aggregator=False,
        search_sharing=False,
        epochs=None,
        objective="val_norm_loss",
        norm_reference="initial",
        callbacks=(),
        **overrides,
    ):
        super().__init__(name="mtlzoo_hypermodel", tunable=True)
        self.recipe = get_recipe(recipe, **overrides) if overrides or not isinstance(recipe, Recipe) else recipe
        self.task_names = list(self.recipe.tasks)
        self.data = data
        self.validation_data = validation_data
        self.callbacks = list(callbacks)
        self.epochs = int(epochs if epochs is not None else self.recipe.training.get("epochs", 3))
        if self.epochs < 1:
            raise TuningError(f"epochs must be >= 1, got {self.epochs}.")
        # ---- search space
        if search_weights in (False, "none"):
            search_weights = None
        if search_weights is not None and search_weights not in WEIGHT_MODES:
            raise TuningError(
                f"search_weights must be one of {WEIGHT_MODES} or None, got {search_weights!r}."
                f"{suggestion(str(search_weights), WEIGHT_MODES)}"
            )
        self.search_weights = search_weights
        try:
            low, high = (float(v) for v in weight_range)
        except (TypeError, ValueError):
            raise TuningError(f"weight_range must be (low, high), got {weight_range!r}.") from None
        if not (0 < low < high) or not math.isfinite(high):
            raise TuningError(f"weight_range must satisfy 0 < low < high (log-uniform), got {weight_range!r}.")
        self.weight_range = (low, high)
        self.weightings = _choices(
            search_weighting, DEFAULT_WEIGHTINGS, WEIGHTINGS, "weighting", extra=BUILTIN_WEIGHTINGS
        )
        self.aggregators = _choices(search_aggregator, DEFAULT_AGGREGATORS, AGGREGATORS, "aggregator", extra=("none",))
        self.sharings = _choices(search_sharing, SHARING.list(), SHARING, "sharing")
        if len(self.task_names) < 2 and any(s != "hard" for s in self.sharings):
            raise TuningError("search_sharing: cross-stitch and soft sharing need at least two tasks.")
        tunable = []
        if search_weights == "log_uniform" or (search_weights == "simplex" and len(self.task_names) > 1):
            tunable.append("loss weights")
        spaces = (("weighting", self.weightings, WEIGHTING_SPACE), ("aggregator", self.aggregators, AGGREGATOR_SPACE),
                  ("sharing", self.sharings, SHARING_SPACE))
        for kind, names, space in spaces:
            if len(names) > 1:
                tunable.append(kind)
            elif len(names) == 1 and space.get(names[0]):
                tunable.append(f"{names[0]} hyperparameters")
        if not tunable:
            raise TuningError(
                "The search space has no tunable parameter: give search_weights='log_uniform' (or 'simplex' with "
                "two or more tasks), or two or more choices in search_weighting / search_aggregator / search_sharing."
            )
        self.tunable = tunable
        # ---- objective
        self.baselines = baselines
        self.objective = self._make_objective(objective, higher_is_better)
        if isinstance(norm_reference, dict):
            missing = [t for t in self.task_names if t not in norm_reference]
            if missing:
                raise TuningError(f"norm_reference misses task(s) {missing}.")
            norm_reference = {t: float(norm_reference[t]) for t in self.task_names}
        elif norm_reference not in ("initial", "first_epoch"):
            raise TuningError(
                f"norm_reference must be 'initial', 'first_epoch' or a dict {{task: loss}}, got {norm_reference!r}."
            )
        self.norm_reference = norm_reference
        self._reference_cache = {}

    # ------------------------------------------------------------ objective
    def _make_objective(self, objective, higher_is_better):
        has_validation = self.validation_data is not None or (self.data is None and bool(self.recipe.data.get("name")))
        if isinstance(objective, kt.Objective):
            name, direction = objective.name, objective.direction
        elif isinstance(objective, str):
            name = objective
            direction = "min" if name in BUILTIN_OBJECTIVES else infer_direction(name)
            if direction is None:
                raise TuningError(
                    f"Cannot tell whether objective {name!r} should go up or down: pass "
                    f"keras_tuner.Objective({name!r}, 'max') or ('min')."
                )
        else:
            raise TuningError(f"objective must be a name or a keras_tuner.Objective, got {type(objective).__name__}.")
        if direction not in ("min", "max"):
            raise TuningError(f"objective direction must be 'min' or 'max', got {direction!r}.")
        if name in BUILTIN_OBJECTIVES and direction != "min":
            raise TuningError(f"{name} is lower-is-better: its direction must be 'min'.")
        if name.startswith("val_") and not has_validation:
            raise TuningError(
                f"objective {name!r} is a validation metric: pass validation_data= (or a recipe with a data section)."
            )
        logged = logged_names(
            self.recipe, validation=has_validation, weighting=len(self.weightings) > 0, sharing_modes=self.sharings
        )
        if name not in logged:
            raise TuningError(
                f"objective {name!r} is not logged by this model or the tuning callbacks.{suggestion(name, logged)} "
                f"Logged: {', '.join(logged)}."
            )
        if name == "val_delta_m":
            self.higher_is_better = self._check_baselines(higher_is_better, logged)
        return kt.Objective(name, direction)

    def _check_baselines(self, higher_is_better, logged):
        if not isinstance(self.baselines, dict) or not self.baselines:
            raise TuningError("objective 'val_delta_m' needs baselines={task: {metric: single-task value}}.")
        out = {}
        for t, metrics in self.baselines.items():
            if t not in self.task_names:
                raise TuningError(
                    f"baselines name unknown task {t!r}.{suggestion(t, self.task_names)} Tasks: {self.task_names}."
                )
            if not isinstance(metrics, dict) or not metrics:
                raise TuningError(f"baselines[{t!r}] must be a non-empty dict {{metric: value}}, got {metrics!r}.")
            out[t] = {}
            for m, value in metrics.items():
                key = f"val_{t}_{m}"
                if key not in logged:
                    options = [n[len(f"val_{t}_"):] for n in logged if n.startswith(f"val_{t}_")]
                    raise TuningError(
                        f"baselines[{t!r}][{m!r}]: the model does not log {key!r}.{suggestion(m, options)} "
                        f"Task {t!r} logs: {', '.join(options)}."
                    )
                number = isinstance(value, (int, float)) and not isinstance(value, bool)
                if not number or not math.isfinite(value) or value == 0:
                    raise TuningError(f"baselines[{t!r}][{m!r}] must be a finite non-zero number, got {value!r}.")
                given = ((higher_is_better or {}).get(t) or {}).get(m)
                if given is None:
                    direction = infer_direction(m)
                    if direction is None:
                        raise TuningError(
                            f"Cannot infer whether {t}/{m} is higher-is-better: "
                            f"pass higher_is_better={{{t!r}: {{{m!r}: True}}}}."
                        )
                    given = direction == "max"
                out[t][m] = bool(given)
        return out

    # ------------------------------------------------------------ search space
    def trial_config(self, hp):
        """Registers the search space on `hp` and returns the trial's settings.

        Returns:
            dict with `weights` ({task: weight} or None), `weighting`,
            `weighting_args`, `aggregator` (None for plain gradients),
            `aggregator_args`, `sharing`, `sharing_args`.
        """
        recipe = self.recipe
        config = {
            "weights": None,
            "weighting": recipe.weighting,
            "weighting_args": dict(recipe.weighting_args),
            "aggregator": recipe.aggregator,
            "aggregator_args": dict(recipe.aggregator_args),
            "sharing": recipe.sharing,
            "sharing_args": dict(recipe.sharing_args),
        }
        if len(self.weightings) > 1:
            config["weighting"] = hp.Choice("weighting", self.weightings)
        elif self.weightings:
            config["weighting"] = self.weightings[0]
        if self.weightings:
            config["weighting_args"] = self._search_args(hp, "weighting", config["weighting"], self.weightings,
                                                         WEIGHTING_SPACE)
        if self.search_weights is not None:
            with self._scope(hp, "weighting", "fixed", self.weightings):
                if config["weighting"] in BUILTIN_WEIGHTINGS or not self.weightings:
                    config["weights"] = self._weights(hp)
                elif "fixed" not in self.weightings:
                    config["weights"] = self._weights(hp)
        if len(self.aggregators) > 1:
            choice = hp.Choice("aggregator", self.aggregators)
        else:
            choice = self.aggregators[0] if self.aggregators else (recipe.aggregator or "none")
        if self.aggregators:
            config["aggregator"] = None if choice == "none" else choice
            config["aggregator_args"] = self._search_args(hp, "aggregator", choice, self.aggregators,
                                                          AGGREGATOR_SPACE)
            if config["aggregator"] in _SEEDED_AGGREGATORS:
                config["aggregator_args"]["seed"] = int(recipe.seed)
        if len(self.sharings) > 1:
            config["sharing"] = hp.Choice("sharing", self.sharings)
        elif self.sharings:
            config["sharing"] = self.sharings[0]
        if self.sharings:
            config["sharing_args"] = self._search_args(hp, "sharing", config["sharing"], self.sharings,
                                                       SHARING_SPACE)
        return config

    def _search_args(self, hp, parent, chosen, candidates, spaces):
        """Declares the hyperparameters of every candidate method; returns the chosen one's values."""
        args = {}
        for name, space in spaces.items():
            if name in candidates:
                with self._scope(hp, parent, name, candidates):
                    for arg, (lo, hi, sampling) in space.items():
                        value = _hp_float(hp, f"{name}_{arg}", lo, hi, sampling)
                        if chosen == name:
                            args[arg] = value
        return args

    @staticmethod
    def _scope(hp, parent, value, choices):
        """A conditional scope when `parent` is searched among several choices, else a no-op."""
        import contextlib

        if len(choices) > 1 and value in choices:
            return hp.conditional_scope(parent, [value])
        return contextlib.nullcontext()

    def _weights(self, hp):
        low, high = self.weight_range
        if self.search_weights == "log_uniform":
            out = {}
            for t in self.task_names:
                default = min(max(self.recipe.tasks[t].loss_weight, low), high)
                value = hp.Float(f"weight_{t}", low, high, sampling="log", default=default)
                if value is None:
                    return None
                out[t] = float(value)
            return out
        if len(self.task_names) < 2:
            return None
        raw = [hp.Float(f"simplex_{t}", 1e-4, 1.0, default=0.5) for t in self.task_names]
        if any(v is None for v in raw):
            return None
        e = [-math.log(v) for v in raw]
        total = sum(e)
        return {t: len(e) * v / total for t, v in zip(self.task_names, e)}

    def recipe_for(self, hp_or_config):
        """The recipe of one trial (from its `HyperParameters` or its `trial_config` dict)."""
        config = hp_or_config if isinstance(hp_or_config, dict) else self.trial_config(copy.deepcopy(hp_or_config))
        overrides = {
            "weighting": config["weighting"],
            "weighting_args": config["weighting_args"],
            "aggregator": config["aggregator"],
            "aggregator_args": config["aggregator_args"] if config["aggregator"] else {},
            "sharing": config["sharing"],
            "sharing_args": config["sharing_args"],
        }
        if config["weights"]:
            # Dotted keys change each task's weight and keep the rest of its spec.
            overrides.update({f"tasks.{t}.loss_weight": float(w) for t, w in config["weights"].items()})
        return self.recipe.override(**overrides)

    # ------------------------------------------------------------ build / fit
    def build(self, hp):
        return self.recipe_for(self.trial_config(hp)).build(compile=True)

    def _datasets(self):
        if self.data is None and self.validation_data is None:
            self.data, self.validation_data = _recipe_datasets(self.recipe)
        elif self.data is None:
            self.data, _ = _recipe_datasets(self.recipe)
        return self.data, self.validation_data

    def _initial_reference(self, config, model, hp, validation):
        key = (config["sharing"], tuple(sorted(config["sharing_args"].items())))
        if key not in self._reference_cache:
            probe = model
            if any(k.startswith("tuner/") for k in hp.values):  # Hyperband: weights loaded from an earlier round
                with model.distribute_strategy.scope():
                    probe = self.recipe_for(config).build(compile=True)
            vx, vy, bs = _as_fit_data(validation, int(self.recipe.training.get("batch_size", 32)))
            logs = probe.evaluate(vx, vy, batch_size=bs, verbose=0, return_dict=True)
            self._reference_cache[key] = {t: float(logs[f"{t}_loss"]) for t in self.task_names}
        return self._reference_cache[key]

    def objective_callback(self, config, model, hp):
        """The callback that writes this hypermodel's objective into the logs for one trial."""
        reference = self.norm_reference
        if self.objective.name == "val_norm_loss" and reference == "initial":
            reference = self._initial_reference(config, model, hp, self._datasets()[1])
        return ObjectiveCallback(
            self.objective.name, self.task_names, baselines=self.baselines,
            higher_is_better=getattr(self, "higher_is_better", None), reference=reference,
        )

    def fit(self, hp, model, *args, **kwargs):
        config = self.trial_config(hp)
        data, validation = self._datasets()
        if args:
            data, args = args[0], args[1:]
        data = kwargs.pop("x", data)
        validation = kwargs.pop("validation_data", None) or validation
        x, y, batch_size = _as_fit_data(data, int(self.recipe.training.get("batch_size", 32)))
        if "y" in kwargs:
            y = kwargs.pop("y")
        kwargs.setdefault("epochs", self.epochs)
        kwargs.setdefault("verbose", 0)
        if batch_size is not None:
            kwargs.setdefault("batch_size", batch_size)
        if validation is not None:
            vx, vy, _ = _as_fit_data(validation, None)
            kwargs["validation_data"] = (vx, vy) if vy is not None else vx
        callbacks = []
        if config["weighting"] not in BUILTIN_WEIGHTINGS:
            import mtlzoo.weighting

            callbacks.append(mtlzoo.weighting.get(config["weighting"], **config["weighting_args"]))
        callbacks.append(self.objective_callback(config, model, hp))
        callbacks += self.callbacks + list(kwargs.pop("callbacks", None) or [])
        return model.fit(x, y, *args, callbacks=callbacks, **kwargs)


# ---------------------------------------------------------------- results
@dataclasses.dataclass
class TuneResult:
    """What `tune` found and wrote.

    Attributes:
        role: "single", "chief" or "worker" (workers write no outputs).
        objective: the `keras_tuner.Objective`.
        rows: one dict per trial (trial id, status, objective value, weights, choices).
        best_hyperparameters: dict of the best trial's values, or None.
        best_score: float or None.
        best_recipe: `Recipe` or None.
        best_recipe_path, table_csv, table_md, plot: output paths (None for workers).
        tuner: the keras-tuner tuner.
    """

    role: str
    objective: object
    rows: list
    best_hyperparameters: dict | None = None
    best_score: float | None = None
    best_recipe: Recipe | None = None
    best_recipe_path: str | None = None
    table_csv: str | None = None
    table_md: str | None = None
    plot: str | None = None
    tuner: object = None


def _short_message(message):
    if not message:
        return ""
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _rows(tuner, hypermodel):
    objective = tuner.oracle.objective.name
    rows = []
    for trial_id in sorted(tuner.oracle.trials, key=lambda s: (len(s), s)):
        trial = tuner.oracle.trials[trial_id]
        hp = copy.deepcopy(trial.hyperparameters)
        try:
            config = hypermodel.trial_config(hp)
        except Exception:  # a trial whose values no longer fit the space
            config = None
        row = {"trial": trial_id, "status": str(trial.status), objective: trial.score}
        weights = (config or {}).get("weights") or {}
        for t in hypermodel.task_names:
            row[f"weight_{t}"] = weights.get(t, hypermodel.recipe.tasks[t].loss_weight)
        if config is not None:
            if hypermodel.weightings:
                row["weighting"] = config["weighting"]
            if hypermodel.aggregators:
                row["aggregator"] = config["aggregator"] or "none"
            if hypermodel.sharings:
                row["sharing"] = config["sharing"]
            for group in ("weighting_args", "aggregator_args", "sharing_args"):
                for k, v in config[group].items():
                    if k != "seed":
                        row[f"{config[group.split('_')[0]]}_{k}"] = v
        for k, v in trial.hyperparameters.values.items():
            if k.startswith("tuner/") and k in ("tuner/epochs",):
                row["epochs"] = v
        row["message"] = _short_message(trial.message) if str(trial.status) != "COMPLETED" else ""
        rows.append(row)
    # Same columns in every row, the failure message last.
    columns = []
    for row in rows:
        columns += [k for k in row if k not in columns and k != "message"]
    rows = [{**{k: row.get(k) for k in columns}, "message": row["message"]} for row in rows]
    return rows


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_table(rows, csv_path, md_path):
    """Writes the per-trial rows as CSV and as a markdown table."""
    columns = []
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    with fileio.atomic_write(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") if row.get(k) is not None else "" for k in columns})
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(k)).replace("|", "/") for k in columns) + " |")
    fileio.atomic_write_text(md_path, "\n".join(lines) + "\n")


def write_plot(rows, objective, tasks, path, direction="min"):
    """Objective per trial and chosen loss weights per task, as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = list(range(len(rows)))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6, 0.4 * len(rows) + 3), 7), sharex=True)
    ok = [(i, r[objective]) for i, r in zip(index, rows) if r["status"] == "COMPLETED" and r[objective] is not None]
    failed = [i for i, r in zip(index, rows) if r["status"] != "COMPLETED"]
    if ok:
        xs, ys = zip(*ok)
        ax1.plot(xs, ys, "o-", color="tab:blue", label="completed")
        best = (min if direction == "min" else max)(ok, key=lambda p: p[1])
        label = f"best (trial {rows[best[0]]['trial']})"
        ax1.plot([best[0]], [best[1]], "*", color="tab:orange", markersize=16, label=label)
    if failed:
        bottom = ax1.get_ylim()[0] if ok else 0.0
        ax1.plot(failed, [bottom] * len(failed), "x", color="tab:red", markersize=10, label="failed")
    ax1.set_ylabel(f"{objective} ({'lower' if direction == 'min' else 'higher'} is better)")
    ax1.legend(loc="best", fontsize=8)
    ax1.grid(alpha=0.3)
    for t in tasks:
        ax2.plot(index, [r.get(f"weight_{t}") for r in rows], "o-", label=t)
    ax2.set_yscale("log")
    ax2.set_ylabel("loss weight")
    ax2.set_xlabel("trial")
    ax2.set_xticks(index)
    ax2.set_xticklabels([r["trial"] for r in rows], rotation=90, fontsize=7)
    ax2.legend(loc="best", fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fileio.atomic_savefig(fig, path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- tune
def check_project_overwrite(directory, project_name):
    """Refuses `overwrite=True` unless `directory/project_name` is absent or an earlier keras-tuner project.

    keras-tuner's `overwrite=True` deletes the whole project folder; mtlzoo lets
    it do so only when the folder holds keras-tuner's `oracle.json` (or is
    empty), so a mistyped `--out`/`--project` never deletes unrelated files.

    Raises:
        FileExistsError: naming the folder, which was left untouched.
    """
    path = os.path.join(os.fspath(directory), project_name)
    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        raise FileExistsError(
            f"--overwrite: {path!r} is not a tuning project folder (it is a file or a link); it was left untouched. "
            "Choose another --out or --project."
        )
    if os.listdir(path) and not os.path.isfile(os.path.join(path, "oracle.json")):
        raise FileExistsError(
            f"--overwrite: {path!r} holds files that are not an earlier tuning project (no oracle.json); it was "
            "left untouched. Choose another --out or --project, or move those files away."
        )


def tune(
    recipe,
    tuner="random",
    trials=10,
    directory="tuning",
    project_name=None,
    objective="val_norm_loss",
    strategy=None,
    data=None,
    validation_data=None,
    baselines=None,
    higher_is_better=None,
    search_weights="log_uniform",
    weight_range=(0.01, 10.0),
    search_weighting=False,
    search_aggregator=False,
    search_sharing=False,
    epochs=None,
    norm_reference="initial",
    overwrite=False,
    seed=None,
    tuner_seed=None,
    executions_per_trial=1,
    max_consecutive_failed_trials=None,
    callbacks=(),
    out_dir=None,
    tuner_args=None,
    verbose=0,
    **overrides,
):
    """Searches a recipe's loss weights (and optionally weighting, aggregator, sharing) with keras-tuner.

    Everything is checked before the first trial: the tuner name, the search
    space, the objective (it must be logged by the model or the tuning
    callbacks), the strategy name, TF_CONFIG (when set or when
    `strategy="multi_worker"`) and keras-tuner's distributed-search variables.

    Args:
        recipe: str, path or `Recipe`.
        tuner: "random", "bayesian" or "hyperband".
        trials: int >= 1. Trials in total, a resumed search's finished ones
            included (random, bayesian). Hyperband runs its own schedule with
            `max_epochs=epochs` and ignores it.
        directory: str. keras-tuner's working folder (trials, oracle state).
        project_name: str. Defaults to "{recipe name}_{tuner}".
        objective: str or `keras_tuner.Objective`. "val_norm_loss" (default),
            "val_delta_m" (needs `baselines`) or a logged metric name.
        strategy: None, a name ("mirrored", "multi_worker", "one_device", "tpu")
            or a `tf.distribute.Strategy`: each trial's model is built and
            trained under it.
        data, validation_data: training / validation data (a `tf.data.Dataset`
            or an (x, y) pair); None loads the recipe's `data` section.
        baselines, higher_is_better, search_weights, weight_range,
        search_weighting, search_aggregator, search_sharing, epochs,
        norm_reference: see `MultiTaskHyperModel`.
        overwrite: bool. Start over instead of resuming. Defaults to False.
        seed: int or None. The recipe's seed (weight initialisation, data
            order), like `recipe.seed`; None keeps the recipe's.
        tuner_seed: int or None. The tuner's seed (which values it draws).
        executions_per_trial: int. Trainings averaged per trial.
        max_consecutive_failed_trials: int or None. Stop after that many
            failed trials in a row; None never stops for failures.
        callbacks: extra Keras callbacks for every trial.
        out_dir: str or None. Where the table, plot and best recipe go
            (default: the project folder).
        tuner_args: dict. Extra arguments of the keras-tuner class
            (`num_initial_points`, `factor`, ...).
        verbose: int. Passed to `search`.
        **overrides: recipe overrides.

    Returns:
        A `TuneResult`.

    Raises:
        ValueError: bad input (before any trial).
        RuntimeError: no trial completed (the table is written first).

    Example:
    ```python
    result = mtlzoo.tuning.tune("driving_perception_lite", tuner="bayesian", trials=30,
                                objective="val_delta_m",
                                baselines={"segmentation": {"miou": 0.52}, "depth": {"abs_err": 4.1}})
    print(open(result.table_md).read())
    ```
    """
    from mtlzoo import distribute

    if not isinstance(tuner, str) or tuner.lower() not in TUNERS:
        raise TuningError(f"Unknown tuner {tuner!r}.{suggestion(str(tuner), TUNERS)} Known: {', '.join(TUNERS)}.")
    tuner = tuner.lower()
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise TuningError(f"trials must be an integer >= 1, got {trials!r}.")
    role = distribute.check_tuner_env()
    if os.environ.get("TF_CONFIG"):
        distribute.validate_tf_config(for_strategy="multi_worker" if strategy == "multi_worker" else "any")
    distribute.check_strategy(strategy)
    if seed is not None:
        overrides["seed"] = int(seed)
    hypermodel = MultiTaskHyperModel(
        recipe, data=data, validation_data=validation_data, baselines=baselines, higher_is_better=higher_is_better,
        search_weights=search_weights, weight_range=weight_range, search_weighting=search_weighting,
        search_aggregator=search_aggregator, search_sharing=search_sharing, epochs=epochs, objective=objective,
        norm_reference=norm_reference, callbacks=callbacks, **overrides,
    )
    if tuner == "hyperband" and hypermodel.epochs < 2:
        raise TuningError("tuner='hyperband' needs epochs >= 2 (its max_epochs).")
    resolved = distribute.resolve_strategy(strategy)
    project_name = project_name or f"{hypermodel.recipe.name}_{tuner}"
    if overwrite:
        check_project_overwrite(directory, project_name)
    common = dict(
        hypermodel=hypermodel,
        objective=hypermodel.objective,
        directory=str(directory),
        project_name=project_name,
        overwrite=bool(overwrite),
        seed=tuner_seed,
        executions_per_trial=int(executions_per_trial),
        max_consecutive_failed_trials=int(max_consecutive_failed_trials or 10**9),
        distribution_strategy=resolved,
    )
    common.update(tuner_args or {})
    if tuner == "random":
        kt_tuner = kt.RandomSearch(max_trials=trials, **common)
    elif tuner == "bayesian":
        common.setdefault("num_initial_points", min(trials, max(2, 3 * len(hypermodel.task_names))))
        kt_tuner = kt.BayesianOptimization(max_trials=trials, **common)
    else:
        common.setdefault("factor", 3)
        kt_tuner = kt.Hyperband(max_epochs=hypermodel.epochs, **common)
    if role != "chief":
        hypermodel._datasets()  # load the recipe's data once, before the first trial
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
        kt_tuner.search(verbose=verbose)
    result = TuneResult(role=role, objective=hypermodel.objective, rows=[], tuner=kt_tuner)
    if role == "worker":
        return result
    out_dir = str(out_dir or kt_tuner.project_dir)
    os.makedirs(out_dir, exist_ok=True)
    rows = _rows(kt_tuner, hypermodel)
    result.rows = rows
    result.table_csv = os.path.join(out_dir, "tuning_results.csv")
    result.table_md = os.path.join(out_dir, "tuning_results.md")
    write_table(rows, result.table_csv, result.table_md)
    result.plot = os.path.join(out_dir, "tuning_plot.png")
    write_plot(rows, hypermodel.objective.name, hypermodel.task_names, result.plot, hypermodel.objective.direction)
    best = kt_tuner.oracle.get_best_trials(1)
    best = [t for t in best if str(t.status) == "COMPLETED" and t.score is not None]
    if not best:
        messages = "; ".join(f"trial {r['trial']}: {r['message']}" for r in rows if r["message"])
        raise RuntimeError(f"No trial completed ({len(rows)} tried; table in {result.table_md}). {messages}")
    trial = best[0]
    result.best_hyperparameters = dict(trial.hyperparameters.values)
    result.best_score = float(trial.score)
    best_recipe = hypermodel.recipe_for(trial.hyperparameters)
    data = best_recipe.to_dict()
    data["name"] = f"{hypermodel.recipe.name}_tuned"
    data["description"] = (
        f"{hypermodel.recipe.description} Tuned by mtlzoo.tuning ({tuner}, {len(rows)} trials, "
        f"{hypermodel.objective.name}={result.best_score:.4g}, trial {trial.trial_id})."
    ).strip()
    result.best_recipe = Recipe.from_dict(data)
    result.best_recipe_path = os.path.join(out_dir, "best_recipe.yaml")
    fileio.atomic_write_text(
        result.best_recipe_path,
        f"# Best recipe found by `mtlzoo tune` ({tuner}); objective {hypermodel.objective.name} = "
        f"{result.best_score:.6g} (trial {trial.trial_id}).\n" + result.best_recipe.to_yaml(),
    )
    return result
