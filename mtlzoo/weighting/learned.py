"""`LearnedScalarWeighting`: the base of weightings that learn one scalar per task."""

from __future__ import annotations

import warnings

import keras
import tensorflow as tf

from mtlzoo.weighting.base import LossWeighting, optimizer_learning_rate, to_float
from mtlzoo.weighting.checks import check_float
from mtlzoo.weighting.replica import all_finite, replica_mean, replica_sum, run_once, stack_losses
from mtlzoo.weighting.small_adam import SmallAdam


# ---------------------------------------------------------------- learned scalars
class LearnedScalarWeighting(LossWeighting):
    """Base of the methods with one learnable scalar `s_t` per task (uncertainty, IMTL-L).

    Where the model owns them (`model.learned_loss_params`, a dict task ->
    trainable scalar variable, created by
    `MultiTaskModel(..., learned_loss_params=True)`), they are trained by the
    model's optimizer like any weight and saved with the model; the callback
    never re-initialises them, so a reloaded model resumes from its saved
    values. Otherwise the callback creates them itself (initialised to 0),
    trains them with its own Adam optimizer inside the train step, and warns
    that they are not part of the saved model.

    Args:
        learning_rate: float > 0 or None. Learning rate of the callback's own
            Adam optimizer, used only when the model does not own the
            parameters. None: the model optimizer's learning rate at build time.

    Example:
    ```python
    import mtlzoo.weighting
    cb = mtlzoo.weighting.get("uncertainty")   # a LearnedScalarWeighting
    model.fit(x, y, epochs=5, callbacks=[cb])
    cb.scalars, cb.owned_by_model
    ```
    """

    uses_combine = True
    needs_learned_loss_params = True

    def __init__(self, learning_rate=None):
        super().__init__()
        self.learning_rate = check_float(self._owner, "learning_rate", learning_rate, low=0.0, low_open=True,
                                         allow_none=True)
        self._params = None
        self._own_optimizer = None

    def build(self, model):
        params = getattr(model, "learned_loss_params", None)
        if isinstance(params, dict) and params and all(t in params for t in model.task_names):
            self._params = [params[t] for t in model.task_names]
            self._own_optimizer = None
            self.uses_gradients = False
            self.needs_persistent_tape = False
            return
        warnings.warn(
            f"{self._owner}: the model does not own learned loss parameters "
            "(`model.learned_loss_params`); the callback keeps them and they are not saved with the model. "
            "Build the model with `learned_loss_params=True` to save them.",
            UserWarning,
            stacklevel=2,
        )
        self._params = [
            keras.Variable(0.0, dtype="float32", trainable=True, name=f"{t}_{self.name}_param")
            for t in model.task_names
        ]
        lr = self.learning_rate
        if lr is None:
            lr = optimizer_learning_rate(model, default=1e-3)
        self._own_optimizer = SmallAdam(self._params, learning_rate=lr)
        self.uses_gradients = True
        self.needs_persistent_tape = True

    @property
    def scalars(self) -> dict:
        """dict task -> current value of the learned scalar `s_t` (Python floats)."""
        return {t: to_float(v) for t, v in zip(self.tasks, self._params)}

    @property
    def owned_by_model(self) -> bool:
        """True where the learned scalars are the model's weights (saved with it)."""
        return self._own_optimizer is None

    def _s(self):
        return tf.stack([tf.cast(tf.convert_to_tensor(v), tf.float32) for v in self._params])

    def effective_weights(self, s):
        """The coefficient of each task loss in the total, from `s` [K]."""
        raise NotImplementedError

    def objective(self, s, losses):
        """Per-task terms [K] of the combined objective."""
        raise NotImplementedError

    def step_combine(self, model, task_losses):
        losses = stack_losses(model, task_losses)
        s = self._s()
        # A task with no label in the batch has a loss of exactly 0: it adds
        # nothing (its regulariser would otherwise drift s without data).
        present = losses > 0
        terms = tf.where(present, self.objective(s, losses), 0.0)
        self.assign_weights(tf.stop_gradient(self.effective_weights(s)))
        return tf.reduce_sum(terms)

    def step_gradients(self, model, tape, task_losses, total, extra, base):
        grads = base()
        s_grads = tape.gradient(total, self._params)
        # `total` is the step loss (divided by the replica count): the global
        # gradient is the replica sum.
        s_grads = [replica_sum(tf.zeros_like(v) if g is None else tf.cast(g, tf.float32))
                   for g, v in zip(s_grads, self._params)]
        finite = all_finite(total, *s_grads, *[g for g in grads if g is not None])
        finite = replica_mean(tf.cast(finite, tf.float32)) >= 1.0

        def update(finite, *s_grads):
            def apply():
                self._own_optimizer.apply(s_grads)
                return tf.constant(True)

            tf.cond(finite, apply, lambda: tf.constant(False))

        run_once(update, finite, *s_grads)
        return grads
