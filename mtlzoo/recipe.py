"""Recipes: validated YAML descriptions of a multi-task model and its training.

A recipe names the input shape, backbone, sharing mode, the tasks (each with a
head kind, head arguments and a loss weight), the optimizer, the loss
weighting / gradient aggregation, and the data and training settings used by
`mtlzoo.train`. The shipped recipes are the YAML files in the `recipes/`
folder (installed as the package `mtlzoo.recipes`); a path to any YAML file
works too. Every key is checked: unknown keys, task kinds, backbones, sharing
modes, weightings and aggregators are errors naming the bad key and the near
match. Overrides passed to `build`/`get_recipe` (or `key=value` on the command
line, dotted for nested keys) are validated the same way.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.resources
import os
from pathlib import Path

import yaml

from mtlzoo import backbones, heads, sharing  # noqa: F401  (registration)
from mtlzoo.registry import AGGREGATORS, BACKBONES, HEADS, RECIPES, SHARING, WEIGHTINGS, suggestion
from mtlzoo.task_spec import BACKBONE_RESERVED, RecipeError, SHARING_RESERVED, TaskSpec, accepted_args, check_keys, check_name, merge_task_settings
from mtlzoo.schedules import SCHEDULE_KEYS, learning_rate_schedule
from mtlzoo.validation import as_int
from mtlzoo.recipe_building import PRECISIONS, dtype_policy, seed_model_building  # noqa: F401  (public here too)


# Weightings that need no callback: the loss weights stay as the recipe sets them.
BUILTIN_WEIGHTINGS = ("fixed",)

def _recipes_dir() -> Path:
    try:
        return Path(str(importlib.resources.files("mtlzoo.recipes")))
    except ModuleNotFoundError:  # running from a source checkout without installing
        return Path(__file__).resolve().parent.parent / "recipes"


def _register_shipped_recipes():
    folder = _recipes_dir()
    for path in sorted(folder.glob("*.yaml")):
        if path.stem not in RECIPES:
            RECIPES.register(path.stem, obj=path)


def list_recipes(pattern: str = "*") -> list[str]:
    """Names of the registered recipes (the shipped YAML files and any registered by code).

    Example:
    ```python
    mtlzoo.list_recipes()          # ['driving_perception', 'driving_perception_cross_stitch', ...]
    mtlzoo.list_recipes("*lite*")
    ```
    """
    _register_shipped_recipes()
    return RECIPES.list(pattern)


@dataclasses.dataclass
class Recipe:
    """A validated recipe. Build a model with `recipe.build()` or `mtlzoo.build(name)`.

    Args:
        name: str. Recipe name.
        tasks: dict task name -> `TaskSpec` (YAML: `{kind: ..., loss_weight: ..., **head args}`).
        description: str. One line on what the recipe is for.
        input_shape: tuple. (H, W, 3) for images (H, W divisible by 32) or (D,) for vectors.
        backbone: str. A registered backbone (`mtlzoo.backbones.list()`).
        backbone_args: dict. Extra backbone arguments (e.g. `width` for `tiny`).
        weights: str or None. Local weights file for the backbone; never downloaded.
        sharing: str. `hard`, `cross_stitch` or `soft_l2` (`mtlzoo.sharing.list()`).
        sharing_args: dict. Builder arguments (cross-stitch `mode`, `alpha_self`; soft_l2 `weight`).
        neck_channels: int. Width of the FPN neck.
        bn_momentum: float or None. Momentum of every BatchNormalization layer of the model (backbone, neck,
            heads), or None to keep each layer's default (Keras: 0.99). Short trainings need a lower value: at
            0.99 the moving statistics still hold 0.99^steps of their initial values, and inference-mode
            outputs are wrong until they have converged.
        precision: str. `float32` (default) or `mixed_bfloat16`: Keras mixed precision, with the backbone, neck
            and heads computing in bfloat16 while variables, optimizer state and the task outputs stay float32
            (no loss scaling is needed: bfloat16 has float32's exponent range). It pays on GPUs and on CPUs with
            bfloat16 instructions (AVX512-BF16, AMX); measure it with `mtlzoo bench step precision=mixed_bfloat16`.
            `mixed_float16` is refused: it needs loss scaling, which the multi-task step does not do.
        fused_batch_norm: bool. Every BatchNormalization layer runs as `mtlzoo.layers.FusedBatchNormalization`
            (TensorFlow's fused kernels; the same outputs, gradients and moving statistics). Defaults to True.
        pointwise_matmul: bool. Every 1x1 Conv2D trains as one matrix product (`mtlzoo.layers.PointwiseConv2D`;
            inference and exports stay convolutions). Defaults to True.
        optimizer: dict. `{"name": "adam", "learning_rate": 1e-3, ...}` (any Keras optimizer), plus an optional
            learning-rate schedule made with Keras's own `CosineDecay`: `schedule: cosine`, `warmup` (a fraction
            of the steps, or a number of steps; linear warm-up from 0), `final_lr_fraction` (the end of the
            decay, as a fraction of `learning_rate`; default 0) and `decay_steps` (total steps; `mtlzoo.train`
            fills it in from the epochs and the data). `adam` and `adamw` are `mtlzoo.optimizers.FusedAdam(W)`:
            Keras's Adam with one fused update op per variable on TensorFlow (same result; `fused: false` keeps
            Keras's own class).
        weighting: str. Loss weighting: `fixed` (the recipe's loss weights) or a registered method.
        weighting_args: dict. Hyperparameters of the weighting method.
        aggregator: str or None. A gradient aggregator (`mtlzoo.aggregators.list()`), or None.
        aggregator_args: dict. Hyperparameters of the aggregator.
        data: dict. Dataset settings used by `mtlzoo.train` (`name`, `label_fractions`, ...).
        training: dict. Training settings used by `mtlzoo.train` (`epochs`, `batch_size`, ...).
        seed: int. Seed for weight initialisation and data order.
    """

    name: str
    tasks: dict
    description: str = ""
    input_shape: tuple = (128, 256, 3)
    backbone: str = "tiny"
    backbone_args: dict = dataclasses.field(default_factory=dict)
    weights: str | None = None
    sharing: str = "hard"
    sharing_args: dict = dataclasses.field(default_factory=dict)
    neck_channels: int = 64
    bn_momentum: float | None = None
    precision: str = "float32"
    fused_batch_norm: bool = True
    pointwise_matmul: bool = True
    optimizer: dict = dataclasses.field(default_factory=lambda: {"name": "adam", "learning_rate": 1e-3})
    weighting: str = "fixed"
    weighting_args: dict = dataclasses.field(default_factory=dict)
    aggregator: str | None = None
    aggregator_args: dict = dataclasses.field(default_factory=dict)
    data: dict = dataclasses.field(default_factory=dict)
    training: dict = dataclasses.field(default_factory=dict)
    seed: int = 0

    # ------------------------------------------------------------ parsing
    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict, name: str | None = None) -> "Recipe":
        """Validates a recipe mapping (as loaded from YAML) and returns a Recipe."""
        if not isinstance(data, dict):
            raise RecipeError(f"A recipe must be a mapping of keys to values, got {type(data).__name__}.")
        data = copy.deepcopy(data)
        data.setdefault("name", name or "custom")
        where = f"recipe {data['name']!r}"
        check_keys(data, cls.fields(), where)
        if "tasks" not in data or not data["tasks"]:
            raise RecipeError(f"{where}: `tasks` is missing or empty; give at least one task with a `kind`.")
        if not isinstance(data["tasks"], dict):
            raise RecipeError(f"{where}: `tasks` must map task names to task settings.")
        tasks = {}
        for tname, tdata in data["tasks"].items():
            if not isinstance(tname, str) or not tname.isidentifier():
                raise RecipeError(f"{where}: task name {tname!r} must be a Python identifier (it names outputs and logs).")
            if "__" in tname:
                raise RecipeError(f"{where}: task name {tname!r} must not contain '__' (reserved for layer names).")
            tasks[tname] = tdata if isinstance(tdata, TaskSpec) else TaskSpec.from_dict(tname, tdata)
        data["tasks"] = tasks
        recipe = cls(**data)
        recipe.validate()
        return recipe

    def validate(self) -> None:
        where = f"recipe {self.name!r}"
        try:
            shape = tuple(as_int(where, f"input_shape[{i}]", v) for i, v in enumerate(self.input_shape))
        except (TypeError, ValueError) as e:
            raise RecipeError(f"{where}: input_shape must be a list of integers, got {self.input_shape!r} ({e}).") from None
        if not shape or any(v <= 0 for v in shape):
            raise RecipeError(f"{where}: input_shape must hold positive integers, got {self.input_shape!r}.")
        if len(shape) == 3 and (shape[0] % 32 or shape[1] % 32):
            raise RecipeError(
                f"{where}: input_shape {shape[0]}x{shape[1]} must have a height and width divisible by 32 "
                f"(feature strides 4..32); e.g. {max(32, shape[0] // 32 * 32)}x{max(32, shape[1] // 32 * 32)}."
            )
        self.input_shape = shape
        self.backbone = check_name(BACKBONES, self.backbone, where)
        check_keys(self.backbone_args, accepted_args(BACKBONES.get(self.backbone), BACKBONE_RESERVED), f"{where}: backbone_args of {self.backbone!r}")
        self.sharing = check_name(SHARING, self.sharing, where)
        check_keys(self.sharing_args, accepted_args(SHARING.get(self.sharing), SHARING_RESERVED), f"{where}: sharing_args of {self.sharing!r}")
        if self.sharing != "hard" and len(self.tasks) < 2:
            raise RecipeError(f"{where}: sharing {self.sharing!r} needs at least two tasks; use sharing: hard.")
        try:
            self.neck_channels = as_int(where, "neck_channels", self.neck_channels, low=1)
            if self.bn_momentum is not None:
                if isinstance(self.bn_momentum, bool) or not isinstance(self.bn_momentum, (int, float)) \
                        or not 0.0 < float(self.bn_momentum) < 1.0:
                    raise ValueError(f"{where}: bn_momentum must be a number in (0, 1) or null, got {self.bn_momentum!r} "
                                     "(e.g. 0.9 for short trainings).")
                self.bn_momentum = float(self.bn_momentum)
            self.seed = as_int(where, "seed", self.seed, low=0)
        except ValueError as e:
            raise RecipeError(str(e)) from None
        for t, spec in self.tasks.items():
            # Heads check their own integer settings (num_classes, channels, ...) with the task's name.
            try:
                HEADS.get(spec.kind)(**spec.head_args)
            except (TypeError, ValueError) as e:
                raise RecipeError(f"{where}: task {t!r} ({spec.kind}): {e}") from None
        for key in ("fused_batch_norm", "pointwise_matmul"):
            if not isinstance(getattr(self, key), bool):
                raise RecipeError(f"{where}: {key} must be true or false, got {getattr(self, key)!r}.")
        if self.precision not in PRECISIONS:
            if self.precision == "mixed_float16":
                raise RecipeError(f"{where}: precision 'mixed_float16' needs loss scaling, which mtlzoo's multi-task "
                                  "step does not do; use 'mixed_bfloat16' (no loss scaling needed) or 'float32'.")
            raise RecipeError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}."
                              f"{suggestion(str(self.precision), PRECISIONS)}")
        if not isinstance(self.optimizer, dict) or "name" not in self.optimizer:
            raise RecipeError(f"{where}: optimizer must be a mapping with a `name` (e.g. {{name: adam, learning_rate: 0.001}}).")
        _ensure_components()
        self.weighting = check_name(WEIGHTINGS, self.weighting, where, extra=BUILTIN_WEIGHTINGS)
        if self.aggregator is not None:
            self.aggregator = check_name(AGGREGATORS, self.aggregator, where)
        if self.weights is not None and not os.path.isfile(str(self.weights)):
            raise RecipeError(f"{where}: weights file {self.weights!r} does not exist (mtlzoo never downloads weights).")
        for key in ("data", "training", "backbone_args", "sharing_args", "weighting_args", "aggregator_args"):
            if not isinstance(getattr(self, key), dict):
                raise RecipeError(f"{where}: `{key}` must be a mapping, got {getattr(self, key)!r}.")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["tasks"] = {t: spec.to_dict() for t, spec in self.tasks.items()}
        out["input_shape"] = list(self.input_shape)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # ------------------------------------------------------------ overrides
    def override(self, **overrides) -> "Recipe":
        """A new recipe with top-level or dotted (`tasks.depth.loss_weight`) keys replaced.

        Tasks have four explicit forms, so that replacing and adding never look alike:

        - `tasks=["segmentation", "depth"]` keeps only the listed tasks;
        - `tasks={name: spec, ...}` replaces the task set: the model has exactly
          these tasks, each given in full (with its `kind`). An entry that names
          a recipe task without a `kind` is ambiguous (change that task, or keep
          only it?) and raises a `RecipeError` naming the explicit forms;
        - `add_tasks={name: spec, ...}` adds new tasks (full specs) to the recipe's;
        - `update_tasks={name: {key: value}, ...}` changes settings of existing
          tasks and keeps the others (as do dotted keys, `**{"tasks.depth.loss_weight": 2}`).
        """
        overrides = dict(overrides)
        add_tasks = overrides.pop("add_tasks", None)
        update_tasks = overrides.pop("update_tasks", None)
        data = self.to_dict()
        # Arguments belong to the component they configure: switching the
        # component without giving new arguments drops the old ones.
        for component, args in (("backbone", "backbone_args"), ("sharing", "sharing_args"),
                                ("weighting", "weighting_args"), ("aggregator", "aggregator_args")):
            if component in overrides and overrides[component] != data[component] and args not in overrides \
                    and not any(k.startswith(args + ".") for k in overrides):
                data[args] = {}
        for key, value in overrides.items():
            parts = key.split(".")
            if parts[0] not in data:
                check_keys([parts[0]], self.fields(), f"override of recipe {self.name!r}")
            if key == "tasks" and isinstance(value, (list, tuple)):
                unknown = [t for t in value if t not in data["tasks"]]
                if unknown:
                    t = unknown[0]
                    raise RecipeError(
                        f"override tasks=: recipe {self.name!r} has no task {t!r}.{suggestion(t, data['tasks'])} "
                        f"Its tasks: {', '.join(data['tasks'])}."
                    )
                data["tasks"] = {t: data["tasks"][t] for t in value}
                continue
            if key == "tasks" and isinstance(value, dict):
                partial = [t for t, spec in value.items()
                           if t in data["tasks"] and not (isinstance(spec, dict) and "kind" in spec)]
                if partial:
                    t = partial[0]
                    raise RecipeError(
                        f"override tasks={{{t!r}: ...}} is ambiguous: `tasks={{...}}` replaces the recipe's tasks "
                        f"({', '.join(data['tasks'])}) with exactly the ones given, and {t!r} has no `kind`. "
                        f"To change {t!r} and keep the other tasks use update_tasks={{{t!r}: {{...}}}} (or the dotted "
                        f"key 'tasks.{t}.KEY'); to keep only some tasks use tasks=[...]; to add tasks use "
                        f"add_tasks={{...}}; to replace the task set give every task in full, with its `kind`."
                    )
                data["tasks"] = {t: dict(spec) if isinstance(spec, dict) else spec for t, spec in value.items()}
                continue
            target = data
            for part in parts[:-1]:
                if not isinstance(target.get(part), dict):
                    if part in target and target[part] is None:
                        target[part] = {}
                    elif part not in target:
                        raise RecipeError(f"override {key!r}: {part!r} is not a key of recipe {self.name!r}.{suggestion(part, target)}")
                    else:
                        raise RecipeError(f"override {key!r}: {part!r} is not a mapping.")
                target = target[part]
            target[parts[-1]] = copy.deepcopy(value)  # a later dotted key must not write into the caller's mapping
        if update_tasks is not None:
            merge_task_settings(data, update_tasks, self.name, add=False)
        if add_tasks is not None:
            merge_task_settings(data, add_tasks, self.name, add=True)
        return Recipe.from_dict(data)

    # ------------------------------------------------------------ building
    def build(self, compile: bool = True, total_steps: int | None = None):
        """Builds (and by default compiles) the `MultiTaskModel` this recipe describes.

        Args:
            compile: bool. Compile with the recipe's optimizer, weighting and aggregator. Defaults to True.
            total_steps: int or None. Training steps, for an optimizer `schedule` without `decay_steps`
                (`mtlzoo.train` passes it).
        """
        seed_model_building(int(self.seed))  # not keras.utils.set_random_seed: it would stall other models
        with dtype_policy(self.precision):
            return self._build(compile, total_steps)

    def _build(self, compile, total_steps):
        import keras

        from mtlzoo.model import MultiTaskModel

        heads = {t: HEADS.get(spec.kind)(**spec.head_args) for t, spec in self.tasks.items()}
        backbone = functools.partial(
            BACKBONES.get(self.backbone), tuple(self.input_shape), weights=self.weights, **self.backbone_args
        )
        inputs = keras.Input(tuple(self.input_shape), name="image" if len(self.input_shape) == 3 else "features")
        graph = SHARING.get(self.sharing)(inputs, backbone, heads, neck_channels=int(self.neck_channels), **self.sharing_args)
        task_configs = {t: {"kind": spec.kind, **heads[t].get_config()} for t, spec in self.tasks.items()}
        model = MultiTaskModel(
            inputs=inputs,
            outputs={t: graph.outputs[t] for t in self.tasks},
            tasks=task_configs,
            task_layers=graph.task_layers,
            penalties=graph.penalties,
            initial_loss_weights={t: spec.loss_weight for t, spec in self.tasks.items()},
            metadata={"recipe": self.to_dict()},
            learned_loss_params=self.weighting != "fixed"
            and bool(getattr(WEIGHTINGS.get(self.weighting), "needs_learned_loss_params", False)),
            weighting=None if self.weighting == "fixed" else {"name": self.weighting, "config": dict(self.weighting_args)},
            name=self.name,
        )
        if self.fused_batch_norm:
            from mtlzoo.layers.fused_batch_normalization import use_fused_batch_norm

            use_fused_batch_norm(model)
        if self.pointwise_matmul:
            from mtlzoo.layers.pointwise_conv2d import use_pointwise_matmul

            use_pointwise_matmul(model)
        if self.bn_momentum is not None:
            from mtlzoo.model.parameters import set_bn_momentum

            set_bn_momentum(model, self.bn_momentum)
        if compile:
            self.compile(model, total_steps=total_steps)
        return model

    def make_optimizer(self, total_steps: int | None = None):
        """The recipe's Keras optimizer; its learning rate follows `schedule` when the recipe gives one."""
        import keras

        config = dict(self.optimizer)
        name = config.pop("name")
        schedule = {k: config.pop(k) for k in SCHEDULE_KEYS if k in config}
        if schedule.get("schedule") is not None:
            try:
                config["learning_rate"] = learning_rate_schedule(config.get("learning_rate", 1e-3), schedule,
                                                                 total_steps, f"recipe {self.name!r}: optimizer")
            except ValueError as e:
                raise RecipeError(str(e)) from None
        fused = config.pop("fused", True)
        if not isinstance(fused, bool):
            raise RecipeError(f"recipe {self.name!r}: optimizer `fused` must be true or false, got {fused!r}.")
        try:
            if fused and str(name).lower() in ("adam", "adamw"):
                from mtlzoo.optimizers import FusedAdam, FusedAdamW

                return (FusedAdam if str(name).lower() == "adam" else FusedAdamW)(**config)
            return keras.optimizers.get({"class_name": name, "config": config})
        except (ValueError, TypeError) as e:
            raise RecipeError(f"recipe {self.name!r}: cannot make optimizer {self.optimizer!r}: {e}") from None

    def compile(self, model, total_steps: int | None = None):
        """Compiles `model` with the recipe's optimizer, weighting hook and aggregator."""
        flags = {}
        for key, default in (("train_metrics", True), ("run_eagerly", False)):
            flags[key] = (self.training or {}).get(key, default)
            if not isinstance(flags[key], bool):
                raise RecipeError(f"recipe {self.name!r}: training.{key} must be true or false, got {flags[key]!r}.")
        # run_eagerly: Keras's debugging switch (Python steps, no tracing); same arithmetic, slower per step.
        model.compile(optimizer=self.make_optimizer(total_steps), **flags)
        from mtlzoo import training_hooks

        training_hooks.install(model, self)
        return model


def _ensure_components():
    """Imports the modules that register weightings and aggregators."""
    import importlib

    for module in ("mtlzoo.weighting", "mtlzoo.aggregators"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise


def load_recipe_file(path) -> Recipe:
    """Loads and validates a recipe YAML file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe file {str(path)!r} does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"Recipe file {str(path)!r} is not valid YAML: {e}") from None
    return Recipe.from_dict(data, name=path.stem)


def get_recipe(name_or_path="driving_perception", **overrides) -> Recipe:
    """A validated recipe by registered name or YAML path, with overrides applied.

    Example:
    ```python
    recipe = mtlzoo.get_recipe("driving_perception", input_shape=(64, 128, 3))
    ```
    """
    if isinstance(name_or_path, Recipe):
        recipe = name_or_path
    elif isinstance(name_or_path, dict):
        recipe = Recipe.from_dict(name_or_path)
    elif str(name_or_path).endswith((".yaml", ".yml")) or os.sep in str(name_or_path):
        recipe = load_recipe_file(name_or_path)
    else:
        _register_shipped_recipes()
        entry = RECIPES.get(name_or_path)
        recipe = load_recipe_file(entry) if isinstance(entry, Path) else Recipe.from_dict(entry(), name=name_or_path)
    return recipe.override(**overrides) if overrides else recipe


def parse_cli_overrides(pairs) -> dict:
    """`["key=value", "tasks.depth.loss_weight=2"]` -> dict, values parsed as YAML scalars/lists."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise RecipeError(f"Override {pair!r} must look like key=value (e.g. sharing=cross_stitch).")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key.strip()] = value
    return out
