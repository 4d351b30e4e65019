"""Task grouping: the `branched` sharing mode, the affinity-based selection, `mtlzoo group` and its Δm benchmark."""

import itertools
import json

import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
from mtlzoo import cli
from mtlzoo.diagnostics.grouping import best_groupings, choose_grouping, group_recipe, partition_score
from mtlzoo.testing import TINY_IMAGE, random_inputs, random_labels, predict_eager


PAIRS = [["segmentation", "depth"], ["detection", "scene"]]
BRANCH = ["stage2", "stage3", "neck"]


def branched(groups, branch_stage=2, **overrides):
    return mtlzoo.build("driving_perception_lite", sharing="branched",
                        sharing_args={"groups": groups, "branch_stage": branch_stage}, **{**TINY_IMAGE, **overrides})


def count(layers):
    return sum(layer.count_params() for layer in layers)


def count_trainable(layers):
    return sum(int(np.prod(v.shape)) for layer in layers for v in layer.trainable_variables)


@pytest.fixture(scope="module")
def pair_model():
    return branched(PAIRS)


# ---------------------------------------------------------------- the branched sharing mode
def test_groups_share_the_stem_and_get_one_branch_each(pair_model):
    model, hard = pair_model, mtlzoo.build("driving_perception_lite", **TINY_IMAGE)
    names = {layer.name for layer in model.layers}
    assert {"backbone_stage0", "backbone_stage1"} <= names and "backbone_stage2" not in names
    branch = {g: [model.get_layer(f"g{g}_{part}") for part in BRANCH] for g in (0, 1)}
    assert count(branch[0]) == count(branch[1]) > 0
    # The stem once, one branch (stages 2-3 and neck) per group: exactly one branch more than hard sharing.
    assert count(model.get_layer(f"backbone_stage{i}") for i in (0, 1)) == \
        count(hard.get_layer(f"backbone_stage{i}") for i in (0, 1))
    assert model.count_params() == hard.count_params() + count(branch[1])
    # Branches of two tasks are shared (within their group); only the heads are task layers.
    shared, _ = model.variable_groups()
    assert {id(v) for g in (0, 1) for layer in branch[g] for v in layer.trainable_variables} <= {id(v) for v in shared}
    assert all(not name.startswith(("g0_", "g1_", "backbone_")) for ls in model.task_layers.values() for name in ls)

    x, y = random_inputs(model, 2), random_labels(model, 2)
    with tf.GradientTape() as tape:
        loss = model.compute_task_losses(y, model(x, training=True), None)["segmentation"]
    stem = [v for i in (0, 1) for v in model.get_layer(f"backbone_stage{i}").trainable_variables]
    own = [v for layer in branch[0] for v in layer.trainable_variables]
    other = [v for layer in branch[1] for v in layer.trainable_variables]
    grads = tape.gradient(loss, stem + own + other)
    norm = lambda gs: sum(0.0 if g is None else float(tf.reduce_sum(tf.abs(g))) for g in gs)  # noqa: E731
    assert norm(grads[:len(stem)]) > 0 and norm(grads[len(stem):len(stem) + len(own)]) > 0
    assert norm(grads[len(stem) + len(own):]) == 0.0  # segmentation's loss never reaches group 2's branch


def test_a_group_of_one_owns_its_branch_and_stage_0_splits_the_whole_trunk():
    model = branched([["segmentation", "depth"], ["detection"], ["scene"]], branch_stage=0)
    assert not [layer.name for layer in model.layers if layer.name.startswith("backbone_")]
    for g, task in ((1, "detection"), (2, "scene")):
        assert {f"g{g}_stage{i}" for i in range(4)} | {f"g{g}_neck"} <= set(model.task_layers[task])
    assert not any(name.startswith("g0_") for name in model.task_layers["segmentation"])
    summary = model.parameter_summary()
    assert summary["shared"] == count_trainable(model.get_layer(f"g0_{p}") for p in ["stage0", "stage1"] + BRANCH)


def test_vector_backbone_defaults_to_one_trunk_per_task_and_groups_merge_them():
    model = mtlzoo.build("tabular_demo", sharing="branched")
    assert {"g0_stage0", "g1_stage0"} <= {layer.name for layer in model.layers}
    assert model.parameter_summary()["shared"] == 0 and "g1_stage0" in model.task_layers["target"]
    one = mtlzoo.build("tabular_demo", sharing="branched", sharing_args={"groups": [["target", "label"]]})
    assert one.parameter_summary()["shared"] == one.get_layer("g0_stage0").count_params() > 0


@pytest.mark.parametrize("args,message", [
    ({"groups": [["label", "taget"]]}, "not a task of this model. Did you mean 'target'?"),
    ({"groups": [["label", "target"], ["target"]]}, "task 'target' is in group 0 and in group 1"),
    ({"groups": [["label"]]}, "task(s) 'target' are in no group"),
    ({"groups": [["label", "target"], []]}, "group 1 is empty"),
    ({"groups": ["label", "target"]}, "group 0 must be a list of task names"),
    ({"groups": "label"}, "groups must be a non-empty list of lists"),
    ({"branch_stage": 1}, "branch_stage must be an integer in [0, 0] for this 1-stage backbone"),
    ({"branch_stage": True}, "branch_stage must be an integer in [0, 0]"),
])
def test_bad_groups_and_branch_stages_name_the_problem(args, message):
    with pytest.raises(ValueError) as error:
        mtlzoo.build("tabular_demo", sharing="branched", sharing_args=args, compile=False)
    assert message in str(error.value)


@pytest.mark.parametrize("stage", [5, -1])
def test_branch_stage_beyond_an_image_backbone(stage):
    with pytest.raises(ValueError, match=r"in \[0, 4\] for this 4-stage backbone .* branches only the neck"):
        branched(PAIRS, branch_stage=stage, compile=False)


@pytest.fixture(scope="module")
def calibrated_pair():
    """Two tasks, each on a branch of its own, with BatchNorm statistics calibrated on street scenes (a random
    network with initial statistics gives near-constant outputs, which would make the comparisons weak)."""
    from mtlzoo.data.synthetic_driving import render_scene

    model = branched([["depth"], ["scene"]], tasks=["depth", "scene"])
    scenes = np.stack([render_scene(7, i, (32, 64))["image"] for i in range(8)]).astype("float32")
    for _ in range(20):  # a training-mode pass moves the moving statistics (momentum 0.99)
        model(scenes, training=True)
    return model


def test_keras_round_trip(calibrated_pair, tmp_path):
    x = random_inputs(calibrated_pair, 2)
    before = predict_eager(calibrated_pair, x)
    calibrated_pair.save(tmp_path / "branched.keras")
    again = mtlzoo.load(tmp_path / "branched.keras")
    after = predict_eager(again, x)
    for t in calibrated_pair.task_names:
        np.testing.assert_allclose(after[t], before[t], rtol=1e-5, atol=1e-5)
    assert again.task_layers == calibrated_pair.task_layers
    assert again.parameter_summary() == calibrated_pair.parameter_summary()
    assert "g1_stage2" in again.task_layers["scene"]


def test_tflite_export_is_verified(calibrated_pair, tmp_path):
    from mtlzoo.data.synthetic_driving import render_scene
    from mtlzoo.edge import Runner
    from mtlzoo.export import export

    model = calibrated_pair
    images = np.stack([render_scene(1001, i, (32, 64))["image"] for i in range(2)]).astype("float32")
    result = export(model, tmp_path / "exported", formats=["tflite"], verify_data=images, postprocessed=False)
    assert result.passed and result.report["formats"]["tflite"]["passed"]
    runner = Runner(result.paths["tflite"])
    ref, outs = model(images, training=False), runner(images)
    for t in model.task_names:
        assert np.abs(outs[t] - np.asarray(ref[t])).max() <= 1e-4 * max(1.0, float(np.abs(ref[t]).max()))
    assert not runner.uses_flex()


# ---------------------------------------------------------------- the selection
def two_clusters():
    tasks = ["a", "b", "c", "d"]
    z = np.full((4, 4), -0.2)
    z[:2, :2] = z[2:, 2:] = 0.3
    z[0, 1] = 0.5  # unequal within a cluster: the score is not symmetric in the pair
    return z, tasks


def test_two_clear_clusters_are_found_at_k_2_and_chosen():
    z, tasks = two_clusters()
    groupings = best_groupings(z, tasks)
    assert [g.k for g in groupings] == [1, 2, 3, 4]
    assert groupings[0].groups == [tasks] and groupings[3].groups == [[t] for t in tasks]
    assert groupings[1].groups == [["a", "b"], ["c", "d"]]
    assert groupings[1].score == pytest.approx(0.5 + 0.3 + 0.3 + 0.3)
    assert groupings[1].received == pytest.approx({"a": 0.3, "b": 0.5, "c": 0.3, "d": 0.3})
    assert choose_grouping(groupings) is groupings[1]
    assert choose_grouping(groupings, k=3).k == 3
    assert [g.groups for g in best_groupings(z, tasks, method="greedy")][1] == [["a", "b"], ["c", "d"]]
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 4\]"):
        choose_grouping(groupings, k=5)


def test_scores_move_the_way_the_affinities_point():
    tasks = list("abcde")
    helping, hurting = np.full((5, 5), 0.1), np.full((5, 5), -0.1)
    up = [g.score for g in best_groupings(helping, tasks)]
    down = [g.score for g in best_groupings(hurting, tasks)]
    assert all(a >= b - 1e-12 for a, b in zip(up, up[1:])) and up[0] == pytest.approx(0.5)
    assert all(a <= b + 1e-12 for a, b in zip(down, down[1:])) and down[-1] == 0.0
    assert choose_grouping(best_groupings(helping, tasks)).k == 1  # a tie with k=2 goes to fewer groups
    assert choose_grouping(best_groupings(hurting, tasks)).k == 5


def test_exact_search_agrees_with_brute_force_and_nan_counts_as_zero():
    rng = np.random.default_rng(3)
    tasks = list("abcde")
    z = rng.normal(size=(5, 5))
    z[1, 3] = np.nan
    best = {}
    for labels in itertools.product(range(5), repeat=5):
        groups = [[t for t, lab in zip(tasks, labels) if lab == g] for g in sorted(set(labels))]
        score, _ = partition_score(np.nan_to_num(z), tasks, groups)
        best[len(groups)] = max(best.get(len(groups), -np.inf), score)
    for g in best_groupings(z, tasks):
        assert g.score == pytest.approx(best[g.k]) and partition_score(z, tasks, g.groups)[0] == pytest.approx(g.score)
    assert partition_score([[0, .2], [.1, 0]], ["a", "b"], [["a", "b"]], reduce="sum") == (pytest.approx(0.3),
                                                                                            {"a": 0.1, "b": 0.2})


def test_selection_errors():
    with pytest.raises(ValueError, match="must be T×T for the 3 tasks"):
        best_groupings(np.zeros((2, 2)), ["a", "b", "c"])
    with pytest.raises(ValueError, match="exact search covers at most 8 tasks"):
        best_groupings(np.zeros((9, 9)), list("abcdefghi"), method="exact")
    greedy = best_groupings(np.zeros((9, 9)), list("abcdefghi"))
    assert len(greedy) == 9 and greedy[0].method == "greedy" and greedy[0].groups == [list("abcdefghi")]


def test_group_recipe_writes_branched_sharing(tmp_path):
    recipe = group_recipe("tabular_demo", [["target"], ["label"]])
    assert recipe.sharing == "branched" and recipe.name == "tabular_demo_grouped"
    assert recipe.sharing_args == {"groups": [["target"], ["label"]], "branch_stage": 0}
    with pytest.raises(ValueError, match="Did you mean 'label'"):
        group_recipe("tabular_demo", [["target", "lable"]])


# ---------------------------------------------------------------- the command and the benchmark
TINY_CLI = ["tasks=[depth, scene]", "backbone=tiny", "backbone_args={width: 4}", "neck_channels=16",
            "input_shape=[32, 64, 3]", "training.batch_size=2"]


def test_group_command_writes_a_recipe_that_builds_and_trains(tmp_path, capsys):
    out = tmp_path / "grouped.yaml"
    rc = cli.main(["group", "driving_perception_lite", "--steps", "1", "--measurements", "1", "--k", "2",
                   "--out", str(out), "--override", *TINY_CLI])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "step on i / loss of j" in printed and "k=1  score" in printed and "<- written (--k 2)" in printed
    assert f"python -m mtlzoo.bench.grouping {out}" in printed
    recipe = mtlzoo.get_recipe(str(out))
    assert recipe.sharing == "branched" and list(recipe.tasks) == ["depth", "scene"]
    assert recipe.sharing_args == {"groups": [["depth"], ["scene"]], "branch_stage": 2}
    assert out.read_text().startswith("# Written by `mtlzoo group driving_perception_lite`")
    model = mtlzoo.build(str(out))
    x, y = random_inputs(model, 2), random_labels(model, 2)
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_group_command_rejects_bad_options_before_training(tmp_path, capsys):
    assert cli.main(["group", "tabular_demo", "--k", "3", "--out", str(tmp_path / "g.yaml")]) == 2
    assert "--k must be in [1, 2]" in capsys.readouterr().err
    assert cli.main(["group", "tabular_demo", "--branch-stage", "2", "--out", str(tmp_path / "g.yaml")]) == 2
    assert "branch_stage must be an integer in [0, 0]" in capsys.readouterr().err
    assert not (tmp_path / "g.yaml").exists()


@pytest.mark.benchmark  # trains 4 models through the methods benchmark, whose machinery CI checks in test_bench_methods
def test_delta_m_benchmark_smoke_budget(tmp_path):
    from mtlzoo.bench import grouping

    out = grouping.run({"groups": "[[depth], [scene]]", "budget": "smoke", "seeds": "0",
                        "results": str(tmp_path)})
    assert out["failures"] == []
    folder = tmp_path / "depth__scene" / "smoke"
    files = sorted(p.name for p in folder.glob("*.json"))
    assert files == ["sharing-branched__seed0.json", "sharing-hard__seed0.json", "single_task-depth__seed0.json",
                     "single_task-scene__seed0.json"]
    result = json.loads((folder / "sharing-branched__seed0.json").read_text())
    assert result["recipe"]["sharing"] == "branched"
    assert result["recipe"]["sharing_args"]["groups"] == [["depth"], ["scene"]]
    assert json.loads((folder / "sharing-hard__seed0.json").read_text())["recipe"]["sharing"] == "hard"
    for name in grouping.CONFIGURATIONS:
        assert np.isfinite(out["delta_m"][name][0])
    assert (tmp_path / "depth__scene" / "table.md").is_file()
