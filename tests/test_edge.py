"""mtlzoo.edge runners (TFLite, SavedModel) and mtlzoo.predict on a briefly trained tiny model."""

import sys

import numpy as np
import pytest

import mtlzoo.edge
from mtlzoo.data.synthetic_driving import render_scene
from mtlzoo.export import tflite as tfl
from mtlzoo.predict import default_class_names, predict_image

# The trained tiny model and its export (all formats) are shared with test_export.py.
from test_export import hard_export, hard_model, images, keras_outputs, validation  # noqa: F401


def assert_close_to_keras(outputs, reference, factor):
    assert list(outputs) == list(reference)
    for t, ref in reference.items():
        assert outputs[t].shape == ref.shape and outputs[t].dtype == np.float32, t
        assert np.abs(outputs[t] - ref).max() <= factor * max(1.0, float(np.abs(ref).max())), t


def test_trained_model_is_not_constant(hard_model):
    """Comparisons below mean something: outputs vary with the input after the brief training."""
    ref = keras_outputs(hard_model, images(4))
    for t in ("segmentation", "depth", "scene"):
        assert np.std(ref[t], axis=0).max() > 1e-3, t


def test_edge_load_float32_matches_keras(hard_model, hard_export):
    runner = mtlzoo.edge.load(hard_export.paths["tflite"], num_threads=2)
    assert isinstance(runner, mtlzoo.edge.Runner) and runner.backend == "ai_edge_litert"
    assert runner.input_name == "image" and runner.input_details["dtype"] == np.float32
    assert list(runner.input_details["shape_signature"][1:]) == [32, 64, 3]
    assert runner.task_names == hard_model.task_names
    assert runner.metadata["tasks"]["detection"]["kind"] == "detection"
    x = images(3)
    assert_close_to_keras(runner(x), keras_outputs(hard_model, x), 1e-4)
    one = runner(x[0])  # one image without batch dimension
    assert_close_to_keras(one, keras_outputs(hard_model, x[:1]), 1e-4)
    assert_close_to_keras(runner({"image": x[:2]}), keras_outputs(hard_model, x[:2]), 1e-4)
    ops = runner.op_names()
    assert "CONV_2D" in ops and not any(op.startswith("Flex") for op in ops) and not runner.uses_flex()


def test_edge_load_fp16_int8_and_folders(hard_model, hard_export):
    x = images(2, seed=5)
    ref = keras_outputs(hard_model, x)
    assert_close_to_keras(mtlzoo.edge.load(hard_export.paths["tflite_fp16"])(x), ref, 2e-2)
    int8 = mtlzoo.edge.load(hard_export.paths["tflite_int8"])
    out = int8(x)
    assert list(out) == hard_model.task_names
    assert np.mean(out["segmentation"].argmax(-1) == ref["segmentation"].argmax(-1)) > 0.8
    assert np.mean(np.abs(out["depth"] - ref["depth"])) < 2.0
    # An export folder gives its float32 model; its saved_model folder a SavedModel runner.
    folder = mtlzoo.edge.load(hard_export.out_dir)
    assert folder.path.endswith("model_float32.tflite")
    saved = mtlzoo.edge.load(hard_export.paths["saved_model"])
    assert isinstance(saved, mtlzoo.edge.SavedModelRunner) and saved.task_names == hard_model.task_names
    assert_close_to_keras(saved(x), ref, 1e-5)
    with pytest.raises(FileNotFoundError):
        mtlzoo.edge.load(hard_export.out_dir / "nothing.tflite")


def test_int8_io_runner_quantizes_inputs_and_dequantizes_outputs(hard_model, hard_export):
    calibration = validation(hard_model.task_names, 8)
    flatbuffer = tfl.convert(hard_export.paths["saved_model"], "int8", representative=calibration,
                             int8_io=True, model=hard_model)
    runner = mtlzoo.edge.Runner(model_content=flatbuffer, metadata={"task_names": hard_model.task_names})
    assert runner.quantized_io and runner.input_details["dtype"] == np.int8
    scale, zero_point = runner.input_details["quantization"]
    assert scale == pytest.approx(1.0, rel=0.05) and zero_point == -128  # [0, 255] images
    x = images(2, seed=7)
    raw = runner(x, raw=True)
    assert all(v.dtype == np.int8 for v in raw.values())
    out = runner(x)
    assert list(out) == hard_model.task_names and all(v.dtype == np.float32 for v in out.values())
    float_runner = mtlzoo.edge.Runner(hard_export.paths["tflite_int8"])  # same calibration data, float I/O
    ref = keras_outputs(hard_model, x)
    assert np.mean(np.abs(out["depth"] - ref["depth"])) < 2.0
    assert np.mean(out["segmentation"].argmax(-1) == ref["segmentation"].argmax(-1)) > 0.8
    assert np.abs(out["scene"] - float_runner(x)["scene"]).max() < 0.1


def test_fallback_to_tf_lite_interpreter(hard_export, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)  # import fails
    with caplog.at_level("WARNING", logger="mtlzoo.edge"):
        runner = mtlzoo.edge.load(hard_export.paths["tflite"])
    assert runner.backend == "tf.lite" and "tf.lite.Interpreter" in caplog.text
    assert list(runner(images(1))) == runner.task_names


@pytest.mark.parametrize("kind", ["keras", "tflite_int8"])
def test_predict_image_writes_png(kind, hard_model, hard_export, tmp_path, capsys):
    import matplotlib.image

    scene = render_scene(0, 3, (64, 128))  # a different size: predict_image resizes to 32x64
    path = tmp_path / "street.png"
    matplotlib.image.imsave(path, scene["image"])
    target = hard_model if kind == "keras" else mtlzoo.edge.load(hard_export.paths["tflite_int8"])
    out_png = tmp_path / "pred" / "street_prediction.png"
    results = predict_image(target, path, out_png, score_threshold=0.0)
    assert out_png.is_file() and out_png.stat().st_size > 5000
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "segmentation:" in printed and "depth:" in printed and "scene (multilabel) tags:" in printed
    assert results["segmentation"]["class_map"].shape == (32, 64)
    assert set(results["scene"]["probabilities"]) == {"car", "pedestrian", "traffic_light", "stop_sign", "red_light"}
    assert all(label in ("car", "pedestrian", "traffic_light", "stop_sign") for label in results["detection"]["labels"])
    assert results["image"].shape == (32, 64, 3)


def test_predict_image_array_and_class_names_fallback(hard_model, tmp_path):
    names = default_class_names({"seg": {"kind": "segmentation", "num_classes": 3},
                                 "scene": {"kind": "multilabel", "num_classes": 5}})
    assert names["seg"] == ["0", "1", "2"] and names["scene"][-1] == "red_light"
    results = predict_image(hard_model, images(1)[0], None, verbose=False)
    assert results["figure"] is None and results["depth"]["min"] > 0
