"""The multi-task model: dict outputs, per-task losses/metrics/masks, loss-weight variables, step hook."""

from __future__ import annotations

import keras
import numpy as np

from mtlzoo import distribute
from mtlzoo import losses as losses_lib
from mtlzoo import metrics as metrics_lib
from mtlzoo.model import hooks, owned_weighting, parameters, penalties, representation, step, training_state
from mtlzoo.model import gates as gates_lib
from mtlzoo.registry import HEADS, suggestion


@keras.saving.register_keras_serializable(package="mtlzoo")
class MultiTaskModel(keras.Model):
    """A functional Keras model with one output per task, keyed by task name.

    Built by the sharing builders (`mtlzoo.build`) from a functional graph whose
    outputs are a dict `{task: tensor}`. On top of a plain functional model it
    adds what multi-task training needs:

    - **Per-task losses and metrics.** Each task's head supplies its default
      loss and metrics (`compile(loss={task: ...}, metrics={task: [...]})`
      overrides them). `fit` logs `{task}_loss` (unweighted) and
      `{task}_{metric}`; `loss` is the weighted total.
    - **Loss weights as variables.** The total loss is
      `Σ_t w_t · L_t + penalties + model.losses`, where the `w_t` are
      non-trainable variables owned by the model (`model.loss_weights`,
      `model.set_loss_weights`). A callback's change takes effect on the next
      compiled step, and saved models keep the values.
    - **Missing labels.** Labels are a dict keyed by task. A task absent from
      the dict contributes nothing; inside a task, label elements holding the
      head's missing value (`-1` class ids or tags, depth `<= 0`, an all `-1`
      detection target) are skipped, as are examples with a zero per-task
      `sample_weight`. A batch with no label for a task gives that task a loss
      of 0, not NaN, and no gradient.
    - **Train-step hooks** (`set_step_hook`) through which loss-weighting
      methods that need gradients or learnable parameters, and gradient
      aggregators (PCGrad, MGDA, ...), see the per-task losses and compute the
      gradients, without any change to the builders.
    - **Non-finite steps are skipped**: a step whose total loss or gradients are
      NaN/inf updates no weight; `nonfinite_steps` counts them in the logs.

    Construct through `mtlzoo.build(...)`; direct construction takes the
    functional `inputs`/`outputs` plus the keyword config below.

    Args:
        tasks: dict task -> head config (`{"kind": "segmentation", "num_classes": 10, ...}`).
        task_layers: dict task -> names of layers used by that task only.
            Defaults to the layers named `task` or `task__*`.
        penalties: list of penalty configs; `{"kind": "soft_l2", "weight": λ,
            "groups": [[layer per task], ...]}` adds λ·Σ_{i<j}‖θ_i − θ_j‖² over
            the corresponding trainable variables of each group's layers.
        initial_loss_weights: dict task -> float. Defaults to 1.0 each.
        metadata: dict. Free-form information kept in the config (the recipe).
        learned_loss_params: bool. Create one trainable scalar per task
            (`model.learned_loss_params[task]`, named `{task}_loss_param`,
            initialised to 0) for loss-weighting methods that learn them
            (uncertainty weighting's log-variances, IMTL-L's scales). They
            are trained by the model's optimizer and saved with the model.
            Defaults to False.
        weighting: None, a registered weighting name, a config dict
            `{"name": "dwa", "config": {"temperature": 2.0}}` or a
            `mtlzoo.weighting` callback. The loss-weighting method the model
            trains with: `fit` runs it (as the first callback) unless the
            callbacks already hold the same method, and its state (e.g. DWA's
            loss history, GradNorm's weights and Adam moments) is saved with
            the model's weights, so a reloaded model resumes it. Defaults to
            None (the loss-weight variables stay as set).

    Example:
    ```python
    model = mtlzoo.build("driving_perception_lite")
    model.set_loss_weights({"depth": 0.5})
    history = model.fit(dataset, epochs=2)
    history.history["segmentation_loss"]
    ```
    """

    def __init__(self, *args, **kwargs):
        tasks = kwargs.pop("tasks", None)
        task_layers = kwargs.pop("task_layers", None)
        penalties = kwargs.pop("penalties", None) or []
        initial_loss_weights = kwargs.pop("initial_loss_weights", None) or {}
        metadata = kwargs.pop("metadata", None) or {}
        learned_loss_params = bool(kwargs.pop("learned_loss_params", False))
        weighting = kwargs.pop("weighting", None)
        super().__init__(*args, **kwargs)
        outputs = self._outputs_struct if hasattr(self, "_outputs_struct") else None
        if not isinstance(outputs, dict):
            raise ValueError("MultiTaskModel needs a dict of outputs keyed by task name.")
        if tasks is None:
            raise ValueError("MultiTaskModel needs `tasks`: a dict task -> head config.")
        if set(tasks) != set(outputs):
            raise ValueError(f"MultiTaskModel: tasks {sorted(tasks)} do not match outputs {sorted(outputs)}.")
        self.tasks = {t: dict(cfg) for t, cfg in tasks.items()}
        self.task_names = list(tasks)
        self.heads = {}
        for t, cfg in self.tasks.items():
            cfg = dict(cfg)
            kind = cfg.pop("kind")
            self.heads[t] = HEADS.get(kind).from_config(cfg)
        names = {layer.name for layer in self.layers}
        if task_layers is None:
            task_layers = {
                t: sorted(n for n in names if n == t or n.startswith(t + "__")) for t in self.task_names
            }
        self.task_layers = {t: list(task_layers.get(t, [])) for t in self.task_names}
        self.penalties = [dict(p) for p in penalties]
        for p in self.penalties:
            if p.get("kind") != "soft_l2":
                raise ValueError(f"Unknown penalty kind {p.get('kind')!r}; known: 'soft_l2'.")
        self.metadata = dict(metadata)
        self.initial_loss_weights = {t: float(initial_loss_weights.get(t, 1.0)) for t in self.task_names}
        unknown = set(initial_loss_weights) - set(self.task_names)
        if unknown:
            raise ValueError(f"initial_loss_weights names unknown tasks {sorted(unknown)}; tasks: {self.task_names}.")
        self._loss_weight_vars = {
            t: self.add_weight(
                name=f"{t}_loss_weight",
                shape=(),
                initializer=keras.initializers.Constant(self.initial_loss_weights[t]),
                trainable=False,
            )
            for t in self.task_names
        }
        self._learned_loss_params_enabled = learned_loss_params
        self._learned_loss_param_vars = {
            t: self.add_weight(name=f"{t}_loss_param", shape=(), initializer="zeros", trainable=True)
            for t in self.task_names
        } if learned_loss_params else {}
        self._hooks = hooks.StepHooks()
        self._state = None
        self._weighting = None
        self._weighting_loaded = None
        if weighting is not None:
            self.set_weighting(weighting)

    # ------------------------------------------------------------------ weights
    @property
    def loss_weights(self):
        """dict task -> non-trainable `keras.Variable` holding that task's loss weight."""
        return dict(self._loss_weight_vars)

    @property
    def learned_loss_params(self):
        """dict task -> trainable scalar variable (empty unless built with `learned_loss_params=True`)."""
        return dict(self._learned_loss_param_vars)

    def get_loss_weights(self):
        """dict task -> current loss weight as a Python float."""
        return {t: float(v.numpy()) for t, v in self._loss_weight_vars.items()}

    def set_loss_weights(self, weights):
        """Assigns loss weights from a dict (a subset of tasks is fine) or a list in task order."""
        return training_state.set_loss_weights(self, weights)

    def variable_groups(self):
        """(shared variables, dict task -> task-specific variables), trainable only.

        Shared variables are those of layers not listed in `task_layers`
        (trunk, columns tied by cross-stitch units); the model's own variables
        (e.g. learned loss parameters) belong to neither group.
        """
        return parameters.variable_groups(self)

    def parameter_summary(self):
        """dict with parameter counts: `shared`, one entry per task, and `total`."""
        return parameters.parameter_summary(self)

    # ------------------------------------------------------------------ weighting
    @property
    def weighting(self):
        """The loss-weighting callback the model trains with (None: fixed loss weights)."""
        return self._weighting

    def set_weighting(self, weighting):
        """Sets the loss-weighting method `fit` runs: a name, a config dict, a callback, or None.

        Example:
        ```python
        model.set_weighting("dwa")
        model.fit(x, y, epochs=3)          # logs {task}_weight; no callback to pass
        ```
        """
        return owned_weighting.set_weighting(self, weighting)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, running the model's loss weighting (see `weighting`) as the first callback."""
        kwargs["callbacks"] = owned_weighting.callbacks_with_weighting(self, kwargs.get("callbacks"))
        return super().fit(*args, **kwargs)

    def training_methods(self) -> str:
        """One line: the loss weighting and gradient aggregator this model trains with."""
        return owned_weighting.training_methods(self)

    def summary(self, *args, **kwargs):
        """`keras.Model.summary`, followed by the weighting and aggregator the model trains with."""
        super().summary(*args, **kwargs)
        print_fn = kwargs.get("print_fn") or print
        try:
            print_fn(f"Trains with {self.training_methods()}", line_break=True)
        except TypeError:
            print_fn(f"Trains with {self.training_methods()}")

    def __repr__(self):
        return f"<MultiTaskModel {self.name!r} tasks={self.task_names}; {self.training_methods()}>"

    # ------------------------------------------------------------------ saving
    def save_own_variables(self, store):
        super().save_own_variables(store)
        for i, v in enumerate(owned_weighting.weighting_state(self)):
            store[f"weighting_{i}"] = v

    def load_own_variables(self, store):
        keys = list(store.keys())
        extra = sorted((k for k in keys if k.startswith("weighting_")), key=lambda k: int(k.split("_", 1)[1]))
        if not extra:
            return super().load_own_variables(store)
        super().load_own_variables({k: store[k] for k in keys if not k.startswith("weighting_")})
        state = owned_weighting.weighting_state(self)
        if len(state) != len(extra) or any(tuple(v.shape) != tuple(store[k].shape) for v, k in zip(state, extra)):
            import warnings

            warnings.warn(
                f"Model {self.name!r}: the saved loss-weighting state ({len(extra)} values) does not fit the "
                f"model's weighting {self._weighting!r} ({len(state)}); it starts afresh.",
                UserWarning, stacklevel=2,
            )
            return None
        for v, k in zip(state, extra):
            v.assign(np.asarray(store[k]))
        self._weighting_loaded = True

    # ------------------------------------------------------------------ hooks
    @property
    def step_hooks(self):
        """The installed hooks as a list (loss hook first, no duplicates)."""
        out = []
        for hook in (self._hooks.loss, self._hooks.gradient):
            if hook is not None and all(hook is not h for h in out):
                out.append(hook)
        return out

    def set_step_hook(self, hook):
        """Installs a train-step hook; `set_step_hook(None)` removes every hook.

        A hook may define:
        - `combine(model, task_losses) -> total`: replaces `Σ w_t L_t` (e.g.
          uncertainty weighting with learned log-variances);
        - `gradients(model, tape, task_losses, total, extra) -> list`: returns
          the gradients for `model.trainable_variables` from a persistent
          `tf.GradientTape` (gradient aggregators, GradNorm). `total` is the
          step loss and `extra` its part that is not a task loss (penalties,
          regularisers), both already scaled for the step; apply
          `model.scale_loss_for_step(loss)` to any other loss it
          differentiates so distribution and optimizer scaling match, and
          compute such losses inside `with tape:` so the tape records them;
        - `representation` (bool): the step runs the model as trunk + heads
          and passes `features` (the heads' inputs: cut copies of the shared
          feature maps, watched by the tape) and `trunk_outputs` (the
          trunk's tensors, to push feature gradients back through the trunk
          with `tape.gradient(trunk_outputs, vars, output_gradients=...)`)
          to `gradients` as keywords, for representation-level methods;
        - `build(model)`: called once when the hook is installed;
        - `persistent_tape` (bool, default True when `gradients` exists).

        A model holds one hook of each kind; installing a second gradient (or
        combine) hook while another is installed is an error: remove it first
        with `remove_step_hook`. The compiled train function is rebuilt on the
        next `fit`.
        """
        return hooks.set_step_hook(self, hook)

    def remove_step_hook(self, hook):
        """Removes `hook` from the slots it occupies (no error when absent)."""
        return hooks.remove_step_hook(self, hook)

    def gates(self, x):
        """Per-task expert-gate weights on inputs `x`: {task: [batch, num_experts]} (PLE: a list, one per level).

        Raises ValueError naming the sharing mode when the model has none; see `mtlzoo.model.gates.gates`.
        """
        return gates_lib.gates(self, x)

    def shared_representation_model(self):
        """(trunk, heads): the model split at the tensors where task layers read shared features.

        `trunk(x)` returns the list of shared feature tensors and `heads(features)`
        the output dict, so `heads(trunk(x)) == model(x)`. Used by
        representation-level gradient methods (MGDA-UB, Aligned-MTL-UB).
        """
        return representation.shared_representation_model(self)

    def scale_loss_for_step(self, loss):
        """Applies the replica and optimizer loss scaling used for the total loss."""
        loss = training_state.scale_for_replicas(loss)
        if self.optimizer is not None:
            loss = self.optimizer.scale_loss(loss)
        return loss

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer="adam", loss=None, metrics=None, loss_weights=None, train_metrics=True, **kwargs):
        """Configures training; losses and metrics default to each task head's.

        Args:
            optimizer: a Keras optimizer or its name. Defaults to "adam".
            loss: dict task -> loss (a Loss, a registered name or a config) to
                override the head's default. Defaults to None.
            metrics: dict task -> list of metrics to replace the head's
                defaults. Defaults to None.
            loss_weights: dict task -> float assigned to the loss-weight
                variables (they stay variables: callbacks can change them).
            train_metrics: bool. Update the task metrics at every training step (the default, as Keras
                does); False: the training logs hold the losses only, metrics come from validation/`evaluate`.
            **kwargs: passed to `keras.Model.compile` (e.g. `jit_compile`).
        """
        for arg, value in (("loss", loss), ("metrics", metrics)):
            if value is not None:
                if not isinstance(value, dict):
                    raise TypeError(f"{arg}= must be a dict keyed by task name {self.task_names}, got {type(value).__name__}.")
                for t in value:
                    if t not in self.task_names:
                        raise ValueError(f"{arg}= names unknown task {t!r}.{suggestion(t, self.task_names)} Tasks: {self.task_names}.")
        if not isinstance(train_metrics, bool):
            raise TypeError(f"train_metrics= must be True or False, got {train_metrics!r}.")
        self._train_metrics = train_metrics
        kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=optimizer, **kwargs)
        loss = loss or {}
        metrics = metrics or {}
        task_losses = {t: losses_lib.get(loss[t]) if t in loss else self.heads[t].loss() for t in self.task_names}
        task_metrics = {}
        for t in self.task_names:
            specs = metrics[t] if t in metrics else self.heads[t].metrics()
            objs = []
            for spec in specs:
                m = metrics_lib.get(spec)
                config = m.get_config()
                config["name"] = f"{t}_{m.name}"
                objs.append(m.__class__.from_config(config))
            task_metrics[t] = objs
        loss_trackers = {t: keras.metrics.Mean(name=f"{t}_loss") for t in self.task_names}
        extra = {"nonfinite_steps": keras.metrics.Sum(name="nonfinite_steps")}
        for p in self.penalties:
            extra[f"{p['kind']}_penalty"] = keras.metrics.Mean(name=f"{p['kind']}_penalty")
        self._state = training_state.TrainingState(task_losses, task_metrics, loss_trackers, extra)
        # Build the optimizer over every trainable variable up front, so its
        # slots do not depend on which variables the first step touched and a
        # saved optimizer state always matches on reload.
        if self.built and not self.optimizer.built:
            self.optimizer.build(self.trainable_variables)
        if loss_weights is not None:
            self.set_loss_weights(loss_weights)

    @property
    def metrics(self):
        out = super().metrics
        if getattr(self, "_state", None) is not None:
            out = out + self._state.all_metrics()
        return out

    def get_compile_config(self):
        # Losses and metrics come from the heads (recorded in `tasks`), so the
        # Keras compile config holds the optimizer and step settings only.
        config = super().get_compile_config()
        if isinstance(config, dict) and not getattr(self, "_train_metrics", True):
            config = dict(config, train_metrics=False)
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        config = {k: v for k, v in config.items() if v is not None and k not in ("loss", "metrics", "weighted_metrics", "loss_weights")}
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------ losses

    def compute_task_losses(self, y, y_pred, sample_weight=None):
        """dict task -> unweighted mean loss over the task's valid labels (0 when none)."""
        return step.compute_task_losses(self, y, y_pred, sample_weight)

    def penalty_losses(self):
        """dict name -> value of each configured penalty (e.g. `soft_l2`)."""
        return penalties.penalty_losses(self)

    def combine_task_losses(self, task_losses):
        """The weighted total `Σ w_t L_t` (or the step hook's `combine`)."""
        return step.combine_task_losses(self, task_losses)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        _, total, _ = step.losses_and_total(self, y, y_pred, sample_weight)
        return training_state.scale_for_replicas(total)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return step.compute_metrics(self, x, y, y_pred, sample_weight)

    # ------------------------------------------------------------------ step
    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras 3.15 reduces its peeked batch with strategy.reduce("MEAN", nest),
        # which fails under MultiWorkerMirroredStrategy with several workers for
        # (x, {task: y}) batches; only shapes are used: take the local part.
        if iterator is not None and data_batch is None and getattr(self, "_distribute_strategy", None) is not None:
            for _, _, it in iterator:
                data_batch = distribute.local_batch(next(it))
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def step_state_variables(self):
        """Variables besides the trainable ones that a train step may change.

        The model's non-trainable variables (BatchNorm moving statistics, loss
        weights, random-seed states) and the state of the installed step hooks
        and loss weighting (`state_variables()` where a hook defines it, else
        the variables it holds). A skipped (non-finite) step restores all of
        them; trainable variables and optimizer slots are left alone by not
        applying the update.
        """
        return step.step_state_variables(self)

    def train_step(self, data):
        return step.train_step(self, data)

    def test_step(self, data):
        return distribute.step_logs(super().test_step(data))

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "tasks": self.tasks,
                "task_layers": self.task_layers,
                "penalties": self.penalties,
                "initial_loss_weights": self.initial_loss_weights,
                "metadata": self.metadata,
                "learned_loss_params": self._learned_loss_params_enabled,
                "weighting": owned_weighting.weighting_config(self),
            }
        )
        return config

    # ------------------------------------------------------------------ private access kept for callers
    def _weighting_state(self):
        """The owned weighting's state variables that are not already the model's own (saved with the model)."""
        return owned_weighting.weighting_state(self)
