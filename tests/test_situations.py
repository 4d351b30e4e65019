"""`mtlzoo.diagnostics.situations` and the claims' findings it quotes (`mtlzoo.bench.claims_findings`)."""

import json

import numpy as np

from mtlzoo.bench import claims, claims_findings
from mtlzoo.diagnostics import situations
from mtlzoo.recipe import get_recipe

NAN = float("nan")


def _report(cosine, affinity=None, history=None, tasks=("a", "b", "c")):
    return {"tasks": list(tasks), "gradient": {"cosine": np.array(cosine, float)},
            "affinity": {"matrix": None if affinity is None else np.array(affinity, float)}, "history": history or {}}


def _findings(tmp_path, **entries):
    path = tmp_path / "findings.json"
    path.write_text(json.dumps({k: {"finding": v, "seeds": [0, 1, 2], "section": f"when (claims-{k})"}
                                for k, v in entries.items()}))
    return str(path)


def test_a_task_whose_gradient_opposes_the_others_is_named_with_the_measured_finding(tmp_path):
    cos = [[NAN, 0.3, -0.2], [NAN, NAN, -0.3], [NAN, NAN, NAN]]  # the monitor fills the upper triangle
    aff = [[0, 0.1, 0.0], [0.1, 0, 0.0], [-0.2, -0.1, 0]]
    found = situations(_report(cos, aff), findings=_findings(tmp_path, intruder="intruder hurt the others by 9 %"))
    assert [s["claim"] for s in found] == ["intruder"]
    assert "c's gradient has a mean cosine of -0.25" in found[0]["evidence"]
    assert "raise their losses (mean affinity -0.15)" in found[0]["evidence"]
    assert found[0]["measured"].startswith("intruder hurt the others by 9 %") and "seeds 0, 1, 2" in found[0]["measured"]


def test_the_one_task_whose_gradient_does_not_agree_with_itself_is_named(tmp_path):
    cos = [[NAN, 0.3, 0.2], [NAN, NAN, 0.1], [NAN, NAN, NAN]]  # no opposing gradient
    report = _report(cos)
    report["gradient"]["coherence"] = {"a": 0.3, "b": 0.12, "c": 0.01}
    found = situations(report, findings=_findings(tmp_path, intruder="the intruder was found in 2 of 3 seeds"))
    assert [s["claim"] for s in found] == ["intruder"]
    assert found[0]["evidence"].startswith("c's gradient barely agrees with itself from batch to batch (coherence "
                                           "+0.01, the other tasks' +0.12 or more)")
    report["gradient"]["coherence"] = {"a": 0.3, "b": 0.02, "c": 0.01}  # two such tasks: nothing singled out
    assert situations(report, findings=_findings(tmp_path)) == []
    report["gradient"]["coherence"] = {"a": 0.3, "b": NAN, "c": 0.01}  # too few measured
    assert situations(report, findings=_findings(tmp_path)) == []


def test_a_claim_measured_at_another_budget_is_quoted_after_the_standard_finding(tmp_path):
    cos = [[NAN, 0.3, -0.2], [NAN, NAN, -0.3], [NAN, NAN, NAN]]
    found = situations(_report(cos), findings=_findings(tmp_path, intruder="standard: no harm",
                                                         intruder_zoo="zoo: found in 3 of 3"))
    assert found[0]["measured"].startswith("standard: no harm (seeds 0, 1, 2; when (claims-intruder)) zoo: found in "
                                           "3 of 3 (seeds 0, 1, 2; when (claims-intruder_zoo))")


def test_two_incoherent_tasks_among_five_are_named_together(tmp_path):
    nan5 = np.full((5, 5), NAN)
    nan5[np.triu_indices(5, 1)] = 0.2
    report = {"tasks": list("abcde"), "gradient": {"cosine": nan5.tolist(),
                                                   "coherence": {"a": 0.3, "b": 0.2, "c": 0.25, "d": 0.01, "e": -0.02}}}
    found = situations(report, findings=_findings(tmp_path))
    assert [s["claim"] for s in found] == ["intruder"]
    assert found[0]["evidence"].startswith("e and d's gradients barely agree with themselves from batch to batch "
                                           "(coherence -0.02, +0.01, the other tasks' +0.20 or more)")
    report["gradient"]["coherence"].update(c=0.0, b=0.03)  # four of five low: nothing to stand out from
    assert situations(report, findings=_findings(tmp_path)) == []
    report["gradient"]["coherence"] = {}
    cos = nan5.copy()
    cos[:, 4], cos[3, :], cos[:3, 3] = -0.3, -0.1, -0.1  # d and e oppose the others, a, b and c agree
    report["gradient"]["cosine"] = cos.tolist()
    found = situations(report, findings=_findings(tmp_path))
    assert found[0]["evidence"].startswith("e and d's gradients have mean cosines of -0.25, -0.10 with the other "
                                           "tasks'")


def test_agreeing_tasks_and_equal_rates_match_nothing(tmp_path):
    cos = [[NAN, 0.3, 0.2], [NAN, NAN, 0.1], [NAN, NAN, NAN]]
    history = {"a_loss": [2.0, 1.0], "b_loss": [4.0, 2.4], "c_loss": [1.0, 0.6]}
    assert situations(_report(cos, history=history), findings=_findings(tmp_path)) == []


def test_unequal_training_rates_name_the_slow_task(tmp_path):
    cos = [[NAN, 0.3, 0.2], [NAN, NAN, 0.1], [NAN, NAN, NAN]]
    history = {"a_loss": [2.0, 0.4], "b_loss": [4.0, 3.6], "c_loss": [1.0, 0.6]}
    found = situations(_report(cos, history=history), findings=str(tmp_path / "none.json"))
    assert [s["claim"] for s in found] == ["difficulty"]
    assert "b's loss fell to 0.90" in found[0]["evidence"] and "a's to 0.20" in found[0]["evidence"]
    assert "(4.5x)" in found[0]["evidence"] and found[0]["measured"].startswith("not measured yet")


def test_the_recipe_names_scarce_unequal_small_data_and_a_narrow_trunk(tmp_path):
    recipe = get_recipe("driving_perception_lite", **{"data.label_fractions": {"depth": 0.1},
                                                        "data.num_examples": 300, "backbone_args.alpha": 0.5})
    found = situations(_report([[NAN] * 4] * 4, tasks=recipe.tasks), recipe,
                       findings=_findings(tmp_path, **{"scarce_labels-depth": "depth gained 40 %"}))
    by = {s["claim"]: s for s in found}
    assert set(by) == {"scarce_labels", "unequal_data", "overfitting", "capacity"}
    assert "depth is labelled on 10% of the examples" in by["scarce_labels"]["evidence"]
    assert "differ 10x" in by["unequal_data"]["evidence"]
    assert by["scarce_labels"]["measured"].startswith("depth gained 40 %")
    assert by["unequal_data"]["measured"].startswith("not measured yet")
    assert "300 examples" in by["overfitting"]["evidence"] and "width 0.5" in by["capacity"]["evidence"]
    assert by["capacity"]["measured"].startswith("not measured yet")


def test_a_claim_report_records_its_finding_beside_a_non_default_doc(tmp_path):
    folder = tmp_path / "results" / "relatedness"
    folder.mkdir(parents=True)
    for seed, mae in ((0, 0.8), (1, 1.2)):
        for arm, value in (("single_task:y1", 1.0), ("single_task:y2", 1.0), ("shared_bottom", mae), ("mmoe", 0.5)):
            task = arm[-2:] if arm.startswith("single") else None
            metrics = {task: {"mae": value}} if task else {"y1": {"mae": value}, "y2": {"mae": value}}
            (folder / f"{arm.replace(':', '-')}_{seed}.json").write_text(json.dumps(
                {"format": claims.FORMAT, "arm": arm, "rho": 1.0, "seed": seed, "params": 1, "metrics": metrics}))
    doc = tmp_path / "when.md"
    claims.run({"report": True, "results": str(tmp_path / "results"), "doc": str(doc), "figures": str(tmp_path)})
    recorded = json.loads((tmp_path / "findings.json").read_text())["relatedness"]
    # shared-bottom: -20 % and +20 % against the single-task models; MMoE -50 % twice
    assert "shared-bottom ρ = 1: +0.0 ± 28.3 % (n=2)" in recorded["finding"]
    assert "MMoE ρ = 1: -50.0 ± 0.0 % (n=2)" in recorded["finding"] and recorded["seeds"] == [0, 1]
    assert claims_findings.findings_path({"doc": str(doc), "budget": "standard"}) == str(tmp_path / "findings.json")
    assert claims_findings.findings_path({"doc": "docs/when-mtl-helps.md", "budget": "standard"}) == \
        claims_findings.PACKAGE_FINDINGS
    assert claims_findings.findings_path({"doc": "docs/when-mtl-helps.md", "budget": "zoo"}) == \
        claims_findings.PACKAGE_FINDINGS
    assert claims_findings.findings_path({"doc": "docs/when-mtl-helps.md", "budget": "smoke"}) != \
        claims_findings.PACKAGE_FINDINGS
    claims_findings.record({"doc": str(doc), "budget": "zoo"}, "relatedness", "at the zoo budget", [{"seed": 2}])
    recorded = json.loads((tmp_path / "findings.json").read_text())
    assert recorded["relatedness_zoo"]["finding"] == "at the zoo budget" and recorded["relatedness"]["seeds"] == [0, 1]
    assert recorded["relatedness_zoo"]["section"].endswith("(claims-relatedness_zoo)")


def test_the_shipped_findings_are_well_formed():
    shipped = claims_findings.load()
    assert shipped, "mtlzoo/diagnostics/findings.json is missing: run python -m mtlzoo.bench.claims --report"
    for claim, entry in shipped.items():
        name = claim.split("-")[0].removesuffix("_zoo")  # a zoo-budget finding is keyed claim_zoo
        assert name in (*claims.CLAIMS, "unequal_data") and entry["finding"] and entry["seeds"]
        assert "(n=" in entry["finding"] and any(c.isdigit() for c in entry["finding"]), claim


def test_diagnose_quotes_the_matched_situation_in_its_reading(tmp_path):
    from mtlzoo.diagnostics import diagnose

    report = diagnose("tabular_demo", str(tmp_path / "d"), epochs=1, steps=3, overrides={"data.num_examples": 200})
    assert "overfitting" in [s["claim"] for s in report["situations"]]
    text = (tmp_path / "d" / "report.txt").read_text()
    assert "looks like the 'overfitting' situation" in text and "the training set has 200 examples." in text
    saved = json.loads((tmp_path / "d" / "report.json").read_text())
    assert saved["situations"] == report["situations"]
