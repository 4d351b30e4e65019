"""Claim `intruder`: the intruder labels, the arms, one real smoke run with its diagnostics, and the report."""

import json

import numpy as np
import pytest

from mtlzoo.bench import claim_intruder as ci
from mtlzoo.bench import claims, claims_common
from mtlzoo.data import pipeline


def test_intruder_labels_are_stable_balanced_bits_unrelated_to_the_scene():
    labels = pipeline.intruder_labels(3, np.arange(4000))
    assert labels.shape == (4000, pipeline.INTRUDER_BITS) and set(np.unique(labels)) == {0.0, 1.0}
    np.testing.assert_array_equal(labels[17], pipeline.intruder_labels(3, np.array([17]))[0])  # fixed per index
    assert np.all(np.abs(labels.mean(axis=0) - 0.5) < 0.05)
    assert np.abs(np.corrcoef(labels.T) - np.eye(pipeline.INTRUDER_BITS)).max() < 0.1  # the bits are unrelated
    assert not np.array_equal(labels, pipeline.intruder_labels(4, np.arange(4000)))  # another seed, other labels
    from mtlzoo.data.synthetic_driving import raw_example

    scene = np.stack([raw_example(3, i, (32, 64))["scene"] for i in range(200)])
    corr = np.corrcoef(np.concatenate([labels[:200], scene], axis=1).T)[: pipeline.INTRUDER_BITS,
                                                                        pipeline.INTRUDER_BITS:]
    assert np.nanmax(np.abs(corr)) < 0.3  # nothing in the scene predicts them (200 scenes: |r| of noise < 0.3)


def test_synthetic_driving_emits_the_intruder_only_when_asked():
    import mtlzoo.data

    x, y = next(iter(mtlzoo.data.load("synthetic_driving", batch_size=4, num_examples=4, image_size=(32, 64),
                                      seed=3, tasks=["scene", "intruder"])))
    assert set(y) == {"scene", "intruder"}
    np.testing.assert_array_equal(np.sort(y["intruder"].numpy(), axis=0),
                                  np.sort(pipeline.intruder_labels(3, np.arange(4)), axis=0))
    _, y = next(iter(mtlzoo.data.load("synthetic_driving", batch_size=2, num_examples=2, image_size=(32, 64))))
    assert set(y) == set(pipeline.TASKS)
    with pytest.raises(ValueError, match="Did you mean 'intruder'"):
        next(iter(mtlzoo.data.load("synthetic_driving", batch_size=2, num_examples=2, image_size=(32, 64),
                                   tasks=["intruders"])))


def test_runs_cover_every_arm_and_seed_and_the_branched_arm_isolates_the_intruder():
    runs = ci.runs([0, 2])
    assert len(runs) == 2 * (len(ci.ARMS) - len(ci.ZOO_ONLY)) and "intruder-branched__seed2" in {r[0] for r in runs}
    assert not {r[1] for r in runs} & set(ci.ZOO_ONLY)  # the no-tags arms run at the zoo budget only
    assert {r[1] for r in ci.runs([0], budget="zoo")} == set(ci.ZOO_ARMS) >= set(ci.ZOO_ONLY)
    groups = ci.ARMS["intruder:branched"][2]["sharing_args"]["groups"]
    assert groups == [list(ci.ORIGINAL), ["intruder"]]
    assert "intruder" in claims.CLAIMS and claims.PLUGINS["intruder"] == "mtlzoo.bench.claim_intruder"


def test_one_smoke_run_trains_five_tasks_and_records_both_diagnostics(tmp_path):
    validation = claims_common.validation_scenes("smoke")
    result, line = ci.train_one(("intruder-equal__seed0", "intruder:equal", 0), validation, "smoke", str(tmp_path),
                                methods_results=str(tmp_path / "none"))
    assert set(result["metrics"]) == {*ci.ORIGINAL, "intruder"} and "intruder" in line
    assert result["recipe"]["tasks"]["intruder"]["kind"] == "multilabel"
    assert result["conflict"]["tasks"][-1] == "intruder" and result["conflict"]["samples"] > 0
    assert np.array(result["affinity"]["matrix"]).shape == (5, 5)
    found = ci.singled_out(result)
    assert set(found) == set(ci.DIAGNOSTICS) and all(t in result["conflict"]["tasks"] for t, _ in found.values())
    assert len(result["conflict"]["coherence"]) == 5
    assert result["claim"] == "intruder" and "--claim intruder --seeds 0 --budget smoke" in result["command"]


def test_without_reuses_the_methods_benchmark_result(tmp_path):
    folder = tmp_path / "smoke"
    folder.mkdir()
    (folder / "weighting-equal__seed1.json").write_text(json.dumps({"metrics": {"depth": {"abs_rel": 0.3}}}))
    result, _ = ci.train_one(("without__seed1", "without", 1), None, "smoke", str(tmp_path), str(tmp_path))
    assert result["metrics"] == {"depth": {"abs_rel": 0.3}} and result["reused_from"].endswith("seed1.json")
    assert result["arm"] == "without" and result["format"] == claims_common.FORMAT
    validation = claims_common.validation_scenes("smoke")  # ... but an arm with its own task list trains its own:
    # the diagnosed `no_tags:intruder` arm, on the dense tasks and the intruder, diagnosing those four.
    mine, _ = ci.train_one(("no_tags-intruder__seed1", "no_tags:intruder", 1), validation, "smoke", str(tmp_path),
                           str(tmp_path))
    assert "reused_from" not in mine and set(mine["metrics"]) == {*ci.DENSE, "intruder"}
    assert "scene" not in mine["recipe"]["tasks"] and mine["conflict"]["tasks"] == [*ci.DENSE, "intruder"]
    assert np.array(mine["affinity"]["matrix"]).shape == (4, 4)
    assert ci.SAME_WITHOUT["no_tags:intruder"] == "no_tags" and ci.ARMS["no_tags"][2] == {"tasks": list(ci.DENSE)}


def _fake(arm, seed, miou, abs_rel, cosine=None):
    r = {"format": claims_common.FORMAT, "claim": "intruder", "arm": arm, "seed": seed,
         "metrics": {"segmentation": {"miou": miou}, "depth": {"abs_rel": abs_rel}},
         "higher_is_better": {"segmentation": {"miou": True}, "depth": {"abs_rel": False},
                              "intruder": {"map": True}}}
    if cosine is not None:
        tasks = ["segmentation", "depth", "intruder"]
        r["conflict"] = {"tasks": tasks, "cosine": cosine}
        r["affinity"] = {"tasks": tasks, "matrix": [[0, 0.2, -0.1], [0.1, 0, -0.1], [-0.3, -0.2, 0]]}
    return r


def test_singled_out_points_at_the_task_with_the_lowest_cosine_coherence_and_affinity():
    cos = [[1, 0.4, -0.2], [0.4, 1, -0.1], [-0.2, -0.1, 1]]  # upper triangle is what the monitor fills
    result = _fake("intruder:equal", 0, 0.5, 0.3, cos)
    found = ci.singled_out(result)
    assert found["conflict"] == ("intruder", pytest.approx(-0.15)) and found["affinity"] == ("intruder",
                                                                                                pytest.approx(-0.25))
    assert "coherence" not in found  # not measured by the older runs
    result["conflict"]["coherence"] = [0.3, float("nan"), 0.01]
    assert ci.singled_out(result)["coherence"] == ("intruder", pytest.approx(0.01))


def test_the_heavy_arms_put_the_same_bits_on_a_regression_head_at_the_largest_loss_scale():
    assert ci.HEAVY_HEAD["kind"] == "regression" and ci.HEAVY_HEAD["units"] == ci.INTRUDER_HEAD["num_classes"]
    assert ci.HEAVY_HEAD["loss_weight"] * 0.25 == pytest.approx(4.0)  # bits' variance 0.25: starts near depth's scale
    assert {a: ci.ARMS[a][1] for a in ci.DIAGNOSED} == {"intruder:equal": ci.INTRUDER_HEAD, "heavy:equal": ci.HEAVY_HEAD,
                                                         "no_tags:intruder": ci.INTRUDER_HEAD}
    assert ci.SAME_WITHOUT["heavy:aligned_mtl"] == "without:aligned_mtl" and ci.ARMS["heavy:branched"][2] == ci.ARMS[
        "intruder:branched"][2]


def test_report_gives_delta_m_against_without_and_the_diagnostics(tmp_path):
    cos = [[1, 0.4, -0.2], [0.4, 1, -0.1], [-0.2, -0.1, 1]]
    results = [_fake("without", 0, 0.50, 0.20), _fake("intruder:equal", 0, 0.40, 0.22, cos),
               _fake("without", 1, 0.50, 0.20), _fake("intruder:equal", 1, 0.50, 0.20, cos)]
    text = ci.report(results, {"figures": str(tmp_path), "doc": str(tmp_path / "when.md"), "budget": "standard"})
    # seed 0: mIoU -20 % (worse: +20), abs_rel +10 % (worse: +10): Δm +15 %; seed 1: 0. Mean 7.5, std 10.61
    # (the fakes have no detection: Δm without detection is the same)
    assert "| intruder:equal | +7.50 ± 10.61 % (n=2) | +7.50 ± 10.61 % (n=2) | +10.0 ± 14.1 | +5.0 ± 7.1 |" in text
    assert "| intruder:equal | 0 | intruder (-0.15) ✓ | – | intruder (-0.25) ✓ |" in text
    assert (tmp_path / "claims_intruder.png").stat().st_size > 1000


def test_finding_sums_up_the_arms_and_the_diagnostics():
    cos = [[1, 0.4, -0.2], [0.4, 1, -0.1], [-0.2, -0.1, 1]]
    results = [_fake("without", 0, 0.50, 0.20), _fake("intruder:equal", 0, 0.40, 0.22, cos),
               _fake("intruder:branched", 0, 0.50, 0.20)]
    text = ci.finding(results)
    assert "equal +15.0 ± 0.0 % (n=1)" in text and "branched +0.0 ± 0.0 % (n=1)" in text
    assert ("intruder:equal: gradient cosine 1 of 1 seeds, gradient coherence not measured, lookahead affinity 1 of 1"
            in text)
    results[1]["conflict"]["coherence"] = [0.2, 0.5, 0.3]  # the lowest coherence is segmentation's, not the intruder's
    assert "gradient coherence 0 of 1" in ci.finding(results)
    assert ci.finding([]) is None


def test_the_zoo_finding_compares_the_no_tags_arms_with_each_other():
    cos = [[1, 0.4, -0.2], [0.4, 1, -0.1], [-0.2, -0.1, 1]]
    results = [_fake("without", 0, 0.50, 0.20), _fake("no_tags", 0, 0.50, 0.20),
               _fake("no_tags:intruder", 0, 0.45, 0.20, cos)]
    text = ci.finding(results, {"budget": "zoo"})
    assert text.startswith("At the zoo budget (every task learned), with a task unrelated")
    assert "without the scene tags +5.0 ± 0.0 % (n=1)" in text and "near 0" not in text
    assert "the three dense tasks and the intruder: gradient cosine 1 of 1 seeds" in text


def test_without_ignores_a_methods_result_made_with_overrides(tmp_path):
    folder = tmp_path / "smoke"
    folder.mkdir()
    (folder / "weighting-equal__seed1.json").write_text(json.dumps(
        {"metrics": {"depth": {"abs_rel": 0.3}}, "settings": {"overrides": {"optimizer.learning_rate": 0.1}}}))
    assert ci._reused(1, "smoke", str(tmp_path)) is None


def test_delta_m_without_detection_leaves_the_noisy_task_out():
    higher = {"depth": {"abs_rel": False}, "detection": {"map50": True}}
    result = {"metrics": {"depth": {"abs_rel": 0.22}, "detection": {"map50": 0.001}}, "higher_is_better": higher}
    reference = {"metrics": {"depth": {"abs_rel": 0.20}, "detection": {"map50": 0.010}}}
    dm, clean, per_task = ci._delta(result, reference)
    assert clean == pytest.approx(10.0) and dm == pytest.approx((10.0 + 90.0) / 2)
    assert per_task["detection"] == pytest.approx(90.0)


def test_each_method_is_also_compared_with_itself_without_the_intruder(tmp_path):
    results = [_fake("without", 0, 0.40, 0.20), _fake("without:aligned_mtl", 0, 0.50, 0.20),
               _fake("intruder:aligned_mtl", 0, 0.45, 0.20)]
    text = ci.report(results, {"figures": str(tmp_path), "doc": str(tmp_path / "when.md"), "budget": "standard"})
    row = next(line for line in text.splitlines() if line.startswith("| intruder:aligned_mtl |"))
    # against equal weighting without the intruder: mIoU 0.45 vs 0.40, 12.5 % better (Δm -6.25); against Aligned-MTL
    # without it: 0.45 vs 0.50, 10 % worse (Δm +5)
    assert row.startswith("| intruder:aligned_mtl | -6.25 ± 0.00 % (n=1) |") and row.endswith("| +5.00 ± 0.00 % (n=1) |")
    assert ("without-aligned_mtl__seed0", "without:aligned_mtl", 0) in ci.runs([0])
