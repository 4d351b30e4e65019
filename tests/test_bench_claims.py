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
    folder = tmp_path / "results" / "relatedness"
    folder.mkdir(parents=True)
    for i, r in enumerate(results):
        (folder / f"r{i}.json").write_text(json.dumps(r))
    doc = tmp_path / "when.md"
    doc.write_text("# When\n\nintro\n")
    for _ in range(2):  # the section is replaced, not appended twice
        claims.run({"report": True, "results": str(tmp_path / "results"), "doc": str(doc), "figures": str(tmp_path)})
    text = doc.read_text()
    assert text.startswith("# When\n\nintro") and text.count(claims.BEGIN.format("relatedness")) == 1
    assert (tmp_path / "claims_relatedness.png").stat().st_size > 1000
