"""PointwiseConv2D: 1x1 convolutions trained as one matrix product, the same function as Keras's Conv2D."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
from mtlzoo.layers import PointwiseConv2D, use_pointwise_matmul
from mtlzoo.recipe import RecipeError
from mtlzoo.testing import TINY_IMAGE, predict_eager, random_inputs, random_labels


def _pair(**kwargs):
    plain, pointwise = keras.layers.Conv2D(**kwargs), PointwiseConv2D(**kwargs)
    x = tf.random.stateless_normal((2, 6, 10, 5), seed=(1, 2))
    plain(x)
    pointwise(x)
    pointwise.set_weights(plain.get_weights())
    return plain, pointwise, x


@pytest.mark.parametrize("use_bias,activation", [(True, "relu"), (False, None)])
def test_training_output_and_gradients_equal_conv2d(use_bias, activation):
    plain, pointwise, x = _pair(filters=7, kernel_size=1, use_bias=use_bias, activation=activation)
    assert pointwise._as_product(x)
    results = []
    for layer in (plain, pointwise):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.range(7, dtype="float32"))
        results.append([y, *tape.gradient(loss, [x, *layer.trainable_weights])])
    for a, b in zip(*results):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-5)
    # Inference mode is Conv2D's own code: the same numbers, bit for bit.
    np.testing.assert_array_equal(pointwise(x, training=False).numpy(), plain(x).numpy())


def test_training_runs_a_matmul_and_inference_a_convolution():
    _, pointwise, x = _pair(filters=4, kernel_size=1)

    def op_types(training):
        graph = tf.function(lambda v: pointwise(v, training=training)).get_concrete_function(x).graph
        return {op.type for op in graph.get_operations()}

    assert "MatMul" in op_types(True) and "Conv2D" not in op_types(True)
    assert "Conv2D" in op_types(False) and "MatMul" not in op_types(False)
    # Anything but a 1x1 stride-1 convolution keeps the convolution in training too.
    for kwargs in ({"kernel_size": 3}, {"kernel_size": 1, "strides": 2}):
        _, other, x = _pair(filters=4, **kwargs)
        assert not other._as_product(x)


def test_recipes_convert_their_1x1_convolutions_train_the_same_and_reload(tmp_path):
    model = mtlzoo.build("driving_perception_lite", seed=3, **TINY_IMAGE)
    reference = mtlzoo.build("driving_perception_lite", seed=3, pointwise_matmul=False, **TINY_IMAGE)
    convs = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Conv2D)]
    pointwise = [layer for layer in convs if isinstance(layer, PointwiseConv2D)]
    assert pointwise and all(layer.kernel_size != (1, 1) or layer.strides != (1, 1)
                             for layer in convs if layer not in pointwise)
    assert not [layer for layer in reference._flatten_layers() if isinstance(layer, PointwiseConv2D)]
    reference.set_weights(model.get_weights())
    x, y = random_inputs(model, 4), random_labels(model, 4)
    for _ in range(2):
        a = model.train_on_batch(x, y, return_dict=True)
        b = reference.train_on_batch(x, y, return_dict=True)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    for w, v in zip(model.get_weights(), reference.get_weights()):  # Adam's normalised steps (lr 1e-3) turn
        np.testing.assert_allclose(w, v, rtol=1e-4, atol=1e-4)      # float rounding into ~1e-5 differences
    assert use_pointwise_matmul(reference) == len(pointwise)  # the same layers, converted after the build
    model.save(tmp_path / "m.keras")
    again = mtlzoo.load(tmp_path / "m.keras", compile=False)
    assert any(isinstance(layer, PointwiseConv2D) for layer in again._flatten_layers())
    expected, got = predict_eager(model, x), predict_eager(again, x)
    for task in expected:
        np.testing.assert_allclose(got[task], expected[task], rtol=1e-5, atol=1e-5)
    with pytest.raises(RecipeError, match="pointwise_matmul must be true or false"):
        mtlzoo.get_recipe("driving_perception_lite", pointwise_matmul="yes")
