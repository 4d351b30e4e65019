"""Adam and AdamW whose TensorFlow update is one fused kernel per variable."""

from __future__ import annotations

import keras

__all__ = ["FusedAdam", "FusedAdamW"]


class _FusedAdamUpdate:
    """The update of `keras.optimizers.Adam`, done by `ResourceApplyAdam` on the TensorFlow backend.

    Keras's own Adam builds about 34 graph ops per variable (a cast, two
    powers, two square roots and three assignments, each with its reads);
    `ResourceApplyAdam` does the same arithmetic in one op. The step's
    scalars (bias corrections) are computed once per step and device
    instead of once per variable. Anything the fused kernel does not cover
    (AMSGrad, sparse gradients, non-float32 variables, other backends) takes
    Keras's own path, so the result is always Keras's Adam.
    """

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        self._fused_scalars = {}
        try:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._fused_scalars = {}

    def _fused_step_scalars(self, learning_rate, device):
        import tensorflow as tf

        key = (id(tf.compat.v1.get_default_graph()), device)
        cached = getattr(self, "_fused_scalars", None)
        if cached is None:
            cached = self._fused_scalars = {}
        if key not in cached:
            step = tf.cast(self.iterations + 1, "float32")
            beta_1 = tf.cast(self.beta_1, "float32")
            beta_2 = tf.cast(self.beta_2, "float32")
            cached[key] = (tf.pow(beta_1, step), tf.pow(beta_2, step), tf.cast(learning_rate, "float32"),
                           beta_1, beta_2, tf.cast(self.epsilon, "float32"))
        return cached[key]

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        if (keras.backend.backend() != "tensorflow" or self.amsgrad or isinstance(gradient, tf.IndexedSlices)
                or variable.dtype != "float32" or not hasattr(variable, "handle")):
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        m = m.value if isinstance(m, keras.Variable) else m
        v = v.value if isinstance(v, keras.Variable) else v
        beta_1_power, beta_2_power, lr, beta_1, beta_2, epsilon = self._fused_step_scalars(learning_rate,
                                                                                            variable.device)
        return tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=m.handle, v=v.handle, beta1_power=beta_1_power, beta2_power=beta_2_power,
            lr=lr, beta1=beta_1, beta2=beta_2, epsilon=epsilon, grad=tf.cast(gradient, "float32"),
            use_locking=False)


@keras.saving.register_keras_serializable(package="mtlzoo")
class FusedAdam(_FusedAdamUpdate, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with one fused update op per variable on TensorFlow (same arguments, same result).

    Args:
        **kwargs: the arguments of `keras.optimizers.Adam` (`learning_rate`,
            `beta_1`, `beta_2`, `epsilon`, `amsgrad`, `clipnorm`, ...).

    Example:
    ```python
    model.compile(optimizer=mtlzoo.optimizers.FusedAdam(learning_rate=2e-3))
    ```

    Reference:
        Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """


@keras.saving.register_keras_serializable(package="mtlzoo")
class FusedAdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with the fused Adam update (weight decay is applied by Keras, as in AdamW).

    Args:
        **kwargs: the arguments of `keras.optimizers.AdamW`.

    Example:
    ```python
    model.compile(optimizer=mtlzoo.optimizers.FusedAdamW(learning_rate=1e-3, weight_decay=1e-4))
    ```

    Reference:
        Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """
