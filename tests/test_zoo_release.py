"""`mtlzoo.bench.zoo_release`: baselines files and the spread over seeds from the methods benchmark's zoo budget."""

import json

import pytest

from mtlzoo.bench import zoo_release
from mtlzoo.evaluation import read_baselines

HIGHER = {"segmentation": {"miou": True}, "depth": {"abs_rel": False}}


def _result(configuration, seed, miou, abs_rel):
    kind = configuration.split(":", 1)[0]
    tasks = {"segmentation": {"miou": miou}, "depth": {"abs_rel": abs_rel}}
    if kind == "single_task":
        task = configuration.split(":", 1)[1]
        tasks = {task: tasks[task]}
    return {"format": "mtlzoo-bench-methods/1", "configuration": configuration, "kind": kind, "seed": seed,
            "metrics": tasks, "higher_is_better": {t: HIGHER[t] for t in tasks}, "params": 1000, "flops": 2000,
            "inference_ms": 40.0, "train_step_ms": 300.0, "train_s": 120.0, "epochs": 10, "stopped_reason": None,
            "steps": 630, "validation_examples": 100, "settings": {"batch_size": 16, "num_train": 1000},
            "recipe": {"name": "driving_perception_lite", "data": {"name": "synthetic_driving"}}}


def _results():
    out = []
    for seed, (mtl_miou, mtl_rel) in enumerate([(0.66, 0.10), (0.60, 0.12)]):
        out += [_result("single_task:segmentation", seed, 0.60, 0.0), _result("single_task:depth", seed, 0.0, 0.10),
                _result("aggregator:aligned_mtl", seed, mtl_miou, mtl_rel)]
    out.append(_result("aggregator:aligned_mtl", 2, 0.5, 0.1))  # seed 2 has no baselines yet: left out
    return out


def test_seeds_with_baselines_need_every_task():
    assert zoo_release.seeds_with_baselines(_results(), "aggregator:aligned_mtl") == [0, 1]


def test_baselines_file_is_one_seeds_single_task_results_in_the_evaluate_format(tmp_path):
    data = zoo_release.baselines_file(_results(), "aggregator:aligned_mtl", 1)
    path = tmp_path / "baselines.json"
    path.write_text(json.dumps(data))
    stored, folder = read_baselines(str(path))
    assert stored["tasks"]["segmentation"]["metrics"] == {"miou": 0.60} and stored["seed"] == 1
    assert stored["tasks"]["depth"]["model"] == "../single_task-depth__seed1.keras" and folder == str(tmp_path)
    assert stored["tasks"]["depth"]["cost"]["step_time_s"] == pytest.approx(0.04)
    assert stored["higher_is_better"] == HIGHER
    with pytest.raises(ValueError, match="No zoo-budget result of 'aggregator:mgda' at seed 0; train it with"):
        zoo_release.baselines_file(_results(), "aggregator:mgda", 0)
    with pytest.raises(ValueError, match="Seed 2 has no zoo-budget single-task result for segmentation, depth"):
        zoo_release.baselines_file(_results(), "aggregator:aligned_mtl", 2)


def test_over_seeds_tabulates_metrics_and_delta_m_per_seed():
    text = zoo_release.over_seeds("aggregator:aligned_mtl", _results())
    # seed 0: mIoU +10 % (better: -10), abs rel 0 -> Δm -5 %; seed 1: mIoU 0, abs rel +20 % worse -> Δm +10 %
    assert "| segmentation | miou ↑ | 0.630 ± 0.042 | 0.600 ± 0.000 |" in text
    assert "| depth | abs_rel ↓ | 0.110 ± 0.014 | 0.100 ± 0.000 |" in text
    assert "Δm over seeds 0, 1: **+2.50 ± 10.61%** (mean ± std; below 0 in 1 of 2)" in text
    assert "seed 0: -5.00% (segmentation -10.0%, depth +0.0%)" in text
    assert "No seed has both" in zoo_release.over_seeds("aggregator:mgda", _results())
