"""The lean train step: fused Adam equals Keras's Adam, one finiteness check, a restore that runs only when skipping."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
from mtlzoo import step_state
from mtlzoo.optimizers import FusedAdam, FusedAdamW


def _dense_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(7, activation="relu"), keras.layers.Dense(3)])


def _data():
    rng = np.random.RandomState(1)
    return rng.randn(64, 5).astype("float32"), rng.randn(64, 3).astype("float32")


def _train(optimizer, epochs=4):
    model = _dense_model()
    model.compile(optimizer, "mse")
    x, y = _data()
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0)
    return [w.numpy() for w in model.weights] + [v.numpy() for v in optimizer.variables]


CASES = {
    "adam": (lambda: keras.optimizers.Adam(0.01), lambda: FusedAdam(learning_rate=0.01)),
    "adam_schedule": (lambda: keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(0.01, 40)),
                      lambda: FusedAdam(learning_rate=keras.optimizers.schedules.CosineDecay(0.01, 40))),
    "adam_betas_clipnorm": (lambda: keras.optimizers.Adam(0.01, beta_1=0.5, beta_2=0.9, epsilon=1e-3, clipnorm=0.1),
                            lambda: FusedAdam(learning_rate=0.01, beta_1=0.5, beta_2=0.9, epsilon=1e-3, clipnorm=0.1)),
    "amsgrad": (lambda: keras.optimizers.Adam(0.01, amsgrad=True), lambda: FusedAdam(learning_rate=0.01, amsgrad=True)),
    "adamw": (lambda: keras.optimizers.AdamW(0.01, weight_decay=0.05),
              lambda: FusedAdamW(learning_rate=0.01, weight_decay=0.05)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_fused_adam_follows_keras_adam(case):
    keras_opt, fused_opt = CASES[case]
    ours, theirs = _train(fused_opt()), _train(keras_opt())
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    # ... and the run moved the weights (a no-op optimizer would match nothing).
    assert not np.allclose(ours[0], _dense_model().weights[0].numpy())


def _update_op_count(optimizer):
    model = _dense_model()
    grads = [tf.ones_like(v.value) for v in model.trainable_variables]
    optimizer.build(model.trainable_variables)
    fn = tf.function(lambda: optimizer.apply(grads, model.trainable_variables))
    graph = fn.get_concrete_function().graph
    return len(graph.get_operations())


def test_fused_adam_update_is_a_fraction_of_keras_graph():
    fused, plain = _update_op_count(FusedAdam(learning_rate=0.01)), _update_op_count(keras.optimizers.Adam(0.01))
    # Four variables: Keras builds ~34 ops per variable, the fused update ~6 (its ApplyAdam, reads, casts).
    assert fused < 0.6 * plain, (fused, plain)


def test_recipe_adam_is_fused_unless_asked_and_a_saved_model_resumes(tmp_path, batch_factory):
    recipe = mtlzoo.get_recipe("tabular_demo")
    assert type(recipe.make_optimizer()) is FusedAdam
    assert type(recipe.override(optimizer={"name": "adam", "learning_rate": 1e-3, "fused": False}).make_optimizer()) \
        is keras.optimizers.Adam
    assert type(recipe.override(optimizer={"name": "adamw", "learning_rate": 1e-3}).make_optimizer()) is FusedAdamW
    assert type(recipe.override(optimizer={"name": "sgd", "learning_rate": 1e-3}).make_optimizer()) \
        is keras.optimizers.SGD
    with pytest.raises(mtlzoo.recipe.RecipeError, match="fused"):
        recipe.override(optimizer={"name": "adam", "fused": "yes"}).make_optimizer()
    model = mtlzoo.build("tabular_demo")
    x, y = batch_factory(model, n=8)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)
    model.save(tmp_path / "m.keras")
    again = mtlzoo.load(tmp_path / "m.keras")
    assert type(again.optimizer) is FusedAdam
    assert int(again.optimizer.iterations) == int(model.optimizer.iterations) == 4
    for a, b in zip(again.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    again.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert int(again.optimizer.iterations) == 6


def test_all_finite_checks_tensors_and_variables_in_one_test():
    ok = [tf.ones([3]), keras.Variable(np.zeros(2, "float32")), tf.constant([1, 2]), None]
    assert bool(step_state.all_finite(ok))
    for bad in (np.nan, np.inf, -np.inf):
        assert not bool(step_state.all_finite(ok + [tf.constant([0.0, bad])]))
    assert not bool(step_state.all_finite([keras.Variable(np.array([1.0, np.nan], "float32"))]))
    # Finite values whose float32 sum overflows count as non-finite (documented).
    assert not bool(step_state.all_finite([tf.constant([3e38, 3e38])]))
    assert bool(step_state.all_finite([]))


@pytest.mark.parametrize("keep", [True, False])
def test_restore_unless_in_a_graph_restores_only_a_skipped_step(keep):
    v = keras.Variable(np.array([1.0, 2.0], "float32"))

    @tf.function
    def step(flag):
        saved = step_state.snapshot([v])
        v.assign(v.value * 10.0)
        step_state.restore_unless(flag, [v], saved)

    step(tf.constant(keep))
    np.testing.assert_array_equal(np.asarray(v), [10.0, 20.0] if keep else [1.0, 2.0])


def test_masked_cross_entropy_equals_keras_with_its_gradient():
    from mtlzoo.losses import MaskedSparseCategoricalCrossentropy

    rng = np.random.RandomState(0)
    logits = tf.constant(rng.randn(2, 4, 6, 5).astype("float32") * 3)
    labels = rng.randint(-1, 5, (2, 4, 6)).astype("int32")
    valid = labels >= 0
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(logits)
        ours = MaskedSparseCategoricalCrossentropy()(labels, logits)
        per = keras.losses.sparse_categorical_crossentropy(np.where(valid, labels, 0), logits, from_logits=True)
        theirs = tf.reduce_sum(per * valid) / valid.sum()
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(ours, logits).numpy(), tape.gradient(theirs, logits).numpy(), atol=1e-7)
    assert np.abs(tape.gradient(ours, logits).numpy()[~valid]).max() == 0.0  # missing labels get no gradient


# ---------------------------------------------------------------- fused BatchNormalization
from mtlzoo.layers import FusedBatchNormalization  # noqa: E402
from mtlzoo.layers.traversal import iter_layers  # noqa: E402


def _bn_pair(shape, **kwargs):
    rng = np.random.default_rng(3)
    keras_bn, fused = keras.layers.BatchNormalization(**kwargs), FusedBatchNormalization(**kwargs)
    keras_bn.build(shape)
    fused.build(shape)
    for a, b in zip(keras_bn.weights, fused.weights):
        value = rng.normal(size=a.shape).astype("float32")
        value = np.abs(value) + 0.5 if "variance" in a.name else value
        a.assign(value)
        b.assign(value)
    return keras_bn, fused


@pytest.mark.parametrize("kwargs", [{}, {"momentum": 0.9}, {"center": False}, {"scale": False, "epsilon": 1e-4}],
                         ids=["default", "momentum", "no_center", "no_scale"])
def test_fused_batch_norm_equals_keras_outputs_gradients_and_moving_statistics(kwargs):
    x = tf.constant(np.random.default_rng(0).normal(3.0, 2.0, size=(4, 6, 5, 7)).astype("float32"))
    w = tf.constant(np.random.default_rng(1).normal(size=x.shape).astype("float32"))
    keras_bn, fused = _bn_pair(x.shape, **kwargs)
    results = []
    for layer in (keras_bn, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * w)
        grads = tape.gradient(loss, [x] + layer.trainable_weights)
        results.append((y, grads, [v.numpy() for v in layer.non_trainable_weights], layer(x, training=False)))
    (y0, g0, m0, i0), (y1, g1, m1, i1) = results
    np.testing.assert_allclose(y1, y0, atol=1e-5)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=5e-5)
    for a, b in zip(m0, m1):  # the biased batch variance goes into the moving average, as in Keras
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(i1, i0, atol=1e-5)


def _op_types(layer, shape, training):
    fn = tf.function(lambda x: layer(x, training=training))
    return {op.type for op in fn.get_concrete_function(tf.TensorSpec(shape, "float32")).graph.get_operations()}


def test_fused_batch_norm_runs_one_fused_op_and_keras_code_where_the_op_cannot():
    shape = (2, 4, 4, 3)
    _, fused = _bn_pair(shape)
    assert "FusedBatchNormV3" in _op_types(fused, shape, True)
    assert "FusedBatchNormV3" in _op_types(fused, shape, False)
    assert "SquaredDifference" not in _op_types(fused, shape, True)
    _, tiny_epsilon = _bn_pair(shape, epsilon=1e-6)  # below the fused kernel's floor: Keras's own computation
    assert "FusedBatchNormV3" not in _op_types(tiny_epsilon, shape, True)
    _, dense = _bn_pair((2, 3))  # not 4-D
    assert "FusedBatchNormV3" not in _op_types(dense, (2, 3), True)


def test_recipes_fuse_every_batch_norm_train_the_same_and_reload(tmp_path, batch_factory):
    from mtlzoo.testing import TINY_IMAGE, predict_eager

    fused = mtlzoo.build("driving_perception_lite", **TINY_IMAGE)
    plain = mtlzoo.build("driving_perception_lite", fused_batch_norm=False, **TINY_IMAGE)
    bns = [layer for layer in iter_layers(fused) if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(type(layer) is FusedBatchNormalization for layer in bns)
    assert not any(isinstance(layer, FusedBatchNormalization) for layer in iter_layers(plain))
    x, y = batch_factory(fused, n=4)
    a = fused.fit(x, y, epochs=2, batch_size=4, verbose=0, shuffle=False).history["loss"]
    b = plain.fit(x, y, epochs=2, batch_size=4, verbose=0, shuffle=False).history["loss"]
    np.testing.assert_allclose(a, b, rtol=1e-4)
    fused.save(tmp_path / "m.keras")
    reloaded = mtlzoo.load(tmp_path / "m.keras")
    assert any(type(layer) is FusedBatchNormalization for layer in iter_layers(reloaded))
    before, after = predict_eager(fused, x), predict_eager(reloaded, x)
    for task in before:
        np.testing.assert_array_equal(after[task], before[task])
    with pytest.raises(mtlzoo.recipe.RecipeError, match="fused_batch_norm must be true or false"):
        mtlzoo.get_recipe("driving_perception_lite", fused_batch_norm="yes")
