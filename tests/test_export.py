"""Export: SavedModel and TFLite round trips, verification report, Flex errors, atomic publication."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
import mtlzoo.data
from mtlzoo.edge import Runner
from mtlzoo.export import ExportVerificationError, atomic, export
from mtlzoo.export import saved_model as sm
from mtlzoo.export import selective_int8
from mtlzoo.export import tflite as tfl
from mtlzoo.data.synthetic_driving import render_scene
from mtlzoo.heads.centernet_targets import decode_centernet
from mtlzoo.testing import TINY_IMAGE

TINY = TINY_IMAGE
ROOT = Path(__file__).resolve().parent.parent


def train_briefly(model, steps=24, seed=0):
    """`steps` Adam steps on synthetic scenes so that BatchNorm statistics and outputs are not trivial."""
    ds = mtlzoo.data.load("synthetic_driving", split="train", batch_size=8, image_size=(32, 64),
                          num_examples=4 * steps, seed=seed, tasks=model.task_names, cache=True)
    model.fit(ds, epochs=2, verbose=0)
    return model


def validation(tasks, n=16):
    return mtlzoo.data.load("synthetic_driving", split="validation", batch_size=8, image_size=(32, 64),
                            num_examples=n, tasks=tasks)


# Shared with tests/test_edge.py (which imports these fixtures): built once per test session.
_SHARED = {}


@pytest.fixture(scope="session")
def hard_model():
    if "model" not in _SHARED:
        _SHARED["model"] = train_briefly(mtlzoo.build("driving_perception_lite", **TINY))
    return _SHARED["model"]


@pytest.fixture(scope="session")
def hard_export(hard_model, tmp_path_factory):
    if "export" not in _SHARED:
        out = tmp_path_factory.mktemp("exports") / "driving_lite"
        _SHARED["export"] = export(hard_model, out, formats=["saved_model", "tflite", "tflite_fp16", "tflite_int8"],
                                   representative_data=validation(hard_model.task_names))
    return _SHARED["export"]


def images(n=4, seed=1):
    """Real-looking inputs: synthetic street scenes not used for training (float32 [0, 255])."""
    return np.stack([render_scene(1000 + seed, i, (32, 64))["image"] for i in range(n)]).astype("float32")


def keras_outputs(model, x):
    out = model(x, training=False)
    return {t: np.asarray(out[t]) for t in model.task_names}


def tree_digest(folder):
    h = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def hidden_leftovers(target):
    return [p.name for p in Path(target).parent.iterdir() if p.name.startswith(f".{Path(target).name}.")]


# ---------------------------------------------------------------- round trips
def test_every_format_round_trips_hard_sharing(hard_model, hard_export):
    result, model = hard_export, hard_model
    out = result.out_dir
    assert result.passed and result.report["passed"]
    for fmt, name in [("saved_model", "saved_model"), ("tflite", "model_float32.tflite"),
                      ("tflite_fp16", "model_fp16.tflite"), ("tflite_int8", "model_int8.tflite")]:
        assert result.paths[fmt] == out / name and result.paths[fmt].exists()
        assert result.report["formats"][fmt]["passed"]
    assert (out / "verification.json").is_file() and (out / "verification.md").is_file()
    on_disk = json.loads((out / "verification.json").read_text())
    assert on_disk["passed"] and set(on_disk["formats"]) == {"saved_model", "tflite", "tflite_fp16", "tflite_int8"}
    assert "tflite_int8" in (out / "verification.md").read_text()
    meta = json.loads((out / "mtlzoo_export.json").read_text())
    assert meta["task_names"] == model.task_names
    assert meta["class_names"]["scene"][0] == "car"

    x = images()
    ref = keras_outputs(model, x)
    # SavedModel: reloaded with tf.saved_model.load, outputs named by task, max abs diff <= 1e-5.
    loaded = tf.saved_model.load(str(out / "saved_model"))
    assert {"serving_default", "serving_postprocessed"} <= set(loaded.signatures)
    got = loaded.signatures["serving_default"](image=tf.constant(x))
    assert set(got) == set(model.task_names)
    for t in model.task_names:
        scale = max(1.0, float(np.abs(ref[t]).max()))
        assert np.abs(got[t].numpy() - ref[t]).max() <= 1e-5 * scale, t
    # TFLite float32 / fp16 through the edge runner: names and order preserved.
    for fmt, tol in [("tflite", 1e-4), ("tflite_fp16", 2e-2)]:
        runner = Runner(result.paths[fmt])
        outs = runner(x)
        assert list(outs) == model.task_names
        for t in model.task_names:
            assert outs[t].shape == ref[t].shape
            scale = max(1.0, float(np.abs(ref[t]).max()))
            assert np.abs(outs[t] - ref[t]).max() <= tol * scale, (fmt, t)
        assert not runner.uses_flex()
    # int8: metrics of every task reported against the float model's.
    entry = result.report["formats"]["tflite_int8"]
    assert set(entry["metrics"]) == set(model.task_names)
    assert set(entry["metrics"]["segmentation"]) >= {"miou"}
    assert set(entry["metrics"]["depth"]) >= {"abs_err", "abs_rel"}
    assert set(entry["metrics"]["scene"]) >= {"f1"}
    assert "box_f1" in entry["agreement"]["detection"]
    assert entry["agreement"]["segmentation"]["pixel_agreement"] > 0.8
    assert "QUANTIZE" in entry["ops"] and not any(op.startswith("Flex") for op in entry["ops"])


def test_selective_int8_keeps_the_listed_ops_in_float32_and_verifies(hard_model, tmp_path):
    """`int8_float_ops`: convolutions in int8, the listed ops (here every op but CONV_2D) in float32."""
    float_ops = ["DEPTHWISE_CONV_2D", "HARD_SWISH", "MUL", "MEAN", "LOGISTIC", "RESIZE_BILINEAR", "CONCATENATION",
                 "RESHAPE", "SUB", "AVERAGE_POOL_2D", "ADD", "RELU", "PAD", "MAX_POOL_2D"]
    result = export(hard_model, tmp_path / "sel", formats=["tflite_int8"],
                    representative_data=validation(hard_model.task_names, n=8), int8_float_ops=float_ops,
                    postprocessed=False)
    assert result.passed
    entry = result.report["formats"]["tflite_int8"]
    assert entry["float_ops"] == float_ops
    dtypes = selective_int8.op_input_dtypes(result.paths["tflite_int8"])
    assert dtypes["CONV_2D"] == ["int8"]
    assert "QUANTIZE" in dtypes and "DEQUANTIZE" in dtypes
    listed = [op for op in float_ops if op in dtypes]
    assert listed and all(dtypes[op] == ["float32"] for op in listed), dtypes
    x = images(2)
    ref, got = keras_outputs(hard_model, x), Runner(result.paths["tflite_int8"])(x)
    assert np.mean(np.abs(got["depth"] - ref["depth"])) < 2.0  # metres, on a 0-100 m range


def test_int8_float_ops_are_validated():
    assert selective_int8.int8_float_ops("x86") == selective_int8.INT8_FLOAT_OPS["x86"]
    assert selective_int8.int8_float_ops(None) == () and selective_int8.int8_float_ops("none") == ()
    assert selective_int8.int8_float_ops("depthwise_conv_2d, mul") == ("DEPTHWISE_CONV_2D", "MUL")
    with pytest.raises(ValueError, match="neither a preset"):
        selective_int8.int8_float_ops("x68 please")
    with pytest.raises(ValueError, match="int8_io=True needs a fully int8 model"):
        export("unused.keras", "/nonexistent/never", formats=["tflite_int8"], representative_data=np.zeros((1, 32, 64, 3)),
               int8_io=True, int8_float_ops="x86")


def test_cross_stitch_round_trips_with_int8_io(tmp_path):
    model = train_briefly(mtlzoo.build("driving_perception_cross_stitch", tasks=["depth", "scene"], **TINY), steps=8)
    val = validation(model.task_names, n=8)
    # The two formats checked below (the SavedModel and fp16 paths are covered by the hard-sharing export).
    result = export(model, tmp_path / "cs", formats=["tflite", "tflite_int8"], representative_data=val, int8_io=True,
                    postprocessed=False)
    assert result.passed
    x = images(2)
    ref = keras_outputs(model, x)
    runner = Runner(result.paths["tflite"])
    outs = runner(x)
    assert list(outs) == model.task_names == ["depth", "scene"]
    for t in model.task_names:
        assert np.abs(outs[t] - ref[t]).max() <= 1e-4 * max(1.0, float(np.abs(ref[t]).max()))
    int8 = Runner(result.paths["tflite_int8"])
    assert int8.input_details["dtype"] == np.int8 and int8.quantized_io
    q = int8(x)
    assert list(q) == model.task_names and all(q[t].dtype == np.float32 for t in q)
    assert np.mean(np.abs(q["depth"] - ref["depth"])) < 2.0  # metres, on a 0-100 m range
    assert result.report["formats"]["tflite_int8"]["io"].startswith("int8")


def test_postprocessed_signature_decodes_in_graph(hard_model, hard_export):
    loaded = tf.saved_model.load(str(hard_export.out_dir / "saved_model"))
    x = images(2, seed=3)
    ref = keras_outputs(hard_model, x)
    post = {k: v.numpy() for k, v in loaded.signatures["serving_postprocessed"](image=tf.constant(x)).items()}
    np.testing.assert_array_equal(post["segmentation"], ref["segmentation"].argmax(-1))
    np.testing.assert_allclose(post["scene"], 1 / (1 + np.exp(-ref["scene"])), atol=1e-5)
    np.testing.assert_allclose(post["depth"], ref["depth"], atol=1e-4)
    for i in range(2):
        boxes, scores, classes = decode_centernet(ref["detection"][i], 4, score_threshold=0.1)
        n = int(post["detection_num_detections"][i])
        assert n == min(len(boxes), 50)
        np.testing.assert_allclose(np.sort(post["detection_scores"][i][:n]), np.sort(scores[:n]), atol=1e-5)
        assert sorted(post["detection_classes"][i][:n].tolist()) == sorted(classes[:n].tolist())
        assert (post["detection_classes"][i][n:] == -1).all()


def test_decode_detections_matches_numpy_decoder():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 1, (2, 8, 16, 8)).astype("float32")
    pred[..., 4:6] *= 10
    out = sm.decode_detections(tf.constant(pred), 4, max_detections=20, score_threshold=0.5)
    for i in range(2):
        boxes, scores, classes = decode_centernet(pred[i], 4, max_detections=20, score_threshold=0.5)
        n = int(out["num_detections"][i])
        assert n == len(boxes)
        order = np.lexsort((classes, -scores))
        got = np.lexsort((out["classes"][i][:n].numpy(), -out["scores"][i][:n].numpy()))
        np.testing.assert_allclose(out["boxes"][i][:n].numpy()[got], boxes[order], atol=1e-4)


# ---------------------------------------------------------------- failures
def test_verification_fails_loudly_on_corrupted_tflite_output(hard_model, tmp_path, monkeypatch):
    original = Runner.__call__

    def corrupted(self, inputs, raw=False):
        out = original(self, inputs, raw)
        out["scene"] = out["scene"] + 0.01
        return out

    monkeypatch.setattr(Runner, "__call__", corrupted)
    target = tmp_path / "bad"
    with pytest.raises(ExportVerificationError, match="scene") as info:
        export(hard_model, target, formats=["tflite"], verify_data=images(4), postprocessed=False)
    assert info.value.report["formats"]["tflite"]["outputs"]["scene"]["passed"] is False
    assert info.value.report["formats"]["tflite"]["outputs"]["depth"]["passed"] is True
    assert not target.exists() and not hidden_leftovers(target)


def test_verification_fails_on_corrupted_saved_model_weight(hard_model, tmp_path, monkeypatch):
    """A weight corrupted in the exported SavedModel (not in the Keras model) is caught."""
    original = sm.export_saved_model
    bias = hard_model.get_layer("scene").bias

    def write_corrupted(model, path, **kwargs):
        saved = bias.numpy()
        bias.assign(saved + 0.05)  # only while the SavedModel is written
        try:
            return original(model, path, **kwargs)
        finally:
            bias.assign(saved)

    monkeypatch.setattr(sm, "export_saved_model", write_corrupted)
    with pytest.raises(ExportVerificationError, match="saved_model: scene") as info:
        export(hard_model, tmp_path / "bad_sm", formats=["saved_model"], verify_data=images(4), postprocessed=False)
    assert info.value.report["formats"]["saved_model"]["outputs"]["depth"]["passed"]
    assert not (tmp_path / "bad_sm").exists() and not hidden_leftovers(tmp_path / "bad_sm")


class CumProd(keras.layers.Layer):
    """An op without a TFLite builtin kernel (tf.Cumprod)."""

    def call(self, x):
        return tf.math.cumprod(x, axis=-1)


def test_flex_op_error_names_layer_and_task(tmp_path):
    base = mtlzoo.build("driving_perception_lite", tasks=["depth", "scene"], compile=False, **TINY)
    outputs = dict(base.output)
    outputs["scene"] = CumProd(name="scene__cumprod")(outputs["scene"])
    model = mtlzoo.MultiTaskModel(inputs=base.input, outputs=outputs, tasks=base.tasks)
    with pytest.raises(tfl.ConversionError) as info:
        export(model, tmp_path / "flex", formats=["tflite"], verify=False, postprocessed=False)
    message = str(info.value)
    assert "Cumprod" in message and "'scene__cumprod'" in message and "'scene'" in message
    assert info.value.tasks == ["scene"] and info.value.layers == ["scene__cumprod"]
    assert not (tmp_path / "flex").exists()


def test_bad_arguments(hard_model, hard_export, tmp_path):
    with pytest.raises(ValueError, match="representative_data"):
        export(hard_model, tmp_path / "a", formats=["tflite_int8"])
    with pytest.raises(ValueError, match="tflite_fp16"):
        export(hard_model, tmp_path / "a", formats=["tflite_fp61"])
    with pytest.raises(FileExistsError) as info:
        export(hard_model, hard_export.out_dir, formats=["tflite"])
    assert str(hard_export.out_dir) in str(info.value) and "overwrite=True" in str(info.value)
    assert not (tmp_path / "a").exists()


# ---------------------------------------------------------------- atomicity
def test_overwrite_replaces_and_interrupted_export_keeps_previous(hard_model, hard_export, tmp_path, monkeypatch):
    target = tmp_path / "m"
    shutil.copytree(hard_export.out_dir, target)
    before = tree_digest(target)
    # Interrupt midway: the SavedModel is in the staging folder when conversion "dies".
    seen = {}

    def dying_convert(saved_model_dir, *args, **kwargs):
        seen["staging"] = Path(saved_model_dir).parent
        assert (Path(saved_model_dir) / "saved_model.pb").is_file()
        raise KeyboardInterrupt("simulated kill during conversion")

    monkeypatch.setattr(tfl, "convert", dying_convert)
    with pytest.raises(KeyboardInterrupt):
        export(hard_model, target, formats=["tflite"], overwrite=True, verify_data=images(2), postprocessed=False)
    assert seen["staging"].parent == target.parent and seen["staging"] != target
    assert tree_digest(target) == before
    assert not seen["staging"].exists() and not hidden_leftovers(target)
    monkeypatch.undo()
    # overwrite=True replaces the whole folder (not a merge); nothing is left beside it.
    result = export(hard_model, target, formats=["tflite"], overwrite=True, verify_data=images(2), postprocessed=False)
    assert result.paths["tflite"].is_file() and not (target / "saved_model").exists()
    assert not (target / "model_int8.tflite").exists() and not hidden_leftovers(target)


def test_killed_export_process_leaves_previous_model_intact(hard_export, tmp_path):
    target = tmp_path / "prev"
    shutil.copytree(hard_export.out_dir, target)
    before = tree_digest(target)
    marker = tmp_path / "converting"
    script = textwrap.dedent(f"""
        import time, pathlib
        import mtlzoo
        from mtlzoo.export import export, tflite
        def stall(*a, **k):
            pathlib.Path({str(marker)!r}).write_text("x")
            time.sleep(600)
        tflite.convert = stall
        model = mtlzoo.build("driving_perception_lite", compile=False, tasks=["scene"],
                             backbone="tiny", backbone_args={{"width": 4}}, neck_channels=16, input_shape=(32, 64, 3))
        export(model, {str(target)!r}, formats=["tflite"], overwrite=True, verify=False, postprocessed=False)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "the export subprocess never reached conversion"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert tree_digest(target) == before  # the previous export is untouched
    stale = hidden_leftovers(target)
    assert len(stale) == 1 and ".tmp-" in stale[0]  # the staging folder of the dead process, beside it
    assert atomic.cleanup_stale(target) and not hidden_leftovers(target)
    assert tree_digest(target) == before


def test_atomic_publish_fallback_and_restore(tmp_path, monkeypatch):
    target = tmp_path / "out"
    with atomic.atomic_directory(target) as staging:
        (staging / "a.txt").write_text("one")
        (staging / atomic.MARKER_FILE).write_text("{}")  # what makes it an export that overwrite may replace
    assert (target / "a.txt").read_text() == "one"
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)  # no renameat2: rename aside, then in
    with atomic.atomic_directory(target, overwrite=True) as staging:
        (staging / "a.txt").write_text("two")
        (staging / atomic.MARKER_FILE).write_text("{}")
    assert (target / "a.txt").read_text() == "two" and not hidden_leftovers(target)
    with pytest.raises(RuntimeError):
        with atomic.atomic_directory(target, overwrite=True) as staging:
            (staging / "a.txt").write_text("half")
            raise RuntimeError("boom")
    assert (target / "a.txt").read_text() == "two" and not hidden_leftovers(target)
    # A process killed between "move aside" and "move in": the next export restores the aside folder.
    aside = tmp_path / ".out.old-999999999-deadbeef"
    os.replace(target, aside)
    assert atomic.cleanup_stale(target) == [str(aside)]
    assert (target / "a.txt").read_text() == "two"
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with atomic.atomic_directory(target):
            pass
