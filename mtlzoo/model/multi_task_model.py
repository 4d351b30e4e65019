"""The multi-task model: dict outputs, per-task losses/metrics/masks, loss-weight variables, step hook."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from mtlzoo import distribute
from mtlzoo import losses as losses_lib
from mtlzoo import metrics as metrics_lib
from mtlzoo import step_state
from mtlzoo.registry import HEADS, suggestion


def _scale_for_replicas(value):
    """Divides by the replica count under tf.distribute (Keras's convention for losses)."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return value / replicas if replicas > 1 else value


def _check_loss_weight(task, value):
    """`value` as a float32 scalar if it is one finite number >= 0 (Python, NumPy or a tensor), else ValueError."""
    problem = None
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
        problem = "not a number"
    else:
        try:
            array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        except Exception:  # noqa: BLE001 - anything that is not array-like
            array = None
        if array is None or array.dtype.kind not in "iuf":
            problem = "not a number"
        elif array.size != 1:
            problem = f"{array.size} values where one number was expected"
        else:
            number = float(array.reshape(()))
            if not np.isfinite(number):
                problem = "not finite"
            elif number < 0:
                problem = "negative"
            else:
                return np.float32(number)
    raise ValueError(
        f"Loss weight of task {task!r} must be one finite number >= 0; got {value!r} ({problem}). "
        "Use 0 to switch a task off."
    )


class _TrainingState:
    """Per-compile objects kept out of Keras's attribute tracking (not saved)."""

    def __init__(self, task_losses, task_metrics, loss_trackers, extra_trackers):
        self.task_losses = task_losses
        self.task_metrics = task_metrics
        self.loss_trackers = loss_trackers
        self.extra_trackers = extra_trackers

    def all_metrics(self):
        out = list(self.loss_trackers.values()) + list(self.extra_trackers.values())
        for ms in self.task_metrics.values():
            out.extend(ms)
        return out


class _Hooks:
    """The step hooks, kept out of Keras's attribute tracking.

    Two slots: `loss` holds a hook with `combine` (it replaces the weighted
    sum), `gradient` one with `gradients` (it computes the update). One object
    may fill both.
    """

    def __init__(self):
        self.loss = None
        self.gradient = None


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
        self._hooks = _Hooks()
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
        if isinstance(weights, (list, tuple)):
            if len(weights) != len(self.task_names):
                raise ValueError(f"Got {len(weights)} loss weights for {len(self.task_names)} tasks {self.task_names}.")
            weights = dict(zip(self.task_names, weights))
        for t, w in weights.items():
            if t not in self._loss_weight_vars:
                raise ValueError(f"Unknown task {t!r} in loss weights.{suggestion(t, self.task_names)} Tasks: {self.task_names}.")
            self._loss_weight_vars[t].assign(_check_loss_weight(t, w))

    def variable_groups(self):
        """(shared variables, dict task -> task-specific variables), trainable only.

        Shared variables are those of layers not listed in `task_layers`
        (trunk, columns tied by cross-stitch units); the model's own variables
        (e.g. learned loss parameters) belong to neither group.
        """
        by_task, owned = {}, set()
        for t in self.task_names:
            vs = []
            for name in self.task_layers[t]:
                for v in self.get_layer(name).trainable_variables:
                    if id(v) not in owned:
                        vs.append(v)
                        owned.add(id(v))
            by_task[t] = vs
        own = {id(v) for v in self._trainable_variables}
        shared = [v for v in self.trainable_variables if id(v) not in owned and id(v) not in own]
        return shared, by_task

    def parameter_summary(self):
        """dict with parameter counts: `shared`, one entry per task, and `total`."""
        shared, by_task = self.variable_groups()
        count = lambda vs: int(sum(int(ops.size(v)) for v in vs))  # noqa: E731
        out = {"shared": count(shared)}
        out.update({t: count(vs) for t, vs in by_task.items()})
        out["total"] = int(self.count_params())
        return out

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
        from mtlzoo import weighting as weighting_lib

        if weighting is None or weighting == "fixed":
            self._weighting = None
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
            self._weighting = None
            return None
        # Its state exists from now on, so it is saved with the model's weights
        # (and a checkpoint's values can be loaded into it).
        callback.attach(self)
        self._weighting = callback
        return callback

    def _weighting_config(self):
        w = self._weighting
        return None if w is None else {"name": w.name, "config": w.get_config()}

    def _weighting_state(self):
        w = self._weighting
        if w is None:
            return []
        own = {id(v) for v in self._trainable_variables + self._non_trainable_variables}
        return [v for v in w.state_variables() if id(v) not in own]

    def _callbacks_with_weighting(self, callbacks):
        """The fit callbacks with the model's weighting in front, once; a different method is an error."""
        from mtlzoo.weighting import LossWeighting

        w = self._weighting
        if w is None or isinstance(callbacks, keras.callbacks.CallbackList):
            return callbacks
        callbacks = list(callbacks or [])
        given = [cb for cb in callbacks if isinstance(cb, LossWeighting)]
        if not given:
            return [w] + callbacks
        other = [cb for cb in given if type(cb) is not type(w)]
        if other:
            raise ValueError(
                f"Model {self.name!r} trains with the loss weighting {w!r} (built with weighting="
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
            cb.attach(self)
            if cb.get_config() == w.get_config():
                cb.copy_state_from(w)
            self._weighting = cb
        return callbacks

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, running the model's loss weighting (see `weighting`) as the first callback."""
        kwargs["callbacks"] = self._callbacks_with_weighting(kwargs.get("callbacks"))
        return super().fit(*args, **kwargs)

    def training_methods(self) -> str:
        """One line: the loss weighting and gradient aggregator this model trains with."""
        w = self._weighting
        hook = self._hooks.gradient
        inner = getattr(hook, "inner", None) if hook is not None and hasattr(hook, "owner") else hook
        aggregator = getattr(inner, "aggregator", None)
        if aggregator is not None:
            agg = type(aggregator).__name__ + ("-UB (representation)" if getattr(inner, "representation", False) else "")
        else:
            agg = "none (one backward pass of the weighted sum)"
        weighting = repr(w) if w is not None else f"fixed loss weights {self.get_loss_weights()}"
        return f"weighting: {weighting}; aggregator: {agg}"

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
        for i, v in enumerate(self._weighting_state()):
            store[f"weighting_{i}"] = v

    def load_own_variables(self, store):
        keys = list(store.keys())
        extra = sorted((k for k in keys if k.startswith("weighting_")), key=lambda k: int(k.split("_", 1)[1]))
        if not extra:
            return super().load_own_variables(store)
        super().load_own_variables({k: store[k] for k in keys if not k.startswith("weighting_")})
        state = self._weighting_state()
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
        if hook is None:
            self._hooks.loss = self._hooks.gradient = None
        else:
            has_combine, has_gradients = hasattr(hook, "combine"), hasattr(hook, "gradients")
            if not (has_combine or has_gradients):
                raise TypeError(f"{type(hook).__name__} is not a step hook: it defines neither `combine` nor `gradients`.")
            for slot, wanted in (("loss", has_combine), ("gradient", has_gradients)):
                current = getattr(self._hooks, slot)
                if wanted and current is not None and current is not hook:
                    raise ValueError(
                        f"The model already has a {slot} hook ({type(current).__name__}); "
                        f"{type(hook).__name__} cannot be combined with it. Use one method that "
                        f"{'changes the loss' if slot == 'loss' else 'computes gradients'} at a time, "
                        "or call model.remove_step_hook(...) first."
                    )
            if hasattr(hook, "build"):
                hook.build(self)
            if has_combine:
                self._hooks.loss = hook
            if has_gradients:
                self._hooks.gradient = hook
        self.train_function = None
        self.test_function = None

    def remove_step_hook(self, hook):
        """Removes `hook` from the slots it occupies (no error when absent)."""
        if self._hooks.loss is hook:
            self._hooks.loss = None
        if self._hooks.gradient is hook:
            self._hooks.gradient = None
        self.train_function = None
        self.test_function = None

    def shared_representation_model(self):
        """(trunk, heads): the model split at the tensors where task layers read shared features.

        `trunk(x)` returns the list of shared feature tensors and `heads(features)`
        the output dict, so `heads(trunk(x)) == model(x)`. Used by
        representation-level gradient methods (MGDA-UB, Aligned-MTL-UB).
        """
        if getattr(self, "_split_cache", None) is None:
            task_layer_names = {n for names in self.task_layers.values() for n in names}
            boundary, seen = [], set()
            for name in sorted(task_layer_names):
                layer = self.get_layer(name)
                for node in layer._inbound_nodes:
                    for tensor in node.input_tensors:
                        producer = tensor._keras_history.operation
                        if producer.name not in task_layer_names and id(tensor) not in seen:
                            seen.add(id(tensor))
                            boundary.append(tensor)
            inputs = self.inputs[0] if len(self.inputs) == 1 else self.inputs
            trunk = keras.Model(inputs, boundary, name=f"{self.name}_trunk")
            heads = keras.Model(boundary, self._outputs_struct, name=f"{self.name}_heads")
            object.__setattr__(self, "_split_cache", (trunk, heads))
        return self._split_cache

    def scale_loss_for_step(self, loss):
        """Applies the replica and optimizer loss scaling used for the total loss."""
        loss = _scale_for_replicas(loss)
        if self.optimizer is not None:
            loss = self.optimizer.scale_loss(loss)
        return loss

    # ------------------------------------------------------------------ compile
    def compile(self, optimizer="adam", loss=None, metrics=None, loss_weights=None, **kwargs):
        """Configures training; losses and metrics default to each task head's.

        Args:
            optimizer: a Keras optimizer or its name. Defaults to "adam".
            loss: dict task -> loss (a Loss, a registered name or a config) to
                override the head's default. Defaults to None.
            metrics: dict task -> list of metrics to replace the head's
                defaults. Defaults to None.
            loss_weights: dict task -> float assigned to the loss-weight
                variables (they stay variables: callbacks can change them).
            **kwargs: passed to `keras.Model.compile` (e.g. `jit_compile`).
        """
        for arg, value in (("loss", loss), ("metrics", metrics)):
            if value is not None:
                if not isinstance(value, dict):
                    raise TypeError(f"{arg}= must be a dict keyed by task name {self.task_names}, got {type(value).__name__}.")
                for t in value:
                    if t not in self.task_names:
                        raise ValueError(f"{arg}= names unknown task {t!r}.{suggestion(t, self.task_names)} Tasks: {self.task_names}.")
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
        self._state = _TrainingState(task_losses, task_metrics, loss_trackers, extra)
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
        return super().get_compile_config()

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        config = {k: v for k, v in config.items() if v is not None and k not in ("loss", "metrics", "weighted_metrics", "loss_weights")}
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------ losses
    def _check_labels(self, y):
        if not isinstance(y, dict):
            if len(self.task_names) == 1 and y is not None:
                return {self.task_names[0]: y}
            raise TypeError(
                f"Labels must be a dict keyed by task name {self.task_names}; got {type(y).__name__}."
            )
        for t in y:
            if t not in self.heads:
                raise ValueError(
                    f"Labels name unknown task {t!r}.{suggestion(t, self.task_names)} "
                    f"The model's tasks are {self.task_names}."
                )
        return y

    def _check_label_shape(self, task, label):
        expected, kind = self.heads[task].label_spec(tuple(self.input_shape[1:]) if not isinstance(self.input_shape, list) else ())
        got = tuple(label.shape[1:])
        alternatives = {expected}
        if expected and expected[-1] == 1:
            alternatives.add(expected[:-1])
        elif kind == "int":
            alternatives.add(expected + (1,))
        ok = any(
            len(got) == len(alt) and all(g is None or a is None or g == a for g, a in zip(got, alt))
            for alt in alternatives
        )
        if not ok:
            raise ValueError(
                f"Task {task!r} ({self.tasks[task]['kind']}): labels have shape {('batch',) + got} but "
                f"{('batch',) + expected} was expected. Check the dataset's {task!r} labels against the recipe."
            )
        if label.dtype == tf.string or label.dtype == tf.bool:
            raise ValueError(f"Task {task!r}: labels must be numeric, got dtype {label.dtype.name}.")

    def compute_task_losses(self, y, y_pred, sample_weight=None):
        """dict task -> unweighted mean loss over the task's valid labels (0 when none)."""
        if self._state is None:
            raise RuntimeError("Call compile() before training or evaluating a MultiTaskModel.")
        y = self._check_labels(y)
        if sample_weight is not None and not isinstance(sample_weight, dict):
            sample_weight = {t: sample_weight for t in self.task_names}
        out = {}
        for t in self.task_names:
            if t not in y or y[t] is None:
                out[t] = ops.convert_to_tensor(0.0)
                continue
            self._check_label_shape(t, y[t])
            sw = None if sample_weight is None else sample_weight.get(t)
            # Under tf.distribute: this replica's share of the mean over the
            # global batch's valid labels (valid counts summed over replicas).
            out[t] = distribute.replica_task_loss(self._state.task_losses[t], y[t], y_pred[t], sw)
        return out

    def penalty_losses(self):
        """dict name -> value of each configured penalty (e.g. `soft_l2`)."""
        out = {}
        for p in self.penalties:
            total = ops.convert_to_tensor(0.0)
            for group in p["groups"]:
                columns = [self.get_layer(n).trainable_variables for n in group]
                for i in range(len(columns)):
                    for j in range(i + 1, len(columns)):
                        for a, b in zip(columns[i], columns[j]):
                            total = total + ops.sum(ops.square(a - b))
            out[p["kind"]] = p["weight"] * total
        return out

    def combine_task_losses(self, task_losses):
        """The weighted total `Σ w_t L_t` (or the step hook's `combine`)."""
        hook = self._hooks.loss
        if hook is not None:
            return hook.combine(self, task_losses)
        total = ops.convert_to_tensor(0.0)
        for t in self.task_names:
            total = total + ops.cast(self._loss_weight_vars[t], "float32") * task_losses[t]
        return total

    def _losses_and_total(self, y, y_pred, sample_weight):
        """(task losses, total, extra): extra = the non-task part of the total (penalties, regularisers)."""
        task_losses = self.compute_task_losses(y, y_pred, sample_weight)
        weighted = self.combine_task_losses(task_losses)
        extra = ops.convert_to_tensor(0.0)
        penalties = self.penalty_losses()
        for value in penalties.values():
            extra = extra + value
        if self.losses:
            extra = extra + ops.sum(ops.stack([ops.cast(v, "float32") for v in self.losses]))
        total = weighted + extra
        y = self._check_labels(y)
        batch = ops.shape(next(iter(y_pred.values())))[0]
        for t, value in task_losses.items():
            if t in y and y[t] is not None:
                self._state.loss_trackers[t].update_state(value, sample_weight=batch)
        for name, value in penalties.items():
            self._state.extra_trackers[f"{name}_penalty"].update_state(value)
        return task_losses, total, extra

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        _, total, _ = self._losses_and_total(y, y_pred, sample_weight)
        return _scale_for_replicas(total)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        y = self._check_labels(y)
        if sample_weight is not None and not isinstance(sample_weight, dict):
            sample_weight = {t: sample_weight for t in self.task_names}
        for t in self.task_names:
            if t not in y or y[t] is None:
                continue
            sw = None if sample_weight is None else sample_weight.get(t)
            for m in self._state.task_metrics[t]:
                m.update_state(y[t], y_pred[t], sample_weight=sw)
        return self.get_metrics_result()

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
        own = {id(v) for v in self.variables}
        out = list(self.non_trainable_variables)
        sources = list(self.step_hooks)
        weighting = getattr(self, "_weighting", None)
        if weighting is not None:
            sources.append(weighting)
        for source in sources:
            getter = getattr(source, "state_variables", None)
            found = getter() if callable(getter) else step_state.collect_variables(source)
            out.extend(v for v in found if id(v) not in own)
        return step_state.unique(out)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        # Read before the forward pass writes BatchNorm statistics, so a skipped
        # step can put every one of them back.
        state = self.step_state_variables()
        saved = step_state.snapshot(state)
        hook = self._hooks.gradient
        representation = hook is not None and getattr(hook, "representation", False)
        persistent = hook is not None and getattr(hook, "persistent_tape", True)
        features = None
        with tf.GradientTape(persistent=persistent) as tape:
            if representation:
                trunk, heads = self.shared_representation_model()
                trunk_outputs = trunk(x, training=True)
                trunk_outputs = list(trunk_outputs) if isinstance(trunk_outputs, (list, tuple)) else [trunk_outputs]
                # The heads read cut copies, so a gradient w.r.t. one feature
                # map is its own partial derivative (feature maps may depend on
                # each other inside the trunk, e.g. pyramid levels).
                features = [tf.stop_gradient(f) for f in trunk_outputs]
                for f in features:
                    tape.watch(f)
                y_pred = heads(features, training=True)
            else:
                y_pred = self(x, training=True)
            task_losses, total, extra = self._losses_and_total(y, y_pred, sample_weight)
            batch = ops.shape(next(iter(y_pred.values())))[0]
            self._loss_tracker.update_state(total, sample_weight=batch)
            step_loss = self.scale_loss_for_step(total)
            step_extra = self.scale_loss_for_step(extra)
        variables = self.trainable_variables
        if hook is not None:
            kwargs = {"features": features, "trunk_outputs": trunk_outputs} if representation else {}
            grads = hook.gradients(self, tape, task_losses, step_loss, step_extra, **kwargs)
        else:
            grads = tape.gradient(step_loss, variables)
        del tape
        self._apply_if_finite(total, grads, variables, state, saved)
        return distribute.step_logs(self.compute_metrics(x, y, y_pred, sample_weight))

    def test_step(self, data):
        return distribute.step_logs(super().test_step(data))

    def _apply_if_finite(self, total, grads, variables, state=(), saved=()):
        finite = tf.math.is_finite(total)
        for g in grads:
            if g is not None:
                finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(g)))
        # A forward pass that overflowed BatchNorm statistics (e.g. after a
        # huge learning rate) is as broken as a NaN loss.
        finite = tf.logical_and(finite, step_state.all_finite_state(state))
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if pairs:
            # Under tf.distribute all replicas skip together (the flag is
            # all-reduced, the cond runs in cross-replica context); a skipped
            # step leaves the weights and the optimizer state as they were.
            finite = distribute.apply_if_finite(self.optimizer, pairs, finite)
        else:
            finite = distribute.all_replicas(finite)
        # ... and puts back what the forward pass and the hooks already wrote.
        step_state.restore_unless(finite, state, saved)
        skipped = 1.0 - tf.cast(finite, "float32")
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            # The Sum tracker adds up the replicas' values: count a skipped step once.
            skipped = skipped * tf.cast(tf.equal(context.replica_id_in_sync_group, 0), "float32")
        self._state.extra_trackers["nonfinite_steps"].update_state(skipped)

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
                "weighting": self._weighting_config(),
            }
        )
        return config
