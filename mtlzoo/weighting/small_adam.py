"""`SmallAdam`: the Adam update for a weighting's few scalar parameters."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


class SmallAdam:
    """Adam on a callback's few variables, as plain variable updates.

    The same update as `keras.optimizers.Adam` (β1 = 0.9, β2 = 0.999,
    ε = 1e-7, bias correction through the step count), without Keras'
    distribution machinery, so that `run_once` can call it in cross-replica
    context. Used for GradNorm's weights, FAMO's logits and the learned
    scalars a callback (not the model) owns.

    Args:
        variables: list of variables to update.
        learning_rate: float > 0.
        beta_1, beta_2, epsilon: Adam's constants (Keras defaults).

    Example:
    ```python
    from mtlzoo.weighting.base import SmallAdam
    opt = SmallAdam([w], learning_rate=0.025)
    opt.apply([grad])
    ```

    Reference:
        Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """

    def __init__(self, variables, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        self.variables = list(variables)
        self.learning_rate = float(learning_rate)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.iterations = keras.Variable(0.0, dtype="float32", trainable=False, name="small_adam_iterations")
        self.m = [keras.Variable(np.zeros(v.shape, np.float32), trainable=False, name="small_adam_m")
                  for v in self.variables]
        self.v = [keras.Variable(np.zeros(v.shape, np.float32), trainable=False, name="small_adam_v")
                  for v in self.variables]

    def apply(self, gradients):
        """One Adam step with `gradients` (one per variable, same order); returns nothing."""
        step = tf.convert_to_tensor(self.iterations) + 1.0
        self.iterations.assign(step)
        alpha = self.learning_rate * tf.sqrt(1.0 - self.beta_2 ** step) / (1.0 - self.beta_1 ** step)
        for var, m, v, g in zip(self.variables, self.m, self.v, gradients):
            g = tf.cast(g, tf.float32)
            m_new = tf.convert_to_tensor(m) + (g - tf.convert_to_tensor(m)) * (1.0 - self.beta_1)
            v_new = tf.convert_to_tensor(v) + (tf.square(g) - tf.convert_to_tensor(v)) * (1.0 - self.beta_2)
            m.assign(m_new)
            v.assign(v_new)
            var.assign(tf.convert_to_tensor(var) - alpha * m_new / (tf.sqrt(v_new) + self.epsilon))
