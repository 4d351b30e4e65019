"""GradDrop at the representation (issue 15, part 2; Chen et al., NeurIPS 2020): the sign dropout acts on the
per-task gradients of the shared activations, per element, and the combined activation gradient goes back
through the trunk once. The parameter-level form stays available as `level="parameters"`."""

import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
import mtlzoo.aggregators as aggregators
from mtlzoo.model import representation


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype("float32")
    y = {"label": (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32"),
         "target": (x[:, :1] * 2.0 + 0.1 * rng.normal(size=(n, 1))).astype("float32")}
    return x, y


def _model(**aggregator_args):
    return mtlzoo.build("tabular_demo", aggregator="graddrop", aggregator_args={"seed": 0, **aggregator_args},
                        optimizer={"name": "sgd", "learning_rate": 1.0})


def _hook(model):
    (hook,) = model.step_hooks
    return hook


def test_sign_dropout_rule_per_element():
    """All-agreeing elements are summed untouched; conflicting ones keep exactly one sign."""
    g = np.random.default_rng(1).normal(size=(3, 400)).astype(np.float32)
    g[:, :50] = np.abs(g[:, :50])  # agree (positive)
    g[:, 50:100] = -np.abs(g[:, 50:100])  # agree (negative)
    d = aggregators.get("graddrop", seed=0)(g).numpy()
    np.testing.assert_allclose(d[:100], g[:, :100].sum(0), rtol=1e-6)
    pos, neg = np.where(g > 0, g, 0).sum(0), np.where(g < 0, g, 0).sum(0)
    conflict = d[100:]
    is_pos, is_neg = np.isclose(conflict, pos[100:], rtol=1e-6), np.isclose(conflict, neg[100:], rtol=1e-6)
    assert np.all(is_pos | is_neg)
    assert is_pos.any() and is_neg.any()  # both signs get picked somewhere
    with pytest.raises(ValueError, match="`level`"):
        aggregators.get("graddrop", level="activations")


def test_gradient_reaching_the_trunk_is_the_sign_dropout_of_the_feature_gradients():
    model = _model()
    hook = _hook(model)
    assert hook.aggregator.level == "representation"
    assert representation.elementwise_aggregator(model, hook) is hook.aggregator
    x, y = _data()
    trunk, heads = model.shared_representation_model()
    shared, by_task = model.variable_groups()
    before = [np.array(v) for v in model.trainable_variables]

    # Reference: per-task gradients of the shared activations, the rule from a fresh generator with the same
    # seed (the hook's first draw after reset_state()), then one pass back through the trunk.
    with tf.GradientTape(persistent=True) as tape:
        feats = trunk(x, training=True)
        feats = list(feats) if isinstance(feats, (list, tuple)) else [feats]
        cut = [tf.stop_gradient(f) for f in feats]
        for f in cut:
            tape.watch(f)
        pred = heads(cut, training=True)
        losses = model.compute_task_losses(y, pred)
    rows = tf.stack([tf.concat([tf.reshape(gf, [-1]) for gf in tape.gradient(losses[t], cut)], 0)
                     for t in model.task_names])
    dropped = aggregators.get("graddrop", seed=0)(rows)
    summed = tf.reduce_sum(rows, axis=0)
    upstream = [tf.reshape(dropped, tf.shape(cut[0]))] if len(cut) == 1 else None
    assert upstream is not None  # the tabular trunk has one feature map
    expected = tape.gradient(feats, shared, output_gradients=upstream)
    plain = tape.gradient(feats, shared, output_gradients=[tf.reshape(summed, tf.shape(cut[0]))])
    heads_expected = {t: tape.gradient(losses[t], by_task[t]) for t in model.task_names}
    # Some elements conflict, so the rule changes the trunk gradient.
    r = rows.numpy()
    assert ((r > 0).any(0) & (r < 0).any(0)).sum() > 0
    assert max(float(tf.reduce_max(tf.abs(a - b))) for a, b in zip(expected, plain)) > 1e-4

    # The compiled train step (SGD, learning rate 1): the update is minus the gradient.
    hook.aggregator.reset_state()
    model.train_on_batch(x, y)
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    for v, g in zip(shared, expected):
        np.testing.assert_allclose(before[index[id(v)]] - np.array(v), g.numpy(), rtol=1e-4, atol=1e-6)
    for t in model.task_names:  # each head gets its own task's gradient
        for v, g in zip(by_task[t], heads_expected[t]):
            np.testing.assert_allclose(before[index[id(v)]] - np.array(v), g.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("level", ["representation", "parameters"])
def test_both_levels_train(level):
    model = mtlzoo.build("tabular_demo", aggregator="graddrop", aggregator_args={"seed": 0, "level": level})
    hook = _hook(model)
    assert (representation.elementwise_aggregator(model, hook) is not None) == (level == "representation")
    x, y = _data(n=96)
    history = model.fit(x, y, epochs=4, batch_size=32, verbose=0).history
    assert np.isfinite(history["loss"]).all() and sum(history["nonfinite_steps"]) == 0
    assert history["loss"][-1] < history["loss"][0]
