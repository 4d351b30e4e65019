"""Tests of mtlzoo.diagnostics: gradient-conflict monitor, lookahead task affinity
and the `diagnose` report. Tiny models only."""

import argparse
import csv
import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
from mtlzoo.diagnostics import (GradientConflictMonitor, TaskAffinity, diagnose, gradient_statistics, run_diagnose,
                                synthetic_data)

TWIN = {"name": "twin", "input_shape": [6], "backbone": "mlp", "backbone_args": {"units": [8]},
        "tasks": {"a": {"kind": "regression"}, "b": {"kind": "regression"}, "c": {"kind": "regression"}}}


def twin_model():
    """Three regression tasks; a and b are exact twins (same head weights and labels)."""
    model = mtlzoo.build(TWIN)
    for v_a, v_b in zip(model.get_layer("a").trainable_variables, model.get_layer("b").trainable_variables):
        v_b.assign(v_a)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    target = (x[:, :1] - x[:, 1:2]).astype("float32")
    y = {"a": target, "b": target.copy(), "c": (x[:, 2:3] ** 2).astype("float32")}
    return model, x, y


def snapshot(model):
    return [v.numpy().copy() for v in model.variables]


def test_gradient_statistics_known_answer():
    grads = [[tf.constant(g)] for g in ([1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, 0.0])]
    norms, cos = gradient_statistics(grads)
    np.testing.assert_allclose(norms, [1.0, 2.0, 3.0, 0.0])
    np.testing.assert_allclose(cos[:3, :3], [[1, 0, -1], [0, 1, 0], [-1, 0, 1]], atol=1e-7)
    assert np.all(np.isnan(cos[3]))  # a zero gradient has no direction


def test_conflict_monitor_logs_and_leaves_model_unchanged(tmp_path):
    model, x, y = twin_model()
    monitor = GradientConflictMonitor((x, y), num_batches=3, batch_size=8)
    path = tmp_path / "log.csv"
    logger = keras.callbacks.CSVLogger(str(path))
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[monitor, logger])
    for key in ("a_grad_norm", "b_grad_norm", "c_grad_norm", "cos_a_b", "cos_a_c", "cos_b_c", "conflict_a_b",
                "conflict_a_c", "conflict_b_c"):
        assert len(history.history[key]) == 2, key
    assert history.history["cos_a_b"] == pytest.approx([1.0, 1.0], abs=1e-5)  # twins never conflict
    assert history.history["conflict_a_b"] == [0.0, 0.0]
    assert history.history["a_grad_norm"] == pytest.approx(history.history["b_grad_norm"], rel=1e-5)
    assert all(0.0 <= v <= 1.0 for v in history.history["conflict_a_c"])
    assert "conflict_a_c" in next(csv.DictReader(path.open()))
    summary = monitor.summary()
    assert summary["samples"] == 6 and summary["tasks"] == ["a", "b", "c"]
    cos_ac = np.array([s["cos"][0, 2] for s in monitor.samples])
    assert summary["conflict_fraction"][0, 2] == pytest.approx(np.mean(cos_ac < 0))
    assert summary["cosine"][0, 2] == pytest.approx(np.mean(cos_ac))
    assert summary["conflict_strength"][0, 2] == pytest.approx(np.mean(np.maximum(0, -cos_ac)))
    before = snapshot(model)
    monitor.measure()
    for a, b in zip(before, snapshot(model)):
        np.testing.assert_array_equal(a, b)


def test_conflict_monitor_coherence_is_low_for_a_task_the_inputs_do_not_determine():
    """Gradient coherence: a learnable task's gradients agree from batch to batch, pure-noise labels' do not."""
    model = mtlzoo.build(TWIN)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 6)).astype("float32")
    y = {"a": (10 * (x[:, :1] - x[:, 1:2])).astype("float32"), "b": (10 * x[:, 2:3]).astype("float32"),
         "c": rng.normal(scale=10.0, size=(256, 1)).astype("float32")}
    monitor = GradientConflictMonitor((x, y), num_batches=4, batch_size=32)
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0, callbacks=[monitor])
    assert len(history.history["c_grad_coherence"]) == 2
    summary = monitor.summary()
    assert len(monitor.coherence) == 2
    np.testing.assert_allclose(summary["coherence"], np.mean(monitor.coherence, axis=0))
    coherence = dict(zip(summary["tasks"], summary["coherence"]))
    assert coherence["a"] > 0.5 and coherence["b"] > 0.5, coherence
    assert abs(coherence["c"]) < 0.3 and coherence["c"] < min(coherence["a"], coherence["b"]) - 0.4, coherence
    single = GradientConflictMonitor((x, y), num_batches=1, batch_size=32)
    single.set_model(model)
    assert np.all(np.isnan(single.measure()["coherence"]))  # one batch has nothing to agree with
    assert single.coherence == []


@pytest.mark.slow
def test_probes_restore_batchnorm_statistics():
    model = mtlzoo.build("driving_perception_lite", backbone="tiny", backbone_args={"width": 4}, neck_channels=16,
                         input_shape=(32, 64, 3), tasks=["segmentation", "scene"])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, 32, 64, 3)).astype("float32")
    y = {"segmentation": rng.integers(0, 10, (4, 32, 64)).astype("int32"),
         "scene": rng.integers(0, 2, (4, 5)).astype("float32")}
    before = snapshot(model)
    monitor = GradientConflictMonitor((x, y), num_batches=1, batch_size=4)
    affinity = TaskAffinity((x, y), batch_size=4, learning_rate=0.01)
    monitor.set_model(model)
    affinity.set_model(model)
    summary = monitor.measure()
    z = affinity.measure()
    for a, b in zip(before, snapshot(model)):
        np.testing.assert_array_equal(a, b)
    assert np.all(np.isfinite(summary["grad_norm"])) and z.shape == (2, 2) and np.all(np.isfinite(z))


def test_task_affinity_formula_and_twins():
    model, x, y = twin_model()
    affinity = TaskAffinity((x, y), interval=1, num_batches=1, batch_size=32, learning_rate=0.05)
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[affinity])
    assert len(history.history["affinity_a_b"]) == 2 and "affinity_a_a" not in history.history
    z = affinity.matrix
    assert z.shape == (3, 3) and len(affinity.history) == 2
    # Twins: a step on a is a step on b.
    assert z[0, 1] == pytest.approx(z[0, 0], rel=1e-4) and z[1, 0] == pytest.approx(z[0, 0], rel=1e-4)
    assert z[0, 0] > 0  # a small gradient step lowers the task's own loss
    # The formula, recomputed by hand for the step on c: Z_{c→j} = 1 − L_j(θ_s − η∇L_c)/L_j(θ_s).
    shared, _ = model.variable_groups()
    saved = [v.numpy() for v in shared]
    with tf.GradientTape() as tape:
        base = model.compute_task_losses(y, model(x, training=True))
    grads = tape.gradient(base["c"], shared)
    for v, g in zip(shared, grads):
        v.assign(v - 0.05 * g)
    after = model.compute_task_losses(y, model(x, training=True))
    for v, s in zip(shared, saved):
        v.assign(s)
    expected = [1.0 - float(after[t]) / float(base[t]) for t in ("a", "b", "c")]
    # The parameters are restored exactly: measuring twice gives the same matrix.
    np.testing.assert_array_equal(affinity.affinity_on_batch(x, y), affinity.affinity_on_batch(x, y))
    np.testing.assert_allclose(affinity.affinity_on_batch(x, y)[2], expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(affinity.mean_matrix(), np.mean([h["matrix"] for h in affinity.history], axis=0))


def test_bad_arguments():
    x, y = np.zeros((4, 6), "float32"), {"a": np.zeros((4, 1), "float32")}
    with pytest.raises(ValueError, match="num_batches"):
        GradientConflictMonitor((x, y), num_batches=0)
    with pytest.raises(ValueError, match="every"):
        GradientConflictMonitor((x, y), every=-1)
    with pytest.raises(ValueError, match="learning_rate"):
        TaskAffinity((x, y), learning_rate=-0.1)
    with pytest.raises(ValueError, match="interval"):
        TaskAffinity((x, y), interval=0)
    with pytest.raises(TypeError, match="tf.data.Dataset"):
        GradientConflictMonitor([x])


def test_synthetic_data_matches_heads():
    model = mtlzoo.build("tabular_demo")
    x, y = synthetic_data(model, 10, seed=1)
    assert x.shape == (10, 16) and y["label"].shape == (10,) and y["target"].shape == (10, 1)
    assert set(np.unique(y["label"])) <= {0, 1, 2}
    with pytest.raises(ValueError, match="data="):
        synthetic_data(mtlzoo.build("driving_perception_lite", backbone="tiny", backbone_args={"width": 4},
                                    neck_channels=16, input_shape=(32, 64, 3), compile=False), 2)


def test_diagnose_writes_report(tmp_path, capsys):
    out = tmp_path / "report"
    args = argparse.Namespace(recipe="tabular_demo", overrides=["weighting=gradnorm"], out=str(out), epochs=2, steps=6)
    assert run_diagnose(args) == 0
    printed = capsys.readouterr().out
    assert "conflicts with" in printed and "% of sampled steps" in printed
    for name in ("conflict.png", "affinity.png", "loss_weights.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, name
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"] == ["label", "target"] and report["weighting"] == "gradnorm"
    assert np.asarray(report["gradient"]["cosine"]).shape == (2, 2)
    assert np.asarray(report["gradient"]["conflict_fraction"], dtype=float).shape == (2, 2)
    assert report["gradient"]["sampled_batches"] == 8
    coherence = report["gradient"]["coherence"]  # 4 batches per epoch: each task's batch-to-batch agreement
    assert set(coherence) == {"label", "target"} and all(-1.0 <= v <= 1.0 for v in coherence.values())
    assert len(report["gradient"]["per_epoch"][0]["coherence"]) == 2
    assert np.asarray(report["affinity"]["matrix"], dtype=float).shape == (2, 2)
    assert len(report["loss_weights"]["label"]) == 13  # initial + 2 x 6 steps
    assert sum(w[-1] for t, w in report["loss_weights"].items() if t != "steps") == pytest.approx(2.0, rel=1e-5)
    assert len(report["history"]["label_weight"]) == 2
    reading = (out / "report.txt").read_text()
    assert "label conflicts with target in" in reading and "affinity" in reading and "loss weights moved" in reading
    f = report["gradient"]["conflict_fraction"][0][1]
    assert f"{f:.0%}" in reading
    low = min(coherence, key=coherence.get)
    assert f"{low}'s gradient agrees least with itself from batch to batch (coherence {coherence[low]:+.2f}" in reading
    assert all(math.isfinite(v) for v in report["history"]["loss"])
