"""A skipped (non-finite) train step changes nothing: weights, BatchNorm statistics, optimizer, loss weights, weighting state.

docs/reliability.md lists the promise; these tests hold it on one device and
under MirroredStrategy (2 logical CPUs, in a subprocess), with the backbones
the shipped recipes use.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mtlzoo
from mtlzoo.testing import TINY_IMAGE, random_inputs, random_labels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The backbones of the shipped lite recipes and the test trunk, at a small input (mobilenetv3_large, the other
# recipes' trunk, has the same layer types and BatchNorm use as mobilenetv3_small; it is left out for time).
BACKBONES = {
    "tiny": dict(TINY_IMAGE),
    "mobilenetv3_small": {"backbone": "mobilenetv3_small", "input_shape": (64, 64, 3), "neck_channels": 16},
}


def _state(model):
    """Every variable a step could touch, as arrays (model + optimizer + weighting/hook state)."""
    variables = list(model.variables) + list(model.optimizer.variables) + list(model.step_state_variables())
    return [(v.path, np.array(v.numpy(), copy=True)) for v in variables]


def _changed(before, after):
    return [p for (p, a), (_, b) in zip(before, after) if a.shape != b.shape or not np.array_equal(a, b, equal_nan=True)]


def _corrupt(x, fault):
    x = x.copy()
    x[0, 3, 3, 1] = np.nan if fault == "nan_pixel" else np.inf
    return x


def _split(y, n):
    return {t: v[:n] for t, v in y.items()}


@pytest.mark.slow
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_a_skipped_step_leaves_every_variable_bit_identical(backbone):
    model = mtlzoo.build("driving_perception_lite", **BACKBONES[backbone])
    x, y = random_inputs(model, 4), random_labels(model, 4)
    model.train_on_batch(x, y)  # moving statistics away from their initial values
    for fault in ("nan_pixel", "inf_pixel"):
        before = _state(model)
        logs = model.train_on_batch(_corrupt(x, fault), y, return_dict=True)
        assert logs["nonfinite_steps"] >= 1.0, fault
        assert _changed(before, _state(model)) == [], fault
        # The model still predicts finite values on clean images.
        for task, value in model(x, training=False).items():
            assert np.isfinite(np.asarray(value)).all(), (fault, task)
    # ... and a clean step trains again.
    before = _state(model)
    model.train_on_batch(x, y)
    assert _changed(before, _state(model)) != []


MIRRORED_SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    from mtlzoo import distribute
    distribute.use_logical_cpus(2)
    import tensorflow as tf
    import mtlzoo
    from mtlzoo.testing import TINY_IMAGE, random_inputs, random_labels

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = mtlzoo.build("driving_perception_lite", weighting=sys.argv[1], **TINY_IMAGE)
    x, y = random_inputs(model, 8), random_labels(model, 8)

    def state():
        vs = list(model.variables) + list(model.optimizer.variables) + list(model.step_state_variables())
        return [np.array(v.numpy(), copy=True) for v in vs]

    states = []

    import keras

    class Capture(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            states.append(state())

    bad = x.copy()
    bad[7, 5, 5, 0] = np.nan  # the second step, replica 1's shard of the global batch of 4
    history = model.fit(bad, y, batch_size=4, epochs=1, verbose=0, shuffle=False, callbacks=[Capture()])
    before, after = states
    changed = [i for i, (a, b) in enumerate(zip(before, after)) if not np.array_equal(a, b, equal_nan=True)]
    preds = {t: np.asarray(v) for t, v in model(x, training=False).items()}  # eager: no predict function to trace
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "skipped": history.history["nonfinite_steps"],
                      "changed": len(changed), "compared": len(before),
                      "finite": {t: bool(np.isfinite(v).all()) for t, v in preds.items()}}))
''')


@pytest.mark.slow
def test_a_skipped_step_changes_nothing_under_mirrored_strategy():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, "gradnorm"], env=env, capture_output=True,
                          text=True, timeout=480)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["skipped"] == [1.0]
    assert result["compared"] > 50 and result["changed"] == 0, result
    assert all(result["finite"].values()), result


# ---------------------------------------------------------------- bad values are errors, not coercions
@pytest.fixture(scope="module")
def tabular():
    return mtlzoo.build("tabular_demo")


def _bad_weights():
    import tensorflow as tf

    return [
        ("inf", float("inf")), ("nan", float("nan")), ("negative", -0.5),
        ("numpy inf", np.float32(np.inf)), ("numpy nan", np.float64(np.nan)), ("numpy negative", np.int64(-2)),
        ("tensor inf", tf.constant(np.inf)), ("tensor nan", tf.constant(np.nan)), ("tensor negative", tf.constant(-1.0)),
        ("string", "1.0"), ("bool", True), ("None", None), ("list", [1.0, 2.0]), ("array", np.ones(2)),
    ]


@pytest.mark.parametrize("label,value", _bad_weights(), ids=[b[0] for b in _bad_weights()])
def test_set_loss_weights_rejects_every_non_finite_negative_or_non_number(tabular, label, value):
    before = tabular.get_loss_weights()
    with pytest.raises(ValueError, match=r"Loss weight of task 'target' must be one finite number >= 0"):
        tabular.set_loss_weights({"target": value})
    assert tabular.get_loss_weights() == before


def test_set_loss_weights_accepts_numbers_of_every_type(tabular):
    import tensorflow as tf

    for value in (2, 0.5, np.float32(1.5), np.int64(3), tf.constant(0.25), np.array(4.0)):
        tabular.set_loss_weights({"target": value})
        assert tabular.get_loss_weights()["target"] == float(np.asarray(value))


@pytest.mark.parametrize("key,value", [("num_classes", 2.5), ("num_classes", "ten"), ("channels", 8.5),
                                       ("channels", "sixteen")])
def test_integer_settings_reject_fractions_and_words_naming_the_key(key, value):
    from mtlzoo.recipe import RecipeError

    with pytest.raises(RecipeError, match=rf"task 'segmentation'.*`{key}` must be an integer"):
        mtlzoo.get_recipe("driving_perception_lite", **{f"tasks.segmentation.{key}": value})


@pytest.mark.parametrize("key,value", [("neck_channels", 2.5), ("neck_channels", "ten"), ("seed", 1.5),
                                       ("input_shape", [64.5, 128, 3]), ("input_shape", ["sixty-four", 128, 3])])
def test_recipe_integer_settings_name_the_key(key, value):
    from mtlzoo.recipe import RecipeError

    with pytest.raises(RecipeError, match=rf"{key.split('[')[0]}"):
        mtlzoo.get_recipe("driving_perception_lite", **{key: value})
    # Whole floats are integers.
    assert mtlzoo.get_recipe("driving_perception_lite", neck_channels=32.0).neck_channels == 32


# ---------------------------------------------------------------- mtlzoo.train with steps that stay non-finite
def _image_data(n=16, seed=0):
    model = mtlzoo.build("driving_perception_lite", **TINY_IMAGE)
    return random_inputs(model, n, seed), random_labels(model, n, seed)


def _finite_predictions(model, x):
    return all(np.isfinite(np.asarray(v)).all() for v in model(x, training=False).values())


@pytest.mark.slow
def test_train_with_a_huge_learning_rate_stops_and_returns_a_finite_model(tmp_path):
    from mtlzoo.training import train

    x, y = _image_data()
    result = train("driving_perception_lite", data=(x, y), validation_data=(x[:4], {t: v[:4] for t, v in y.items()}),
                   epochs=3, out_dir=str(tmp_path), verbose=0,
                   **TINY_IMAGE, **{"optimizer": {"name": "adam", "learning_rate": 1e12}, "training.batch_size": 2,
                                    "training.nonfinite_patience": 3})
    assert result.stopped_reason is not None
    assert "consecutive training steps had a non-finite" in result.stopped_reason
    assert "returned to its state at the start of epoch 0" in result.stopped_reason
    assert "lower the learning rate" in result.stopped_reason
    assert _finite_predictions(result.model, x)
    for path in (result.best_path, result.last_path):
        if path is not None:
            assert _finite_predictions(mtlzoo.load(path), x), path
    assert result.last_path is not None


@pytest.mark.slow
def test_train_whose_every_step_is_nan_stops_with_the_cause(tmp_path):
    from mtlzoo.training import train

    x, y = _image_data(8)
    bad = x.copy()
    bad[:, 0, 0, 0] = np.nan  # one NaN pixel in every image
    result = train("driving_perception_lite", data=(bad, y), validation_data=(x[:4], {t: v[:4] for t, v in y.items()}),
                   epochs=3, out_dir=str(tmp_path), verbose=0,
                   **TINY_IMAGE, **{"training.batch_size": 4, "training.check_batches": 0})
    assert "every step of epoch 0 (2) had a non-finite loss or gradient" in result.stopped_reason
    assert result.history["nonfinite_steps"] == [2.0]
    assert _finite_predictions(result.model, x)
    assert result.best_path is not None and _finite_predictions(mtlzoo.load(result.best_path), x)


@pytest.mark.slow
def test_after_a_huge_learning_rate_step_the_following_skipped_steps_change_nothing():
    import keras

    model = mtlzoo.build("driving_perception_lite", **TINY_IMAGE)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e12))
    x, y = random_inputs(model, 4), random_labels(model, 4)
    first = model.train_on_batch(x, y, return_dict=True)  # finite, and it wrecks the weights
    assert first["nonfinite_steps"] == 0.0
    for _ in range(2):
        before = _state(model)
        logs = model.train_on_batch(x, y, return_dict=True)
        assert logs["nonfinite_steps"] >= 1.0
        assert _changed(before, _state(model)) == []
