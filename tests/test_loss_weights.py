"""Loss weights are model variables that callbacks can change during fit."""

import keras
import numpy as np
import pytest

import mtlzoo
from mtlzoo.testing import TINY_IMAGE

TINY = TINY_IMAGE


class SetWeightsAt(keras.callbacks.Callback):
    def __init__(self, epoch, weights):
        super().__init__()
        self.epoch, self.weights = epoch, weights

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.set_loss_weights(self.weights)


def test_callback_changes_total_loss_inside_compiled_step(batch_factory):
    model = mtlzoo.build("driving_perception_lite", **TINY)
    model.set_loss_weights({"segmentation": 1.0, "depth": 1.0, "detection": 1.0, "scene": 1.0})
    x, y = batch_factory(model, n=4)
    cb = SetWeightsAt(2, {"segmentation": 3.0, "depth": 0.0, "detection": 0.5, "scene": 2.0})
    h = model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[cb]).history
    for epoch, w in [(0, dict.fromkeys(model.task_names, 1.0)), (1, dict.fromkeys(model.task_names, 1.0)), (2, cb.weights)]:
        expected = sum(w[t] * h[f"{t}_loss"][epoch] for t in model.task_names)
        assert h["loss"][epoch] == pytest.approx(expected, rel=1e-4)
    assert model.get_loss_weights()["depth"] == 0.0


def test_loss_weights_survive_save_and_load(tmp_path):
    model = mtlzoo.build("tabular_demo")
    model.set_loss_weights({"target": 0.25})
    model.save(tmp_path / "m.keras")
    assert mtlzoo.load(tmp_path / "m.keras").get_loss_weights() == {"label": 1.0, "target": 0.25}


def test_recipe_loss_weight_and_compile_loss_weights():
    model = mtlzoo.build("tabular_demo", **{"tasks.target.loss_weight": 3.0})
    assert model.get_loss_weights()["target"] == 3.0
    model.compile(optimizer="sgd", loss_weights={"label": 0.5})
    assert model.get_loss_weights() == {"label": 0.5, "target": 3.0}


def test_bad_loss_weights_are_clear_errors():
    model = mtlzoo.build("tabular_demo")
    with pytest.raises(ValueError, match="Did you mean 'target'"):
        model.set_loss_weights({"targt": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        model.set_loss_weights({"target": -1.0})
    with pytest.raises(ValueError, match="2 tasks"):
        model.set_loss_weights([1.0])


def test_label_errors_name_the_task(batch_factory):
    model = mtlzoo.build("driving_perception_lite", **TINY)
    x, y = batch_factory(model, n=2)
    y["depth"] = y["depth"][:, :16]
    with pytest.raises(ValueError, match="Task 'depth'.*expected"):
        model.fit(x, y, epochs=1, verbose=0)
    x, y = batch_factory(model, n=2)
    y["depht"] = y.pop("depth")
    with pytest.raises(ValueError, match="Did you mean 'depth'"):
        model.fit(x, y, epochs=1, verbose=0)


def test_nonfinite_step_updates_no_weight():
    model = mtlzoo.build("tabular_demo")
    x = np.random.default_rng(0).normal(size=(8, 16)).astype("float32")
    y = {"label": np.zeros(8, "int32"), "target": np.full((8, 1), np.nan, "float32")}
    before = [np.array(v) for v in model.trainable_variables]
    h = model.fit(x, y, epochs=1, batch_size=8, verbose=0).history
    assert h["nonfinite_steps"] == [1.0]
    for a, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(a, np.array(v))
