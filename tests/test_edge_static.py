"""Edge TFLite exports: static batch 1, no run-time shape ops, one XNNPACK partition; SavedModel keeps a free batch."""

import keras
import numpy as np
import pytest

import mtlzoo
import mtlzoo.edge
from mtlzoo.export import tflite as tfl
from mtlzoo.export.edge_graph import DYNAMIC_SHAPE_OPS, edge_friendly, export_edge_saved_model, nearest_upsample

# The trained tiny model and its export (all formats) are shared with test_export.py.
from test_export import hard_export, hard_model, images, keras_outputs  # noqa: F401


TFLITE_FORMATS = ("tflite", "tflite_fp16", "tflite_int8")


def assert_close(outputs, reference, factor):
    for t, ref in reference.items():
        assert outputs[t].shape == ref.shape, t
        assert np.abs(outputs[t] - ref).max() <= factor * max(1.0, float(np.abs(ref).max())), t


@pytest.mark.parametrize("fmt", TFLITE_FORMATS)
def test_edge_tflite_has_static_batch_no_shape_ops_and_one_partition(fmt, hard_export):
    path = hard_export.paths[fmt]
    assert tfl.signature_input_shape(path) == [1, 32, 64, 3]
    ops = tfl.op_names(path)
    assert not set(ops) & set(DYNAMIC_SHAPE_OPS), ops
    info = tfl.analyze(path)
    assert info["partitions"] == 1 and info["undelegated_ops"] == {}, info
    assert info["delegated_ops"] == info["ops"] == sum(info["op_counts"].values())
    entry = hard_export.report["formats"][fmt]  # the verification report says the same
    assert entry["input_shape"] == [1, 32, 64, 3] and entry["delegation"]["partitions"] == 1
    assert entry["rewrites"]["upsampling_nearest"] == 3  # the neck's three x2 nearest upsamplings


def test_static_batch_runner_runs_batches_and_matches_keras(hard_model, hard_export):
    runner = mtlzoo.edge.load(hard_export.paths["tflite"])
    assert runner.static_batch == 1
    x = images(3, seed=11)
    assert_close(runner(x), keras_outputs(hard_model, x), 1e-4)  # three examples, run in turn
    assert_close(mtlzoo.edge.load(hard_export.paths["tflite_fp16"])(x), keras_outputs(hard_model, x), 2e-2)
    for fmt in TFLITE_FORMATS:  # within the verification tolerances of the export itself
        assert hard_export.report["formats"][fmt]["passed"], fmt


def test_saved_model_keeps_a_dynamic_batch(hard_model, hard_export):
    runner = mtlzoo.edge.load(hard_export.paths["saved_model"])
    assert runner.input_details["shape_signature"][0] is None
    x = images(5, seed=12)
    assert_close(runner(x), keras_outputs(hard_model, x), 1e-5)  # one call with batch 5


def test_dynamic_batch_conversion_shows_what_the_edge_graph_removes(hard_model, hard_export):
    """The serving SavedModel (free batch, no rewrites) gives the ops the edge export removes."""
    info = tfl.analyze(tfl.convert(hard_export.paths["saved_model"], "float32", model=hard_model))
    assert {"SHAPE", "TILE"} <= set(info["undelegated_ops"]) and info["partitions"] > 1, info


def test_nearest_upsample_is_identical_to_keras():
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 4)).astype("float32")
    for size in ((2, 2), (3, 1), (1, 2), (2, 3)):
        want = keras.layers.UpSampling2D(size, interpolation="nearest")(x)
        np.testing.assert_array_equal(np.asarray(nearest_upsample(keras.ops.convert_to_tensor(x), size)), want)


def all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from all_layers(layer)


def test_int8_edge_graph_replaces_the_fused_hard_swish(tmp_path):
    model = mtlzoo.build("driving_perception_lite", input_shape=(32, 64, 3), tasks=["scene"], compile=False)
    hard_swish = [layer for layer in all_layers(model)
                  if isinstance(layer, keras.layers.Activation) and layer.activation is keras.activations.hard_swish]
    assert hard_swish  # MobileNetV3-Small
    x = images(4, seed=13)
    with edge_friendly(model, "int8") as counts:
        assert counts["hard_swish"] == len(hard_swish)
        assert not any(layer.activation is keras.activations.hard_swish for layer in hard_swish)
        rewritten = keras_outputs(model, x)
    assert all(layer.activation is keras.activations.hard_swish for layer in hard_swish)  # undone
    assert_close(rewritten, keras_outputs(model, x), 1e-5)  # the same function with other ops
    with edge_friendly(model, "float32") as counts:
        assert counts["hard_swish"] == 0  # float32 keeps the fused HARD_SWISH, which XNNPACK runs
    export_edge_saved_model(model, tmp_path / "edge", "int8")
    info = tfl.analyze(tfl.convert(tmp_path / "edge", "int8", representative=x, model=model))
    assert "HARD_SWISH" not in info["op_counts"], info
    # Untrained BatchNorm statistics give activations in the thousands: XNNPACK then refuses an int8 ADD whose
    # input/output scale ratio passes 256 (the `+ 3` clamped to [0, 6]). A trained model has none (next test).
    assert set(info["undelegated_ops"]) <= {"ADD"}, info


def test_shipped_edge_models_are_static_batch_one_partition():
    """The zoo's int8 and fp16 files, exported by the static-batch edge graph (`mtlzoo.zoo.publishing.refresh_edge`)."""
    from mtlzoo import zoo

    for file in ("model_int8.tflite", "model_fp16.tflite"):
        path = zoo.resolve(f"zoo:driving_perception_lite/{file}")
        assert tfl.signature_input_shape(path) == [1, 128, 256, 3], file
        info = tfl.analyze(path)
        assert not set(info["op_counts"]) & set(DYNAMIC_SHAPE_OPS), (file, info)
        assert info["partitions"] == 1 and info["undelegated_ops"] == {}, (file, info)


@pytest.mark.benchmark  # runs `mtlzoo bench latency`: on demand, `pytest -m benchmark`
def test_bench_latency_reports_partitions_and_ops_on_builtin_kernels():
    from mtlzoo.bench.latency import run
    from mtlzoo.testing import TINY_IMAGE

    report = run(dict(TINY_IMAGE, recipe="driving_perception_lite", repeats=2, warmup=1, threads=1,
                      single_task=False, dynamic=True))
    static, dynamic = report["candidates"]["tflite_float32_t1"], report["candidates"]["tflite_float32_dynamic_t1"]
    assert static["input_shape"] == [1, 32, 64, 3] and dynamic["input_shape"] == [-1, 32, 64, 3]
    assert static["partitions"] == 1 and static["undelegated_ops"] == {}
    assert dynamic["partitions"] > 1 and {"SHAPE", "TILE"} <= set(dynamic["undelegated_ops"])
    assert all(isinstance(report["candidates"][f"tflite_{p}_t1"]["partitions"], int) for p in ("fp16", "int8"))
    assert {"int8_over_float32_t1", "int8_over_keras_direct_t1", "int8_over_float32_t1_cpu"} <= set(
        report["int8_vs_float32"])
