"""Tests of the synthetic driving dataset: renderer geometry, tf.data pipeline, tfds builder."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import mtlzoo.data
from mtlzoo.data import pipeline
from mtlzoo.data.synthetic_driving import (
    DETECTION_CLASSES,
    MAX_DEPTH,
    SCENE_TAGS,
    SEGMENTATION_CLASSES,
    make_config,
    raw_example,
    render_scene,
)
from mtlzoo.heads.centernet_targets import encode_centernet_targets


tfds.disable_progress_bar()

SIZE = (128, 256)
SMALL = (64, 128)
SEG_OF_BOX_CLASS = {0: 6, 1: 7, 2: 8, 3: 9}  # car, pedestrian, traffic_light, stop_sign -> seg ids
ROAD, SKY = 1, 0


@pytest.fixture(scope="module")
def scenes():
    return [render_scene(0, i, SIZE) for i in range(24)]


def _iou(a, b):
    y0, x0 = max(a[0], b[0]), max(a[1], b[1])
    y1, x1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, y1 - y0) * max(0.0, x1 - x0)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _pixel_box(mask):
    ys, xs = np.nonzero(mask)
    return (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)


def _check_boxes_match_segmentation(seg, boxes, classes):
    """Every object-class pixel lies in a box of its class; each box is tight on its class pixels."""
    for det_cls, seg_cls in SEG_OF_BOX_CLASS.items():
        mask = seg == seg_cls
        mine = [b for b, c in zip(boxes, classes) if c == det_cls]
        if not mine:
            assert not mask.any(), f"{DETECTION_CLASSES[det_cls]} pixels without a box"
            continue
        covered = np.zeros_like(mask)
        for y0, x0, y1, x1 in np.asarray(mine).astype(int):
            inside = mask[y0:y1, x0:x1]
            covered[y0:y1, x0:x1] = True
            # Tight: the box's first/last rows and columns hold pixels of the class.
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        assert not (mask & ~covered).any(), f"{DETECTION_CLASSES[det_cls]} pixels outside every box"
        if len(mine) == 1:  # a single object of the class: box == bbox of the class pixels
            assert _iou(tuple(mine[0]), _pixel_box(mask)) > 0.99


def test_render_outputs_follow_the_conventions(scenes):
    assert len(SEGMENTATION_CLASSES) == 10 and len(DETECTION_CLASSES) == 4 and len(SCENE_TAGS) == 5
    for ex in scenes:
        assert ex["image"].shape == (*SIZE, 3) and ex["image"].dtype == np.uint8
        assert ex["segmentation"].shape == SIZE and ex["segmentation"].dtype == np.int32
        assert ex["depth"].shape == (*SIZE, 1) and ex["depth"].dtype == np.float32
        assert ex["boxes"].dtype == np.float32 and ex["boxes"].shape[1:] == (4,)
        assert ex["box_classes"].dtype == np.int32 and len(ex["box_classes"]) == len(ex["boxes"])
        assert ex["scene"].shape == (5,) and ex["scene"].dtype == np.float32
        seg, depth = ex["segmentation"], ex["depth"][..., 0]
        assert seg.min() >= 0 and seg.max() <= 9
        assert np.all(depth[seg == SKY] == 0.0)  # sky: invalid depth
        assert np.all(depth[seg != SKY] > 0.0) and depth.max() <= MAX_DEPTH
        b = ex["boxes"]
        assert np.all(b[:, 0] >= 0) and np.all(b[:, 1] >= 0) and np.all(b[:, 2] <= SIZE[0]) and np.all(b[:, 3] <= SIZE[1])
        assert np.all(b[:, 2] > b[:, 0]) and np.all(b[:, 3] > b[:, 1])
    # The set is varied: every segmentation class and every box class occurs.
    assert set(np.unique(np.concatenate([s["segmentation"].ravel() for s in scenes]))) == set(range(10))
    assert set(np.concatenate([s["box_classes"] for s in scenes])) == {0, 1, 2, 3}


def test_same_seed_same_scene_other_seed_other_scene():
    a, b = render_scene(3, 5, SMALL), render_scene(3, 5, SMALL)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image"], render_scene(4, 5, SMALL)["image"])
    assert not np.array_equal(a["image"], render_scene(3, 6, SMALL)["image"])


def test_road_depth_is_metric_ground_plane_growing_toward_horizon(scenes):
    for ex in scenes:
        seg, depth = ex["segmentation"], ex["depth"][..., 0]
        fy, cy = ex["intrinsics"][1], ex["intrinsics"][3]
        h, pitch = float(ex["camera_height"]), float(ex["camera_pitch"])
        rows = [r for r in range(SIZE[0]) if (seg[r] == ROAD).sum() >= 3 and depth[r][seg[r] == ROAD].max() < MAX_DEPTH]
        assert len(rows) > 10
        means = np.array([depth[r][seg[r] == ROAD].mean() for r in rows])
        assert np.all(np.diff(means) < 0), "road depth must decrease going down the image"
        for r, m in zip(rows, means):
            # Z-depth of a flat road is constant along a row and equals the ground-plane ray depth.
            assert np.ptp(depth[r][seg[r] == ROAD]) < 1e-3 * m + 1e-4
            dcy = (r + 0.5 - cy) / fy
            expected = h / (dcy * np.cos(pitch) + np.sin(pitch))
            assert abs(m - expected) < 1e-3 * expected


def test_boxes_match_their_segmentation_pixels(scenes):
    for ex in scenes:
        _check_boxes_match_segmentation(ex["segmentation"], ex["boxes"], ex["box_classes"])


def test_objects_are_drawn_with_size_inverse_to_depth(scenes):
    ratios = []
    for ex in scenes:
        fy = ex["intrinsics"][1]
        for (y0, x0, y1, x1), cls in zip(ex["boxes"].astype(int), ex["box_classes"]):
            if cls != 0 or x0 == 0 or x1 == SIZE[1] or y1 == SIZE[0]:
                continue
            mask = ex["segmentation"][y0:y1, x0:x1] == 6
            z = np.median(ex["depth"][y0:y1, x0:x1, 0][mask])
            ratios.append((y1 - y0) * z / fy)  # metric height = pixel height * Z / f
    ratios = np.array(ratios)
    assert len(ratios) >= 10
    # Cars are 1.35-1.9 m tall; occlusion by a nearer object can only shorten a visible box.
    assert np.all(ratios < 2.1), ratios
    assert np.mean((ratios > 1.15) & (ratios < 2.1)) > 0.8, ratios


def test_scene_tags_agree_with_boxes_and_pixels(scenes):
    seen_red = False
    for ex in scenes:
        tags, classes = ex["scene"], ex["box_classes"]
        for c in range(4):
            assert tags[c] == float(np.any(classes == c))
            assert tags[c] == float(np.any(ex["segmentation"] == SEG_OF_BOX_CLASS[c]))
        assert tags[4] <= tags[2]  # a red light needs a traffic light
        seen_red |= bool(tags[4])
    assert seen_red


def test_horizontal_flip_flips_every_label_together():
    raw = raw_example(0, 4, SIZE)
    assert raw["num_boxes"] >= 3
    flipped = {k: np.asarray(v) for k, v in pipeline.horizontal_flip(raw).items()}
    np.testing.assert_array_equal(flipped["image"], raw["image"][:, ::-1])
    np.testing.assert_array_equal(flipped["segmentation"], raw["segmentation"][:, ::-1])
    np.testing.assert_array_equal(flipped["depth"], raw["depth"][:, ::-1])
    n = int(raw["num_boxes"])
    b = raw["boxes"][:n]
    np.testing.assert_allclose(flipped["boxes"][:n], np.stack([b[:, 0], SIZE[1] - b[:, 3], b[:, 2], SIZE[1] - b[:, 1]], 1))
    assert np.all(flipped["boxes"][n:] == 0)
    _check_boxes_match_segmentation(flipped["segmentation"], flipped["boxes"][:n], raw["box_classes"][:n])


def test_load_batches_have_documented_shapes_and_dtypes():
    ds = mtlzoo.data.load("synthetic_driving", split="validation", batch_size=3, image_size=SMALL,
                          num_examples=3, with_boxes=True)
    image, labels = next(iter(ds))
    h, w = SMALL
    assert image.dtype == tf.float32 and image.shape == (3, h, w, 3)
    assert 0.0 <= float(tf.reduce_min(image)) and float(tf.reduce_max(image)) <= 255.0
    assert labels["segmentation"].dtype == tf.int32 and labels["segmentation"].shape == (3, h, w)
    assert labels["depth"].dtype == tf.float32 and labels["depth"].shape == (3, h, w, 1)
    assert labels["detection"].dtype == tf.float32 and labels["detection"].shape == (3, h // 4, w // 4, 9)
    assert labels["scene"].dtype == tf.float32 and labels["scene"].shape == (3, 5)
    assert labels["boxes"].shape == (3, 32, 4) and labels["box_classes"].shape == (3, 32)
    for i in range(3):  # validation: no shuffle, no flip -> exactly the rendered scenes
        ref = render_scene(0, 1_000_000_000 + i, SMALL)
        np.testing.assert_array_equal(image[i].numpy(), ref["image"].astype(np.float32))
        np.testing.assert_array_equal(labels["segmentation"][i].numpy(), ref["segmentation"])
        n = len(ref["boxes"])
        assert int(labels["num_boxes"][i]) == n
        np.testing.assert_allclose(labels["boxes"][i, :n].numpy(), ref["boxes"])
        np.testing.assert_allclose(
            labels["detection"][i].numpy(),
            encode_centernet_targets(ref["boxes"], ref["box_classes"], SMALL, num_classes=4, stride=4),
            atol=1e-6,  # TF threads flush denormals to zero
        )
    # `tasks` selects the label keys.
    _, only = next(iter(mtlzoo.data.load("synthetic_driving", batch_size=1, image_size=SMALL, num_examples=1,
                                         tasks=["depth", "scene"])))
    assert set(only) == {"depth", "scene"}


def test_augmented_training_batches_flip_image_and_labels_consistently():
    ds = mtlzoo.data.load("synthetic_driving", batch_size=8, image_size=SMALL, num_examples=8, shuffle=False,
                          augment=True, with_boxes=True, seed=1)
    image, labels = next(iter(ds))
    flips = []
    for i in range(8):
        ref = render_scene(1, i, SMALL)
        flipped = np.array_equal(image[i].numpy(), ref["image"][:, ::-1].astype(np.float32))
        if not flipped:
            np.testing.assert_array_equal(image[i].numpy(), ref["image"].astype(np.float32))
        flips.append(flipped)
        seg, depth = ref["segmentation"], ref["depth"]
        if flipped:
            seg, depth = seg[:, ::-1], depth[:, ::-1]
        np.testing.assert_array_equal(labels["segmentation"][i].numpy(), seg)
        np.testing.assert_array_equal(labels["depth"][i].numpy(), depth)
        n = int(labels["num_boxes"][i])
        boxes = labels["boxes"][i, :n].numpy()
        _check_boxes_match_segmentation(seg, boxes, labels["box_classes"][i, :n].numpy())
        np.testing.assert_allclose(
            labels["detection"][i].numpy(),
            encode_centernet_targets(boxes, labels["box_classes"][i, :n].numpy(), SMALL, num_classes=4, stride=4),
            atol=1e-6,  # TF threads flush denormals to zero
        )
    assert any(flips) and not all(flips)


def test_label_fractions_hold_and_are_deterministic():
    kept = pipeline.label_presence(0, np.arange(20000), "depth", 0.3)
    assert abs(kept.mean() - 0.3) < 0.015
    np.testing.assert_array_equal(kept, pipeline.label_presence(0, np.arange(20000), "depth", 0.3))
    assert not np.array_equal(kept, pipeline.label_presence(1, np.arange(20000), "depth", 0.3))

    def missing_depth(split, n):
        ds = mtlzoo.data.load("synthetic_driving", split=split, batch_size=100, image_size=(32, 64), num_examples=n,
                              tasks=["depth", "scene"], label_fractions={"depth": 0.3}, shuffle=False, augment=False)
        out, scene_missing = [], 0
        for _, labels in ds:
            out.append(np.all(labels["depth"].numpy() == 0.0, axis=(1, 2, 3)))
            scene_missing += int(np.sum(np.all(labels["scene"].numpy() == -1.0, axis=1)))
        assert scene_missing == 0
        return np.concatenate(out)

    missing = missing_depth("train", 200)
    assert abs((1 - missing.mean()) - 0.3) < 0.1
    np.testing.assert_array_equal(~missing, pipeline.label_presence(0, np.arange(200), "depth", 0.3))
    assert not missing_depth("validation", 20).any()  # only training examples lose labels


def test_missing_labels_use_the_documented_fill_values():
    ds = mtlzoo.data.load("synthetic_driving", batch_size=16, image_size=(32, 64), num_examples=16, shuffle=False,
                          label_fractions={"segmentation": 0.0, "detection": 0.0, "scene": 0.0, "depth": 0.0})
    _, labels = next(iter(ds))
    assert np.all(labels["segmentation"].numpy() == -1)
    assert np.all(labels["depth"].numpy() == 0.0)
    assert np.all(labels["detection"].numpy() == -1.0)
    assert np.all(labels["scene"].numpy() == -1.0)


def test_tfds_builder_prepares_offline_and_loads(tmp_path):
    assert "synthetic_driving" in tfds.list_builders()
    builder = tfds.builder("synthetic_driving", data_dir=str(tmp_path))
    assert builder.builder_config.name == "128x256"
    assert {"128x256", "256x512"} <= set(builder.builder_configs)

    config = make_config(SMALL, num_train=3, num_validation=1, num_test=1)
    ds = tfds.load("synthetic_driving", split="train", data_dir=str(tmp_path), builder_kwargs={"config": config})
    examples = list(tfds.as_numpy(ds))
    assert len(examples) == 3
    for ex in examples:
        ref = render_scene(0, int(ex["index"]), SMALL)
        np.testing.assert_array_equal(ex["image"], ref["image"])
        np.testing.assert_array_equal(ex["segmentation"], ref["segmentation"])
        np.testing.assert_array_equal(ex["depth"], ref["depth"])
        np.testing.assert_allclose(ex["objects"]["bbox"], ref["boxes"].reshape(-1, 4))
        np.testing.assert_array_equal(ex["objects"]["label"], ref["box_classes"])

    # mtlzoo.data.load reads the prepared files when given the data_dir.
    sizes = {"train": 3, "validation": 1, "test": 1}
    batches = list(mtlzoo.data.load("synthetic_driving", batch_size=2, image_size=SMALL, data_dir=str(tmp_path),
                                    split_sizes=sizes))
    assert [int(b[0].shape[0]) for b in batches] == [2, 1]
    assert batches[0][1]["detection"].shape == (2, 16, 32, 9)
    with pytest.raises(ValueError, match="exceeds"):
        mtlzoo.data.load("synthetic_driving", image_size=SMALL, data_dir=str(tmp_path), split_sizes=sizes,
                         num_examples=10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "synthetic_drivng"}, "Did you mean 'synthetic_driving'"),
        ({"image_size": (100, 200)}, "divisible by 32"),
        ({"image_size": (0, 64)}, "positive"),
        ({"label_fractions": {"depth": 1.5}}, r"outside \[0, 1\]"),
        ({"label_fractions": {"dept": 0.3}}, "Did you mean 'depth'"),
        ({"num_examples": 0}, "empty"),
        ({"tasks": ["segmentaton"]}, "Did you mean 'segmentation'"),
        ({"split": "val"}, "validation"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, message):
    kwargs = dict(kwargs)
    name = kwargs.pop("name", "synthetic_driving")
    with pytest.raises(ValueError, match=message):
        mtlzoo.data.load(name, **kwargs)


def test_unknown_dataset_lists_known_names():
    assert "synthetic_driving" in mtlzoo.data.DATASETS
    with pytest.raises(ValueError, match="Known datasets: .*synthetic_driving"):
        mtlzoo.data.load("imagenet")


@pytest.mark.benchmark  # runs `mtlzoo bench data`: on demand
def test_bench_data_reports_throughput(capsys):
    from mtlzoo.bench.data import run

    result = run({"image_size": "32x64", "num_scenes": 2, "num_examples": 4, "batch_size": 2, "recipe": None})
    assert result["renderer_scenes_per_s"] > 0 and result["pipeline_examples_per_s"] > 0
    assert result["pipeline_prepared_examples_per_s"] > 0  # read back from the prepared tfds files
    out = capsys.readouterr().out
    assert "scenes/s" in out and "prepared files" in out
