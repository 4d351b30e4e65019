"""The `LossWeighting` callback base class and the helpers shared by the methods.

A loss-weighting method is a `keras.callbacks.Callback` that owns the per-task
loss weights `w_t` of a `mtlzoo.MultiTaskModel` (the non-trainable variables
`model.loss_weights`, used by the default total `Σ_t w_t L_t`):

```python
import mtlzoo, mtlzoo.weighting
model = mtlzoo.build("tabular_demo")
dwa = mtlzoo.weighting.get("dwa", temperature=2.0)
history = model.fit(x, y, epochs=5, callbacks=[dwa])
history.history["label_weight"]        # one value per epoch
```

Conventions shared by every method:

- **Logged weights.** At the end of each epoch the callback writes
  `{task}_weight` into the epoch `logs`, so `History`, `CSVLogger` and
  `TensorBoard` record them. The logged value is the weight used by the last
  training step of that epoch (for epoch-level methods: the weight used
  during the whole epoch; updates made at the end of the epoch, or after the
  last step by GradNorm/RLW, show in the next row and in
  `model.get_loss_weights()`). GLS logs its effective weights at the
  epoch-mean losses. Put the
  weighting callback *before* `CSVLogger`/`TensorBoard` in `callbacks=[...]`
  (Keras calls callbacks in list order; `History` and the progress bar always
  come last).
- **Effective weights.** Methods that replace the weighted sum (uncertainty
  weighting, IMTL-L, GLS, FAMO) keep `model.loss_weights` equal to the
  coefficient of each task loss's gradient in the update, so
  `model.get_loss_weights()` and the logs are comparable across methods.
- **Epoch-level methods** (static, equal, scheduled, DWA, DTP) only assign the
  weight variables from `on_epoch_begin`/`on_epoch_end`: no change to the
  compiled train step.
- **Step-level methods** (uncertainty, IMTL-L, GLS, GradNorm, RLW, FAMO)
  install a step hook (`model.set_step_hook`) in `set_model` (Keras calls it
  before it builds the train function) and remove it in `on_train_end`.
  Methods that only set weights inside the step (GradNorm, RLW) can run
  with a gradient aggregator (`AggregatorHook`, which combines the gradients
  of `w_t·L_t`): they take its place in the model's gradient slot, use its
  direction as their "base" gradients, and put it back on `on_train_end`.
  Methods that change the loss itself (uncertainty, IMTL-L, GLS, FAMO)
  refuse to run with a gradient aggregator or another loss hook
  (`ValueError`), as does a second weighting callback.
- **State** (losses seen so far, learned parameters, optimizer slots) lives in
  the callback and is created once per model in `build(model)`; it carries
  over between successive `fit` calls with the same callback and model.
- **Non-finite steps.** The model skips a step whose loss or gradients are not
  finite; every state update a method makes inside the train step is guarded
  by the same test, so a NaN/inf task loss changes no weight or parameter.
  Epoch-level methods ignore an epoch whose monitored values are not finite
  (with a warning) and keep the current weights.
- **Hyperparameters** are constructor arguments, checked at construction
  (`ValueError` naming the argument and its valid range); `get_config()`
  returns them and `cls.from_config(config)` round-trips.
- **Distribution.** Under a `tf.distribute` strategy the step-level methods
  see the global batch, as on one device: task losses (and GradNorm's
  gradient norms) are averaged over the replicas (`replica_mean`) before a
  method uses them, and every state update runs once per step in
  cross-replica context (`run_once`, a `merge_call`) with the same values on
  every replica. Their small Adam optimisers (`SmallAdam`) are plain variable
  updates, with no `merge_call` of their own, so they can run there.
  tests/test_distribute.py checks GradNorm, FAMO, RLW and uncertainty
  weighting under MirroredStrategy(2) against one device.
"""

from __future__ import annotations

import inspect
import warnings

import keras
import numpy as np
import tensorflow as tf

from mtlzoo.registry import suggestion
# Helpers every weighting uses; also re-exported, so `from mtlzoo.weighting.base import check_float` keeps working.
from mtlzoo.weighting.checks import check_choice, check_float, check_int, check_task_names  # noqa: F401
from mtlzoo.weighting.replica import all_finite, replica_mean, replica_sum, run_once, stack_losses  # noqa: F401
from mtlzoo.weighting.small_adam import SmallAdam  # noqa: F401


# Smallest weight a renormalising method (GradNorm) keeps, so weights stay positive.
MIN_WEIGHT = 1e-6


def _check_model(owner, model):
    missing = [a for a in ("task_names", "loss_weights", "set_step_hook") if not hasattr(model, a)]
    if missing:
        raise TypeError(
            f"{owner} works with a mtlzoo.MultiTaskModel (per-task loss-weight variables, step hook); "
            f"got {type(model).__name__}, which lacks {', '.join(missing)}."
        )


# ---------------------------------------------------------------- step hook
class _WeightingHook:
    """The step hook a `LossWeighting` installs; may wrap a gradient hook it replaced.

    Only the attributes that apply are defined, because the model sorts hooks
    into its loss slot (`combine`) and gradient slot (`gradients`) with
    `hasattr`.
    """

    def __init__(self, owner, inner):
        self.owner = owner
        self.inner = inner
        if owner.uses_combine:
            self.combine = owner.step_combine
        if owner.uses_gradients:
            self.gradients = self._gradients
            self.representation = bool(getattr(inner, "representation", False)) if inner is not None else False
            inner_persistent = inner is not None and getattr(inner, "persistent_tape", True)
            self.persistent_tape = bool(inner_persistent or owner.needs_persistent_tape)

    def _gradients(self, model, tape, task_losses, total, extra, **kwargs):
        def base():
            if self.inner is not None:
                return self.inner.gradients(model, tape, task_losses, total, extra, **kwargs)
            return tape.gradient(total, model.trainable_variables)

        return self.owner.step_gradients(model, tape, task_losses, total, extra, base)

    def __repr__(self):
        return f"_WeightingHook({self.owner!r}, inner={self.inner!r})"


# ---------------------------------------------------------------- base class
class LossWeighting(keras.callbacks.Callback):
    """Base class of the dynamic loss-weighting methods (a Keras callback).

    Subclasses take their hyperparameters as constructor arguments stored as
    attributes of the same name (which gives `get_config`), create their state
    in `build(model)`, and implement some of:

    - `begin(model)`: at `on_train_begin` (e.g. assign the initial weights);
    - `epoch_begin(epoch)`, `epoch_update(epoch, logs)`: epoch-level updates
      (`epoch_update` may return a dict task -> weight to log instead of the
      weights in effect during the epoch);
    - `step_combine(model, task_losses) -> total` (set `uses_combine = True`):
      replaces `Σ_t w_t L_t` inside the train step;
    - `step_gradients(model, tape, task_losses, total, extra, base) -> grads`
      (set `uses_gradients = True`): runs inside the train step only;
      `base()` returns the gradients the step would use otherwise
      (`tape.gradient` of the scaled total, or the wrapped aggregator's
      direction). Set `needs_persistent_tape = True` when it calls
      `tape.gradient` again.

    Attributes:
        name: str. The registered name.
        positive_weights: bool. True where the method keeps every weight finite
            and > 0 (static, scheduled and DTP-like user input may give zeros).
        needs_learned_loss_params: bool. True where the method uses learnable
            per-task scalars that the model should own
            (`MultiTaskModel(..., learned_loss_params=True)`) to be saved.

    Example:
    ```python
    import mtlzoo.weighting
    cb = mtlzoo.weighting.get("dwa", temperature=2.0)
    model.fit(x, y, epochs=10, callbacks=[cb, keras.callbacks.CSVLogger("log.csv")])
    ```
    """

    name: str = ""
    positive_weights: bool = True
    uses_combine: bool = False
    uses_gradients: bool = False
    needs_persistent_tape: bool = False
    needs_learned_loss_params: bool = False
    #: False where the method needs task gradients at trunk parameters (GradNorm),
    #: which a representation-level aggregator does not provide.
    supports_representation: bool = True

    def __init__(self):
        super().__init__()
        self._built_for = None
        self._hook = None
        self._in_fit = False

    # ------------------------------------------------------------ config
    def get_config(self) -> dict:
        """The constructor hyperparameters; `type(self).from_config(cfg)` round-trips."""
        params = inspect.signature(type(self).__init__).parameters
        return {k: _plain(getattr(self, k)) for k in params if k != "self"}

    @classmethod
    def from_config(cls, config: dict):
        """Creates the callback from `get_config()` output."""
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    @property
    def _owner(self) -> str:
        return type(self).__name__

    # ------------------------------------------------------------ model plumbing
    def set_model(self, model):
        _check_model(self._owner, model)
        super().set_model(model)
        if self.uses_combine or self.uses_gradients:
            self._check_hooks(model)
        if self._built_for is not model:
            self.build(model)
            self._built_for = model
        if self.uses_combine or self.uses_gradients:
            self._install_hook(model)

    def build(self, model) -> None:
        """Creates the method's state for `model` (called once per model, eagerly)."""

    def attach(self, model) -> None:
        """Builds the method's state for `model` now (once), without installing its step hook.

        `MultiTaskModel(weighting=...)` calls it at construction, so the state
        exists when the model's weights are saved or loaded; `fit` installs
        the hook later through `set_model`.
        """
        _check_model(self._owner, model)
        if self._built_for is not model:
            self.build(model)
            self._built_for = model

    def state_variables(self) -> list:
        """The variables holding the method's state (saved with a model built with this weighting).

        Found among the callback's attributes (variables, lists and dicts of
        them, helper objects such as `SmallAdam`, seed generators); the
        model's own variables (e.g. model-owned learned loss parameters) and
        the installed step hook are not part of it. Empty before `build`.
        """
        from mtlzoo.step_state import collect_variables

        model = self._built_for
        own = {id(v) for v in model.variables} if model is not None else set()
        attrs = {k: v for k, v in self.__dict__.items() if k not in ("_hook", "_model", "_built_for")}
        return [v for v in collect_variables(attrs) if id(v) not in own]

    def copy_state_from(self, other) -> None:
        """Assigns this callback's state from `other` (same method and configuration, both attached)."""
        mine, theirs = self.state_variables(), other.state_variables()
        if len(mine) != len(theirs) or any(tuple(a.shape) != tuple(b.shape) for a, b in zip(mine, theirs)):
            raise ValueError(f"{self._owner}: cannot take over the state of {other!r}: different state layout.")
        for a, b in zip(mine, theirs):
            a.assign(b.value if isinstance(b, keras.Variable) else b)

    def _check_hooks(self, model):
        """Raises ValueError if the model's installed hooks cannot run with this method."""
        installed = [h for h in model.step_hooks if h is not self._hook]
        for h in installed:
            if isinstance(h, _WeightingHook):
                raise ValueError(
                    f"{self._owner}: the model already has the step hook of another loss weighting "
                    f"({type(h.owner).__name__}); use one loss-weighting callback at a time."
                )
            if hasattr(h, "combine"):
                raise ValueError(
                    f"{self._owner} cannot be combined with the step hook {type(h).__name__}, which changes "
                    "the loss itself (the loss weights would have no effect); remove it first "
                    "(model.remove_step_hook)."
                )
        inner = next((h for h in installed if hasattr(h, "gradients")), None)
        if inner is not None and self.uses_combine:
            raise ValueError(
                f"{self._owner} changes the loss itself and cannot be combined with the gradient hook "
                f"{type(inner).__name__} (e.g. a gradient aggregator, which combines the gradients of "
                "w_t·L_t). Use one of them."
            )
        if inner is not None and getattr(inner, "representation", False) and not self.supports_representation:
            raise ValueError(
                f"{self._owner} measures task gradients at shared parameters of the trunk, which a "
                "representation-level aggregator cuts from the task losses (its heads read detached feature maps). "
                "Use the parameter-level aggregator (drop `representation: true`) or another weighting."
            )
        return inner

    def _install_hook(self, model):
        if self._hook is not None and any(h is self._hook for h in model.step_hooks):
            return  # still installed (e.g. after an interrupted fit)
        self._hook = None
        inner = self._check_hooks(model)
        if inner is not None:
            # Wrap it: its direction becomes this method's base gradients.
            model.remove_step_hook(inner)
        self._hook = _WeightingHook(self, inner)
        model.set_step_hook(self._hook)

    def _remove_hook(self):
        model = self._built_for
        hook, self._hook = self._hook, None
        if hook is None or model is None:
            return
        installed = model.step_hooks
        if any(h is hook for h in installed):
            model.remove_step_hook(hook)
            if hook.inner is not None and not any(h is hook.inner for h in model.step_hooks):
                model.set_step_hook(hook.inner)

    @property
    def tasks(self) -> list:
        return list(self._built_for.task_names) if self._built_for is not None else []

    def current_weights(self) -> dict:
        """dict task -> the loss weight used by the last training step (Python floats).

        That is the model's loss-weight variables, except for methods that
        update them after the step (they record the used ones with
        `track_used_weights` / `remember_used_weights`).
        """
        used = getattr(self, "_used_weights", None)
        if used is not None:
            return dict(zip(self.tasks, np.asarray(used.numpy(), float).tolist()))
        return {t: to_float(v) for t, v in self._built_for.loss_weights.items()}

    def track_used_weights(self, model) -> None:
        """Creates the variable that records the weights a step used (call in `build`)."""
        self._used_weights = keras.Variable(
            np.asarray([to_float(model.loss_weights[t]) for t in model.task_names], np.float32),
            trainable=False, name=f"{self.name}_used_weights",
        )

    def remember_used_weights(self, model) -> None:
        """Inside the train step, before changing the weights: records those the step used."""
        self._used_weights.assign(tf.stack([tf.cast(model.loss_weights[t], tf.float32) for t in model.task_names]))

    def assign_weights(self, values) -> None:
        """Assigns the model's loss-weight variables from a dict or a [K] vector (tf or numpy)."""
        model = self._built_for
        if isinstance(values, dict):
            for t, w in values.items():
                model.loss_weights[t].assign(tf.cast(w, tf.float32))
            return
        for i, t in enumerate(model.task_names):
            model.loss_weights[t].assign(tf.cast(values[i], tf.float32))

    # ------------------------------------------------------------ Keras callback API
    def on_train_begin(self, logs=None):
        self._in_fit = True
        self.begin(self.model)
        if getattr(self, "_used_weights", None) is not None:
            self._used_weights.assign(
                np.asarray([to_float(self.model.loss_weights[t]) for t in self.model.task_names], np.float32))

    def on_train_end(self, logs=None):
        self._in_fit = False
        self._remove_hook()

    def on_test_end(self, logs=None):
        if not self._in_fit:
            self._remove_hook()

    def on_predict_end(self, logs=None):
        if not self._in_fit:
            self._remove_hook()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_begin(epoch)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        used = self.current_weights()
        logged = self.epoch_update(epoch, logs)
        for t, w in (logged if logged is not None else used).items():
            logs[f"{t}_weight"] = float(w)

    # ------------------------------------------------------------ subclass hooks
    def begin(self, model) -> None:
        """Called at the start of `fit` (after `build`)."""

    def epoch_begin(self, epoch) -> None:
        """Called at the start of each epoch."""

    def epoch_update(self, epoch, logs):
        """Called at the end of each epoch with its logs; may return weights to log."""
        return None

    def step_combine(self, model, task_losses):  # pragma: no cover - abstract
        raise NotImplementedError

    def step_gradients(self, model, tape, task_losses, total, extra, base):  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------ helpers
    def _read_losses(self, logs, key_format="{task}_loss"):
        """Per-task values of `logs[key_format.format(task=t)]` as a float array, or None if unusable."""
        values = []
        for t in self.tasks:
            key = key_format.format(task=t)
            if key not in logs:
                raise ValueError(
                    f"{self._owner}: the epoch logs have no {key!r}.{suggestion(key, list(logs))} "
                    f"Logged keys: {', '.join(sorted(logs)) or '(none)'}."
                )
            values.append(float(np.asarray(logs[key])))
        values = np.asarray(values, np.float64)
        if not np.all(np.isfinite(values)) or np.any(values <= 0):
            warnings.warn(
                f"{self._owner}: epoch values {dict(zip(self.tasks, values.tolist()))} are not all finite "
                "and positive; keeping the current loss weights.",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        return values


def optimizer_learning_rate(model, default=1e-3) -> float:
    """The current learning rate of `model.optimizer` as a float (`default` when unavailable)."""
    try:
        lr = model.optimizer.learning_rate
        return float(lr.numpy()) if hasattr(lr, "numpy") else float(lr)
    except Exception:  # noqa: BLE001 - no optimizer, or a schedule without a value
        return default


def to_float(variable) -> float:
    """A scalar variable's value as a Python float (no NumPy copy-keyword warning)."""
    return float(variable.numpy())


def _plain(value):
    """Config values as plain Python containers (tuples become lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def __getattr__(name):
    # LearnedScalarWeighting moved to mtlzoo.weighting.learned (it subclasses LossWeighting: importing it here
    # eagerly would be a circle).
    if name == "LearnedScalarWeighting":
        import importlib
        import warnings

        warnings.warn("mtlzoo.weighting.base.LearnedScalarWeighting moved to mtlzoo.weighting.learned; import it "
                      "from there.", DeprecationWarning, stacklevel=2)
        return importlib.import_module("mtlzoo.weighting.learned").LearnedScalarWeighting
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
