"""Claim `difficulty`: its runs, the training-rate measures on synthetic curves, the per-step loss recorder against
Keras's running-mean batch logs, one real smoke run and the report (table, Δm, figure, doc section)."""

import json
import math

import keras
import numpy as np
import pytest

import mtlzoo
from mtlzoo.bench import claim_difficulty as cd
from mtlzoo.bench import claims, claims_common, methods
from mtlzoo.testing import random_inputs, random_labels

TASKS = ["segmentation", "depth", "detection", "scene"]


def test_runs_cover_every_arm_and_seed():
    runs = cd.runs([0, 1])
    assert len(runs) == 2 * len(cd.ARMS) == 8
    stems = [r[0] for r in runs]
    assert len(set(stems)) == len(stems) and "weighting-gradnorm__seed1" in stems
    assert ("weighting-uncertainty__seed0", "weighting:uncertainty", 0) in runs
    assert {r[1] for r in runs} <= {c.name for c in methods.configurations(TASKS)}  # methods-benchmark configs
    assert claims.PLUGINS["difficulty"] == cd.__name__ and cd.CLAIM == "difficulty"


# ---------------------------------------------------------------- measures
def test_smoothing_window_and_relative_losses():
    assert cd.smooth([1.0, 2.0, 3.0, 4.0, 5.0], 2).tolist() == [1.5, 2.5, 3.5, 4.5]
    assert (cd.window_of(4), cd.window_of(40), cd.window_of(1000)) == (1, 10, cd.WINDOW)
    relative = cd.relative_losses({"a": [4.0, 3.0, 2.0, 1.0], "b": [0.0, 1.0, 1.0, 1.0]})
    assert list(relative) == ["a"] and relative["a"].tolist() == [1.0, 0.75, 0.5, 0.25]  # b: no L(0) > 0


def test_equal_relative_rates_give_inequality_exactly_one():
    curve = list(np.exp(-0.03 * np.arange(64)) + 0.1)
    same = cd.rate_inequality({"a": curve, "b": list(curve)})
    assert same["mean"] == 1.0 and same["final"] == 1.0
    scaled = cd.rate_inequality({"a": curve, "b": [7.0 * v for v in curve]})  # another scale, the same rate
    assert scaled["mean"] == pytest.approx(1.0, abs=1e-12) and scaled["final"] == pytest.approx(1.0, abs=1e-12)


def test_unequal_rates_give_inequality_above_one_and_the_slowest_task():
    t = np.arange(100)
    curves = {"fast": list(2.0 * np.exp(-0.05 * t)), "slow": list(np.exp(-0.01 * t))}
    out = cd.rate_inequality(curves)  # window 16: geometric curves keep their ratio after smoothing
    assert out["slowest"] == "slow"
    assert out["final_relative"]["slow"] == pytest.approx(math.exp(-0.01 * 84))
    assert out["final_relative"]["fast"] == pytest.approx(math.exp(-0.05 * 84))
    assert out["final"] == pytest.approx(math.exp(0.04 * 84))
    assert 1.0 < out["mean"] < out["final"]
    assert out["mean"] == pytest.approx(np.mean(np.exp(0.04 * np.arange(85))))
    rates = cd.inverse_training_rates(curves)
    assert np.allclose((rates["fast"] + rates["slow"]) / 2, 1.0)  # r_i averages to 1 over the tasks
    assert rates["slow"][-1] > 1.0 > rates["fast"][-1]
    assert cd.rate_inequality({}) == {"mean": None, "final": None, "final_relative": {}, "slowest": None}


# ---------------------------------------------------------------- recorder
def _batch_losses(model, x, y, batch):
    """Each batch's unweighted task losses, computed directly (the weights do not move with learning rate 0)."""
    out = []
    for i in range(0, len(x), batch):
        losses = model.compute_task_losses({t: v[i:i + batch] for t, v in y.items()}, model(x[i:i + batch],
                                                                                              training=True))
        out.append({t: float(v) for t, v in losses.items()})
    return out


class _RawLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.rows = []

    def on_train_batch_end(self, batch, logs=None):
        self.rows.append((batch, float(np.asarray(logs["target_loss"]))))


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_recorder_recovers_each_steps_loss_from_the_running_means(steps_per_execution):
    model = mtlzoo.build("tabular_demo", compile=False)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), steps_per_execution=steps_per_execution)
    x, y = random_inputs(model, 12, seed=1), random_labels(model, 12, seed=1)
    recorder, raw = cd.TaskLossCurve(), _RawLogs()
    model.fit(x, y, epochs=2, batch_size=4, shuffle=False, verbose=0, callbacks=[recorder, raw])
    truth = _batch_losses(model, x, y, 4)  # three batches per epoch
    if steps_per_execution == 1:
        # Keras's batch logs are running means since the epoch start, the batch index restarting each epoch
        assert [b for b, _ in raw.rows] == [0, 1, 2, 0, 1, 2]
        assert raw.rows[1][1] == pytest.approx((truth[0]["target"] + truth[1]["target"]) / 2, rel=1e-5)
        assert raw.rows[1][1] != pytest.approx(truth[1]["target"], rel=1e-3)
        expected = {t: [b[t] for b in truth] * 2 for t in ("label", "target")}
    else:
        # one call per 2 steps; Keras reports the end index 3 for the last execution although the epoch has 3 steps
        assert [b for b, _ in raw.rows] == [1, 3, 1, 3]
        pair = {t: (truth[0][t] + truth[1][t]) / 2 for t in ("label", "target")}
        expected = {t: [pair[t], pair[t], truth[2][t]] * 2 for t in ("label", "target")}
    assert set(recorder.curves) == {"label", "target"}
    for task, values in expected.items():
        assert recorder.curves[task] == pytest.approx(values, rel=1e-5)
    assert recorder.weights == {"label": [1.0] * 6, "target": [1.0] * 6}
    stored = recorder.to_json()
    assert stored["curves"]["target"][0] == float(f"{recorder.curves['target'][0]:.5g}")


# ---------------------------------------------------------------- one real run
def test_one_smoke_run_records_a_curve_per_task_and_step(tmp_path):
    result, line = cd.train_one(("weighting-equal__seed0", "weighting:equal", 0),
                                claims_common.validation_scenes("smoke"), "smoke", str(tmp_path))
    smoke = methods.BUDGETS["smoke"]
    steps = smoke["epochs"] * smoke["num_train"] // smoke["batch_size"]
    assert set(result["curves"]) == set(TASKS) and result["steps"] == steps
    assert all(len(c) == steps and all(v > 0 for v in c) for c in result["curves"].values())
    assert all(w == [1.0] * steps for w in result["weights"].values())  # equal weighting
    per_epoch = steps // smoke["epochs"]
    for task in TASKS:  # the recovered steps of the last epoch average to the epoch's logged loss
        assert np.mean(result["curves"][task][-per_epoch:]) == pytest.approx(result["final_logs"][f"{task}_loss"],
                                                                            rel=1e-4)
    assert result["claim"] == "difficulty" and result["format"] == claims_common.FORMAT
    assert result["arm"] == "weighting:equal" and set(result["metrics"]) == set(TASKS)
    assert result["command"] == "python -m mtlzoo.bench.claims --claim difficulty --seeds 0 --budget smoke"
    assert line.startswith("weighting:equal seed 0: rate inequality mean ")
    json.dumps(result, allow_nan=False)


# ---------------------------------------------------------------- report
def _fake(arm, seed, curves):
    return {"format": claims_common.FORMAT, "claim": "difficulty", "arm": arm, "seed": seed, "curves": curves,
            "metrics": {"segmentation": {"miou": 0.5}, "depth": {"abs_rel": 0.2}},
            "higher_is_better": {"segmentation": {"miou": True}, "depth": {"abs_rel": False}}}


def test_report_table_delta_m_and_figure(tmp_path):
    methods_folder = tmp_path / "methods" / "smoke"
    methods_folder.mkdir(parents=True)
    for task, metrics in (("segmentation", {"miou": 0.4}), ("depth", {"abs_rel": 0.25})):  # seed 0 only
        (methods_folder / f"single_task-{task}__seed0.json").write_text(json.dumps(
            {"format": methods.FORMAT, "kind": "single_task", "configuration": f"single_task:{task}", "seed": 0,
             "metrics": {task: metrics}}))
    fast_seg = {"segmentation": [4.0, 3.0, 2.0, 1.0], "depth": [2.0, 2.0, 2.0, 2.0]}
    results = [_fake("weighting:equal", 0, fast_seg), _fake("weighting:equal", 1, fast_seg),
               _fake("weighting:gradnorm", 0, {"segmentation": [2.0, 1.0, 1.0, 1.0], "depth": [4.0, 4.0, 4.0, 3.0]})]
    folder = tmp_path / "results" / "difficulty-smoke"
    folder.mkdir(parents=True)
    for r in results:
        (folder / f"{r['arm'].replace(':', '-')}__seed{r['seed']}.json").write_text(json.dumps(r))
    doc = tmp_path / "when.md"
    doc.write_text("# When\n")
    opts = {"claim": "difficulty", "budget": "smoke", "report": True, "results": str(tmp_path / "results"),
            "doc": str(doc), "figures": str(tmp_path), "methods_results": str(tmp_path / "methods")}
    text = claims.run(opts)["table"]
    # L̃ segmentation 1, .75, .5, .25 against depth 1: inequality 1, 4/3, 2, 4 (mean 2.083); Δm (seed 0 only):
    # miou +25 % better, abs_rel 20 % better: -22.5 %
    assert ("| weighting:equal | 2.083 ± 0.000 (n=2) | 4.000 ± 0.000 (n=2) | 0.250 ± 0.000 (n=2) | "
            "1.000 ± 0.000 (n=2) | -22.50 ± 0.00 (n=1) | -22.50 ± 0.00 (n=1) | depth (2/2) |") in text
    assert ("| weighting:gradnorm | 1.625 ± 0.000 (n=1) | 1.500 ± 0.000 (n=1) | 0.500 ± 0.000 (n=1) | "
            "0.750 ± 0.000 (n=1) | -22.50 ± 0.00 (n=1) | -22.50 ± 0.00 (n=1) | depth (1/1) |") in text
    assert "weighting:dwa" not in text and "(2 found)" in text
    assert "![relative training loss" in text and "](claims_difficulty_smoke.png)" in text
    assert (tmp_path / "claims_difficulty_smoke.png").stat().st_size > 1000
    assert "<!-- claims-difficulty_smoke:begin -->" in doc.read_text() and "| weighting:equal |" in doc.read_text()
    without = cd.difficulty_table(results)  # no single-task results: no Δm
    assert "| 4.000 ± 0.000 (n=2) | 0.250 ± 0.000 (n=2) | 1.000 ± 0.000 (n=2) | – | – | depth (2/2) |" in without


def test_report_without_results(tmp_path):
    assert cd.report([], {"budget": "smoke", "figures": str(tmp_path), "doc": str(tmp_path / "d.md")}) \
        == "No run has finished yet."
    assert not list(tmp_path.iterdir())


def test_finding_gives_the_inequality_per_arm_and_the_slowest_task():
    from mtlzoo.bench import claim_difficulty as cd

    fast, slow = [1.0, 0.5, 0.25, 0.25], [1.0, 1.0, 1.0, 1.0]
    results = [{"arm": "weighting:equal", "curves": {"depth": fast, "scene": slow}},
               {"arm": "weighting:gradnorm", "curves": {"depth": slow, "scene": slow}}]
    text = cd.finding(results)
    assert "gradnorm 1.00 ± 0.00 (n=1)" in text and "the slowest task under equal weighting: scene" in text
    assert cd.finding([]) is None
