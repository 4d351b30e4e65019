"""`mtlzoo bench claims`: the relatedness experiment's runs, one real smoke run, and the table over seeds."""

import json

import pytest

from mtlzoo.bench import claims


def test_relatedness_runs_cover_every_arm_rho_and_seed():
    runs = claims.relatedness_runs([0, 1])
    assert len(runs) == 2 * len(claims.RHOS) * len(claims.RELATEDNESS_ARMS)
    stems = [r[0] for r in runs]
    assert len(set(stems)) == len(stems) and "mmoe__rho0.5__seed1" in stems
    single = next(r for r in runs if r[1] == "single_task:y2" and r[2] == 0.9)
    assert single[4]["tasks"] == ["y2"] and single[4]["sharing"] == "hard" and single[4]["data.rho"] == 0.9


def test_one_smoke_run_trains_and_evaluates_both_tasks():
    stem, arm, rho, seed, overrides = next(r for r in claims.relatedness_runs([0]) if r[1] == "mmoe")
    result = claims.run_relatedness(stem, arm, rho, seed, overrides, claims.BUDGETS["smoke"])
    assert set(result["metrics"]) == {"y1", "y2"}
    assert all(0 < m["mae"] < 100 for m in result["metrics"].values())
    assert result["params"] > 0 and result["rho"] == rho


def _fake(arm, rho, seed, maes):
    return {"format": claims.FORMAT, "arm": arm, "rho": rho, "seed": seed, "params": 10,
            "metrics": {t: {"mae": v} for t, v in maes.items()}}


def _results_and_doc(tmp_path, claim, results, text):
    """Writes `results` as the claim's JSON files under tmp_path/results and a doc holding `text`; returns the doc."""
    folder = tmp_path / "results" / claim
    folder.mkdir(parents=True)
    for i, r in enumerate(results):
        (folder / f"r{i}.json").write_text(json.dumps(r))
    doc = tmp_path / "when.md"
    doc.write_text(text)
    return doc


def test_table_and_doc_section_from_results(tmp_path):
    results = []
    for seed in (0, 1):
        results += [_fake("single_task:y1", 1.0, seed, {"y1": 1.0}), _fake("single_task:y2", 1.0, seed, {"y2": 2.0}),
                    _fake("shared_bottom", 1.0, seed, {"y1": 0.5 + seed, "y2": 1.5})]
    table, curves = claims.relatedness_table(results)
    assert curves["single_task"][1.0] == pytest.approx((1.5, 0.0, 2))
    mean, std, n = curves["shared_bottom"][1.0]
    assert (mean, n) == (pytest.approx(1.25), 2) and std == pytest.approx(0.35355, rel=1e-3)  # per-seed means 1.0 and 1.5
    assert "| shared_bottom | 1.000 ± 0.707 (n=2) / 1.500 ± 0.000 (n=2) | – / – | – / – | – / – | 10 |" in table
    doc = _results_and_doc(tmp_path, "relatedness", results, "# When\n\nintro\n")
    for _ in range(2):  # the section is replaced, not appended twice
        claims.run({"report": True, "results": str(tmp_path / "results"), "doc": str(doc), "figures": str(tmp_path)})
    text = doc.read_text()
    assert text.startswith("# When\n\nintro") and text.count(claims.BEGIN.format("relatedness")) == 1
    assert (tmp_path / "claims_relatedness.png").stat().st_size > 1000


# ---------------------------------------------------------------- scarce labels
def test_scarce_runs_cover_every_arm_fraction_and_seed():
    runs = claims.scarce_runs([0, 2], "depth")
    assert len(runs) == 2 * len(claims.SCARCE_FRACTIONS) * len(claims.SCARCE_ARMS)
    stems = [r[0] for r in runs]
    assert len(set(stems)) == len(stems)
    assert "single_task-depth__depth0.05__seed2" in stems and "weighting-equal__depth0.25__seed0" in stems
    from mtlzoo.bench import methods

    known = {c.name for c in methods.configurations(["segmentation", "depth", "detection", "scene"])}
    assert {r[1] for r in runs} <= known  # every arm is a configuration of the methods benchmark


def test_one_scarce_smoke_run_trains_on_the_labelled_fraction(tmp_path):
    validation = claims.scarce_validation("smoke")
    result = claims.run_scarce("single_task:depth", 0.25, 0, "smoke", "depth", validation, models_root=str(tmp_path))
    assert result["recipe"]["data"]["label_fractions"] == {"depth": 0.25}
    assert result["recipe"]["tasks"].keys() == {"depth"}
    assert result["fraction"] == 0.25 and result["claim"] == "scarce_labels"
    assert 0 < result["metrics"]["depth"]["abs_rel"] < 10
    assert "--claim scarce_labels --task depth --seeds 0 --budget smoke" in result["command"]
    # its single-task model is kept apart from the methods benchmark's (which `_init` configurations load)
    assert (tmp_path / "scarce_labels-depth0.25" / "smoke" / "single_task-depth__seed0.keras").exists()


def test_scarce_table_pairs_each_multi_task_run_with_its_single_task_run(tmp_path):
    def fake(arm, fraction, seed, value):
        return {"format": claims.FORMAT, "claim": "scarce_labels", "task": "depth", "arm": arm, "fraction": fraction,
                "seed": seed, "metrics": {"depth": {"abs_rel": value}}}

    results = [fake("single_task:depth", 0.05, 0, 0.40), fake("single_task:depth", 0.05, 1, 0.20),
               fake("weighting:equal", 0.05, 0, 0.30), fake("weighting:equal", 0.05, 1, 0.30)]
    table, curves = claims.scarce_table(results, "depth")
    assert curves["weighting:equal"][0.05] == pytest.approx((0.30, 0.0, 2))
    mious = [dict(r, task="segmentation", metrics={"segmentation": {"miou": 1 - r["metrics"]["depth"]["abs_rel"]}})
             for r in results]
    seg_table, _ = claims.scarce_table(mious, "segmentation")  # mIoU 0.70 vs 0.60 and 0.80: -16.7 % and +12.5 %
    assert "| weighting:equal, change vs single-task | – | – | – | -2.1 ± 20.6 % (n=2) |" in seg_table
    assert curves["single_task:depth"][1.0] is None
    # per seed: (0.30 - 0.40) / 0.40 = -25 %, (0.30 - 0.20) / 0.20 = +50 %: mean +12.5 %
    assert "| weighting:equal, change vs single-task | – | – | – | +12.5 ± 53.0 % (n=2) |" in table
    doc = _results_and_doc(tmp_path, "scarce_labels", results, "# When\n")
    claims.run({"claim": "scarce_labels", "report": True, "results": str(tmp_path / "results"), "doc": str(doc),
                "figures": str(tmp_path)})
    assert "<!-- claims-scarce_labels-depth:begin -->" in doc.read_text()
    assert (tmp_path / "claims_scarce_depth.png").exists()


def test_unknown_claim_names_the_near_match():
    with pytest.raises(ValueError, match="Did you mean 'scarce_labels'"):
        claims.run({"claim": "scarce_label", "report": True})


# ---------------------------------------------------------------- overfitting
def test_overfit_runs_cover_every_arm_size_and_seed():
    runs = claims.overfit_runs([0, 1])
    assert len(runs) == 2 * len(claims.OVERFIT_SIZES) * len(claims.OVERFIT_ARMS)
    assert len({r[0] for r in runs}) == len(runs) and "weighting-equal__n100__seed1" in {r[0] for r in runs}


def test_one_overfit_smoke_run_reports_training_and_validation_metrics(tmp_path):
    validation = claims.scarce_validation("smoke")
    result = claims.run_overfit("weighting:equal", 12, 0, "smoke", validation, models_root=str(tmp_path))
    assert result["recipe"]["data"]["num_examples"] == 12 and result["num_train"] == 12
    assert set(result["metrics_train"]) == set(result["metrics"]) == {"segmentation", "depth", "detection", "scene"}
    from mtlzoo.bench import methods

    smoke = methods.BUDGETS["smoke"]  # the same steps whatever the training-set size
    assert result["final_logs"] and result["epochs"] == smoke["epochs"]
    assert "--claim overfitting --seeds 0 --budget smoke" in result["command"]


def test_overfit_table_gives_the_train_validation_gap_per_arm():
    def fake(arm, seed, train, val):
        task = "depth"
        return {"format": claims.FORMAT, "claim": "overfitting", "arm": arm, "num_train": 100, "seed": seed,
                "metrics": {task: {"abs_rel": val}}, "metrics_train": {task: {"abs_rel": train}}}

    table = claims.overfit_table([fake("single_task:depth", 0, 0.10, 0.30), fake("single_task:depth", 1, 0.10, 0.20),
                                  fake("weighting:equal", 0, 0.20, 0.25)])
    row = next(line for line in table.splitlines() if line.startswith("| depth (abs_rel) | 100 |"))
    # abs_rel is better lower: the gap is validation − train, positive when the model is better on its training scenes
    assert "0.100 ± 0.000 / 0.250 ± 0.071 / 0.150 ± 0.071 (n=2)" in row
    assert "0.200 ± 0.000 / 0.250 ± 0.000 / 0.050 ± 0.000 (n=1)" in row


def test_mtlzoo_bench_claims_runs_from_the_cli(tmp_path, capsys):
    import argparse

    from mtlzoo.cli.bench import cmd_bench

    folder = tmp_path / "results" / "relatedness"
    folder.mkdir(parents=True)
    (folder / "a.json").write_text(json.dumps(_fake("mmoe", 1.0, 0, {"y1": 0.5, "y2": 0.7})))
    args = argparse.Namespace(name="claims", options=["report=true", f"results={tmp_path / 'results'}",
                                                      f"doc={tmp_path / 'when.md'}", f"figures={tmp_path}", "seeds=0"])
    assert cmd_bench(args) == 0
    assert "| mmoe | 0.500 ± 0.000 (n=1) / 0.700 ± 0.000 (n=1) |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="seeds must be one or more integers"):
        claims.run({"claim": "intruder", "seeds": "0,x", "report": True, "results": str(tmp_path)})


def test_unequal_data_table_compares_every_task_with_the_full_data_single_task_model(tmp_path):
    from mtlzoo.bench import claim_unequal, methods

    folder = tmp_path / "methods" / "standard"
    folder.mkdir(parents=True)
    for task, metric, value in (("segmentation", "miou", 0.5), ("depth", "abs_rel", 0.2), ("scene", "map", 0.4)):
        (folder / f"single_task-{task}__seed0.json").write_text(json.dumps(
            {"format": methods.FORMAT, "kind": "single_task", "configuration": f"single_task:{task}", "seed": 0,
             "metrics": {task: {metric: value}}}))
    higher = {"segmentation": {"miou": True}, "depth": {"abs_rel": False}, "scene": {"map": True}}
    results = [{"task": "depth", "fraction": 0.1, "seed": 0, "arm": "weighting:equal", "higher_is_better": higher,
                "metrics": {"segmentation": {"miou": 0.45}, "depth": {"abs_rel": 0.3}, "scene": {"map": 0.44}}},
               {"task": "depth", "fraction": 0.1, "seed": 0, "arm": "single_task:depth", "higher_is_better": higher,
                "metrics": {"depth": {"abs_rel": 0.4}}},
               {"task": "depth", "fraction": 0.25, "seed": 0, "arm": "weighting:equal", "metrics": {}}]
    text = claim_unequal.table(results, "depth", methods_results=str(tmp_path / "methods"))
    # mIoU 0.45 vs 0.5: 10 % worse; abs_rel 0.3 vs 0.2: 50 % worse; mAP 0.44 vs 0.4: 10 % better
    assert "| weighting:equal | +10.0 ± 0.0 (n=1) | +50.0 ± 0.0 (n=1) | -10.0 ± 0.0 (n=1) |" in text
    assert "| single_task:depth | – | +100.0 ± 0.0 (n=1) | – |" in text
    assert "weighting:equal: segmentation +10.0 %, depth +50.0 %, scene -10.0 % (n=1)" in claim_unequal.finding(
        results, "depth", methods_results=str(tmp_path / "methods"))
    assert claim_unequal.plot(results, "depth", str(tmp_path / "u.png"), methods_results=str(tmp_path / "methods"))
    assert (tmp_path / "u.png").stat().st_size > 1000


def test_overfit_report_draws_the_gap_against_the_training_set_size(tmp_path):
    def fake(arm, n, seed, train, val):
        return {"format": claims.FORMAT, "claim": "overfitting", "arm": arm, "num_train": n, "seed": seed,
                "metrics": {"depth": {"abs_rel": val}}, "metrics_train": {"depth": {"abs_rel": train}}}

    results = [fake(a, n, 0, 0.1, 0.3) for a in ("single_task:depth", "weighting:equal") for n in (100, 300)]
    doc = _results_and_doc(tmp_path, "overfitting", results, "# When\n")
    claims.run({"claim": "overfitting", "report": True, "results": str(tmp_path / "results"), "doc": str(doc),
                "figures": str(tmp_path)})
    assert (tmp_path / "claims_overfitting.png").stat().st_size > 1000
    assert "(claims_overfitting.png)" in doc.read_text()
    finding = json.loads((tmp_path / "findings.json").read_text())["overfitting"]["finding"]
    assert "depth abs_rel gap +0.200 single-task vs +0.200 multi-task (n=1)" in finding
