"""Tests of mtlzoo.weighting: the common interface of every registered method
(parametrized over `weighting.list()`, so new methods are covered), known
answers per method, and the two paper oracles (GradNorm toy, uncertainty
weighting recovering the noise levels). Tiny models only."""

import csv
import json
import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
import mtlzoo.weighting as weighting
from mtlzoo.model import MultiTaskModel
from mtlzoo.registry import WEIGHTINGS, UnknownNameError
from mtlzoo.weighting.base import MIN_WEIGHT, LossWeighting

NAMES = weighting.list()

# Hyperparameters that make each method fit on the tabular demo.
FIT_ARGS = {"dtp": {"kpis": {"label": "label_acc"}}, "rlw": {"seed": 0}, "static": {"weights": {"label": 2.0}},
            "scheduled": {"schedules": {"target": {"kind": "linear", "start": 0.0, "end": 1.0, "epochs": 2}}}}

# Out-of-range hyperparameters per method: (kwargs, text the message must contain).
BAD_HYPERPARAMETERS = {
    "stch": [({"mu": 0.0}, "mu"), ({"preference": {"label": -1.0}}, "preference"),
             ({"ideal_point": {"label": float("nan")}}, "ideal_point")],
    "excess_mtl": [({"step_size": 0.0}, "step_size")],
    "equal": [],
    "static": [({"weights": {"label": -1.0}}, "weights"), ({"weights": [1.0, float("nan")]}, "weights[1]"),
               ({"weights": "bogus"}, "weights")],
    "scheduled": [({"schedules": {"depth": {"kind": "ramp"}}}, "kind"),
                  ({"schedules": {"depth": {"kind": "linear", "start": 0, "end": 1, "epochs": 0}}}, "epochs"),
                  ({"schedules": {"depth": {"kind": "step", "values": [1, 2], "boundaries": []}}}, "boundaries"),
                  ({"schedules": {"depth": -0.5}}, "value")],
    "dwa": [({"temperature": -1.0}, "temperature"), ({"temperature": 0.0}, "temperature"),
            ({"loss_key": "loss"}, "loss_key")],
    "uncertainty": [({"learning_rate": -0.1}, "learning_rate")],
    "imtl_l": [({"learning_rate": 0.0}, "learning_rate")],
    "gradnorm": [({"alpha": -0.5}, "alpha"), ({"learning_rate": 0.0}, "learning_rate"), ({"variable": 3}, "variable")],
    "rlw": [({"distribution": "gauss"}, "distribution"), ({"seed": -1}, "seed")],
    "dtp": [({"gamma": -1.0}, "gamma"), ({"alpha": 0.0}, "alpha"), ({"alpha": 1.5}, "alpha"),
            ({"epsilon": 0.7}, "epsilon"), ({"kpis": {"label": {"key": "label_acc", "mode": "up"}}}, "mode")],
    "gls": [],
    "famo": [({"gamma": -0.1}, "gamma"), ({"learning_rate": -1.0}, "learning_rate"), ({"epsilon": 0.0}, "epsilon")],
}


@keras.saving.register_keras_serializable(package="mtlzoo_tests")
class ModelWithLossParams(MultiTaskModel):
    """The change proposed for MultiTaskModel: `learned_loss_params=True` creates
    one trainable scalar per task (`{task}_loss_param`, initialised to 0), exposed
    as `model.learned_loss_params` and kept in the config."""

    def __init__(self, *args, **kwargs):
        learned = bool(kwargs.pop("learned_loss_params", False))
        super().__init__(*args, **kwargs)
        self.learned_loss_params_enabled = learned
        self._learned_loss_param_vars = {
            t: self.add_weight(name=f"{t}_loss_param", shape=(), initializer="zeros", trainable=True)
            for t in self.task_names
        } if learned else {}

    @property
    def learned_loss_params(self):
        return dict(self._learned_loss_param_vars)

    def get_config(self):
        config = super().get_config()
        config["learned_loss_params"] = self.learned_loss_params_enabled
        return config


def with_loss_params(recipe, optimizer="adam", **overrides):
    """A compiled `ModelWithLossParams` with the architecture of `recipe`."""
    base = mtlzoo.build(recipe, compile=False, **overrides)
    config = base.get_config()
    config["learned_loss_params"] = True
    model = ModelWithLossParams.from_config(config)
    model.compile(optimizer=optimizer)
    return model


def tabular_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype("float32")
    y = {"label": (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32"),
         "target": (x[:, :1] * 2.0 + 0.1 * rng.normal(size=(n, 1))).astype("float32")}
    return x, y


def make(name, **kwargs):
    return weighting.get(name, **{**FIT_ARGS.get(name, {}), **kwargs})


def fit_quietly(model, x, y, callbacks, epochs=3, batch_size=16):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=callbacks)


# --------------------------------------------------------------- registry
def test_all_methods_registered():
    expected = {"equal", "static", "scheduled", "dwa", "uncertainty", "gradnorm", "rlw", "dtp", "gls", "imtl_l", "famo"}
    assert expected <= set(NAMES)
    assert NAMES == sorted(NAMES)
    assert set(BAD_HYPERPARAMETERS) >= set(NAMES), "add bad-hyperparameter cases for new methods"
    for name in NAMES:
        assert isinstance(weighting.get(name, **FIT_ARGS.get(name, {})), LossWeighting)
        assert issubclass(WEIGHTINGS.get(name), keras.callbacks.Callback)


def test_get_fixed_case_aliases_and_instances():
    assert weighting.get("fixed") is None and weighting.get(None) is None
    with pytest.raises(TypeError, match="static"):
        weighting.get("fixed", weights={"a": 1})
    assert isinstance(weighting.get("DWA"), weighting.DWA)
    assert isinstance(weighting.get("uw"), weighting.UncertaintyWeighting)
    assert isinstance(weighting.get("ew"), weighting.Equal)
    cb = weighting.DWA()
    assert weighting.get(cb) is cb


@pytest.mark.parametrize("name", NAMES)
def test_misspelt_registered_name_suggests_it(name):
    typo = name[1] + name[0] + name[2:]
    with pytest.raises(UnknownNameError, match=f"Did you mean.*'{name}'"):
        weighting.get(typo)


@pytest.mark.parametrize("bad, near", [("dwb", "dwa"), ("gradnrom", "gradnorm"), ("uncertainity", "uncertainty"),
                                       ("imtl", "imtl_l")])
def test_unknown_name_lists_near_match(bad, near):
    with pytest.raises(UnknownNameError, match=near) as info:
        weighting.get(bad)
    assert isinstance(info.value, ValueError) and isinstance(info.value, KeyError)


def test_unknown_hyperparameter_is_type_error_with_suggestion():
    with pytest.raises(TypeError, match="temperature"):
        weighting.get("dwa", temprature=2.0)
    with pytest.raises(TypeError, match="none"):
        weighting.get("equal", alpha=1.0)


def test_recipe_accepts_registered_weighting_names():
    recipe = mtlzoo.get_recipe("tabular_demo", weighting="dwa", weighting_args={"temperature": 1.0})
    assert recipe.weighting == "dwa"
    cb = weighting.get(recipe.weighting, **recipe.weighting_args)
    assert cb.temperature == 1.0
    with pytest.raises(Exception, match="gradnorm"):
        mtlzoo.get_recipe("tabular_demo", weighting="gradnrom")


# --------------------------------------------------------------- common interface
@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name):
    cb = make(name)
    config = cb.get_config()
    json.dumps(config)  # plain, serialisable values
    again = type(cb).from_config(config)
    assert again.get_config() == config
    assert weighting.get(name, **config).get_config() == config
    assert repr(cb).startswith(type(cb).__name__ + "(")


@pytest.mark.parametrize("name", NAMES)
def test_bad_hyperparameters_raise_value_error(name):
    for kwargs, text in BAD_HYPERPARAMETERS[name]:
        with pytest.raises(ValueError, match=text.replace("[", r"\[").replace("]", r"\]")):
            weighting.get(name, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_short_fit_logs_weights(name):
    model = mtlzoo.build("tabular_demo")
    x, y = tabular_data()
    cb = make(name)
    history = fit_quietly(model, x, y, [cb])
    for t in model.task_names:
        values = np.asarray(history.history[f"{t}_weight"])
        assert values.shape == (3,), (t, values)
        assert np.all(np.isfinite(values))
        if cb.positive_weights:
            assert np.all(values > 0), (t, values)
        else:
            assert np.all(values >= 0), (t, values)
    assert np.all(np.isfinite(history.history["loss"]))
    assert model.step_hooks == []  # the hook is removed at the end of fit
    assert all(math.isfinite(w) for w in model.get_loss_weights().values())


def test_weights_reach_csv_logger(tmp_path):
    model = mtlzoo.build("tabular_demo")
    x, y = tabular_data()
    path = tmp_path / "log.csv"
    fit_quietly(model, x, y, [weighting.get("rlw", seed=1), keras.callbacks.CSVLogger(str(path))], epochs=2)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == 2 and "label_weight" in rows[0] and "target_weight" in rows[0]
    assert abs(float(rows[1]["label_weight"]) + float(rows[1]["target_weight"]) - 2.0) < 1e-5


def test_non_multitask_model_is_rejected():
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(TypeError, match="MultiTaskModel"):
        weighting.get("dwa").set_model(plain)


# --------------------------------------------------------------- static / scheduled
def test_static_and_equal_assign_weights():
    model = mtlzoo.build("tabular_demo")
    cb = weighting.get("static", weights=[0.25, 4.0])
    cb.set_model(model)
    cb.on_train_begin()
    assert model.get_loss_weights() == {"label": 0.25, "target": 4.0}
    eq = weighting.get("equal")
    eq.set_model(model)
    eq.on_train_begin()
    assert model.get_loss_weights() == {"label": 1.0, "target": 1.0}
    with pytest.raises(ValueError, match="Did you mean 'label'"):
        weighting.get("static", weights={"lable": 1.0}).set_model(model)
    with pytest.raises(ValueError, match="2 tasks"):
        weighting.get("static", weights=[1.0]).set_model(model)


def test_scheduled_linear_and_step():
    cb = weighting.get("scheduled", schedules={
        "a": {"kind": "linear", "start": 0.0, "end": 1.0, "epochs": 4, "begin": 1},
        "b": {"kind": "step", "values": [0.0, 0.5, 2.0], "boundaries": [2, 5]},
        "c": 3.0,
    })
    assert [cb.weight_at("a", e) for e in range(7)] == [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert [cb.weight_at("b", e) for e in range(7)] == [0.0, 0.0, 0.5, 0.5, 0.5, 2.0, 2.0]
    assert cb.weight_at("c", 10) == 3.0
    model = mtlzoo.build("tabular_demo")
    x, y = tabular_data()
    ramp = make("scheduled")
    history = fit_quietly(model, x, y, [ramp], epochs=3)
    assert history.history["target_weight"] == [0.0, 0.5, 1.0]
    assert history.history["label_weight"] == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="Did you mean 'target'"):
        weighting.get("scheduled", schedules={"targte": 1.0}).set_model(model)


# --------------------------------------------------------------- DWA
def test_dwa_formula_known_answer():
    w = weighting.dwa.dwa_weights([1.0, 2.0], [1.0, 1.0], temperature=2.0)
    e = np.exp([0.5, 1.0])
    np.testing.assert_allclose(w, 2 * e / e.sum())
    np.testing.assert_allclose(weighting.dwa.dwa_weights([3.0, 3.0, 3.0], [1.0, 1.0, 1.0]), [1.0, 1.0, 1.0])


def test_dwa_on_fabricated_logs():
    model = mtlzoo.build("tabular_demo")
    cb = weighting.get("dwa", temperature=2.0)
    cb.set_model(model)
    model.set_loss_weights({"label": 5.0, "target": 5.0})
    cb.on_train_begin()
    assert model.get_loss_weights() == {"label": 1.0, "target": 1.0}  # λ = 1 for the first two epochs
    epochs = [{"label_loss": 2.0, "target_loss": 4.0}, {"label_loss": 1.0, "target_loss": 3.0},
              {"label_loss": 0.9, "target_loss": 1.5}]
    logged = []
    for e, logs in enumerate(epochs):
        logs = dict(logs)
        cb.on_epoch_end(e, logs)
        logged.append((logs["label_weight"], logs["target_weight"]))
    assert logged[0] == (1.0, 1.0) and logged[1] == (1.0, 1.0)  # weights used during epochs 0 and 1
    # Weights for epoch 2 (logged at its end): from the ratios L(1)/L(0) = [0.5, 0.75].
    expected = 2 * np.exp(np.array([0.5, 0.75]) / 2) / np.exp(np.array([0.5, 0.75]) / 2).sum()
    np.testing.assert_allclose(logged[2], expected, rtol=1e-6)
    # After epoch 2, the weights for epoch 3 come from L(2)/L(1) = [0.9, 0.5].
    nxt = 2 * np.exp(np.array([0.9, 0.5]) / 2) / np.exp(np.array([0.9, 0.5]) / 2).sum()
    np.testing.assert_allclose(list(model.get_loss_weights().values()), nxt, rtol=1e-6)
    assert sum(model.get_loss_weights().values()) == pytest.approx(2.0)
    with pytest.warns(RuntimeWarning, match="keeping"):
        cb.on_epoch_end(3, {"label_loss": float("nan"), "target_loss": 1.0})
    np.testing.assert_allclose(list(model.get_loss_weights().values()), nxt, rtol=1e-6)
    with pytest.raises(ValueError, match="label_loss"):
        cb.on_epoch_end(4, {"lable_loss": 1.0, "target_loss": 1.0})


# --------------------------------------------------------------- DTP
def test_dtp_focal_weights_from_kpis():
    model = mtlzoo.build("tabular_demo")
    cb = weighting.get("dtp", kpis={"label": "label_acc", "target": {"key": "target_mae", "mode": "min", "scale": 2.0}},
                       gamma=2.0, alpha=0.5)
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_end(0, {"label_acc": 0.6, "target_mae": 1.0})
    kappa = np.array([0.6, math.exp(-0.5)])
    np.testing.assert_allclose(list(model.get_loss_weights().values()), -(1 - kappa) ** 2 * np.log(kappa), rtol=1e-6)
    cb.on_epoch_end(1, {"label_acc": 0.8, "target_mae": 0.5})
    smoothed = 0.5 * np.array([0.8, math.exp(-0.25)]) + 0.5 * kappa
    np.testing.assert_allclose(list(model.get_loss_weights().values()), -(1 - smoothed) ** 2 * np.log(smoothed),
                               rtol=1e-6)
    # A perfect KPI is clipped: the weight stays finite and positive.
    cb.on_epoch_end(2, {"label_acc": 1.0, "target_mae": 0.0})
    assert all(0 < w < 1 for w in model.get_loss_weights().values())
    with pytest.raises(ValueError, match="label_acc"):
        cb.on_epoch_end(3, {"label_accuracy": 0.5, "target_mae": 1.0})


# --------------------------------------------------------------- learned scalars
def test_uncertainty_and_imtl_l_loss_formulas():
    model = with_loss_params("tabular_demo")
    s = {"label": 0.7, "target": -0.4}
    for t, v in s.items():
        model.learned_loss_params[t].assign(v)
    losses = {"label": tf.constant(2.0), "target": tf.constant(0.5)}
    unc = weighting.get("uncertainty")
    unc.set_model(model)
    assert unc.owned_by_model
    expected = sum(0.5 * math.exp(-s[t]) * float(losses[t]) + 0.5 * s[t] for t in s)
    assert float(unc.step_combine(model, losses)) == pytest.approx(expected, rel=1e-6)
    assert model.get_loss_weights() == pytest.approx({t: 0.5 * math.exp(-v) for t, v in s.items()})
    assert unc.sigmas() == pytest.approx({t: math.exp(v / 2) for t, v in s.items()})
    # A task without labels in the batch (loss exactly 0) adds neither term.
    partial = {"label": tf.constant(2.0), "target": tf.constant(0.0)}
    assert float(unc.step_combine(model, partial)) == pytest.approx(0.5 * math.exp(-0.7) * 2.0 + 0.35, rel=1e-6)
    unc.on_train_end()
    imtl = weighting.get("imtl_l")
    imtl.set_model(model)
    expected = sum(math.exp(s[t]) * float(losses[t]) - s[t] for t in s)
    assert float(imtl.step_combine(model, losses)) == pytest.approx(expected, rel=1e-6)
    assert model.get_loss_weights() == pytest.approx({t: math.exp(v) for t, v in s.items()})
    imtl.on_train_end()
    assert model.step_hooks == []


def test_uncertainty_parameters_survive_keras_round_trip(tmp_path):
    model = with_loss_params("tabular_demo")
    x, y = tabular_data()
    cb = weighting.get("uncertainty")
    fit_quietly(model, x, y, [cb], epochs=2)
    learned = cb.scalars
    assert all(v != 0.0 for v in learned.values())  # trained by the model's optimizer
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert {t: float(v.numpy()) for t, v in loaded.learned_loss_params.items()} == pytest.approx(learned)
    again = weighting.get("uncertainty")
    again.set_model(loaded)  # picks up the saved values, no re-initialisation
    assert again.owned_by_model and again.scalars == pytest.approx(learned)
    again.on_train_end()


@pytest.mark.skipif(not hasattr(MultiTaskModel, "learned_loss_params"),
                    reason="MultiTaskModel has no learned_loss_params yet (proposed change)")
def test_real_model_owns_learned_loss_params(tmp_path):  # pragma: no cover - runs once the model change lands
    model = mtlzoo.build("tabular_demo", weighting="uncertainty")
    assert set(model.learned_loss_params) == set(model.task_names)
    path = str(tmp_path / "m.keras")
    model.learned_loss_params["label"].assign(0.3)
    model.save(path)
    assert float(mtlzoo.load(path).learned_loss_params["label"].numpy()) == pytest.approx(0.3)


def test_nonfinite_loss_never_corrupts_learned_parameters():
    model = with_loss_params("tabular_demo")
    x, y = tabular_data(16)
    for t, v in zip(model.task_names, (0.2, -0.3)):
        model.learned_loss_params[t].assign(v)
    before = {t: float(v.numpy()) for t, v in model.learned_loss_params.items()}
    kernel = model.trainable_variables[-1].numpy().copy()
    bad = dict(y, target=np.where(np.arange(16)[:, None] == 3, np.nan, y["target"]).astype("float32"))
    cb = weighting.get("uncertainty")
    history = model.fit(x, bad, epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    assert history.history["nonfinite_steps"] == [1.0]
    assert {t: float(v.numpy()) for t, v in model.learned_loss_params.items()} == before
    np.testing.assert_array_equal(model.trainable_variables[-1].numpy(), kernel)
    assert all(math.isfinite(w) for w in model.get_loss_weights().values())


def test_callback_owned_fallback_trains_and_skips_nonfinite_steps():
    model = mtlzoo.build("tabular_demo")
    x, y = tabular_data(32)
    cb = weighting.get("imtl_l", learning_rate=0.05)
    with pytest.warns(UserWarning, match="learned_loss_params=True"):
        cb.set_model(model)
    assert not cb.owned_by_model
    model.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[cb])
    trained = cb.scalars
    assert all(abs(v) > 1e-3 for v in trained.values())
    # The weights of the last step lag one update behind s; an evaluation with the
    # callback (hook installed for it, removed after) computes them from the current s.
    assert model.get_loss_weights() == pytest.approx({t: math.exp(v) for t, v in trained.items()}, rel=0.1)
    model.evaluate(x, y, verbose=0, callbacks=[cb])
    assert model.get_loss_weights() == pytest.approx({t: math.exp(v) for t, v in trained.items()}, rel=1e-5)
    assert model.step_hooks == [] and cb.scalars == trained
    bad = dict(y, target=np.full_like(y["target"], np.inf))
    history = model.fit(x[:16], {k: v[:16] for k, v in bad.items()}, epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    assert history.history["nonfinite_steps"] == [1.0]
    assert cb.scalars == trained


@pytest.mark.slow
def test_uncertainty_oracle_learns_noise_levels():
    """Kendall et al. 2018: with Σ ½e^{−s}L + ½s the learned σ_k → residual std (noise 10 and 1)."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 8)).astype("float32")
    f = (x @ rng.normal(size=(8, 1))).astype("float32")
    y = {"noisy": f + 10.0 * rng.normal(size=f.shape).astype("float32"),
         "clean": f + 1.0 * rng.normal(size=f.shape).astype("float32")}
    recipe = {"name": "noise", "input_shape": [8], "backbone": "mlp", "backbone_args": {"units": [32]},
              "tasks": {"noisy": {"kind": "regression"}, "clean": {"kind": "regression"}}}
    model = with_loss_params(recipe, optimizer=keras.optimizers.Adam(0.05, beta_2=0.9))
    cb = weighting.get("uncertainty")
    history = model.fit(x, y, epochs=8, batch_size=64, verbose=0, callbacks=[cb])
    sigma = cb.sigmas()
    print("uncertainty oracle: learned sigma", sigma)
    assert sigma["noisy"] == pytest.approx(10.0, rel=0.25)
    assert sigma["clean"] == pytest.approx(1.0, rel=0.25)
    # The logged weights follow ½σ⁻²: the noisy task ends ~100x lighter.
    assert history.history["clean_weight"][-1] > 50 * history.history["noisy_weight"][-1]


# --------------------------------------------------------------- GLS / FAMO / RLW
def test_gls_geometric_mean_and_effective_weights():
    gm = weighting.gls.geometric_mean_loss(tf.constant([2.0, 8.0]))
    assert float(gm) == pytest.approx(4.0)
    assert float(weighting.gls.geometric_mean_loss(tf.constant([2.0, 0.0, 8.0]))) == pytest.approx(4.0)
    with tf.GradientTape() as tape:
        losses = tf.constant([2.0, 8.0])
        tape.watch(losses)
        g = weighting.gls.geometric_mean_loss(losses)
    np.testing.assert_allclose(tape.gradient(g, losses).numpy(), [4.0 / (2 * 2.0), 4.0 / (2 * 8.0)], rtol=1e-6)
    model = mtlzoo.build("tabular_demo")
    cb = weighting.get("gls")
    cb.set_model(model)
    logs = {"label_loss": 2.0, "target_loss": 8.0}
    cb.on_epoch_end(0, logs)
    assert (logs["label_weight"], logs["target_weight"]) == pytest.approx((1.0, 0.25))
    cb.on_train_end()


def test_famo_weights_and_logit_gradient():
    logits = tf.constant([0.3, -0.2, 0.1])
    losses = tf.constant([1.0, 2.0, 0.5])
    w = weighting.famo.famo_weights(logits, losses).numpy()
    z = tf.nn.softmax(logits).numpy()
    expected = 3 * (z / losses.numpy()) / np.sum(z / losses.numpy())
    np.testing.assert_allclose(w, expected, rtol=1e-5)
    assert w.sum() == pytest.approx(3.0)
    # Absent task (loss 0): weight 0, the others still sum to the number of present tasks.
    w2 = weighting.famo.famo_weights(logits, tf.constant([1.0, 0.0, 0.5])).numpy()
    assert w2[1] == 0 and w2.sum() == pytest.approx(2.0)
    previous = tf.constant([1.5, 2.5, 0.6])
    delta = np.log(previous.numpy() + 1e-8) - np.log(losses.numpy() + 1e-8)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        objective = tf.reduce_sum(tf.nn.softmax(logits) * tf.constant(delta, tf.float32))
    np.testing.assert_allclose(weighting.famo.famo_logit_gradient(logits, previous, losses).numpy(),
                               tape.gradient(objective, logits).numpy(), rtol=1e-5, atol=1e-7)


def test_rlw_weights_are_random_positive_and_sum_to_k():
    model = mtlzoo.build("tabular_demo")
    x, y = tabular_data()
    history = fit_quietly(model, x, y, [weighting.get("rlw", distribution="uniform", seed=3)], epochs=3)
    pairs = np.stack([history.history["label_weight"], history.history["target_weight"]], axis=1)
    np.testing.assert_allclose(pairs.sum(axis=1), 2.0, rtol=1e-5)
    assert np.all(pairs > 0) and len({round(p, 6) for p in pairs[:, 0]}) == 3


# --------------------------------------------------------------- GradNorm
def test_gradnorm_weight_gradient_and_renormalisation():
    grad, g, target = weighting.gradnorm.gradnorm_weight_gradient(
        tf.constant([1.0, 1.0]), tf.constant([1.0, 3.0]), tf.constant([2.0, 2.0]), tf.constant([2.0, 2.0]), 1.5)
    np.testing.assert_allclose(g.numpy(), [1.0, 3.0])
    np.testing.assert_allclose(target.numpy(), [2.0, 2.0])
    np.testing.assert_allclose(grad.numpy(), [-1.0, 3.0])
    # Inverse training rates r = [0.5, 1.5] / 1 with α = 1: targets Ḡ·r = [1, 3] already met.
    grad, _, target = weighting.gradnorm.gradnorm_weight_gradient(
        tf.constant([1.0, 1.0]), tf.constant([1.0, 3.0]), tf.constant([1.0, 3.0]), tf.constant([2.0, 2.0]), 1.0)
    np.testing.assert_allclose(target.numpy(), [1.0, 3.0])
    w = weighting.gradnorm.renormalize(tf.constant([0.5, -1.0, 2.5]), 3.0).numpy()
    assert w.sum() == pytest.approx(3.0) and w.min() > 0


def test_gradnorm_renormalises_to_k_and_picks_last_shared_kernel():
    model = mtlzoo.build("tabular_demo")
    x, y = tabular_data()
    cb = weighting.get("gradnorm", alpha=1.5, learning_rate=0.1)
    history = fit_quietly(model, x, y, [cb], epochs=2)
    assert cb.shared_variable.path == "dense1/kernel"
    weights = model.get_loss_weights()
    assert sum(weights.values()) == pytest.approx(2.0, rel=1e-5)
    assert min(weights.values()) >= MIN_WEIGHT
    assert weights["label"] != pytest.approx(1.0)  # it moved
    assert all(v > 0 for v in cb.initial_losses.values())
    for e in range(2):
        assert history.history["label_weight"][e] + history.history["target_weight"][e] == pytest.approx(2.0, rel=1e-5)
    with pytest.raises(ValueError, match="dense0/kernel"):
        weighting.get("gradnorm", variable="dense9/kernel").set_model(model)


@pytest.mark.slow
def test_gradnorm_toy_oracle():
    """Chen et al. 2018 §5.1: f_i(x) = σ_i·tanh((B + ε_i)x), σ = [1, 100]."""
    from mtlzoo.diagnostics import GradientConflictMonitor

    rng = np.random.default_rng(0)
    d, o, n = 250, 100, 1000
    b = rng.normal(0.0, math.sqrt(10.0), (o, d))
    x = rng.normal(size=(n, d)).astype("float32")
    y = {f"t{i}": (s * np.tanh(x @ (b + rng.normal(0.0, math.sqrt(3.5), (o, d))).T)).astype("float32")
         for i, s in enumerate([1.0, 100.0])}
    recipe = {"name": "toy", "input_shape": [d], "backbone": "mlp", "backbone_args": {"units": [100, 100, 100, 100]},
              "tasks": {"t0": {"kind": "regression", "units": o}, "t1": {"kind": "regression", "units": o}}}
    probe = (x[:200], {k: v[:200] for k, v in y.items()})
    results = {}
    for name in ("gradnorm", "equal"):
        model = mtlzoo.build(recipe)
        monitor = GradientConflictMonitor(probe, num_batches=2, batch_size=100)
        history = model.fit(x, y, epochs=4, batch_size=100, verbose=0, callbacks=[weighting.get(name), monitor])
        results[name] = history.history
    gn, ew = results["gradnorm"], results["equal"]
    print("gradnorm toy: final weights", gn["t0_weight"][-1], gn["t1_weight"][-1],
          "| EW grad norms", ew["t0_grad_norm"][-1], ew["t1_grad_norm"][-1],
          "| t0 loss GradNorm vs EW", gn["t0_loss"][-1], ew["t0_loss"][-1])
    # GradNorm drives the σ = 100 task's weight far below the σ = 1 task's (sum stays 2).
    assert gn["t1_weight"][-1] < 0.05 * gn["t0_weight"][-1]
    assert gn["t0_weight"][-1] + gn["t1_weight"][-1] == pytest.approx(2.0, rel=1e-5)
    # With equal weights the σ = 100 task dominates the shared gradient.
    assert ew["t1_grad_norm"][-1] > 10 * ew["t0_grad_norm"][-1]
    assert ew["t1_weight"][-1] == ew["t0_weight"][-1] == 1.0


# --------------------------------------------------------------- hooks
def test_gradient_methods_wrap_an_aggregator_and_put_it_back():
    from mtlzoo.gradient_hook import AggregatorHook
    import mtlzoo.aggregators

    model = mtlzoo.build("tabular_demo")
    x, y = tabular_data()
    hook = AggregatorHook(mtlzoo.aggregators.get("mean"))
    model.set_step_hook(hook)
    cb = weighting.get("gradnorm")
    fit_quietly(model, x, y, [cb], epochs=1)
    assert model.step_hooks == [hook]
    assert sum(model.get_loss_weights().values()) == pytest.approx(2.0, rel=1e-5)
    with pytest.raises(ValueError, match="aggregator"):
        weighting.get("uncertainty").set_model(model)
    model.remove_step_hook(hook)
    first = weighting.get("famo")
    first.set_model(model)
    with pytest.raises(ValueError, match="one loss-weighting callback"):
        weighting.get("rlw").set_model(model)
    first.on_train_end()
    assert model.step_hooks == []


def test_gradnorm_refuses_a_representation_level_aggregator_rlw_wraps_it():
    """GradNorm's norms come from trunk parameters, which representation-level steps cut from the task losses."""
    import mtlzoo.aggregators
    from mtlzoo.gradient_hook import AggregatorHook

    model = mtlzoo.build("tabular_demo")
    hook = AggregatorHook(mtlzoo.aggregators.get("mgda"), representation=True)
    model.set_step_hook(hook)
    with pytest.raises(ValueError, match="representation-level aggregator.*drop `representation: true`"):
        weighting.get("gradnorm").set_model(model)
    assert model.step_hooks == [hook]  # left as it was
    x, y = tabular_data()
    cb = weighting.get("rlw", seed=0)
    fit_quietly(model, x, y, [cb], epochs=1)
    assert model.step_hooks == [hook]
