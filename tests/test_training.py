"""Tests of mtlzoo.training: files written, resumption, repeatability, data checks, non-finite stops."""

import csv
import glob
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
import mtlzoo.data
from mtlzoo.recipe import Recipe, RecipeError
from mtlzoo.training import DataCheckError, StopOnNonFinite, check_dataset, train
from mtlzoo.testing import TINY_IMAGE, predict_eager

TINY = {
    **TINY_IMAGE,
    "data.num_examples": 16,
    "data.num_validation_examples": 8,
    "training.batch_size": 8,
}
TASKS = ("segmentation", "depth")


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _event_tags(folder):
    tags = set()
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                tags.add(value.tag)
    return tags


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return train("driving_perception_lite", epochs=1, out_dir=str(out), verbose=0, tasks=list(TASKS), **TINY)


# ----------------------------------------------------------------------------- end to end
def test_train_writes_history_tensorboard_and_checkpoints(run):
    out = run.out_dir
    rows = _csv(os.path.join(out, "history.csv"))
    assert [int(r["epoch"]) for r in rows] == [0]
    for task in TASKS:
        assert f"{task}_loss" in rows[0] and f"val_{task}_loss" in rows[0]
        assert f"{task}_weight" in rows[0]  # fixed weights are logged too
    assert float(rows[0]["depth_weight"]) == pytest.approx(0.1)  # the recipe's loss weight
    assert "segmentation_miou" in rows[0] and "nonfinite_steps" in rows[0]
    train_tags = _event_tags(os.path.join(out, "logs", "train"))
    for task in TASKS:
        assert f"epoch_{task}_loss" in train_tags and f"epoch_{task}_weight" in train_tags
    assert "epoch_segmentation_miou" in train_tags
    assert "epoch_segmentation_loss" in _event_tags(os.path.join(out, "logs", "validation"))
    for name in ("best.keras", "last.keras", "recipe.yaml", "train_summary.json"):
        assert os.path.exists(os.path.join(out, name)), name
    assert not os.path.exists(os.path.join(out, "backup"))  # deleted after a completed run
    assert run.history["segmentation_loss"] == pytest.approx([float(r["segmentation_loss"]) for r in rows])
    assert run.initial_epoch == 0 and run.stopped_reason is None
    assert run.timing["train_step_s"] > 0
    reloaded = mtlzoo.load(run.last_path)
    x = np.zeros((1, 32, 64, 3), np.float32)
    np.testing.assert_allclose(predict_eager(reloaded, x)["depth"], predict_eager(run.model, x)["depth"],
                               rtol=1e-5, atol=1e-5)


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch = epoch, batch

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.current == self.epoch and batch == self.batch:
            raise RuntimeError("simulated crash")


def test_interrupted_run_resumes_when_the_same_command_is_run_again(tmp_path, capsys):
    import argparse
    import json

    from mtlzoo import cli_training

    out = str(tmp_path / "run")
    cli_overrides = ["backbone=tiny", "backbone_args={width: 4}", "neck_channels=16", "input_shape=[32, 64, 3]",
                     "tasks=[scene]", "data.num_examples=16", "data.validation_split=null", "training.batch_size=8"]
    parser = argparse.ArgumentParser(prog="mtlzoo")
    cli_training.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", "driving_perception_lite", *cli_overrides, "--epochs", "3", "--out", out,
                              "--verbose", "2"])
    # First run: the command's own train() call, crashing in the first batch of epoch 1.
    from mtlzoo.recipe import parse_cli_overrides

    with pytest.warns(UserWarning, match="resume"), pytest.raises(RuntimeError, match="simulated crash"):
        train("driving_perception_lite", epochs=3, out_dir=out, verbose=0,
              callbacks=[_Interrupt(epoch=1, batch=0)], **parse_cli_overrides(cli_overrides))
    with open(os.path.join(out, "backup", "training_metadata.json")) as f:
        assert json.load(f)["epoch"] == 1  # epochs done
    assert [int(r["epoch"]) for r in _csv(os.path.join(out, "history.csv"))] == [0]  # epoch 1 never finished

    # Second run: the same command line resumes at epoch 1 and ends after epoch 2 (3 in all).
    capsys.readouterr()
    assert args.func(args) == 0
    assert "Resuming from" in capsys.readouterr().out
    assert [int(r["epoch"]) for r in _csv(os.path.join(out, "history.csv"))] == [0, 1, 2]
    with open(os.path.join(out, "train_summary.json")) as f:
        summary = json.load(f)
    assert summary["initial_epoch"] == 1 and summary["epochs_run"] == 3
    # 16 examples / batch 8 = 2 steps per epoch: the optimizer state came back with the weights.
    assert int(mtlzoo.load(os.path.join(out, "last.keras")).optimizer.iterations) == 6
    assert not os.path.exists(os.path.join(out, "backup"))


def test_resume_refuses_a_different_recipe(tmp_path, no_build):
    out = tmp_path / "run"
    (out / "backup").mkdir(parents=True)
    (out / "backup" / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    (out / "recipe.yaml").write_text(_recipe().to_yaml())
    with pytest.raises(DataCheckError, match="different recipe.*neck_channels"):
        train(_recipe(neck_channels=8), epochs=2, out_dir=str(out), verbose=0)


def test_same_seed_gives_identical_losses():
    kwargs = dict(epochs=2, verbose=0, tasks=["depth"], validation_data=False, **TINY)
    first = train("driving_perception_lite", seed=3, **kwargs)
    second = train("driving_perception_lite", seed=3, **kwargs)
    for key in ("loss", "depth_loss", "depth_abs_err"):
        assert first.history[key] == second.history[key], key
    assert first.history["loss"][0] != first.history["loss"][1]


def _tabular(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype("float32")
    return x, {"label": rng.integers(0, 3, n), "target": rng.normal(size=(n, 1)).astype("float32")}


def test_weighting_callback_from_the_recipe_logs_changing_weights():
    result = train("tabular_demo", data=_tabular(), epochs=3, verbose=0, weighting="dwa",
                   **{"training.batch_size": 8})
    weights = result.history["target_weight"]
    assert len(weights) == 3
    assert weights[0] == pytest.approx(1.0) and weights[-1] != pytest.approx(weights[0])  # DWA from epoch 3 on


def test_strategy_builds_the_model_in_its_scope():
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    result = train("tabular_demo", data=_tabular(), epochs=1, verbose=0, strategy=strategy)
    assert result.model.distribute_strategy is strategy
    assert len(result.history["label_loss"]) == 1
    by_name = train("tabular_demo", data=_tabular(), epochs=1, verbose=0, strategy="one_device")
    assert isinstance(by_name.model.distribute_strategy, tf.distribute.OneDeviceStrategy)


# ----------------------------------------------------------------------------- non-finite steps
def test_stop_on_nonfinite_stops_a_run_whose_steps_are_all_nan():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 16)).astype("float32")
    y = {"label": rng.integers(0, 3, 32), "target": np.full((32, 1), np.nan, "float32")}
    with pytest.raises(DataCheckError, match=r"'target'.*NaN"):
        train("tabular_demo", data=(x, y), epochs=3, verbose=0)
    # With the up-front check off, the NaN loss reaches training: every step of epoch 0 is skipped.
    result = train("tabular_demo", data=(x, y), epochs=3, verbose=0, **{"training.check_batches": 0})
    assert result.stopped_reason is not None and "every step of epoch 0" in result.stopped_reason
    assert len(result.history["loss"]) == 1
    assert result.history["nonfinite_steps"] == [1.0]  # 32 examples, batch 32


def test_stop_on_nonfinite_patience_counts_consecutive_steps():
    cb = StopOnNonFinite(patience=3, verbose=False, restore=False)  # counting only: a stand-in model
    model = types.SimpleNamespace(stop_training=False)
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_begin(0)
    counts = [0, 1, 2, 2, 3, 4]  # running count of non-finite steps after each batch
    for batch, count in enumerate(counts):
        cb.on_train_batch_end(batch, {"nonfinite_steps": np.float32(count)})
    assert not model.stop_training  # at most 2 in a row so far
    cb.on_train_batch_end(len(counts), {"nonfinite_steps": np.float32(5)})
    assert model.stop_training and "3 consecutive" in cb.stopped_reason
    logs = {"nonfinite_steps": 5.0}
    cb.on_epoch_end(0, logs)
    assert logs["stopped_nonfinite"] == 1.0
    with pytest.raises(ValueError, match="patience"):
        StopOnNonFinite(patience=0)


# ----------------------------------------------------------------------------- checks before training
@pytest.fixture
def no_build(monkeypatch):
    """Fails the test if a model gets built: the checks must come first."""

    def boom(self, compile=True):
        raise AssertionError("a model was built before the data was checked")

    monkeypatch.setattr(Recipe, "build", boom)


def _recipe(**extra):
    return mtlzoo.get_recipe("driving_perception_lite", tasks=["segmentation", "depth"], **{**TINY, **extra})


def _dataset(images, labels):
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)


def test_unknown_dataset_name_suggests_the_near_match(no_build):
    with pytest.raises(DataCheckError, match=r"Unknown dataset 'synthetic_drivng'.*Did you mean 'synthetic_driving'"):
        train(_recipe(**{"data.name": "synthetic_drivng"}), epochs=1, verbose=0)


def test_missing_task_labels_name_the_task_and_what_was_found(no_build):
    data = mtlzoo.data.load("synthetic_driving", image_size=(32, 64), batch_size=4, num_examples=4,
                            tasks=["segmentation", "scene"])
    with pytest.raises(DataCheckError, match=r"task 'depth' \(depth\).*labels found are \['scene', 'segmentation'\]"):
        train(_recipe(), data=data, epochs=1, verbose=0)


def test_wrong_image_size_and_channels(no_build):
    data = mtlzoo.data.load("synthetic_driving", image_size=(64, 128), batch_size=4, num_examples=4,
                            tasks=["segmentation", "depth"])
    expected = r"images of size \(64, 128\).*input_shape is \(32, 64, 3\).*image_size=\(32, 64\)"
    with pytest.raises(DataCheckError, match=expected):
        train(_recipe(), data=data, epochs=1, verbose=0)
    gray = _dataset(np.zeros((4, 32, 64, 1), np.float32),
                    {"segmentation": np.zeros((4, 32, 64), np.int32), "depth": np.ones((4, 32, 64, 1), np.float32)})
    with pytest.raises(DataCheckError, match="1 channels but the recipe expects 3"):
        train(_recipe(), data=gray, epochs=1, verbose=0)


def test_wrong_label_shape_names_the_task(no_build):
    data = _dataset(np.zeros((4, 32, 64, 3), np.float32),
                    {"segmentation": np.zeros((4, 16, 32), np.int32), "depth": np.ones((4, 32, 64, 1), np.float32)})
    with pytest.raises(DataCheckError, match=r"Task 'segmentation'.*\(batch, 16, 32\).*\(batch, 32, 64\)"):
        train(_recipe(), data=data, epochs=1, verbose=0)


def test_nan_and_inf_labels_are_rejected(no_build):
    depth = np.ones((4, 32, 64, 1), np.float32)
    depth[1, 3, 3, 0] = np.nan
    depth[2, 0, 0, 0] = np.inf
    data = _dataset(np.zeros((4, 32, 64, 3), np.float32),
                    {"segmentation": np.zeros((4, 32, 64), np.int32), "depth": depth})
    with pytest.raises(DataCheckError, match=r"Task 'depth'.*1 NaN and 1 inf.*0 \(or any value <= 0\)"):
        train(_recipe(), data=data, epochs=1, verbose=0)


def test_empty_split_is_an_error(no_build):
    data = _dataset(np.zeros((4, 32, 64, 3), np.float32),
                    {"segmentation": np.zeros((4, 32, 64), np.int32), "depth": np.ones((4, 32, 64, 1), np.float32)})
    with pytest.raises(DataCheckError, match="train data is empty"):
        train(_recipe(), data=data.take(0), epochs=1, verbose=0)
    unknown_length = data.filter(lambda x, y: tf.reduce_sum(x) > 1.0)  # drops everything, length unknown
    with pytest.raises(DataCheckError, match="validation data is empty"):
        train(_recipe(), data=data, validation_data=unknown_length, epochs=1, verbose=0)


def test_unknown_training_key_and_bad_epochs(no_build):
    with pytest.raises(RecipeError, match="training.epochz.*Did you mean 'epochs'"):
        train(_recipe(**{"training.epochz": 3}), verbose=0)
    with pytest.raises(RecipeError, match="epochs"):
        train(_recipe(), epochs=0, verbose=0)


def test_check_dataset_drops_label_keys_the_recipe_does_not_use():
    recipe = _recipe()
    data = mtlzoo.data.load("synthetic_driving", image_size=(32, 64), batch_size=2, num_examples=2, with_boxes=True)
    checked = check_dataset(recipe, data)
    assert sorted(checked.element_spec[1]) == ["depth", "segmentation"]


# ----------------------------------------------------------------------------- label values
def _seg_depth(segmentation):
    n = len(segmentation)
    return _dataset(np.zeros((n, 32, 64, 3), np.float32),
                    {"segmentation": segmentation, "depth": np.ones((n, 32, 64, 1), np.float32)})


def test_segmentation_class_ids_out_of_range_or_fractional_are_rejected(no_build):
    ids = np.zeros((4, 32, 64), np.int32)
    ids[0, 0, :3] = (-1, 9, 10)  # -1 (unlabelled) and 9 are fine, 10 is not (num_classes 10)
    ids[2, 5, 5] = 255
    with pytest.raises(DataCheckError, match=r"Task 'segmentation' \(segmentation\): batch 0 of the train data has 2 "
                       r"out-of-range class ids: 10, 255\. Allowed: integers 0 to 9 \(the head's num_classes is 10\)"
                       r" and -1 .*tasks\.segmentation\.num_classes"):
        train(_recipe(), data=_seg_depth(ids), epochs=1, verbose=0)
    fractional = np.zeros((4, 32, 64), np.float32)
    fractional[1, 1, 1] = 1.5
    with pytest.raises(DataCheckError, match=r"Task 'segmentation'.*1 fractional class ids: 1\.5"):
        check_dataset(_recipe(), _seg_depth(fractional))
    fine = np.full((4, 32, 64), -1, np.int32)
    fine[:, :2] = 9
    check_dataset(_recipe(), _seg_depth(fine))


def test_classification_class_ids_are_checked_against_num_classes():
    x, y = _tabular(8)
    y["label"] = np.array([0, 1, 2, -1, 0, 1, 2, 3])
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.raises(DataCheckError, match=r"Task 'label' \(classification\).*out-of-range class ids: 3\. "
                       r"Allowed: integers 0 to 2"):
        check_dataset("tabular_demo", data)
    y["label"] = np.array([0, 1, 2, -1, 0, 1, 2, 2])
    check_dataset("tabular_demo", tf.data.Dataset.from_tensor_slices((x, y)).batch(8))


def _scene_recipe():
    return mtlzoo.get_recipe("driving_perception_lite", tasks=["scene", "detection"], **TINY)


def _scene_detection(scene, detection=None, **extra):
    n = len(scene)
    if detection is None:
        detection = np.zeros((n, 8, 16, 9), np.float32)  # 32x64 input, stride 4, 4 classes + 5
    return _dataset(np.zeros((n, 32, 64, 3), np.float32), {"scene": scene, "detection": detection, **extra})


def test_multilabel_targets_outside_0_1_and_missing_are_rejected():
    scene = np.zeros((4, 5), np.float32)
    scene[0, 0], scene[1, 1], scene[2] = 1.0, -1.0, -1.0
    check_dataset(_scene_recipe(), _scene_detection(scene))  # 0, 1 and -1 (unknown) are fine
    scene[3, 2], scene[3, 4] = 0.5, 3.0
    with pytest.raises(DataCheckError, match=r"Task 'scene' \(multilabel\).*2 target values outside \{0, 1, -1\}: "
                       r"0\.5, 3"):
        check_dataset(_scene_recipe(), _scene_detection(scene))


def test_detection_box_classes_and_heatmaps_are_checked():
    scene = np.zeros((4, 5), np.float32)
    detection = np.zeros((4, 8, 16, 9), np.float32)
    detection[3] = -1.0  # a missing label
    box_classes = np.array([[0, 3, -1], [1, -1, -1], [2, 2, -1], [-1, -1, -1]], np.int32)
    check_dataset(_scene_recipe(), _scene_detection(scene, detection, box_classes=box_classes))
    box_classes[1, 1] = 4
    with pytest.raises(DataCheckError, match=r"Task 'detection' \(detection\).*1 out-of-range box class ids "
                       r"\(`box_classes`\): 4\. Allowed: integers 0 to 3"):
        check_dataset(_scene_recipe(), _scene_detection(scene, detection, box_classes=box_classes))
    detection[0, 2, 2, 1] = 2.0
    with pytest.raises(DataCheckError, match=r"Task 'detection' \(detection\).*heatmap value 2 .*\[0, 1\]"):
        check_dataset(_scene_recipe(), _scene_detection(scene, detection))


def test_train_metrics_false_logs_losses_only_and_keeps_validation_metrics(tmp_path):
    import mtlzoo
    from mtlzoo.testing import TINY_IMAGE, random_labels

    model = mtlzoo.build("driving_perception_lite", **TINY_IMAGE, **{"training.train_metrics": False})
    assert model._train_metrics is False
    x = np.random.default_rng(0).uniform(0, 255, (8, 32, 64, 3)).astype("float32")
    y = random_labels(model, 8)
    history = model.fit(x, y, batch_size=4, epochs=1, validation_data=(x, y), verbose=0).history
    assert "segmentation_loss" in history and "nonfinite_steps" in history
    assert "segmentation_miou" not in history and "val_segmentation_miou" in history and "val_depth_loss" in history
    path = str(tmp_path / "m.keras")
    model.save(path)
    assert mtlzoo.load(path)._train_metrics is False  # the compile setting survives a reload
    with pytest.raises(mtlzoo.recipe.RecipeError, match="train_metrics must be true or false"):
        mtlzoo.build("driving_perception_lite", **TINY_IMAGE, **{"training.train_metrics": "no"})


def test_run_eagerly_is_a_checked_training_key(tmp_path):
    import mtlzoo
    from mtlzoo.training import train, training_settings

    model = mtlzoo.build("tabular_demo", **{"training.run_eagerly": True})
    assert model.run_eagerly is True and mtlzoo.build("tabular_demo").run_eagerly is False
    recipe = mtlzoo.get_recipe("tabular_demo", **{"training.run_eagerly": True})
    assert training_settings(recipe)["run_eagerly"] is True
    with pytest.raises(mtlzoo.recipe.RecipeError, match="run_eagerly must be true or false"):
        mtlzoo.build("tabular_demo", **{"training.run_eagerly": "yes"})
    x = np.random.default_rng(0).normal(size=(16, 16)).astype("float32")
    y = {"label": np.zeros(16, "int32"), "target": np.zeros((16, 1), "float32")}
    run = train("tabular_demo", data=(x, y), validation_data=False, epochs=1, out_dir=str(tmp_path / "run"),
                verbose=0, **{"training.run_eagerly": True, "training.batch_size": 8})
    assert run.model.run_eagerly is True and len(run.history["loss"]) == 1


def test_train_metrics_false_refuses_to_monitor_a_training_metric():
    from mtlzoo.training import training_settings

    recipe = mtlzoo.get_recipe("driving_perception_lite", **{"training.train_metrics": False,
                                                              "training.monitor": "segmentation_miou"})
    with pytest.raises(RecipeError, match="Monitor 'val_segmentation_miou'"):
        training_settings(recipe)
    ok = recipe.override(**{"training.monitor": "val_segmentation_miou"})
    assert training_settings(ok)["monitor"] == "val_segmentation_miou"
