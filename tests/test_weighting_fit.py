"""A model built with a loss weighting trains with it under plain `fit`, once, and keeps its state on reload.

Parametrized over the weighting registry: a newly registered method is tested
the moment it exists.
"""

import io
import contextlib

import numpy as np
import pytest

import mtlzoo
import mtlzoo.weighting
from mtlzoo.registry import WEIGHTINGS
from mtlzoo.testing import random_inputs, random_labels

# Arguments for the methods whose defaults do nothing visible on two epochs.
ARGS = {
    "static": {"weights": {"label": 0.25, "target": 2.0}},
    "scheduled": {"schedules": {"target": {"kind": "linear", "start": 0.0, "end": 1.0, "epochs": 2}}},
}


def _data(model, n=32):
    x = random_inputs(model, n, seed=1)
    y = random_labels(model, n, seed=1)
    return x, y


def _weights_logged(history, tasks):
    return {t: history.history[f"{t}_weight"] for t in tasks}


def _state(model):
    return [np.asarray(v.numpy()).copy() for v in model._weighting_state()]


@pytest.fixture(scope="module")
def trained():
    """name -> (model, history, reloaded model) for every registered weighting (one fit each)."""
    return {}


def _train(name, tmp_path_factory, cache):
    if name not in cache:
        model = mtlzoo.build("tabular_demo", weighting=name, weighting_args=ARGS.get(name, {}))
        x, y = _data(model)
        history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        path = str(tmp_path_factory.mktemp(name) / "m.keras")
        model.save(path)
        cache[name] = (model, history, mtlzoo.load(path))
    return cache[name]


def test_the_schedule_args_above_are_valid():
    assert set(ARGS) <= set(WEIGHTINGS.list())
    assert WEIGHTINGS.get("scheduled")(**ARGS["scheduled"]) is not None


@pytest.mark.parametrize("name", WEIGHTINGS.list())
def test_fit_runs_the_built_weighting_as_the_method_says(name, tmp_path_factory, trained):
    model, history, _ = _train(name, tmp_path_factory, trained)
    tasks = model.task_names
    assert type(model.weighting) is WEIGHTINGS.get(name)
    logged = _weights_logged(history, tasks)  # the weighting writes {task}_weight every epoch
    assert all(len(v) == 2 and np.isfinite(v).all() for v in logged.values())
    final = model.get_loss_weights()
    if name == "equal":
        assert all(v == [1.0, 1.0] for v in logged.values())
    elif name == "static":
        assert logged == {"label": [0.25, 0.25], "target": [2.0, 2.0]}
    elif name == "scheduled":
        assert logged["target"][0] < logged["target"][1]  # the linear ramp
    elif model.learned_loss_params:
        # Uncertainty weighting / IMTL-L: the log-variances / scales left 0 and the weights follow them.
        params = {t: float(v.numpy()) for t, v in model.learned_loss_params.items()}
        assert any(abs(p) > 1e-4 for p in params.values()), params
        assert any(abs(w - 1.0) > 1e-4 for w in final.values())
    elif name == "dwa":
        # Equal weights for the first two epochs, then w_t ∝ exp(r_t / T) summing to K.
        assert all(v == [1.0, 1.0] for v in logged.values())
        assert abs(sum(final.values()) - len(tasks)) < 1e-4 and any(abs(w - 1.0) > 1e-6 for w in final.values())
    else:
        # Step- and epoch-level methods that change the weights from the start.
        moved = [w for v in logged.values() for w in v] + list(final.values())
        assert any(abs(w - 1.0) > 1e-4 for w in moved), (name, logged, final)


@pytest.mark.parametrize("name", WEIGHTINGS.list())
def test_a_reloaded_model_keeps_the_weighting_and_its_state(name, tmp_path_factory, trained):
    model, _, reloaded = _train(name, tmp_path_factory, trained)
    assert type(reloaded.weighting) is type(model.weighting)
    assert reloaded.weighting.get_config() == model.weighting.get_config()
    assert reloaded.get_loss_weights() == model.get_loss_weights()
    saved, loaded = _state(model), _state(reloaded)
    assert len(saved) == len(loaded)
    for a, b in zip(saved, loaded):
        np.testing.assert_array_equal(a, b)
    if model.learned_loss_params:
        for t, v in model.learned_loss_params.items():
            assert float(reloaded.learned_loss_params[t].numpy()) == float(v.numpy())


def test_dwa_history_survives_a_reload_and_resumes():
    model = mtlzoo.build("tabular_demo", weighting="dwa")
    x, y = _data(model)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert len(model.weighting.loss_history) == 2
    import tempfile, os
    path = os.path.join(tempfile.mkdtemp(), "m.keras")
    model.save(path)
    reloaded = mtlzoo.load(path)
    assert reloaded.weighting.loss_history == model.weighting.loss_history
    # The first epoch after the reload already uses DWA weights (no two-epoch warm-up again).
    history = reloaded.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert any(abs(history.history[f"{t}_weight"][0] - 1.0) > 1e-6 for t in reloaded.task_names)


def test_the_same_method_passed_again_runs_once_and_another_is_refused():
    model = mtlzoo.build("tabular_demo", weighting="dwa")
    x, y = _data(model)
    calls = {"own": 0, "given": 0}
    own = model.weighting
    given = mtlzoo.weighting.get("dwa")
    own_update, given_update = own.epoch_update, given.epoch_update

    def count(key, fn):
        def wrapped(epoch, logs):
            calls[key] += 1
            return fn(epoch, logs)
        return wrapped

    own.epoch_update, given.epoch_update = count("own", own_update), count("given", given_update)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[given])
    assert calls == {"own": 0, "given": 2}
    assert model.weighting is given  # it is the model's now: saved with it
    with pytest.raises(ValueError, match=r"trains with the loss weighting DWA.*GradNorm.*set_weighting"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[mtlzoo.weighting.get("gradnorm")])


def test_without_a_weighting_fit_is_plain_keras():
    model = mtlzoo.build("tabular_demo")
    assert model.weighting is None
    x, y = _data(model)
    history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert "label_weight" not in history.history and model.get_loss_weights() == {"label": 1.0, "target": 1.0}


def test_summary_and_repr_name_the_weighting_and_the_aggregator():
    model = mtlzoo.build("tabular_demo", weighting="gradnorm", aggregator="pcgrad")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        model.summary()
    assert "Trains with weighting: GradNorm(alpha=1.5" in out.getvalue()
    assert "aggregator: PCGrad" in out.getvalue() or "aggregator: PCGRAD" in out.getvalue().upper()
    assert "GradNorm" in repr(model) and "PCGrad".lower() in repr(model).lower()
    plain = mtlzoo.build("tabular_demo")
    assert "fixed loss weights" in repr(plain) and "aggregator: none" in repr(plain)


def test_a_skipped_step_leaves_the_weighting_state_untouched():
    """Issue 10: the weighting's own variables are part of what a non-finite step restores."""
    import keras

    class Capture(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.states = []

        def on_train_batch_end(self, batch, logs=None):
            m = self.model
            self.states.append(_state(m) + [np.asarray(v.numpy()).copy() for v in m.variables + m.optimizer.variables])

    for name in ("gradnorm", "famo", "rlw", "uncertainty"):
        model = mtlzoo.build("tabular_demo", weighting=name, aggregator="pcgrad" if name == "gradnorm" else None)
        x, y = _data(model, 24)
        y["target"][16] = np.nan  # the third step of the epoch is not finite
        capture = Capture()
        history = model.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False, callbacks=[capture])
        assert history.history["nonfinite_steps"] == [1.0], name
        first, second, skipped = capture.states
        assert any(not np.array_equal(a, b) for a, b in zip(first, second)), name  # a finite step moves things
        assert len(second) == len(skipped)
        for a, b in zip(second, skipped):
            np.testing.assert_array_equal(a, b, err_msg=name)
