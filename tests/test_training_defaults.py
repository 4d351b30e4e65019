"""Training defaults: BatchNorm momentum for every layer, warm-up + cosine schedule, photometric augmentation."""

import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
from mtlzoo.bench import defaults
from mtlzoo.data import pipeline
from mtlzoo.recipe import RecipeError
from mtlzoo.testing import TINY_IMAGE


def _batchnorms(model):
    stack, out = [model], []
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.layers.BatchNormalization):
            out.append(layer)
        stack.extend(getattr(layer, "layers", []) or [])
    return out


def test_bn_momentum_reaches_every_batchnorm_and_survives_saving(tmp_path):
    model = mtlzoo.build("driving_perception_lite", bn_momentum=0.9, compile=False, backbone="mobilenetv3_small",
                         input_shape=(64, 64, 3))
    layers = _batchnorms(model)
    names = {layer.name for layer in layers}
    # backbone, neck and head BatchNorm layers alike
    assert any(n.startswith("segmentation__") for n in names) and len(layers) > 20
    assert {layer.momentum for layer in layers} == {0.9}
    model.save(tmp_path / "m.keras")
    assert {layer.momentum for layer in _batchnorms(mtlzoo.load(tmp_path / "m.keras", compile=False))} == {0.9}
    default = mtlzoo.build("driving_perception_lite", compile=False, bn_momentum=None, **TINY_IMAGE)
    assert 0.99 in {layer.momentum for layer in _batchnorms(default)}  # None: each layer's own default
    assert mtlzoo.get_recipe("driving_perception_lite").bn_momentum == 0.9  # the shipped recipe's default


def test_bn_momentum_moves_the_moving_statistics_faster():
    x = np.random.default_rng(0).uniform(0, 255, (4,) + TINY_IMAGE["input_shape"]).astype("float32")
    moved = {}
    for momentum in (None, 0.5):
        model = mtlzoo.build("driving_perception_lite", compile=False, bn_momentum=momentum, **TINY_IMAGE)
        bn = next(layer for layer in _batchnorms(model) if layer.name.startswith("depth__"))
        before = np.asarray(bn.moving_mean).copy()
        model(x, training=True)
        moved[momentum] = np.abs(np.asarray(bn.moving_mean) - before).max()
    assert moved[0.5] > 10 * moved[None] > 0


@pytest.mark.parametrize("value", [0, 1, 1.5, "0.9", True])
def test_bn_momentum_is_checked(value):
    with pytest.raises(RecipeError, match="bn_momentum must be a number in \\(0, 1\\)"):
        mtlzoo.get_recipe("driving_perception_lite", bn_momentum=value)


def test_cosine_schedule_warms_up_then_decays():
    recipe = mtlzoo.get_recipe("tabular_demo", optimizer={"name": "adam", "learning_rate": 0.01, "schedule": "cosine",
                                                          "warmup": 0.1, "final_lr_fraction": 0.1})
    schedule = recipe.make_optimizer(total_steps=100).learning_rate
    if not callable(schedule):  # Keras keeps the schedule on the optimizer
        schedule = recipe.make_optimizer(total_steps=100)._learning_rate
    lr = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    assert lr[0] == pytest.approx(0.0) and lr[1] == pytest.approx(0.005, rel=1e-4)
    assert lr[2] == pytest.approx(0.01, rel=1e-4)  # the peak at the end of the warm-up
    assert lr[2] > lr[3] > lr[4] and lr[4] == pytest.approx(0.001, rel=1e-3)
    with pytest.raises(RecipeError, match="schedule must be 'cosine'"):
        mtlzoo.get_recipe("tabular_demo", optimizer={"name": "adam", "schedule": "step"}).make_optimizer(10)


def test_train_gives_the_schedule_the_run_length_and_build_alone_warns():
    opt = {"name": "adam", "learning_rate": 0.01, "schedule": "cosine", "warmup": 2}
    x = np.random.default_rng(0).normal(size=(32, 16)).astype("float32")
    y = {"label": np.zeros(32, "int32"), "target": np.zeros((32, 1), "float32")}
    result = mtlzoo.train("tabular_demo", data=(x, y), validation_data=False, epochs=2, verbose=0,
                          optimizer=opt, **{"training.batch_size": 8})
    optimizer = result.model.optimizer
    assert int(optimizer.iterations) == 8
    # 8 steps: 2 of warm-up, then a cosine decay to 0 at step 8
    assert float(optimizer.learning_rate) == pytest.approx(0.0, abs=1e-7)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mtlzoo.build("tabular_demo", optimizer=opt)
    assert any("needs the number of training steps" in str(w.message) for w in caught)


def test_color_jitter_changes_the_image_only_and_is_repeatable():
    ds_kwargs = dict(batch_size=4, num_examples=4, image_size=(32, 64), shuffle=False)
    plain = next(iter(mtlzoo.data.load("synthetic_driving", augment=False, **ds_kwargs)))
    first = next(iter(mtlzoo.data.load("synthetic_driving", augment=True, color_jitter=0.3, **ds_kwargs)))
    again = next(iter(mtlzoo.data.load("synthetic_driving", augment=True, color_jitter=0.3, **ds_kwargs)))
    np.testing.assert_array_equal(first[0].numpy(), again[0].numpy())
    assert not np.allclose(first[0].numpy(), plain[0].numpy())
    assert first[0].numpy().min() >= 0.0 and first[0].numpy().max() <= 255.0
    image = tf.constant(np.random.default_rng(1).uniform(0, 255, (8, 8, 3)), tf.float32)
    out = pipeline.color_jitter_image(image, 0.3, tf.constant([3, 4]))
    # one draw per image: the per-image mean moves, the layout of the pixels does not
    flat_in, flat_out = image.numpy().mean(-1).ravel(), out.numpy().mean(-1).ravel()
    assert np.corrcoef(flat_in, flat_out)[0, 1] > 0.95
    np.testing.assert_allclose(pipeline.color_jitter_image(image, 0.0, tf.constant([3, 4])).numpy(), image.numpy(),
                               atol=1e-4)
    with pytest.raises(ValueError, match="color_jitter must be in"):
        mtlzoo.data.load("synthetic_driving", augment=True, color_jitter=1.5, **ds_kwargs)


def test_defaults_benchmark_variants_accumulate_and_tabulate(tmp_path):
    assert defaults.variant_overrides("before") == defaults.BEFORE
    cosine = defaults.variant_overrides("cosine")
    assert cosine["bn_momentum"] == 0.9 and cosine["optimizer"]["schedule"] == "cosine"
    assert cosine["data.color_jitter"] == 0.0 and defaults.variant_overrides("color_jitter")["data.color_jitter"] > 0
    with pytest.raises(ValueError, match="Unknown variant"):
        defaults.variant_overrides("nope")
    for variant, seed, miou in (("before", 0, 0.1), ("before", 1, 0.3), ("bn_momentum", 0, 0.5)):
        (tmp_path / f"{variant}__seed{seed}.json").write_text(json.dumps({
            "format": defaults.FORMAT, "variant": variant, "seed": seed, "metrics": {"seg": {"miou": miou}},
            "higher_is_better": {"seg": {"miou": True}}, "final_train_logs": {"loss": 1.0}}))
    table = defaults.report(str(tmp_path)).splitlines()
    assert table[0] == "| variant | seeds | seg miou ↑ | train loss |"
    assert table[2] == "| before | 2 | 0.2 ± 0.14 | 1 ± 0 |" and table[3] == "| bn_momentum | 1 | 0.5 | 1 |"


def test_defaults_table_goes_between_its_markers(tmp_path):
    doc = tmp_path / "b.md"
    doc.write_text("intro\n<!-- defaults-demo:begin -->\nold\n<!-- defaults-demo:end -->\nafter\n")
    assert defaults.write_table(str(doc), "demo", "| t |")
    text = doc.read_text()
    assert "old" not in text and "| t |" in text and text.startswith("intro") and text.endswith("after\n")
    assert not defaults.write_table(str(doc), "standard", "| t |")  # no markers for that budget: left alone
