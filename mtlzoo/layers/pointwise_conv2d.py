"""Keras's 1x1 Conv2D trained as one matrix product."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mtlzoo")
class PointwiseConv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose 1x1 convolutions train as one matrix product.

    A 1x1 convolution with stride 1 is a matrix product of the `(batch * height * width, channels)` pixels with the
    `(channels, filters)` kernel. On TensorFlow's CPU kernels the product and its two gradient products are faster
    than `Conv2D` and its backprop ops (forward + backward of MobileNetV3-Small's 1x1 convolutions at 128x256,
    batch 8: 24 ms against 36 ms; the whole `driving_perception_lite` train step about 0.93x, docs/benchmarks.md).
    In training mode (`training=True`, as in the train step) this layer computes that product; in inference mode,
    and for any other kernel size, stride, dilation, groups, layout or backend, it runs Keras's own code, so
    predictions and exported SavedModel/TFLite graphs are those of a `Conv2D` (a `CONV_2D` op). Variables,
    `get_config` and weights are Conv2D's.

    `mtlzoo.build` uses it for every 1x1 `Conv2D` of a model (recipe key `pointwise_matmul`, default true);
    `use_pointwise_matmul(model)` converts a model built elsewhere.

    Args:
        **kwargs: the arguments of `keras.layers.Conv2D`.

    Example:
    ```python
    conv = mtlzoo.layers.PointwiseConv2D(32, 1)
    y = conv(x, training=True)
    ```

    Reference:
        Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications",
        arXiv 2017 (pointwise convolutions as matrix products, section 3.1).
    """

    def _as_product(self, inputs) -> bool:
        return (keras.backend.backend() == "tensorflow" and len(inputs.shape) == 4
                and self.data_format == "channels_last" and tuple(self.kernel_size) == (1, 1)
                and tuple(self.strides) == (1, 1) and tuple(self.dilation_rate) == (1, 1) and self.groups == 1)

    def call(self, inputs, training=None):
        if not (training and self._as_product(inputs)):
            return super().call(inputs)
        kernel = self.kernel
        channels = kernel.shape[-2]
        _, height, width, _ = ops.shape(inputs)
        outputs = ops.matmul(ops.reshape(inputs, (-1, channels)), ops.reshape(kernel, (channels, self.filters)))
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        outputs = ops.reshape(outputs, (-1, height, width, self.filters))
        return self.activation(outputs) if self.activation is not None else outputs


def use_pointwise_matmul(model) -> int:
    """Makes every plain 1x1, stride-1 `keras.layers.Conv2D` of `model` (nested models included; not those a custom
    layer creates inside itself) a `PointwiseConv2D`, in place: same variables and config. Returns how many.

    Call it before the model's train step is traced (`mtlzoo.build` does).

    Example:
    ```python
    n = mtlzoo.layers.use_pointwise_matmul(model)
    ```
    """
    from mtlzoo.layers.traversal import convert_layers

    return convert_layers(model, lambda layer: type(layer) is keras.layers.Conv2D
                          and tuple(layer.kernel_size) == (1, 1) and tuple(layer.strides) == (1, 1), PointwiseConv2D)
