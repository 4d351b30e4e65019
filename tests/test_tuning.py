"""mtlzoo.tuning and `mtlzoo tune`: search space, objectives, failed trials, resume, outputs, distributed search.

All searches use the `tabular_demo` recipe (16 features, MLP trunk, a
classification and a regression head) on small random arrays, 2 epochs per
trial, so a trial takes about a second.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import keras
import keras_tuner as kt
import pytest

import mtlzoo
from mtlzoo.tuning import hypermodel as tuning
from mtlzoo.tuning import MultiTaskHyperModel, TuningError, tune

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tune_helper import tabular_data  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = tabular_data(64, 0)
VAL = tabular_data(32, 1)


def small(**kwargs):
    # Eager steps (`training.run_eagerly`): the trials' arithmetic without tracing each trial's new model, which is
    # most of a trial's time on these tiny arrays; the compiled step is tested everywhere else.
    base = dict(data=TRAIN, validation_data=VAL, epochs=2, **{"training.run_eagerly": True})
    base.update(kwargs)
    return base


def trial_dirs(path):
    return [d for d in os.listdir(path) if d.startswith("trial_")] if os.path.isdir(path) else []


# ---------------------------------------------------------------- bad input, before any trial
def test_search_space_without_tunable_parameter_is_an_error():
    with pytest.raises(TuningError, match="no tunable parameter"):
        MultiTaskHyperModel("tabular_demo", search_weights=None, **small())
    with pytest.raises(TuningError, match="no tunable parameter"):  # one choice is not a search
        MultiTaskHyperModel("tabular_demo", search_weights=None, search_aggregator=["pcgrad"], **small())
    with pytest.raises(TuningError, match="no tunable parameter"):  # one task: the simplex is a point
        MultiTaskHyperModel("tabular_demo", search_weights="simplex", tasks=["label"], **small())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"search_weights": "log"}, "Did you mean 'log_uniform'"),
        ({"weight_range": (0.0, 1.0)}, "0 < low < high"),
        ({"weight_range": (5, 1)}, "0 < low < high"),
        ({"search_weighting": ["fixed", "dwaa"]}, "Did you mean 'dwa'"),
        ({"search_aggregator": ["none", "pc_grad"]}, "Did you mean 'pcgrad'"),
        ({"search_sharing": ["hard", "crossstitch"]}, "Did you mean 'cross_stitch'"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"norm_reference": "last"}, "norm_reference"),
    ],
)
def test_bad_search_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiTaskHyperModel("tabular_demo", **small(**kwargs))


def test_objective_that_is_not_logged_is_an_error(tmp_path):
    with pytest.raises(TuningError, match=r"not logged.*Did you mean 'val_label_acc'"):
        tune("tabular_demo", trials=2, directory=tmp_path, objective="val_label_accuracy", **small())
    with pytest.raises(TuningError, match="Cannot tell whether"):
        MultiTaskHyperModel("tabular_demo", objective="val_label_thing", **small())
    with pytest.raises(TuningError, match="validation metric"):
        MultiTaskHyperModel("tabular_demo", data=TRAIN, objective="val_norm_loss")
    with pytest.raises(TuningError, match="needs baselines"):
        MultiTaskHyperModel("tabular_demo", objective="val_delta_m", **small())
    with pytest.raises(TuningError, match=r"does not log 'val_label_miou'.*logs: acc"):
        MultiTaskHyperModel("tabular_demo", objective="val_delta_m", baselines={"label": {"miou": 0.5}}, **small())
    with pytest.raises(TuningError, match="Did you mean 'label'"):
        MultiTaskHyperModel("tabular_demo", objective="val_delta_m", baselines={"lable": {"acc": 0.5}}, **small())
    assert trial_dirs(tmp_path / "tabular_demo_random") == []


def test_bad_tuner_strategy_and_tf_config_fail_before_any_trial(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="Did you mean 'bayesian'"):
        tune("tabular_demo", tuner="bayes", trials=2, directory=tmp_path, **small())
    with pytest.raises(ValueError, match="Did you mean 'mirrored'"):
        tune("tabular_demo", strategy="mirroredd", trials=2, directory=tmp_path, **small())
    with pytest.raises(ValueError, match="trials must be"):
        tune("tabular_demo", trials=0, directory=tmp_path, **small())
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}')
    with pytest.raises(ValueError, match="out of range"):
        tune("tabular_demo", strategy="multi_worker", trials=2, directory=tmp_path, **small())
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        tune("tabular_demo", trials=2, directory=tmp_path, **small())
    monkeypatch.delenv("TF_CONFIG")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    with pytest.raises(ValueError, match="KERASTUNER_ORACLE_IP"):
        tune("tabular_demo", trials=2, directory=tmp_path, **small())
    assert not os.path.exists(tmp_path / "tabular_demo_random")


# ---------------------------------------------------------------- search space and build
def test_simplex_weights_sum_to_the_number_of_tasks_and_build_compiles():
    hm = MultiTaskHyperModel("tabular_demo", search_weights="simplex", search_aggregator=["none", "pcgrad"], **small())
    hp = kt.HyperParameters()
    hp.values.update({"simplex_label": 0.9, "simplex_target": 0.05, "aggregator": "pcgrad"})
    config = hm.trial_config(hp)
    assert sum(config["weights"].values()) == pytest.approx(2.0)
    assert config["weights"]["target"] > config["weights"]["label"]
    model = hm.build(hp)
    assert model.compiled and model.get_loss_weights() == pytest.approx(config["weights"])
    assert type(model.step_hooks[0].aggregator).__name__ == "PCGrad"
    assert hm.recipe_for(config).aggregator_args == {"seed": 0}


def test_weighting_search_conditions_weights_and_method_hyperparameters():
    hm = MultiTaskHyperModel(
        "tabular_demo", search_weighting=["fixed", "dwa", "gradnorm"], search_sharing=["hard", "soft_l2"], **small()
    )
    hp = kt.HyperParameters()
    config = hm.trial_config(hp)
    names = set(hp.values)
    assert {"weighting", "weight_label", "weight_target", "sharing"} <= names
    hp = kt.HyperParameters()
    hp.values.update({"weighting": "dwa", "dwa_temperature": 3.0, "sharing": "soft_l2", "soft_l2_weight": 0.01})
    config = hm.trial_config(hp)
    assert config["weighting"] == "dwa" and config["weighting_args"] == {"temperature": 3.0}
    assert config["weights"] is None  # DWA sets the weights itself
    assert config["sharing"] == "soft_l2" and config["sharing_args"] == {"weight": 0.01}
    recipe = hm.recipe_for(config)
    assert (recipe.weighting, recipe.sharing) == ("dwa", "soft_l2")


# ---------------------------------------------------------------- searches
def test_random_search_writes_table_plot_and_a_loadable_best_recipe(tmp_path):
    result = tune("tabular_demo", tuner="random", trials=3, directory=tmp_path, tuner_seed=1, **small())
    assert result.role == "single" and len(result.rows) == 3
    assert all(r["status"] == "COMPLETED" for r in result.rows)
    assert result.objective.name == "val_norm_loss" and result.objective.direction == "min"
    for path in (result.table_csv, result.table_md, result.plot, result.best_recipe_path):
        assert os.path.getsize(path) > 0
    with open(result.table_csv) as f:
        assert f.readline().startswith("trial,status,val_norm_loss,weight_label,weight_target")
    assert open(result.table_md).read().count("| COMPLETED |") == 3
    # The best recipe is a recipe file `mtlzoo train` accepts, with the best trial's weights.
    recipe = mtlzoo.get_recipe(result.best_recipe_path)
    hp = result.best_hyperparameters
    assert recipe.tasks["label"].loss_weight == pytest.approx(hp["weight_label"])
    assert recipe.tasks["target"].loss_weight == pytest.approx(hp["weight_target"])
    best = min(r["val_norm_loss"] for r in result.rows)
    assert result.best_score == pytest.approx(best)
    model = recipe.build()
    assert model.get_loss_weights()["label"] == pytest.approx(hp["weight_label"], rel=1e-6)


@pytest.mark.parametrize("name", ["bayesian", "hyperband"])
def test_other_tuners_run(tmp_path, name):
    result = tune(
        "tabular_demo", tuner=name, trials=2, directory=tmp_path, tuner_seed=0, search_weights="simplex",
        tuner_args={"num_initial_points": 1} if name == "bayesian" else {"factor": 3}, **small(),
    )
    assert result.rows and all(r["status"] == "COMPLETED" for r in result.rows)
    assert all(sum(r[f"weight_{t}"] for t in ("label", "target")) == pytest.approx(2.0) for r in result.rows)
    assert os.path.exists(result.best_recipe_path)


def test_delta_m_objective_against_single_task_baselines(tmp_path):
    baselines = {"label": {"acc": 0.6}, "target": {"mae": 0.5}}
    result = tune(
        "tabular_demo", trials=1, directory=tmp_path, objective="val_delta_m", baselines=baselines, tuner_seed=0,
        **small(),
    )
    assert result.objective.direction == "min"
    trial = result.tuner.oracle.get_best_trials(1)[0]
    from mtlzoo.metrics_delta import delta_m

    logs = {k: trial.metrics.get_last_value(k) for k in ("val_label_acc", "val_target_mae")}
    expected = delta_m(
        {"a": logs["val_label_acc"], "m": logs["val_target_mae"]}, {"a": 0.6, "m": 0.5}, {"a": True, "m": False}
    )
    assert trial.score == pytest.approx(expected, rel=1e-5)


def test_custom_objective_with_direction(tmp_path):
    result = tune(
        "tabular_demo", trials=2, directory=tmp_path, objective=kt.Objective("val_label_acc", "max"), tuner_seed=0,
        **small(),
    )
    assert result.objective.direction == "max"
    assert result.best_score == pytest.approx(max(r["val_label_acc"] for r in result.rows))


class Diverging(keras.callbacks.Callback):
    """Blows up the weights of trials whose label weight is above 1 (a stand-in for a diverging run)."""

    def on_train_batch_end(self, batch, logs=None):
        if self.model.get_loss_weights()["label"] > 1.0 and batch == 0:
            for v in self.model.trainable_variables:
                v.assign(v * 1e30)


def test_diverged_trial_is_recorded_as_failed_and_the_search_goes_on(tmp_path):
    result = tune(
        "tabular_demo", trials=3, directory=tmp_path, tuner_seed=5, callbacks=[Diverging()], weight_range=(0.1, 10),
        **small(),
    )
    statuses = [r["status"] for r in result.rows]
    assert len(statuses) == 3 and "FAILED" in statuses and "COMPLETED" in statuses, result.rows
    for r in result.rows:
        assert (r["status"] == "FAILED") == (r["weight_label"] > 1.0)
        if r["status"] == "FAILED":
            assert "diverged" in r["message"] and r["val_norm_loss"] is None
    assert result.best_hyperparameters["weight_label"] <= 1.0
    assert "FAILED" in open(result.table_md).read()


class Interrupt(keras.callbacks.Callback):
    """Stops the whole search (like Ctrl-C) in the middle of the n-th trial."""

    def __init__(self, n):
        super().__init__()
        self.n, self.seen = n, 0

    def on_train_begin(self, logs=None):
        self.seen += 1

    def on_epoch_end(self, epoch, logs=None):
        if self.seen == self.n:
            raise KeyboardInterrupt("simulated interruption")


def test_interrupted_search_resumes_without_losing_trials(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        tune("tabular_demo", trials=2, directory=tmp_path, tuner_seed=2, callbacks=[Interrupt(2)], **small())
    oracle = json.loads((tmp_path / "tabular_demo_random" / "oracle.json").read_text())
    assert list(oracle["ongoing_trials"].values()) == ["1"]  # trial 0 done, trial 1 interrupted
    first = json.loads((tmp_path / "tabular_demo_random" / "trial_0" / "trial.json").read_text())
    result = tune("tabular_demo", trials=2, directory=tmp_path, tuner_seed=2, **small())
    assert [r["trial"] for r in result.rows] == ["0", "1"], result.rows
    assert all(r["status"] == "COMPLETED" for r in result.rows)
    assert result.rows[0]["val_norm_loss"] == pytest.approx(first["score"])  # trial 0 was not rerun
    # Nothing more to do: a third call reruns no trial.
    again = tune("tabular_demo", trials=2, directory=tmp_path, tuner_seed=2, **small())
    assert [r["val_norm_loss"] for r in again.rows] == [r["val_norm_loss"] for r in result.rows]


# ---------------------------------------------------------------- command line
def test_cli_tune_writes_outputs(tmp_path, monkeypatch, capsys):
    from mtlzoo import cli_tune

    # The command line reads the recipe's data section: name one and serve the arrays as it.
    monkeypatch.setattr(tuning, "_recipe_datasets", lambda recipe, num_examples=None: (TRAIN, VAL))
    parser = argparse.ArgumentParser(prog="mtlzoo")
    cli_tune.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["tune", "tabular_demo", "--tuner", "random", "--trials", "2", "--epochs", "2", "--out", str(tmp_path),
         "--verbose", "0", "--search-aggregator", "none,mgda", "optimizer.learning_rate=0.01", "seed=4",
         "data.name=arrays"]
    )
    assert args.overrides == ["optimizer.learning_rate=0.01", "seed=4", "data.name=arrays"]
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "best recipe:" in out and "| trial | status |" in out
    recipe = mtlzoo.get_recipe(str(tmp_path / "best_recipe.yaml"))
    assert recipe.optimizer["learning_rate"] == 0.01 and recipe.seed == 4
    assert args.func(parser.parse_args(["tune", "tabular_demo", "--tuner", "bayes", "--out", str(tmp_path)])) == 2
    assert "Did you mean 'bayesian'" in capsys.readouterr().err


def test_recipe_data_section_loads_synthetic_driving():
    recipe = mtlzoo.get_recipe(
        "driving_perception", backbone="tiny", input_shape=(32, 64, 3), tasks=["segmentation", "depth"],
        **{"data.num_examples": 4, "training.batch_size": 2},
    )
    train, val = tuning._recipe_datasets(recipe)
    x, y = next(iter(train))
    assert tuple(x.shape) == (2, 32, 64, 3) and set(y) == {"segmentation", "depth"}
    assert next(iter(val))[0].shape[1:] == (32, 64, 3)
    with pytest.raises(TuningError, match="no `data"):
        tuning._recipe_datasets(mtlzoo.get_recipe("tabular_demo"))


# ---------------------------------------------------------------- keras-tuner chief / workers
@pytest.mark.slow
def test_distributed_search_one_chief_two_workers(tmp_path):
    from mtlzoo.distribute import free_ports

    trials = 4
    port = free_ports(1)[0]
    procs = {}
    start = time.time()
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = dict(
            os.environ, KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
            KERASTUNER_ORACLE_PORT=str(port), TF_CPP_MIN_LOG_LEVEL="2",
            PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        )
        procs[tuner_id] = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tests", "tune_helper.py"), str(tmp_path), str(trials)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
    outputs = {}
    try:
        for tuner_id, p in procs.items():
            outputs[tuner_id], _ = p.communicate(timeout=max(1.0, 170 - (time.time() - start)))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for tuner_id, p in procs.items():
        assert p.returncode == 0, f"{tuner_id}:\n{outputs.get(tuner_id, '')[-3000:]}"
    assert "chief: role=chief rows=4" in outputs["chief"]
    assert "role=worker" in outputs["tuner0"] and "role=worker" in outputs["tuner1"]
    ran_by = open(tmp_path / "ran_by.txt").read().split()
    assert len(ran_by) == trials and set(ran_by) <= {"tuner0", "tuner1"}  # every trial ran once, on a worker
    table = open(tmp_path / "dist" / "tuning_results.md").read()
    assert table.count("| COMPLETED |") == trials
    assert mtlzoo.get_recipe(str(tmp_path / "dist" / "best_recipe.yaml")).name == "tabular_demo_tuned"
    print(f"distributed search: {trials} trials, workers {sorted(set(ran_by))}, {time.time() - start:.1f} s")
