"""`MultiTaskHyperModel`: a recipe as a KerasTuner hypermodel (what each trial builds and fits)."""

from __future__ import annotations

import copy
import math

import keras_tuner as kt

from mtlzoo.recipe import BUILTIN_WEIGHTINGS, Recipe, get_recipe
from mtlzoo.registry import AGGREGATORS, SHARING, WEIGHTINGS, suggestion
from mtlzoo.tuning.objective import ObjectiveCallback, infer_direction, logged_names
from mtlzoo.tuning.space import AGGREGATOR_SPACE, BUILTIN_OBJECTIVES, DEFAULT_AGGREGATORS, DEFAULT_WEIGHTINGS, SEEDED_AGGREGATORS, SHARING_SPACE, TuningError, WEIGHTING_SPACE, WEIGHT_MODES, hp_choices, hp_float

__all__ = ["MultiTaskHyperModel"]


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
        self.weightings = hp_choices(
            search_weighting, DEFAULT_WEIGHTINGS, WEIGHTINGS, "weighting", extra=BUILTIN_WEIGHTINGS
        )
        self.aggregators = hp_choices(search_aggregator, DEFAULT_AGGREGATORS, AGGREGATORS, "aggregator", extra=("none",))
        self.sharings = hp_choices(search_sharing, SHARING.list(), SHARING, "sharing")
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
            if config["aggregator"] in SEEDED_AGGREGATORS:
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
                        value = hp_float(hp, f"{name}_{arg}", lo, hi, sampling)
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
