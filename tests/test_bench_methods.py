"""`mtlzoo bench methods`: the configurations follow the registries; results are written once, skipped on rerun,
and tabulated. The benchmark itself is a command, not a test: this runs its machinery on the smoke budget."""

import json
import math
import os

import pytest

import mtlzoo.aggregators
import mtlzoo.sharing
import mtlzoo.weighting
from mtlzoo.bench import methods
from mtlzoo.registry import AGGREGATORS, SHARING
from mtlzoo.task_spec import accepted_args

TASKS = ["segmentation", "depth", "detection", "scene"]
NAMES = [c.name for c in methods.configurations(TASKS)]


# ---------------------------------------------------------------------------- enumeration
@pytest.mark.parametrize("name", mtlzoo.weighting.list())
def test_every_registered_weighting_is_a_configuration(name):
    assert f"weighting:{name}" in NAMES


@pytest.mark.parametrize("name", mtlzoo.aggregators.list())
def test_every_registered_aggregator_is_a_configuration(name):
    assert f"aggregator:{name}" in NAMES
    # Weight-based aggregators also run at the representation level (the "-UB" variants).
    assert (f"aggregator:{name}_ub" in NAMES) == bool(getattr(AGGREGATORS.get(name), "weight_based", False))


@pytest.mark.parametrize("name", SHARING.list())
def test_every_registered_sharing_mode_is_a_configuration(name):
    assert f"sharing:{name}" in NAMES
    # A mode that can start from single-task models also runs that way.
    assert (f"sharing:{name}_init" in NAMES) == ("init_from" in accepted_args(SHARING.get(name)))


def test_run_order_and_overrides():
    configs = methods.configurations(TASKS)
    assert NAMES[:6] == [f"single_task:{t}" for t in TASKS] + ["sharing:hard", "weighting:equal"]
    kinds = [c.kind for c in configs]
    assert kinds.index("aggregator") > max(i for i, k in enumerate(kinds) if k in ("sharing", "weighting"))
    assert len(NAMES) == len(set(NAMES))
    by_name = {c.name: c for c in configs}
    assert by_name["aggregator:mgda_ub"].overrides == {"aggregator": "mgda", "aggregator_args": {"representation": True}}
    assert by_name["single_task:depth"].overrides["tasks"] == ["depth"]
    # Every configuration is a valid recipe (checked without building a model).
    base = mtlzoo.get_recipe("driving_perception_lite")
    for c in configs:
        base.override(**c.overrides)


def test_select_globs_bare_names_and_baselines():
    configs = methods.configurations(["seg", "depth"])
    names = [c.name for c in methods.select(configs, "mgda*,weighting:equal")]
    assert names == ["single_task:seg", "single_task:depth", "weighting:equal", "aggregator:mgda",
                     "aggregator:mgda_ub"]
    assert [c.name for c in methods.select(configs, ["single_task:seg"])] == ["single_task:seg"]
    with pytest.raises(ValueError, match="'mgdb' matches no configuration.*mgda"):
        methods.select(configs, "mgdb")


def test_options_accept_cli_values():
    opts = methods.options({"seeds": "0,2", "budget": "smoke", "methods": "pcgrad"})
    assert opts["seeds"] == [0, 2]
    assert methods.options({"seeds": 3})["seeds"] == [3]
    with pytest.raises(ValueError, match="seeds"):
        methods.options({"seeds": "0,x"})
    with pytest.raises(ValueError, match="no option 'seed'.*'seeds'"):
        methods.options({"seed": 1})


# ---------------------------------------------------------------------------- Δm and the table, on made-up results
HIGHER = {"seg": {"miou": True}, "depth": {"abs_err": False}}


def _result(name, seed, metrics, step_ms=100.0):
    kind = name.split(":")[0]
    return {"format": methods.FORMAT, "configuration": name, "kind": kind, "seed": seed, "metrics": metrics,
            "higher_is_better": {t: HIGHER[t] for t in metrics}, "train_step_ms": step_ms, "params": 2_000_000,
            "wall_s": 10.0}


def _made_up_results():
    return [
        _result("single_task:seg", 0, {"seg": {"miou": 0.5}}), _result("single_task:depth", 0, {"depth": {"abs_err": 2.0}}),
        _result("single_task:seg", 1, {"seg": {"miou": 0.4}}), _result("single_task:depth", 1, {"depth": {"abs_err": 2.0}}),
        _result("weighting:equal", 0, {"seg": {"miou": 0.5}, "depth": {"abs_err": 2.0}}, step_ms=100.0),
        # seed 0: mIoU +10% (better), depth equal -> Δm = -5; seed 1: mIoU equal, abs err +10% (worse) -> Δm = +5.
        _result("aggregator:pcgrad", 0, {"seg": {"miou": 0.55}, "depth": {"abs_err": 2.0}}, step_ms=140.0),
        _result("aggregator:pcgrad", 1, {"seg": {"miou": 0.4}, "depth": {"abs_err": 2.2}}, step_ms=160.0),
    ]


def test_delta_m_against_baselines_of_the_same_seed():
    value, per_task = methods.delta_m_against({"seg": {"miou": 0.55}, "depth": {"abs_err": 2.0}}, HIGHER,
                                              {"seg": {"miou": 0.5}, "depth": {"abs_err": 2.0}})
    assert value == pytest.approx(-5.0) and per_task == pytest.approx({"seg": -10.0, "depth": 0.0})
    assert methods.delta_m_against({"seg": {"miou": 0.5}, "depth": {"abs_err": 2.0}}, HIGHER,
                                   {"seg": {"miou": 0.5}}) == (None, {})  # a missing baseline: no Δm


def test_summary_and_table_over_seeds():
    order = ["single_task:seg", "single_task:depth", "weighting:equal", "aggregator:pcgrad"]
    rows = methods.summarize(_made_up_results(), order)
    assert [r["configuration"] for r in rows] == order
    pcgrad = rows[-1]
    assert pcgrad["seeds"] == [0, 1]
    mean, std, n = pcgrad["delta_m"]
    assert (mean, n) == (pytest.approx(0.0), 2) and std == pytest.approx(math.sqrt(50.0))
    assert (pcgrad["delta_m_below_0"], pcgrad["delta_m_seeds"]) == (1, 2)
    assert pcgrad["vs_reference"] == pytest.approx(1.5)
    table = methods.markdown_table(rows).splitlines()
    assert table[0].startswith("| configuration | seeds | Δm % ↓ | Δm < 0 | train ms/step | × equal | params")
    assert table[0].endswith("| Δm % without detection ↓ |")
    assert table[-1].endswith("| 0.00 ± 7.07 |")  # no detection in these results: the same Δm
    assert len(table) == 2 + len(order)
    assert table[-1].startswith("| aggregator:pcgrad | 2 | 0.00 ± 7.07 | 1/2 | 150 ± 14 | 1.50 | 2.00M | 0.475 ± 0.106")
    assert table[2].startswith("| single_task:seg | 2 | – | – |")


def test_section_is_written_between_markers(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nbefore\n")
    methods.write_section(str(doc), "first table")
    methods.write_section(str(doc), "second table")
    text = doc.read_text()
    assert text.startswith("# Benchmarks\n\nbefore\n\n## Methods over seeds")
    assert text.count(methods.BEGIN) == 1 and "second table" in text and "first table" not in text
    methods.write_section(str(doc), "zoo table", "zoo")  # another budget: a section of its own, the first one kept
    text = doc.read_text()
    assert "second table" in text and "<!-- methods-table-zoo:begin -->\nzoo table\n<!-- methods-table-zoo:end -->" in text
    assert "## Methods over seeds (`mtlzoo bench methods`, budget `zoo`)" in text


def test_the_zoo_budget_is_the_zoo_models_and_keeps_every_model_and_figure_apart():
    zoo = methods.BUDGETS["zoo"]
    assert (zoo["image_size"], zoo["num_train"], zoo["epochs"], zoo["batch_size"]) == ((128, 256), 1000, 10, 16)
    assert zoo["save_models"] and "overrides" not in zoo  # the recipe's own training settings
    opts = methods.options({"budget": "zoo"})
    assert opts["figure"].endswith("methods_delta_m_zoo.png")
    assert methods.options({"budget": "zoo", "figure": "x.png"})["figure"] == "x.png"
    assert methods.single_task_model_path(opts, "aggregator:aligned_mtl", 1).endswith(
        "zoo/aggregator-aligned_mtl__seed1.keras")


# ---------------------------------------------------------------------------- the machinery, end to end
@pytest.mark.slow
def test_smoke_run_writes_skips_and_reports(tmp_path):
    options = {"budget": "smoke", "seeds": "0", "methods": "weighting:equal,sharing:cross_stitch_init",
               "results": str(tmp_path / "results"), "doc": str(tmp_path / "benchmarks.md"),
               "figure": str(tmp_path / "dm.png"), "models": str(tmp_path / "models"),
               "overrides": {"tasks": ["depth", "scene"]}}  # two cheap heads keep the test short
    out = methods.run(options)
    assert out["failures"] == []
    folder = tmp_path / "results" / "smoke"
    files = sorted(p.name for p in folder.glob("*.json"))
    assert files == ["sharing-cross_stitch_init__seed0.json", "single_task-depth__seed0.json",
                     "single_task-scene__seed0.json", "weighting-equal__seed0.json"]
    # The single-task runs keep their models; the `_init` configuration starts its columns from them.
    models = sorted(p.name for p in (tmp_path / "models" / "smoke").glob("*.keras"))
    assert models == ["single_task-depth__seed0.keras", "single_task-scene__seed0.keras"]
    init = json.loads((folder / "sharing-cross_stitch_init__seed0.json").read_text())
    assert init["recipe"]["sharing_args"]["init_from"] == {
        t: str(tmp_path / "models" / "smoke" / f"single_task-{t}__seed0.keras") for t in ("depth", "scene")}
    assert init["recipe"]["sharing_args"]["lr_multiplier"] == methods.INIT_LR_MULTIPLIER
    assert math.isfinite(init["delta_m"])
    equal = json.loads((folder / "weighting-equal__seed0.json").read_text())
    values = [v for task in equal["metrics"].values() for v in task.values()]
    assert set(equal["metrics"]) == {"depth", "scene"} and all(math.isfinite(v) for v in values)
    assert math.isfinite(equal["delta_m"]) and equal["train_step_ms"] > 0 and equal["params"] > 0
    assert equal["command"].endswith("--methods weighting:equal --no-report --results " + str(tmp_path / "results")
                                     + " --override 'tasks=[\"depth\", \"scene\"]'")
    assert {"tensorflow", "keras", "mtlzoo"} <= set(equal["versions"])

    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")}
    again = methods.run(options)  # nothing left to train: the files stay as they are
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.json")} == stamps
    rows = {r["configuration"]: r for r in again["rows"]}
    assert set(rows) == {"single_task:depth", "single_task:scene", "weighting:equal", "sharing:cross_stitch_init"}
    assert rows["weighting:equal"]["delta_m"][0] == pytest.approx(equal["delta_m"])
    doc = (tmp_path / "benchmarks.md").read_text()
    for name in rows:
        assert f"| {name} | 1 |" in doc  # one line per configuration, with its number of seeds
    assert os.path.getsize(tmp_path / "dm.png") > 1000
