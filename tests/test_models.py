"""Every recipe builds in every sharing mode, trains, and round-trips through .keras."""

import keras
import numpy as np
import pytest

import mtlzoo
from mtlzoo.registry import SHARING
from mtlzoo.testing import predict_eager

SMALL = (64, 64, 3)


def small_overrides(name):
    recipe = mtlzoo.get_recipe(name)
    return {"input_shape": SMALL} if len(recipe.input_shape) == 3 else {}


IMAGE_RECIPE, TABULAR_RECIPE = "driving_perception_lite", "tabular_demo"
#: Column-per-task and expert modes grow with the number of tasks; two cheap heads keep their cases short.
TWO_TASKS = ["depth", "scene"]


def _cases():
    """Every recipe in its own sharing mode; every other sharing mode once on an image recipe and once on the
    tabular one (a new sharing mode is swept by registering it)."""
    cases = [(name, mtlzoo.get_recipe(name).sharing) for name in mtlzoo.list_recipes()]
    for sharing in SHARING.list():
        for name in (IMAGE_RECIPE, TABULAR_RECIPE):
            kind = len(mtlzoo.get_recipe(name).input_shape)
            if not any(s == sharing and len(mtlzoo.get_recipe(r).input_shape) == kind for r, s in cases):
                cases.append((name, sharing))
    return cases


def _subset(recipe, sharing):
    """Task overrides for a case: two tasks for a non-hard mode on an image recipe, else the recipe's own tasks."""
    spec = mtlzoo.get_recipe(recipe)
    if sharing != "hard" and len(spec.input_shape) == 3 and set(TWO_TASKS) <= set(spec.tasks):
        return {"tasks": TWO_TASKS}
    return {}


CASES = _cases()


def check_output_shapes(model, spec, preds, n):
    input_shape = tuple(model.input_shape[1:])
    assert set(preds) == set(spec.tasks)
    for task, head in model.heads.items():
        kind = spec.tasks[task].kind
        out = np.asarray(preds[task])
        if kind == "segmentation":
            assert out.shape == (n,) + input_shape[:2] + (head.num_classes,)
        elif kind == "depth":
            assert out.shape == (n,) + input_shape[:2] + (1,)
            assert (out > 0).all()
        elif kind == "detection":
            assert out.shape == (n, input_shape[0] // 4, input_shape[1] // 4, head.num_classes + 4)
        elif kind in ("multilabel", "classification"):
            assert out.shape == (n, head.num_classes)
        elif kind == "regression":
            assert out.shape == (n, head.units)
        elif kind == "normal":
            assert out.shape == (n,) + input_shape[:2] + (3,)
            np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-4)
        else:
            raise AssertionError(f"untested task kind {kind}")


@pytest.mark.parametrize("recipe,sharing", CASES)
def test_recipe_builds_in_every_sharing_mode(recipe, sharing, batch_factory, tmp_path):
    """The recipe's own backbone, at a small input size; .keras round trip with safe_mode."""
    model = mtlzoo.build(recipe, sharing=sharing, compile=False, **small_overrides(recipe), **_subset(recipe, sharing))
    spec = mtlzoo.get_recipe(recipe, **_subset(recipe, sharing))
    assert isinstance(model, mtlzoo.MultiTaskModel)
    assert set(model.output_names) == set(spec.tasks)
    assert isinstance(model.output, dict) and set(model.output) == set(spec.tasks)
    x, _ = batch_factory(model, n=2)
    preds = predict_eager(model, x)
    check_output_shapes(model, spec, preds, 2)
    assert not [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.Lambda)]
    model.save(tmp_path / "m.keras")
    again = predict_eager(mtlzoo.load(tmp_path / "m.keras", compile=False), x)
    for task in spec.tasks:
        np.testing.assert_allclose(again[task], preds[task], rtol=1e-5, atol=1e-5)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


@pytest.mark.parametrize("recipe,sharing", CASES)
def test_recipe_trains_and_reloads(recipe, sharing, batch_factory, tmp_path):
    """Every recipe and sharing mode trains and round-trips (tiny trunk to keep the suite fast)."""
    overrides = small_overrides(recipe)
    if overrides:
        overrides.update(backbone="tiny", backbone_args={"width": 4}, neck_channels=16)
    overrides.update(_subset(recipe, sharing))
    model = mtlzoo.build(recipe, sharing=sharing, **overrides)
    # Eager steps: the same arithmetic as the compiled step (equal losses, measured) at a third of the cost of
    # tracing it. Every sharing mode trains compiled in test_sharing_methods.py (vector inputs), and the image
    # versions of mtan, mmoe, cross_stitch, soft_l2 and branched in their own files (test_mtan, test_moe,
    # test_sharing, test_cross_stitch_init, test_grouping, test_export).
    model.run_eagerly = True
    spec = mtlzoo.get_recipe(recipe, **_subset(recipe, sharing))
    x, y = batch_factory(model, n=4)
    history = model.fit(x, y, epochs=4, batch_size=4, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0], losses
    for task in spec.tasks:
        assert f"{task}_loss" in history.history

    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = mtlzoo.load(path)
    again = predict_eager(reloaded, x)
    after = predict_eager(model, x)
    check_output_shapes(model, spec, after, 4)
    for task in spec.tasks:
        np.testing.assert_allclose(again[task], after[task], rtol=1e-5, atol=1e-5)
    assert reloaded.get_loss_weights() == pytest.approx(model.get_loss_weights())
    # The reloaded model is compiled with the heads' losses: the same per-task losses on the same batch (computed
    # eagerly; that it keeps training is checked once, in test_reloaded_model_keeps_training).
    assert reloaded.compiled
    ours = model.compute_task_losses(y, model(x, training=False))
    theirs = reloaded.compute_task_losses(y, reloaded(x, training=False))
    for task in spec.tasks:
        np.testing.assert_allclose(float(theirs[task]), float(ours[task]), rtol=1e-5, atol=1e-6)


def test_reloaded_model_keeps_training(batch_factory, tmp_path):
    """A reloaded .keras model is compiled (optimizer state included) and trains on (tiny trunk)."""
    model = mtlzoo.build(IMAGE_RECIPE, input_shape=SMALL, backbone="tiny", backbone_args={"width": 4},
                         neck_channels=16)
    x, y = batch_factory(model, n=4)
    model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    model.save(tmp_path / "m.keras")
    reloaded = mtlzoo.load(tmp_path / "m.keras")
    assert int(reloaded.optimizer.iterations) == 2
    history = reloaded.fit(x, y, epochs=2, batch_size=2, verbose=0)
    assert int(reloaded.optimizer.iterations) == 6
    assert np.isfinite(history.history["loss"]).all()
    assert set(f"{t}_loss" for t in reloaded.task_names) <= set(history.history)


def test_build_default_recipe_has_four_driving_tasks():
    model = mtlzoo.build("driving_perception", compile=False)
    assert sorted(model.output_names) == ["depth", "detection", "scene", "segmentation"]
    assert tuple(model.input_shape[1:]) == (128, 256, 3)


def test_issue_example_cross_stitch_subset():
    model = mtlzoo.build("driving_perception", sharing="cross_stitch", input_shape=(128, 256, 3),
                         tasks=["segmentation", "depth"], backbone="mobilenetv3_small", compile=False)
    assert sorted(model.output_names) == ["depth", "segmentation"]
    assert any(layer.name.startswith("cross_stitch_") for layer in model.layers)


@pytest.mark.parametrize("backbone", ["tiny", "mobilenetv3_small", "mobilenetv3_large", "efficientnetv2_b0", "resnet50"])
def test_backbones_give_stride_4_to_32_features(backbone):
    stages = mtlzoo.backbones.get(backbone)((64, 96, 3), prefix="b_")
    strides = []
    x = stages[0].input
    for stage in stages:
        strides.append(64 // stage.output.shape[1])
        assert stage.output.shape[2] == 96 // strides[-1]
    assert strides == [4, 8, 16, 32]
    del x


def test_backbone_refuses_downloads_and_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="never downloads"):
        mtlzoo.backbones.get("resnet50")((64, 64, 3), weights="imagenet")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mtlzoo.backbones.get("tiny")((64, 64, 3), weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="divisible by 32"):
        mtlzoo.backbones.get("tiny")((60, 64, 3))


def test_backbone_loads_a_local_weights_file(tmp_path):
    import keras

    app = keras.applications.MobileNetV3Small(input_shape=(64, 64, 3), include_top=False, weights=None,
                                              include_preprocessing=False)
    for v in app.weights:
        v.assign(np.full(v.shape, 0.01, dtype=v.dtype))
    path = str(tmp_path / "mnv3.weights.h5")
    app.save_weights(path)
    stages = mtlzoo.backbones.get("mobilenetv3_small")((64, 64, 3), weights=path)
    kernel = stages[0].get_layer("backbone_stem").get_layer("conv").kernel
    np.testing.assert_allclose(np.asarray(kernel), 0.01)


def test_parameter_summary_splits_shared_and_task_parameters():
    model = mtlzoo.build("driving_perception_lite", input_shape=SMALL, backbone="tiny", compile=False)
    summary = model.parameter_summary()
    shared, by_task = model.variable_groups()
    assert summary["shared"] > 0 and all(summary[t] > 0 for t in model.task_names)
    # Every trainable parameter is either shared or one task's; the loss
    # weights and BatchNorm statistics are non-trainable extras in the total.
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert summary["shared"] + sum(summary[t] for t in model.task_names) == trainable
    non_trainable = sum(int(np.prod(v.shape)) for v in model.non_trainable_variables)
    assert summary["total"] == trainable + non_trainable
    names = {v.path for v in shared}
    assert not any(n.startswith("segmentation") for n in names)


def test_application_backbones_use_a_trainable_bn_momentum():
    stages = mtlzoo.backbones.get("mobilenetv3_small")((64, 64, 3))
    bns = [layer for s in stages for layer in _all_layers(s) if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(layer.momentum == 0.99 for layer in bns)
    kept = mtlzoo.backbones.get("mobilenetv3_small")((64, 64, 3), bn_momentum=None)
    assert {layer.momentum for s in kept for layer in _all_layers(s) if isinstance(layer, keras.layers.BatchNormalization)} == {0.999}
    with pytest.raises(ValueError, match="bn_momentum"):
        mtlzoo.backbones.get("resnet50")((64, 64, 3), bn_momentum=1.5)


@pytest.mark.parametrize("backbone", ["mobilenetv3_small", "mobilenetv3_large"])
def test_mobilenetv3_alpha_narrows_the_trunk_and_keeps_its_taps(backbone):
    from mtlzoo.backbones.applications import _SPECS

    taps = _SPECS[backbone][1]
    full = mtlzoo.backbones.get(backbone)((64, 64, 3))
    sizes = {1.0: sum(s.count_params() for s in full)}
    for alpha in (0.25, 0.5):
        stages = mtlzoo.backbones.get(backbone)((64, 64, 3), alpha=alpha)
        ends = [stages[0].get_layer("backbone_stem").layers[-1].name] + [s.layers[-1].name for s in stages[1:]]
        assert ends == taps  # the stages still end at the documented tap layers
        assert [64 // s.output.shape[1] for s in stages] == [4, 8, 16, 32]
        assert stages[-1].output.shape[-1] < full[-1].output.shape[-1]
        sizes[alpha] = sum(s.count_params() for s in stages)
    assert sizes[0.25] < sizes[0.5] < sizes[1.0]


@pytest.mark.parametrize("alpha", [0, -0.5, float("nan"), "0.5", True, None])
def test_mobilenetv3_alpha_is_checked(alpha):
    with pytest.raises(ValueError, match=r"'mobilenetv3_small': alpha \(the width multiplier\) must be a number > 0"):
        mtlzoo.backbones.get("mobilenetv3_small")((64, 64, 3), alpha=alpha)


@pytest.mark.parametrize("backbone", ["efficientnetv2_b0", "resnet50"])
def test_backbones_without_a_width_multiplier_refuse_alpha(backbone):
    with pytest.raises(ValueError, match=f"'{backbone}' has no width multiplier: alpha must be 1.0, got 0.5"):
        mtlzoo.backbones.get(backbone)((64, 64, 3), alpha=0.5)
    recipe = mtlzoo.get_recipe("driving_perception_lite").override(**{"backbone": backbone, "backbone_args.alpha": 2})
    with pytest.raises(ValueError, match="no width multiplier"):
        recipe.build(compile=False)


def test_recipe_sets_the_trunk_width_and_the_model_reloads(tmp_path):
    recipe = mtlzoo.get_recipe("driving_perception_lite").override(**{"backbone_args.alpha": 0.25})
    assert recipe.backbone_args == {"alpha": 0.25}
    model = mtlzoo.build("driving_perception_lite", backbone_args={"alpha": 0.25}, input_shape=SMALL, compile=False)
    assert model.metadata["recipe"]["backbone_args"] == {"alpha": 0.25}
    # Shared (trunk + neck) parameters at alpha 1.0 and this input: 885,856.
    assert model.parameter_summary()["shared"] < 150_000
    model.save(tmp_path / "m.keras")
    loaded = mtlzoo.load(tmp_path / "m.keras", compile=False)
    assert loaded.count_params() == model.count_params()
    x = np.random.default_rng(0).uniform(0, 255, (1,) + SMALL).astype("float32")
    expected, got = predict_eager(model, x), predict_eager(loaded, x)
    for task in expected:
        np.testing.assert_allclose(got[task], expected[task], rtol=1e-5, atol=1e-5)
