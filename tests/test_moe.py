"""Mixture-of-experts sharing (MMoE, CGC, PLE, DSelect-k), their gate layers, and the correlated-tasks data."""

import numpy as np
import pytest

import mtlzoo
import mtlzoo.data
from mtlzoo.data.correlated_tasks import generate
from mtlzoo.data.synthetic_driving import render_scene
from mtlzoo.layers import DSelectKGate, ExpertGate
from mtlzoo.layers.dselect_k_gate import smooth_step
from mtlzoo.testing import TINY_IMAGE, predict_eager

# A small tabular model: 20 features, a 16-unit trunk, 4 experts of 8 units.
TAB = {"input_shape": (20,), "backbone_args": {"units": [16]}}
TAB_EXPERTS = {"num_experts": 4, "expert_units": [8]}


def tabular(sharing="mmoe", **sharing_args):
    args = dict(TAB_EXPERTS) if sharing in ("mmoe", "dselect_k") else {"expert_units": [8]}
    args.update(sharing_args)
    return mtlzoo.build("tabular_mmoe", sharing=sharing, sharing_args=args, compile=False, **TAB)


def x_tab(n=6, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 20)).astype("float32")


def test_expert_gate_mixes_with_softmax_weights_that_sum_to_one():
    rng = np.random.default_rng(0)
    experts = [rng.standard_normal((5, 4, 6, 3)).astype("float32") for _ in range(3)]  # feature maps
    g = rng.standard_normal((5, 7)).astype("float32")
    gate = ExpertGate(return_weights=True)
    mixed, w = (np.asarray(v) for v in gate(experts + [g]))
    assert w.shape == (5, 3) and (w > 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-6)
    want = sum(w[:, i, None, None, None] * experts[i] for i in range(3))
    np.testing.assert_allclose(mixed, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gate.gate_weights(g)), w, rtol=1e-6)
    with pytest.raises(ValueError, match="gate input must be a vector"):
        ExpertGate()(experts + [experts[0]])


@pytest.mark.parametrize("num_experts", [8, 5])
def test_dselect_k_selects_at_most_k_experts_once_binary(num_experts):
    rng = np.random.default_rng(1)
    k, gamma = 2, 1.0
    experts = [rng.standard_normal((16, 4)).astype("float32") for _ in range(num_experts)]
    g = rng.standard_normal((16, 6)).astype("float32")
    gate = DSelectKGate(num_nonzeros=k, gamma=gamma, return_weights=True)
    _, w = gate(experts + [g])
    w = np.asarray(w)
    # At initialisation the smooth-steps are near 1/2: every expert gets weight, summing to one.
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
    assert (w > 0).sum(axis=1).min() == num_experts
    # Binary smooth-steps (|z| >= gamma/2): each selector is one-hot, so at most k experts are used.
    m = gate.num_binary
    gate.z_kernel.assign(np.zeros((6, k * m), "float32"))
    gate.z_bias.assign(rng.choice([-gamma, gamma], size=k * m).astype("float32"))
    mixed, w = (np.asarray(v) for v in gate(experts + [g]))
    assert ((w > 1e-7).sum(axis=1) <= k).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(mixed, sum(w[:, i, None] * experts[i] for i in range(num_experts)), atol=1e-5)
    s = np.asarray(smooth_step(np.array([-1.0, -0.5, 0.0, 0.5, 1.0], "float32"), gamma))
    np.testing.assert_allclose(s, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_dselect_k_entropy_regulariser_is_a_training_loss():
    rng = np.random.default_rng(2)
    experts = [rng.standard_normal((4, 3)).astype("float32") for _ in range(4)]
    g = rng.standard_normal((4, 5)).astype("float32")
    gate = DSelectKGate(num_nonzeros=2, entropy_reg=0.1)
    gate(experts + [g], training=False)
    assert not gate.losses
    gate(experts + [g], training=True)
    assert len(gate.losses) == 1 and float(gate.losses[0]) > 0
    selectors = gate.selector_outputs(g)
    entropy = -np.sum(np.asarray(selectors) * np.log(np.asarray(selectors) + 1e-6), axis=(1, 2)).mean()
    np.testing.assert_allclose(float(gate.losses[0]), 0.1 * entropy, rtol=1e-4)


def test_cgc_task_experts_only_reach_their_task():
    model = tabular("cgc")
    assert "y1__expert0" in model.task_layers["y1"] and "y1__gate" in model.task_layers["y1"]
    assert "shared_expert0" not in model.task_layers["y1"] + model.task_layers["y2"]
    x = x_tab()
    before = predict_eager(model, x)
    expert = model.get_layer("y1__expert0")
    expert.set_weights([np.zeros_like(w) for w in expert.get_weights()])
    after = predict_eager(model, x)
    assert np.abs(after["y1"] - before["y1"]).max() > 1e-4
    np.testing.assert_array_equal(after["y2"], before["y2"])


def test_ple_has_a_gate_per_level_and_shares_lower_task_experts():
    model = tabular("ple", num_levels=2)
    gates = model.gates(x_tab(5))
    for t in ("y1", "y2"):
        assert isinstance(gates[t], list) and len(gates[t]) == 2
        # Each task gate mixes its one expert and the one shared expert of its level.
        assert all(w.shape == (5, 2) for w in gates[t])
        np.testing.assert_allclose(np.stack(gates[t]).sum(-1), 1.0, rtol=1e-5)
    model.get_layer("shared_gate0")
    # Level-0 task experts feed the shared gate, so every task reaches them; the last level is the task's own.
    assert "y1__expert0_0" not in model.task_layers["y1"]
    assert {"y1__expert1_0", "y1__gate1"} <= set(model.task_layers["y1"])


@pytest.mark.parametrize("sharing", ["mmoe", "dselect_k"])
def test_gates_read_out_per_task_and_survive_keras_round_trip(sharing, tmp_path):
    model = tabular(sharing)
    x = x_tab(6)
    gates = model.gates(x)
    assert set(gates) == {"y1", "y2"}
    for w in gates.values():
        assert w.shape == (6, 4)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-5)
    assert "y1__gate" in model.task_layers["y1"] and "expert0" not in model.task_layers["y1"]
    model.save(tmp_path / "m.keras")
    again = mtlzoo.load(tmp_path / "m.keras", compile=False)
    for t, w in again.gates(x).items():
        np.testing.assert_allclose(w, gates[t], rtol=1e-6)
    np.testing.assert_allclose(predict_eager(again, x)["y1"], predict_eager(model, x)["y1"], rtol=1e-5)


def test_gates_error_names_the_sharing_mode():
    model = mtlzoo.build("tabular_demo", compile=False)
    with pytest.raises(ValueError, match="sharing mode is 'hard'.*sharing='mmoe'"):
        model.gates(np.zeros((2, 16), "float32"))


@pytest.mark.parametrize("method", [{"aggregator": "pcgrad"}, {"weighting": "uncertainty"}])
def test_tabular_recipe_fits_with_aggregator_and_weighting(method):
    model = mtlzoo.build("tabular_mmoe", sharing_args=TAB_EXPERTS, **TAB, **method)
    data = mtlzoo.data.load("correlated_tasks", batch_size=32, num_examples=256, rho=0.9, dim=20, seed=0)
    history = model.fit(data, epochs=3, verbose=0).history
    for t in ("y1", "y2"):
        assert history[f"{t}_loss"][-1] < history[f"{t}_loss"][0]
    assert max(history["nonfinite_steps"]) == 0


def test_image_moe_exports_to_tflite_builtin_ops(tmp_path):
    from mtlzoo.edge import Runner
    from mtlzoo.export import export

    model = mtlzoo.build("driving_perception_lite", sharing="mmoe", tasks=["depth", "scene"],
                         sharing_args={"num_experts": 3}, compile=False, **TINY_IMAGE)
    # A freshly initialised network gives near-constant outputs: spread the BatchNorm statistics and
    # sharpen the gates so that the comparison below sees features and gate weights that vary.
    rng = np.random.default_rng(0)
    for v in model.non_trainable_variables:
        if v.path.endswith("moving_mean"):
            v.assign(rng.normal(0.0, 0.5, v.shape).astype("float32"))
        elif v.path.endswith("moving_variance"):
            v.assign(rng.uniform(0.05, 0.5, v.shape).astype("float32"))
    for t in model.task_names:
        kernel = model.get_layer(f"{t}__gate").kernel
        kernel.assign(rng.normal(0.0, 0.02, kernel.shape).astype("float32"))
    x = np.stack([render_scene(1000, i, (32, 64))["image"] for i in range(4)]).astype("float32")
    gates = model.gates(x)
    assert gates["depth"].shape == (4, 3) and gates["depth"].std(axis=0).max() > 1e-3, gates["depth"]
    result = export(model, tmp_path / "moe", formats=["tflite"], verify_data=x, postprocessed=False)
    assert result.passed
    runner = Runner(result.paths["tflite"])
    assert not runner.uses_flex()
    ref = model(x, training=False)
    outs = runner(x)
    for t in model.task_names:
        ref_t = np.asarray(ref[t])
        assert np.abs(outs[t] - ref_t).max() <= 1e-4 * max(1.0, float(np.abs(ref_t).max())), t


@pytest.mark.parametrize("rho", [1.0, 0.5, 0.0])
def test_correlated_tasks_linear_parts_follow_rho(rho):
    _, labels, linear = generate(4000, rho=rho, dim=50, seed=3, with_linear=True)
    corr = np.corrcoef(linear["y1"], linear["y2"])[0, 1]
    assert abs(corr - rho) < 0.05, corr
    assert labels["y1"].shape == (4000, 1) and labels["y1"].dtype == np.float32


def test_correlated_tasks_are_deterministic_per_seed():
    a = generate(100, rho=0.5, seed=7)
    b = generate(100, rho=0.5, seed=7)
    c = generate(100, rho=0.5, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1]["y2"], b[1]["y2"])
    assert not np.allclose(a[0], c[0])
    val = generate(100, rho=0.5, seed=7, split="validation")
    assert not np.allclose(a[0], val[0])
    x, y = next(iter(mtlzoo.data.load("correlated_tasks", split="validation", batch_size=100, num_examples=100,
                                      rho=0.5, seed=7)))
    np.testing.assert_allclose(x.numpy(), val[0])
    np.testing.assert_allclose(y["y1"].numpy(), val[1]["y1"])
    with pytest.raises(ValueError, match="rho"):
        generate(10, rho=1.5)
