"""Recipe schema, overrides and their errors."""

import pytest

import mtlzoo
from mtlzoo.recipe import Recipe, RecipeError, get_recipe, parse_cli_overrides

BASE = {
    "name": "t",
    "input_shape": [64, 64, 3],
    "backbone": "tiny",
    "tasks": {"seg": {"kind": "segmentation", "num_classes": 3}, "dep": {"kind": "depth"}},
}


def test_shipped_recipes():
    names = mtlzoo.list_recipes()
    for required in ("driving_perception", "driving_perception_lite", "driving_perception_cross_stitch"):
        assert required in names
    driving = get_recipe("driving_perception")
    assert list(driving.tasks) == ["segmentation", "depth", "detection", "scene"]
    assert driving.sharing == "hard" and driving.input_shape[0] >= 128 and driving.input_shape[1] >= 256
    assert get_recipe("driving_perception_cross_stitch").sharing == "cross_stitch"


@pytest.mark.parametrize("name", mtlzoo.list_recipes())
def test_every_recipe_round_trips_through_yaml(name, tmp_path):
    recipe = get_recipe(name)
    path = tmp_path / f"{name}.yaml"
    path.write_text(recipe.to_yaml())
    again = get_recipe(str(path))
    assert again.to_dict() == {**recipe.to_dict(), "name": name}


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.update(backbon="tiny"), "unknown key 'backbon'. Did you mean 'backbone'"),
    (lambda d: d.update(backbone="resnet5"), "unknown backbone 'resnet5'. Did you mean 'resnet50'"),
    (lambda d: d.update(sharing="crossstitch"), "Did you mean 'cross_stitch'"),
    (lambda d: d["tasks"]["seg"].update(kind="segmentaton"), "unknown task kind 'segmentaton'. Did you mean 'segmentation'"),
    (lambda d: d["tasks"]["seg"].update(num_clases=3), "task 'seg': unknown key 'num_clases'. Did you mean 'num_classes'"),
    (lambda d: d["tasks"]["seg"].pop("num_classes"), "task 'seg'.*num_classes"),
    (lambda d: d["tasks"]["seg"].update(loss_weight=-1), "loss_weight must be >= 0"),
    (lambda d: d.update(weighting="dwaa"), "unknown weighting 'dwaa'"),
    (lambda d: d.update(aggregator="pcgard"), "Did you mean 'pcgrad'"),
    (lambda d: d.update(input_shape=[100, 64, 3]), "divisible by 32"),
    (lambda d: d.update(tasks={}), "`tasks` is missing or empty"),
    (lambda d: d.update(sharing_args={"mode": "per_layer"}), "sharing_args of 'hard': unknown key 'mode'"),
    (lambda d: d.update(backbone_args={"widht": 4}), "Did you mean 'width'"),
    (lambda d: d.update(weights="/nonexistent/w.h5"), "never downloads"),
    (lambda d: d.update(optimizer={"learning_rate": 0.1}), "optimizer must be a mapping with a `name`"),
])
def test_bad_recipes_name_the_key_and_the_fix(mutate, message):
    import copy

    data = copy.deepcopy(BASE)
    mutate(data)
    with pytest.raises(RecipeError, match=message):
        Recipe.from_dict(data)


def test_overrides_are_validated_like_the_recipe():
    with pytest.raises(RecipeError, match="Did you mean 'sharing'"):
        get_recipe("driving_perception", shareing="hard")
    with pytest.raises(RecipeError, match="has no task 'dept'. Did you mean 'depth'"):
        get_recipe("driving_perception", tasks=["segmentation", "dept"])
    with pytest.raises(RecipeError, match="Did you mean 'cross_stitch'"):
        mtlzoo.build("driving_perception", sharing="cross-stitch")
    from mtlzoo.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match="Did you mean 'driving_perception'"):
        mtlzoo.build("driving_perceptoin")


def test_override_forms():
    r = get_recipe("driving_perception", tasks=["depth", "scene"], neck_channels=32,
                   **{"tasks.depth.loss_weight": 2.0, "sharing_args.mode": "per_layer", "sharing": "cross_stitch"})
    assert list(r.tasks) == ["depth", "scene"]
    assert r.tasks["depth"].loss_weight == 2.0 and r.neck_channels == 32
    assert r.sharing_args == {"mode": "per_layer"}
    # Switching the sharing mode drops the old mode's arguments.
    back = get_recipe("driving_perception_cross_stitch", sharing="hard")
    assert back.sharing_args == {}
    merged = get_recipe("driving_perception", update_tasks={"segmentation": {"num_classes": 12}})
    assert merged.tasks["segmentation"].head_args["num_classes"] == 12
    assert list(merged.tasks) == list(get_recipe("driving_perception").tasks)


def test_task_overrides_replace_add_and_update_are_explicit():
    base = list(get_recipe("tabular_demo").tasks)
    # tasks={...} replaces the task set: exactly the tasks given.
    replaced = get_recipe("tabular_demo", tasks={"a": {"kind": "regression", "units": 1}})
    assert list(replaced.tasks) == ["a"]
    assert sorted(mtlzoo.build("tabular_demo", tasks={"a": {"kind": "regression", "units": 1}}).output_names) == ["a"]
    # add_tasks adds to the recipe's tasks.
    added = get_recipe("tabular_demo", add_tasks={"a": {"kind": "regression", "units": 1}})
    assert list(added.tasks) == base + ["a"]
    # update_tasks changes one task and keeps the others.
    updated = get_recipe("tabular_demo", update_tasks={base[0]: {"loss_weight": 3.0}})
    assert list(updated.tasks) == base and updated.tasks[base[0]].loss_weight == 3.0
    # A partial entry for an existing task in tasks={...} is ambiguous: an error naming the explicit forms.
    with pytest.raises(RecipeError, match=r"ambiguous.*update_tasks.*add_tasks"):
        get_recipe("tabular_demo", tasks={base[0]: {"loss_weight": 3.0}})
    with pytest.raises(RecipeError, match=r"already has a task"):
        get_recipe("tabular_demo", add_tasks={base[0]: {"kind": "regression", "units": 1}})
    with pytest.raises(RecipeError, match=r"has no task 'lable'.*label"):
        get_recipe("tabular_demo", update_tasks={"lable": {"loss_weight": 2.0}})


def test_cli_override_parsing():
    assert parse_cli_overrides(["sharing=cross_stitch", "input_shape=[64, 64, 3]", "tasks.depth.loss_weight=0.5"]) == {
        "sharing": "cross_stitch", "input_shape": [64, 64, 3], "tasks.depth.loss_weight": 0.5}
    with pytest.raises(RecipeError, match="key=value"):
        parse_cli_overrides(["sharing"])


def test_recipe_from_dict_builds_and_yaml_errors(tmp_path):
    model = mtlzoo.build(BASE)
    assert sorted(model.output_names) == ["dep", "seg"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        get_recipe(str(bad))
    with pytest.raises(FileNotFoundError):
        get_recipe(str(tmp_path / "missing.yaml"))


def test_override_never_writes_into_the_callers_mapping():
    from mtlzoo.recipe import get_recipe

    args = {"width": 4}
    recipe = get_recipe("driving_perception_lite").override(backbone="tiny", backbone_args=args,
                                                            **{"backbone_args.width": 2})
    assert recipe.backbone_args == {"width": 2} and args == {"width": 4}
