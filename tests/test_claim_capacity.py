"""Claim `capacity` (mtlzoo.bench.claim_capacity): runs, one smoke run at a narrower trunk, the report."""

import json
import os

import pytest

from mtlzoo.bench import claim_capacity as capacity
from mtlzoo.bench import methods
from mtlzoo.bench.claims_common import FORMAT


def test_runs_cover_every_arm_and_trained_width_of_the_budget():
    standard = capacity.runs([0, 1])
    assert len(standard) == len(capacity.ARMS) * 2 * 2 == 20
    assert {(arm, width, seed) for _, arm, width, seed in standard} == {
        (arm, width, seed) for arm in capacity.ARMS for width in (0.25, 0.5) for seed in (0, 1)}
    assert standard[0] == ("single_task-segmentation__alpha0.25__seed0", "single_task:segmentation", 0.25, 0)
    assert "weighting-equal__alpha0.5__seed1" in {r[0] for r in standard}
    assert not any(width == 1.0 for _, _, width, _ in standard)  # read from the methods results instead
    smoke = capacity.runs([3], budget="smoke")
    assert [r[0] for r in smoke][-1] == "weighting-equal__width2__seed3" and len(smoke) == len(capacity.ARMS)
    with pytest.raises(ValueError, match="unknown budget 'huge'"):
        capacity.runs([0], budget="huge")


def test_width_override_joins_the_budget_recipe():
    from mtlzoo.testing import TINY_IMAGE

    recipe = methods.base_recipe(capacity.methods_options("standard", 0.25, "/tmp/unused"))
    # the budget's own backbone setting stays; the width is added to it
    assert recipe.backbone == "mobilenetv3_small" and recipe.backbone_args == {"bn_momentum": 0.9, "alpha": 0.25}
    smoke = methods.base_recipe(capacity.methods_options("smoke", 2, "/tmp/unused"))
    assert smoke.backbone == "tiny" and smoke.backbone_args == {"width": 2}
    assert capacity.WIDTHS["smoke"]["reference"] == TINY_IMAGE["backbone_args"]["width"] == 4


def test_train_one_refuses_a_width_of_another_budget(tmp_path):
    with pytest.raises(ValueError, match=r"alpha 0.75 is not a width of the 'standard' budget \(0.25, 0.5\)"):
        capacity.train_one(("x", "weighting:equal", 0.75, 0), None, "standard", str(tmp_path))
    with pytest.raises(ValueError, match="width 0.25 is not a width of the 'smoke' budget"):
        capacity.train_one(("x", "weighting:equal", 0.25, 0), None, "smoke", str(tmp_path))


def test_smoke_run_trains_at_the_narrower_width(tmp_path):
    from mtlzoo.bench.claims_common import validation_scenes
    from mtlzoo.testing import TINY_IMAGE

    run = capacity.runs([0], budget="smoke")[1]
    assert run[1] == "single_task:depth"
    result, line = capacity.train_one(run, validation_scenes("smoke"), "smoke", str(tmp_path))
    assert result["recipe"]["backbone_args"] == {"width": 2}
    assert result["recipe"]["backbone"] == "tiny" and list(result["recipe"]["tasks"]) == ["depth"]
    assert result["format"] == FORMAT and result["claim"] == "capacity" and result["arm"] == "single_task:depth"
    assert result["width"] == 2 and result["width_key"] == "backbone_args.width"
    assert result["metrics"]["depth"]["abs_rel"] > 0 and result["params"] > 0
    assert "--claim capacity --seeds 0 --budget smoke" in result["command"]
    assert line.startswith("single_task:depth width 2 seed 0: depth abs_rel ")
    # the single-task model goes to the claim's own folder of that width, not the methods benchmark's
    assert os.path.isfile(tmp_path / "capacity-width2" / "smoke" / "single_task-depth__seed0.keras")
    assert TINY_IMAGE["backbone_args"] == {"width": 4}  # the override did not write into the shared settings


BASE = {"segmentation": ("miou", 0.5), "depth": ("abs_rel", 0.2), "detection": ("map50", 0.1), "scene": ("map", 0.4)}


def _result(arm, seed, worse=0.0, params=250_000):
    """A result whose every metric is `worse` × 100 % worse than the single-task baseline (so Δm = 100 × worse)."""
    tasks = [arm.split(":")[1]] if arm.startswith("single_task:") else list(BASE)
    metrics, higher = {}, {}
    for task in tasks:
        metric, value = BASE[task]
        lower_better = metric == "abs_rel"
        metrics[task] = {metric: value * (1 + worse) if lower_better else value * (1 - worse)}
        higher[task] = {metric: not lower_better}
    return {"configuration": arm, "kind": arm.split(":")[0], "seed": seed, "metrics": metrics,
            "higher_is_better": higher, "params": params}


def _claim(arm, width, seed, worse=0.0, params=250_000):
    return {**_result(arm, seed, worse, params), "format": FORMAT, "claim": "capacity", "arm": arm, "width": width}


def _write_methods(folder, arm, seed, worse=0.0, params=900_000, overrides=None):
    os.makedirs(folder, exist_ok=True)
    result = {**_result(arm, seed, worse, params), "format": methods.FORMAT, "settings": {"overrides": overrides or {}}}
    name = f"{arm.replace(':', '-')}__seed{seed}{'_other' if overrides else ''}.json"
    with open(os.path.join(folder, name), "w") as f:
        json.dump(result, f)


def test_report_pairs_delta_m_per_width_and_seed_and_reads_alpha_1_from_the_methods_results(tmp_path):
    singles = [a for a in capacity.ARMS if a.startswith("single_task:")]
    results = [_claim(a, w, s) for a in singles for w in (0.25, 0.5) for s in (0, 1)]
    results += [_claim("weighting:equal", 0.25, 0, 0.10, 137_564), _claim("weighting:equal", 0.25, 1, 0.20, 137_564),
                _claim("weighting:equal", 0.5, 0, -0.02, 306_236), _claim("weighting:equal", 0.5, 1, 0.04, 306_236),
                _claim("weighting:equal", 0.25, 2, -0.5, 137_564)]  # no single-task models of seed 2: no Δm
    methods_root = tmp_path / "methods"
    folder = str(methods_root / "standard")
    for seed, worse in ((0, -0.05), (1, -0.15), (2, 0.9)):  # seed 2 is not among opts["seeds"]
        for arm in singles:
            _write_methods(folder, arm, seed)
        _write_methods(folder, "weighting:equal", seed, worse, 926_764)
    _write_methods(folder, "weighting:equal", 0, 0.9, 926_764, overrides={"backbone_args.alpha": 0.5})  # ignored
    _write_methods(folder, "sharing:hard", 0, 0.9)  # not an arm
    opts = {"budget": "standard", "seeds": "0,1", "methods_results": str(methods_root),
            "figures": str(tmp_path / "figs"), "doc": str(tmp_path / "doc.md")}

    text = capacity.report(results, opts)

    assert "| 0.25 | claim | 0.138M | 1.000M | 15.00 ± 7.07 (n=2) | 0/2 |" in text
    assert "| 0.5 | claim | 0.306M | 1.000M | 1.00 ± 4.24 (n=2) | 1/2 |" in text
    assert "| 1 | methods | 0.927M | 3.600M | -10.00 ± 7.07 (n=2) | 2/2 |" in text
    # segmentation mIoU at alpha 0.25: single-task 0.5 on both seeds, multi-task 0.45 / 0.40 (seed 2, not among
    # opts["seeds"], is left out at every width)
    assert "| 0.25 | 0.500 ± 0.000 (n=2) / 0.425 ± 0.035 (n=2) |" in text
    assert "Mean Δm > 0 (multi-task loses) at alpha 0.25, 0.5; < 0 (multi-task wins) at 1." in text
    assert "(`" + folder + "`, 10 runs)" in text
    assert os.path.getsize(tmp_path / "figs" / "claims_capacity.png") > 0
    assert text.endswith("![Δm against the trunk width](figs/claims_capacity.png)")

    smoke = capacity.report([_claim(a, 2, 0) for a in singles] + [_claim("weighting:equal", 2, 0, 0.3)],
                            dict(opts, budget="smoke"))
    assert "| 2 | claim | 0.250M | 1.000M | 30.00 ± 0.00 (n=1) | 0/1 |" in smoke
    assert os.path.isfile(tmp_path / "figs" / "claims_capacity_smoke.png")
    assert capacity.report([], opts) == "No run has finished yet."

    found = capacity.finding(results, opts)
    assert "alpha 0.25: +15.0 ± 7.1 % (n=2, 0 below 0; without detection +15.0 ± 7.1 %)" in found
    assert "alpha 1: -10.0 ± 7.1 % (n=2, 2 below 0; without detection -10.0 ± 7.1 %)" in found
    assert capacity.finding([], opts) is None
