"""Cross-stitch and soft sharing as their papers train them: columns from single-task models, faster units."""

import json

import keras
import numpy as np
import pytest

import mtlzoo
from mtlzoo.testing import TINY_IMAGE, predict_eager

TASKS = ["depth", "scene"]


@pytest.fixture(scope="module")
def single_task_models(tmp_path_factory):
    """A baselines folder as `mtlzoo baselines` writes it, with one (perturbed, so not the seed's init) model per task."""
    folder = tmp_path_factory.mktemp("baselines")
    entries = {}
    for i, task in enumerate(TASKS):
        model = mtlzoo.build("driving_perception_lite", tasks=[task], compile=False, seed=10 + i, **TINY_IMAGE)
        rng = np.random.default_rng(i)
        for layer in model.layers:
            if layer.weights:
                layer.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) * (w.ndim > 0)
                                   for w in layer.get_weights()])
        (folder / task).mkdir()
        model.save(folder / task / "last.keras")
        entries[task] = {"model": f"{task}/last.keras", "metrics": {}}
    (folder / "baselines.json").write_text(json.dumps({"tasks": entries}))
    return folder


def _image(n=2):
    return np.random.default_rng(0).uniform(0, 255, (n,) + TINY_IMAGE["input_shape"]).astype("float32")


@pytest.mark.parametrize("sharing,args", [("cross_stitch", {"alpha_self": 1.0}), ("soft_l2", {})])
def test_columns_start_as_the_single_task_models(single_task_models, sharing, args):
    """With independent columns (alpha_self=1), each task's output is exactly its single-task model's output."""
    model = mtlzoo.build("driving_perception_lite", tasks=TASKS, sharing=sharing, compile=False,
                         sharing_args={**args, "init_from": str(single_task_models)}, **TINY_IMAGE)
    x = _image()
    out = predict_eager(model, x)
    for task in TASKS:
        single = mtlzoo.load(single_task_models / task / "last.keras", compile=False)
        np.testing.assert_allclose(out[task], predict_eager(single, x)[task], rtol=1e-5, atol=1e-5)


def test_init_from_one_task_leaves_the_other_column_alone(single_task_models):
    kwargs = dict(tasks=TASKS, sharing="cross_stitch", compile=False, **TINY_IMAGE)
    fresh = mtlzoo.build("driving_perception_lite", **kwargs)
    partial = mtlzoo.build("driving_perception_lite", **kwargs,
                           sharing_args={"init_from": {"depth": str(single_task_models / "depth")}})
    source = mtlzoo.load(single_task_models / "depth" / "last.keras", compile=False)
    for a, b in zip(partial.get_layer("depth__col_stage1").get_weights(), source.get_layer("backbone_stage1").get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(partial.get_layer("scene__col_stage1").get_weights(), fresh.get_layer("scene__col_stage1").get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.asarray(partial.get_layer("cross_stitch_0").mixing_matrix())[0, 0], 0.9, rtol=1e-6)


def test_init_from_errors_name_the_problem(single_task_models, tmp_path):
    kwargs = dict(tasks=TASKS, sharing="cross_stitch", compile=False, **TINY_IMAGE)
    with pytest.raises(ValueError, match="deph.*Did you mean 'depth'"):
        mtlzoo.build("driving_perception_lite", **kwargs, sharing_args={"init_from": {"deph": "x.keras"}})
    with pytest.raises(FileNotFoundError, match="no baselines.json"):
        mtlzoo.build("driving_perception_lite", **kwargs, sharing_args={"init_from": str(tmp_path)})
    with pytest.raises(ValueError, match="weight shapes.*same recipe"):
        mtlzoo.build("driving_perception_lite", **{**kwargs, "neck_channels": 8},
                     sharing_args={"init_from": str(single_task_models)})


def test_a_reloaded_model_does_not_need_the_single_task_files(single_task_models, tmp_path):
    model = mtlzoo.build("driving_perception_lite", tasks=TASKS, sharing="cross_stitch", compile=False,
                         sharing_args={"init_from": str(single_task_models), "lr_multiplier": 10.0}, **TINY_IMAGE)
    model.save(tmp_path / "m.keras")
    x = _image()
    again = mtlzoo.load(tmp_path / "m.keras", compile=False)
    for task in TASKS:
        np.testing.assert_allclose(predict_eager(again, x)[task], predict_eager(model, x)[task], atol=1e-5)
    assert again.get_layer("cross_stitch_1").lr_multiplier == 10.0


def test_lr_multiplier_makes_the_unit_learn_faster_under_adam():
    """Same mixing matrix and gradients; after one Adam step the k=10 unit has moved 10 times as far."""
    rng = np.random.default_rng(0)
    xs = [keras.ops.convert_to_tensor(rng.normal(size=(4, 3, 3, 2)).astype("float32")) for _ in range(2)]
    target = rng.normal(size=(4, 3, 3, 2)).astype("float32")
    moves = {}
    for k in (1.0, 10.0):
        unit = mtlzoo.layers.CrossStitch(lr_multiplier=k)
        unit(xs)
        before = np.asarray(unit.mixing_matrix())
        optimizer = keras.optimizers.Adam(1e-3)
        import tensorflow as tf

        with tf.GradientTape() as tape:
            out = unit(xs)
            loss = tf.reduce_sum((out[0] - target) ** 2) + tf.reduce_sum(out[1] ** 2)
        optimizer.apply_gradients(zip(tape.gradient(loss, unit.trainable_variables), unit.trainable_variables))
        moves[k] = np.asarray(unit.mixing_matrix()) - before
        np.testing.assert_allclose(before[:, :, 0], [[0.9, 0.1], [0.1, 0.9]], rtol=1e-6)
    np.testing.assert_allclose(moves[10.0], 10.0 * moves[1.0], rtol=1e-3, atol=1e-7)
    assert np.abs(moves[1.0]).max() > 0
    with pytest.raises(ValueError, match="lr_multiplier must be > 0"):
        mtlzoo.layers.CrossStitch(lr_multiplier=0)
