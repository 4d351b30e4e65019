"""mtlzoo.distribute: strategy names, TF_CONFIG checks, and real distributed training on this machine.

The distributed checks run in subprocesses (tests/dist_helper.py) so the pytest
process keeps its single CPU device:

- MirroredStrategy over 2 logical CPUs against the default strategy in the same
  process, same data and seed: weights after N steps must agree within 1e-5
  (measured: <= 1e-7) for plain training, a loss-weighting callback (DWA),
  PCGrad and MGDA on the all-reduced per-task gradients, MGDA-UB on the gathered
  feature gradients, a replica whose shard
  has no label for a task, and a non-finite step on one replica only.
- MultiWorkerMirroredStrategy with 2 worker processes on 127.0.0.1 (TF_CONFIG,
  free ports), time-bounded, for DWA and PCGrad, against a single-device run.

Some of these need the model.py / gradient_hook.py changes given with this
module (global valid-label counts, joint non-finite skip, one aggregation per
step in cross-replica context, Keras 3.15 multi-worker workarounds); until they
are applied those tests are expected failures (strict xfail).
"""

import inspect
import json
import os
import subprocess
import sys
import time

import pytest

from mtlzoo import distribute

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(ROOT, "tests", "dist_helper.py")
ATOL = 1e-5


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _source(module_name):
    import importlib

    return inspect.getsource(importlib.import_module(module_name))


def _needs(condition, what, run=True):
    """Strict xfail until the change `what` (see the report / module docstring) is applied."""
    return pytest.mark.xfail(not condition, reason=f"needs the {what} change", strict=True, run=run)


MODEL_SOURCE = _source("mtlzoo.model.multi_task_model") + _source("mtlzoo.model.step")
HAS_GLOBAL_COUNTS = "distribute.replica_task_loss" in MODEL_SOURCE
HAS_JOINT_SKIP = "distribute.apply_if_finite" in MODEL_SOURCE
HOOK_SOURCE = _source("mtlzoo.gradient_hook")
HAS_ONE_AGGREGATION = "merge_call" in HOOK_SOURCE
HAS_GLOBAL_REPRESENTATION = "all_gather" in HOOK_SOURCE
HAS_MULTI_WORKER_FIXES = "distribute.local_batch" in MODEL_SOURCE and "distribute.step_logs" in MODEL_SOURCE


# ---------------------------------------------------------------- resolve_strategy
def test_none_and_default_names_give_the_default_strategy():
    assert distribute.resolve_strategy(None) is None
    assert distribute.resolve_strategy("default") is None


def test_unknown_strategy_name_suggests_the_near_match():
    with pytest.raises(ValueError, match="Did you mean 'mirrored'"):
        distribute.resolve_strategy("mirored")
    with pytest.raises(ValueError, match="Known: mirrored, multi_worker, one_device, tpu"):
        distribute.resolve_strategy("horovod")
    with pytest.raises(TypeError, match="strategy must be None"):
        distribute.resolve_strategy(3)


def test_strategy_instance_passes_through():
    import tensorflow as tf

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert distribute.resolve_strategy(strategy) is strategy


def test_one_device_and_mirrored_on_this_process():
    import tensorflow as tf

    one = distribute.resolve_strategy("one_device")
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    mirrored = distribute.resolve_strategy("mirrored")  # one CPU in this process: one replica
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync == len(tf.config.list_logical_devices("CPU"))
    assert isinstance(mirrored.extended._cross_device_ops, tf.distribute.ReductionToOneDevice)


def test_use_logical_cpus_after_initialisation_names_the_problem():
    import tensorflow as tf

    tf.constant(1.0)  # devices are initialised now
    have = len(tf.config.list_logical_devices("CPU"))
    assert len(distribute.use_logical_cpus(have)) == have  # same count: no-op
    with pytest.raises(RuntimeError, match="initialised its devices already"):
        distribute.use_logical_cpus(have + 3)


# ---------------------------------------------------------------- TF_CONFIG
GOOD = {"cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}, "task": {"type": "worker", "index": 1}}


@pytest.mark.parametrize(
    "value, message",
    [
        ("{cluster: ", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), "no `cluster`"),
        (json.dumps({"cluster": {"worker": ["127.0.0.1:2222"]}}), "no `task`"),
        (json.dumps({**GOOD, "task": {"type": "worker", "index": 2}}),
         r"index 2 is out of range for job 'worker'.*0\.\.1"),
        (json.dumps({**GOOD, "task": {"type": "worker", "index": -1}}), "out of range"),
        (json.dumps({**GOOD, "task": {"type": "wroker", "index": 0}}), "Did you mean 'worker'"),
        (json.dumps({**GOOD, "task": {"type": "worker", "index": "0"}}), "must be an integer"),
        (json.dumps({"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}), "not 'host:port'"),
        (json.dumps({"cluster": {"worker": ["a:1", "a:1"]}, "task": {"type": "worker", "index": 0}}), "used by both"),
        (json.dumps({"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}),
         "parameter servers"),
    ],
)
def test_malformed_tf_config_is_a_clear_value_error(value, message):
    with pytest.raises(ValueError, match=message):
        distribute.validate_tf_config(value)


def test_tf_config_from_the_environment(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.validate_tf_config() is None
    monkeypatch.setenv("TF_CONFIG", json.dumps(GOOD))
    assert distribute.validate_tf_config()["task"]["index"] == 1
    monkeypatch.setenv("TF_CONFIG", json.dumps({**GOOD, "task": {"type": "worker", "index": 5}}))
    with pytest.raises(ValueError, match="out of range"):
        distribute.resolve_strategy("multi_worker")  # checked before TensorFlow reads it
    evaluator = {"cluster": GOOD["cluster"], "task": {"type": "evaluator", "index": 0}}
    assert distribute.validate_tf_config(evaluator)["task"]["type"] == "evaluator"


def test_local_cluster_uses_distinct_free_local_ports():
    configs = distribute.local_cluster(3)
    addresses = configs[0]["cluster"]["worker"]
    assert len(set(addresses)) == 3 and all(a.startswith("127.0.0.1:") for a in addresses)
    assert [c["task"]["index"] for c in configs] == [0, 1, 2]
    for c in configs:
        distribute.validate_tf_config(c)


def test_keras_tuner_environment_check():
    assert distribute.check_tuner_env({}) == "single"
    env = {"KERASTUNER_TUNER_ID": "chief", "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": "8000"}
    assert distribute.check_tuner_env(env) == "chief"
    assert distribute.check_tuner_env({**env, "KERASTUNER_TUNER_ID": "tuner1"}) == "worker"
    with pytest.raises(ValueError, match="not both set"):
        distribute.check_tuner_env({"KERASTUNER_TUNER_ID": "tuner0"})
    with pytest.raises(ValueError, match="port number"):
        distribute.check_tuner_env({**env, "KERASTUNER_ORACLE_PORT": "80a"})


# ---------------------------------------------------------------- MirroredStrategy, 2 logical CPUs
@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """Runs every scenario of dist_helper.py once: single device vs MirroredStrategy(2 logical CPUs)."""
    out = tmp_path_factory.mktemp("mirrored") / "result.json"
    start = time.time()
    proc = subprocess.run(
        [sys.executable, HELPER, "mirrored", str(out)], env=_env(), capture_output=True, text=True, timeout=480
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text())
    result["wall_seconds"] = round(time.time() - start, 1)
    print(json.dumps(result, indent=1))
    return result


def _check_same(result, scenario):
    r = result[scenario]
    assert "error" not in r, r.get("error")
    assert result["replicas"] == 2
    assert r["max_abs_weight_diff"] <= ATOL, r
    assert r["loss_weight_diff"] <= ATOL, r
    assert r["iterations"][0] == r["iterations"][1], r
    return r


@pytest.mark.slow
def test_mirrored_plain_training_matches_one_device(mirrored):
    r = _check_same(mirrored, "plain")
    assert r["log_diffs"]["loss"] <= 1e-4  # logged loss is the global one, not half of it


@pytest.mark.slow
def test_mirrored_weighting_callback_matches_one_device(mirrored):
    r = _check_same(mirrored, "weighting")
    single, multi = r["loss_weights"]
    assert single != [1.0, 1.0]  # DWA changed the weights in epoch 3
    assert r["log_diffs"]["label_weight"] <= ATOL


@pytest.mark.slow
def test_mirrored_mgda_on_all_reduced_gradients_matches_one_device(mirrored):
    _check_same(mirrored, "mgda")


@pytest.mark.slow
@_needs(HAS_ONE_AGGREGATION, "gradient_hook.py (aggregate once per step in cross-replica context)")
def test_mirrored_pcgrad_matches_one_device(mirrored):
    _check_same(mirrored, "pcgrad")


@pytest.mark.slow
@_needs(HAS_GLOBAL_REPRESENTATION, "gradient_hook.py (representation level: gather the feature-gradient rows)")
def test_mirrored_representation_level_mgda_matches_one_device(mirrored):
    _check_same(mirrored, "mgda_ub")


@pytest.mark.slow
@_needs(HAS_GLOBAL_COUNTS, "model.py (global valid-label counts: distribute.replica_task_loss)")
def test_mirrored_replica_without_labels_keeps_the_global_masked_mean(mirrored):
    r = _check_same(mirrored, "masked")
    assert r["log_diffs"]["label_loss"] <= 1e-4


@pytest.mark.slow
@_needs(HAS_JOINT_SKIP, "model.py (distribute.apply_if_finite: joint skip of a non-finite step)")
def test_mirrored_nonfinite_step_on_one_replica_is_skipped_everywhere(mirrored):
    r = _check_same(mirrored, "nonfinite")
    assert r["iterations"] == [3, 3]  # 4 steps, one skipped, optimizer state untouched
    assert r["nonfinite_steps"] == [1.0, 1.0]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["gradnorm", "famo", "uncertainty", "uncertainty_callback", "rlw"])
def test_mirrored_step_level_weighting_matches_one_device(mirrored, scenario):
    r = _check_same(mirrored, scenario)
    single, _ = r["loss_weights"]
    assert max(abs(w - 1.0) for w in single) > 1e-4, single  # the method did move the weights


@pytest.mark.slow
def test_mirrored_centernet_loss_uses_the_global_object_count(mirrored):
    r = mirrored["centernet"]
    assert "error" not in r, r.get("error")
    assert abs(r["mirrored_loss"] - r["single_loss"]) <= 1e-5 * abs(r["single_loss"])
    assert r["max_abs_grad_diff"] <= 1e-6
    # Normalising each replica by its own object count would be wrong here (replica 1 has none).
    assert abs(r["per_replica_normalised_loss"] - r["single_loss"]) > 1e-2


@pytest.mark.slow
def test_mirrored_mtlzoo_train_matches_one_device(mirrored):
    r = _check_same(mirrored, "train_api")
    assert r["log_diffs"]["loss"] <= 1e-4
    single, _ = r["loss_weights"]
    assert single != [1.0, 1.0]  # DWA from the recipe changed them in epoch 3


@pytest.mark.slow
def test_cli_train_with_mirrored_strategy_on_two_logical_cpus(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "mtlzoo.cli", "train", "driving_perception_lite", "--strategy", "mirrored",
         "--cpu-replicas", "2", "--epochs", "2", "--out", str(out), "--verbose", "0",
         # key=value overrides may follow the options
         "backbone=tiny", "backbone_args={width: 4}", "neck_channels=16", "input_shape=[32, 64, 3]",
         "tasks=[segmentation, scene]", "data.num_examples=16", "data.num_validation_examples=8",
         "training.batch_size=8"],
        env=_env(), capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "strategy mirrored: 2 replica(s) in sync" in proc.stdout
    rows = (out / "history.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and "segmentation_loss" in rows[0] and "val_scene_loss" in rows[0]


def test_cli_train_rejects_an_unknown_strategy_before_training(tmp_path, capsys):
    import argparse

    from mtlzoo import cli_training

    parser = argparse.ArgumentParser()
    cli_training.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", "tabular_demo", "--strategy", "mirored", "--out", str(tmp_path / "x")])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "mirrored" in err and "mirored" in err
    assert not (tmp_path / "x").exists()  # nothing was started
    args = parser.parse_args(["train", "tabular_demo", "--cpu-replicas", "2", "--out", str(tmp_path / "x")])
    assert args.func(args) == 2
    assert "--strategy mirrored" in capsys.readouterr().err


# ---------------------------------------------------------------- MultiWorkerMirroredStrategy, 2 processes
def _run_workers(out_dir, scenarios, timeout=150):
    """Starts the 2 workers of a local cluster; retries once when a port was taken meanwhile."""
    for attempt in range(2):
        procs = []
        for config in distribute.local_cluster(2):
            procs.append(
                subprocess.Popen(
                    [sys.executable, HELPER, "worker", str(out_dir), *scenarios],
                    env=_env(TF_CONFIG=json.dumps(config)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )
            )
        deadline = time.time() + timeout
        outputs = []
        try:
            for p in procs:
                out, _ = p.communicate(timeout=max(1.0, deadline - time.time()))
                outputs.append(out)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        codes = [p.returncode for p in procs]
        if codes == [0, 0]:
            return outputs
        if attempt == 0 and any("address already in use" in o.lower() for o in outputs):
            continue
        raise AssertionError(f"workers exited with {codes}:\n" + "\n----\n".join(o[-3000:] for o in outputs))


@pytest.mark.slow
@_needs(HAS_MULTI_WORKER_FIXES, "model.py (Keras 3.15 multi-worker: _maybe_symbolic_build, step_logs)", run=False)
def test_multi_worker_two_processes_match_one_device(tmp_path):
    import numpy as np

    if HAS_MULTI_WORKER_FIXES and not HAS_ONE_AGGREGATION:
        pytest.xfail("needs the gradient_hook.py change for PCGrad")
    scenarios = ["weighting", "pcgrad"]
    _run_workers(tmp_path, scenarios)
    for scenario in scenarios:
        single = np.load(tmp_path / f"single_{scenario}.npz")
        workers = [np.load(tmp_path / f"worker{i}_{scenario}.npz") for i in (0, 1)]
        keys = [k for k in single.files if k.startswith("w")]
        for w in workers:
            diff = max(float(np.max(np.abs(single[k] - w[k]))) for k in keys)
            assert diff <= ATOL, (scenario, diff)
            np.testing.assert_allclose(w["loss_weights"], single["loss_weights"], atol=ATOL)
            assert int(w["iterations"]) == int(single["iterations"])
        # Both workers hold the same (mirrored) weights.
        assert max(float(np.max(np.abs(workers[0][k] - workers[1][k]))) for k in keys) == 0.0
    weights = np.load(tmp_path / "single_weighting.npz")["loss_weights"]
    assert not np.allclose(weights, 1.0)  # the DWA callback did change them
