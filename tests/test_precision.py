"""`precision: mixed_bfloat16`: bfloat16 compute, float32 variables and task outputs, in every sharing mode."""

import keras
import numpy as np
import pytest

import mtlzoo
import mtlzoo.sharing  # noqa: F401  (registration)
from mtlzoo.recipe import RecipeError
from mtlzoo.registry import SHARING
from mtlzoo.testing import TINY_IMAGE, predict_eager, random_inputs, random_labels

RECIPE = "driving_perception_lite"


def _build(sharing, precision, **kwargs):
    tasks = {} if sharing == "hard" else {"tasks": ["depth", "scene"]}  # column and expert modes: two cheap heads
    return mtlzoo.build(RECIPE, sharing=sharing, precision=precision, **{**TINY_IMAGE, **tasks, **kwargs})


def _compute_dtypes(model):
    out = set()
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
        elif layer.weights:
            out.add(layer.dtype_policy.compute_dtype)
    return out


@pytest.mark.parametrize("sharing", SHARING.list())
def test_every_sharing_mode_computes_in_bfloat16_and_outputs_float32(sharing):
    mixed = _build(sharing, "mixed_bfloat16", compile=False)
    assert keras.config.dtype_policy().name == "float32"  # the build restored the global policy
    assert "bfloat16" in _compute_dtypes(mixed)
    assert {v.dtype for v in mixed.trainable_variables} == {"float32"}
    full = _build(sharing, "float32", compile=False)  # same seed: the same initial weights
    for a, b in zip(mixed.weights, full.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = random_inputs(mixed, 2)
    got, want = predict_eager(mixed, x), predict_eager(full, x)
    for task in want:
        assert got[task].dtype == np.float32, task
        assert np.isfinite(got[task]).all(), task
        scale = max(1.0, float(np.abs(want[task]).max()))
        # bfloat16 keeps 8 bits of mantissa: about 2-3 significant digits through the trunk
        assert np.abs(got[task] - want[task]).max() <= 0.1 * scale, (task, np.abs(got[task] - want[task]).max())


def test_bfloat16_model_trains_with_the_fused_optimizer_and_round_trips(tmp_path):
    model = _build("hard", "mixed_bfloat16")
    x, y = random_inputs(model, 4), random_labels(model, 4)
    history = model.fit(x, y, epochs=3, batch_size=4, verbose=0).history
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < history["loss"][0], history["loss"]
    assert history["nonfinite_steps"][-1] == 0
    assert type(model.optimizer).__name__ == "FusedAdam"  # float32 variables keep the fused update
    assert {v.dtype for v in model.optimizer.variables if "iteration" not in v.name} == {"float32"}
    model.save(tmp_path / "m.keras")
    reloaded = mtlzoo.load(tmp_path / "m.keras")
    assert "bfloat16" in _compute_dtypes(reloaded)
    assert reloaded.metadata["recipe"]["precision"] == "mixed_bfloat16"
    a, b = predict_eager(model, x), predict_eager(reloaded, x)
    for task in a:
        np.testing.assert_array_equal(a[task], b[task])


@pytest.mark.parametrize("value,message", [
    ("mixed_bfloat", "precision must be one of float32, mixed_bfloat16, got 'mixed_bfloat'. Did you mean 'mixed_bfloat16'"),
    ("mixed_float16", "needs loss scaling"),
    ("bfloat16", "precision must be one of"),
])
def test_precision_is_validated_with_the_fix(value, message):
    with pytest.raises(RecipeError, match=message):
        mtlzoo.get_recipe(RECIPE, precision=value)


def test_bench_step_precision_candidate_is_the_mixed_model():
    from mtlzoo.bench.step import _build_candidate

    recipe = mtlzoo.get_recipe(RECIPE, **TINY_IMAGE)
    model = _build_candidate(recipe, "variant", "precision=mixed_bfloat16", False)
    assert "bfloat16" in _compute_dtypes(model) and model.metadata["recipe"]["precision"] == "mixed_bfloat16"


def test_bench_step_variants_parse_and_reject_what_is_not_an_override():
    from mtlzoo.bench.step import _variants

    assert _variants({"variants": "fused_batch_norm=false; neck_channels=32", "precision": "float32,mixed_bfloat16"}) \
        == ["fused_batch_norm=false", "neck_channels=32", "precision=mixed_bfloat16"]
    assert _variants({}) == []
    with pytest.raises(ValueError, match="'fused_batch_norm' is not a recipe override key=value"):
        _variants({"variants": "fused_batch_norm"})
