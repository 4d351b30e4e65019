"""Keras's BatchNormalization computed with TensorFlow's fused kernel."""

import keras
from keras import ops

#: TensorFlow's fused kernel clamps epsilon to at least this value; smaller epsilons keep Keras's own computation.
_MIN_FUSED_EPSILON = 1.001e-5


@keras.saving.register_keras_serializable(package="mtlzoo")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose TensorFlow forward and backward are one fused op each.

    Keras 3 normalises with `ops.moments` and `ops.batch_normalization`: on TensorFlow that is about ten
    element-wise ops forward (mean, squared difference, rsqrt, multiply, add) and their gradients backward (with
    `Tile`s for the broadcasts). This layer computes the same function with `FusedBatchNormV3` and its gradient
    op, as Keras 2 did: the same outputs, gradients and moving statistics (the fused op's Bessel-corrected batch
    variance is scaled back to Keras's biased one before the moving average). Everything else is Keras's: the
    variables, `get_config`, `momentum`, `epsilon`, `center`/`scale`, and the cases the fused op does not cover
    (other backends, inputs that are not 4-D channels-last, masks, renormalisation, synchronized statistics,
    epsilon below 1.001e-5) run Keras's own code.

    `mtlzoo.build` uses it for every BatchNormalization layer of a model (recipe key `fused_batch_norm`,
    default true); `use_fused_batch_norm(model)` converts a model built elsewhere.

    Args:
        **kwargs: the arguments of `keras.layers.BatchNormalization`.

    Example:
    ```python
    bn = mtlzoo.layers.FusedBatchNormalization(momentum=0.9)
    y = bn(x, training=True)
    ```

    Reference:
        Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate
        Shift", ICML 2015.
    """

    def _fusable(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and mask is None and len(inputs.shape) == 4
                and self.axis in (-1, 3) and not self.renorm and not getattr(self, "synchronized", False)
                and float(self.epsilon) >= _MIN_FUSED_EPSILON
                and keras.backend.standardize_dtype(inputs.dtype) in ("float32", "float16", "bfloat16"))

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        scale = ops.cast(self.gamma, "float32") if self.scale else tf.ones([channels], "float32")
        offset = ops.cast(self.beta, "float32") if self.center else tf.zeros([channels], "float32")
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True)
            count = tf.cast(tf.size(inputs) // channels, "float32")
            # The kernel returns the unbiased variance (n / (n - 1)); Keras's moving average takes the biased one.
            variance = variance * tf.math.divide_no_nan(count - 1.0, count)
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, mean=ops.cast(self.moving_mean, "float32"),
                variance=ops.cast(self.moving_variance, "float32"), epsilon=self.epsilon, data_format="NHWC",
                is_training=False)
        return ops.cast(outputs, self.compute_dtype)


def use_fused_batch_norm(model) -> int:
    """Makes every plain `keras.layers.BatchNormalization` of `model` (nested models included; not those a custom
    layer creates inside itself) a `FusedBatchNormalization`, in place: same variables and config, fused
    TensorFlow ops. Returns how many.

    Call it before the model's train step is traced (`mtlzoo.build` does).

    Example:
    ```python
    n = mtlzoo.layers.use_fused_batch_norm(model)
    ```
    """
    from mtlzoo.layers.traversal import convert_layers

    return convert_layers(model, lambda layer: type(layer) is keras.layers.BatchNormalization, FusedBatchNormalization)
