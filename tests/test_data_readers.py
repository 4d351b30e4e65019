"""Tests for the real-dataset readers: npy benchmark (NYUv2, Cityscapes), Cityscapes PNG/tfds, BDD100K.

Every test writes a tiny fixture in the real on-disk format (npy, 8- and 16-bit
PNG, JPEG, JSON, the official zips) into tmp_path.
"""

import json
import os
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mtlzoo.data import bdd100k, cityscapes_tfds
from mtlzoo.data.bdd100k import BDD100K_DETECTION_CLASSES, load_bdd100k
from mtlzoo.data.cityscapes_tfds import (
    CITYSCAPES_BASELINE_M,
    CITYSCAPES_FOCAL_PX,
    load_cityscapes,
    load_cityscapes_tfds,
)
from mtlzoo.data.npy_benchmark import load_cityscapes_npy, load_nyuv2_npy
from mtlzoo.heads.centernet_targets import MISSING_VALUE, encode_centernet_targets


def _collect(dataset):
    """Concatenates all batches of a dataset into numpy arrays."""
    images, labels = [], {}
    for image, target in dataset:
        images.append(image.numpy())
        for key, value in target.items():
            labels.setdefault(key, []).append(value.numpy())
    return np.concatenate(images), {k: np.concatenate(v) for k, v in labels.items()}


def _up2(array):
    """Nearest-neighbour 2x upsampling of the two leading (spatial) axes."""
    return np.repeat(np.repeat(array, 2, axis=0), 2, axis=1)


# ============================================================================ npy benchmark

H, W = 8, 12


def _write_npy_split(root, split, n, dataset="nyuv2", depth_2d=False, seed=0):
    rng = np.random.default_rng(seed)
    data = {"image": [], "seg": [], "depth": [], "normal": []}
    label_dirs = ["label"] if dataset == "nyuv2" else ["label_7", "label_19"]
    for folder in ["image", "depth"] + label_dirs + (["normal"] if dataset == "nyuv2" else []):
        os.makedirs(os.path.join(root, split, folder), exist_ok=True)
    for i in range(n):
        image = rng.random((H, W, 3)).astype(np.float32)  # [0, 1] as in MTAN's files
        num_classes = 13 if dataset == "nyuv2" else 7
        seg = rng.integers(-1, num_classes, (H, W)).astype(np.float32)  # float with -1 ignore, as in MTAN
        seg[0, 0] = -1
        depth = rng.random((H, W, 1)).astype(np.float32) * 10
        depth[0, :] = 0  # invalid row
        normal = rng.normal(size=(H, W, 3)).astype(np.float32)
        normal[1, :] = 0  # invalid row
        np.save(os.path.join(root, split, "image", f"{i}.npy"), image)
        np.save(os.path.join(root, split, "depth", f"{i}.npy"), depth[..., 0] if depth_2d else depth)
        if dataset == "nyuv2":
            np.save(os.path.join(root, split, "label", f"{i}.npy"), seg)
            np.save(os.path.join(root, split, "normal", f"{i}.npy"), normal)
        else:
            np.save(os.path.join(root, split, "label_7", f"{i}.npy"), seg)
            np.save(os.path.join(root, split, "label_19", f"{i}.npy"), np.where(seg >= 0, seg + 10, -1))
        for key, value in (("image", image), ("seg", seg), ("depth", depth), ("normal", normal)):
            data[key].append(value)
    return {k: np.stack(v) for k, v in data.items()}


@pytest.fixture
def nyu(tmp_path):
    root = str(tmp_path / "nyuv2")
    data = _write_npy_split(root, "train", 3)
    _write_npy_split(root, "val", 2, seed=1)
    return root, data


def test_nyuv2_values_come_through_exactly(nyu):
    root, data = nyu
    dataset = load_nyuv2_npy(root, "train", batch_size=2)
    batches = list(dataset)
    assert [b[0].shape[0] for b in batches] == [2, 1]
    image, labels = batches[0]
    assert image.dtype == tf.float32 and image.shape == (2, H, W, 3)
    assert labels["segmentation"].dtype == tf.int32 and labels["segmentation"].shape == (2, H, W)
    assert labels["depth"].dtype == tf.float32 and labels["depth"].shape == (2, H, W, 1)
    assert labels["normal"].dtype == tf.float32 and labels["normal"].shape == (2, H, W, 3)
    images, labels = _collect(dataset)
    np.testing.assert_allclose(images, data["image"] * 255.0, rtol=1e-6)  # [0, 1] files -> [0, 255]
    np.testing.assert_array_equal(labels["segmentation"], data["seg"].astype(np.int32))
    assert (labels["segmentation"][:, 0, 0] == -1).all()  # ignore kept
    np.testing.assert_array_equal(labels["depth"], data["depth"])
    assert (labels["depth"][:, 0] == 0).all()
    np.testing.assert_array_equal(labels["normal"], data["normal"])
    assert (labels["normal"][:, 1] == 0).all()


def test_nyuv2_val_split_and_tasks_subset(nyu, tmp_path):
    root, _ = nyu
    images, labels = _collect(load_nyuv2_npy(root, "val", batch_size=4, tasks=["depth"]))
    assert images.shape == (2, H, W, 3) and set(labels) == {"depth"}
    # Folders of unselected tasks are not needed.
    os.rename(os.path.join(root, "train", "normal"), str(tmp_path / "moved"))
    _, labels = _collect(load_nyuv2_npy(root, "train", batch_size=4, tasks=("segmentation", "depth")))
    assert set(labels) == {"segmentation", "depth"}


def test_nyuv2_resize_bilinear_image_nearest_labels(nyu):
    root, data = nyu
    images, labels = _collect(load_nyuv2_npy(root, "train", batch_size=3, image_size=(2 * H, 2 * W)))
    assert images.shape == (3, 2 * H, 2 * W, 3)
    for i in range(3):
        np.testing.assert_array_equal(labels["segmentation"][i], _up2(data["seg"][i]).astype(np.int32))
        np.testing.assert_array_equal(labels["depth"][i], _up2(data["depth"][i]))
        np.testing.assert_array_equal(labels["normal"][i], _up2(data["normal"][i]))
    expected = tf.image.resize(data["image"] * 255.0, (2 * H, 2 * W), method="bilinear").numpy()
    np.testing.assert_allclose(images, expected, rtol=1e-5, atol=1e-3)


def test_nyuv2_shuffle_is_seeded_and_complete(nyu):
    root, data = nyu

    def order(seed):
        images, _ = _collect(load_nyuv2_npy(root, "train", batch_size=1, shuffle=True, seed=seed))
        return [int(np.argmin(np.abs(data["image"] * 255 - im).sum(axis=(1, 2, 3)))) for im in images]

    first = order(3)
    assert sorted(first) == [0, 1, 2]
    assert order(3) == first


def test_nyuv2_byte_range_images(tmp_path):
    root = str(tmp_path / "nyu")
    data = _write_npy_split(root, "train", 1)
    np.save(os.path.join(root, "train", "image", "0.npy"), data["image"][0] * 255)
    with pytest.raises(ValueError, match="image_range='byte'"):
        load_nyuv2_npy(root, "train")
    images, _ = _collect(load_nyuv2_npy(root, "train", image_range="byte"))
    np.testing.assert_allclose(images[0], data["image"][0] * 255, rtol=1e-6)


def test_cityscapes_npy_7_and_19_classes_2d_depth(tmp_path):
    root = str(tmp_path / "cityscapes")
    data = _write_npy_split(root, "val", 2, dataset="cityscapes", depth_2d=True)
    images, labels = _collect(load_cityscapes_npy(root, "val", batch_size=2))
    assert set(labels) == {"segmentation", "depth"}
    np.testing.assert_array_equal(labels["segmentation"], data["seg"].astype(np.int32))
    np.testing.assert_array_equal(labels["depth"], data["depth"])  # [H, W] files come out [H, W, 1]
    _, labels = _collect(load_cityscapes_npy(root, "val", batch_size=2, num_classes=19))
    np.testing.assert_array_equal(labels["segmentation"], np.where(data["seg"] >= 0, data["seg"] + 10, -1))
    with pytest.raises(ValueError, match="available tasks"):
        load_cityscapes_npy(root, "val", tasks=["normal"])
    with pytest.raises(FileNotFoundError, match="label_3"):
        load_cityscapes_npy(root, "val", num_classes=3)


# ---------------------------------------------------------------------------- npy errors


def test_npy_missing_folders(nyu, tmp_path):
    root, _ = nyu
    with pytest.raises(FileNotFoundError, match="Expected layout") as info:
        load_nyuv2_npy(str(tmp_path / "nope"), "train")
    assert "nope" in str(info.value) and "{root}/{split}/image/{i}.npy" in str(info.value)
    with pytest.raises(FileNotFoundError, match="test"):
        load_nyuv2_npy(root, "test")
    os.rename(os.path.join(root, "train", "normal"), str(tmp_path / "moved"))
    with pytest.raises(FileNotFoundError, match=r"train[/\\]normal"):
        load_nyuv2_npy(root, "train")


def test_npy_image_without_label_and_label_without_image(nyu):
    root, _ = nyu
    os.remove(os.path.join(root, "train", "label", "1.npy"))
    with pytest.raises(FileNotFoundError, match=r"label[/\\]1\.npy") as info:
        load_nyuv2_npy(root, "train")
    assert "Expected layout" in str(info.value)
    root2 = root.replace("nyuv2", "nyuv2b")
    _write_npy_split(root2, "train", 2)
    np.save(os.path.join(root2, "train", "depth", "5.npy"), np.zeros((H, W, 1), np.float32))
    with pytest.raises(FileNotFoundError, match=r"depth[/\\]5\.npy"):
        load_nyuv2_npy(root2, "train")


def test_npy_badly_named_and_empty(nyu, tmp_path):
    root, _ = nyu
    np.save(os.path.join(root, "val", "image", "extra.npy"), np.zeros((H, W, 3), np.float32))
    with pytest.raises(ValueError, match="extra.npy"):
        load_nyuv2_npy(root, "val")
    for folder in ("image", "label", "depth", "normal"):
        os.makedirs(tmp_path / "empty" / "train" / folder)
    with pytest.raises(ValueError, match="no \\{i\\}.npy"):
        load_nyuv2_npy(str(tmp_path / "empty"), "train")


@pytest.mark.parametrize(
    "folder, value, pattern",
    [
        ("label", np.zeros((H, W + 1), np.float32), "shape"),
        ("label", np.zeros((H, W, 3), np.float32), "shape"),
        ("label", np.full((H, W), 13, np.float32), "0..12"),
        ("label", np.full((H, W), -2, np.float32), "0..12"),
        ("label", np.full((H, W), 1.5, np.float32), "non-integer"),
        ("label", np.full((H, W), np.inf, np.float32), "NaN or inf"),
        ("label", np.zeros((H, W), bool), "dtype bool"),
        ("depth", np.full((H, W, 1), np.nan, np.float32), "NaN or inf"),
        ("depth", np.zeros((H, W, 2), np.float32), "shape"),
        ("depth", -np.ones((H, W, 1), np.float32), "negative"),
        ("normal", np.zeros((H, W), np.float32), "shape"),
        ("normal", np.zeros((H, W, 3), np.int32), "dtype int32"),
        ("image", np.zeros((H, W), np.float32), "shape"),
        ("image", np.zeros((H, W, 3), np.uint8), "dtype uint8"),
        ("image", np.full((H, W, 3), np.nan, np.float32), "NaN or inf"),
        ("image", np.zeros((H, W, 3), np.complex64), "dtype complex64"),
    ],
)
def test_npy_malformed_first_record(tmp_path, folder, value, pattern):
    root = str(tmp_path / "nyu")
    _write_npy_split(root, "train", 2)
    np.save(os.path.join(root, "train", folder, "0.npy"), value)
    with pytest.raises(ValueError, match=pattern) as info:
        load_nyuv2_npy(root, "train")
    assert os.path.join("train", folder, "0.npy") in str(info.value)
    assert "Expected layout" in str(info.value)


def test_npy_unreadable_file(tmp_path):
    root = str(tmp_path / "nyu")
    _write_npy_split(root, "train", 1)
    with open(os.path.join(root, "train", "depth", "0.npy"), "wb") as handle:
        handle.write(b"not a numpy file")
    with pytest.raises(ValueError, match="cannot read"):
        load_nyuv2_npy(root, "train")


def test_npy_malformed_later_record_validate_all_and_while_iterating(tmp_path):
    root = str(tmp_path / "nyu")
    _write_npy_split(root, "train", 3)
    np.save(os.path.join(root, "train", "label", "2.npy"), np.full((H, W), np.nan, np.float32))
    load_nyuv2_npy(root, "train")  # validate="first" does not read record 2 up front
    with pytest.raises(ValueError, match=r"label[/\\]2\.npy"):
        load_nyuv2_npy(root, "train", validate="all")
    with pytest.raises(tf.errors.OpError, match=r"2\.npy"):
        _collect(load_nyuv2_npy(root, "train", batch_size=1))


def test_npy_size_mismatch_needs_image_size(tmp_path):
    root = str(tmp_path / "nyu")
    _write_npy_split(root, "train", 2)
    for folder, shape in (("image", (H + 2, W, 3)), ("label", (H + 2, W)), ("depth", (H + 2, W, 1)),
                          ("normal", (H + 2, W, 3))):
        np.save(os.path.join(root, "train", folder, "1.npy"), np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match="image_size"):
        load_nyuv2_npy(root, "train", validate="all")
    images, _ = _collect(load_nyuv2_npy(root, "train", image_size=(H, W), validate="all"))
    assert images.shape == (2, H, W, 3)


def test_npy_bad_arguments(nyu):
    root, _ = nyu
    with pytest.raises(ValueError, match="available tasks"):
        load_nyuv2_npy(root, "train", tasks=["detection"])
    with pytest.raises(ValueError, match="batch_size"):
        load_nyuv2_npy(root, "train", batch_size=0)
    with pytest.raises(ValueError, match="image_range"):
        load_nyuv2_npy(root, "train", image_range="percent")
    with pytest.raises(ValueError, match="validate"):
        load_nyuv2_npy(root, "train", validate="some")
    with pytest.raises(ValueError, match="image_size"):
        load_nyuv2_npy(root, "train", image_size=(0, 4))
    with pytest.raises(ValueError, match="num_classes"):
        load_cityscapes_npy(root, "train", num_classes="7")


# ============================================================================ Cityscapes (PNG layout)

CH, CW = 4, 8
# Official label id -> (train id, category index) for the ids used in the fixture, written out by hand
# from the Cityscapes definition (cityscapesScripts helpers/labels.py).
EXPECTED_REMAP = {
    0: (-1, -1),    # unlabeled (void)
    4: (-1, -1),    # static (void)
    7: (0, 0),      # road, flat
    8: (1, 0),      # sidewalk, flat
    9: (-1, -1),    # parking: flat but not evaluated
    11: (2, 1),     # building, construction
    13: (4, 1),     # fence, construction
    14: (-1, -1),   # guard rail: not evaluated
    17: (5, 2),     # pole, object
    20: (7, 2),     # traffic sign, object
    21: (8, 3),     # vegetation, nature
    22: (9, 3),     # terrain, nature
    23: (10, 4),    # sky
    24: (11, 5),    # person, human
    25: (12, 5),    # rider, human
    26: (13, 6),    # car, vehicle
    29: (-1, -1),   # caravan: not evaluated
    31: (16, 6),    # train, vehicle
    33: (18, 6),    # bicycle, vehicle
}
DISPARITY_VALUES = np.array([0, 1, 257, 25601, 513, 2049, 0, 65535], np.uint16)  # one row


def _png(array):
    return tf.io.encode_png(tf.constant(array)).numpy()


def _write_cityscapes(root, splits=("train", "val"), per_split=(("aachen", 2), ("bonn", 1))):
    """Writes the official layout; returns {split: [(image, label_ids, disparity_raw), ...]} in sorted order."""
    rng = np.random.default_rng(0)
    ids = np.array(sorted(EXPECTED_REMAP), np.uint8)
    out = {}
    for split in splits:
        out[split] = []
        for city, count in per_split:
            for k in range(count):
                stem = f"{city}_{k:06d}_000019"
                image = rng.integers(0, 256, (CH, CW, 3), dtype=np.uint8)
                label = rng.choice(ids, size=(CH, CW)).astype(np.uint8)
                label[0, : len(ids[:CW])] = ids[:CW]
                disparity = np.tile(DISPARITY_VALUES, (CH, 1))
                disparity[1:] = rng.integers(0, 30000, (CH - 1, CW))
                for folder, name, data in (
                    ("leftImg8bit", f"{stem}_leftImg8bit.png", image),
                    ("gtFine", f"{stem}_gtFine_labelIds.png", label[..., None]),
                    ("disparity", f"{stem}_disparity.png", disparity[..., None]),
                ):
                    os.makedirs(os.path.join(root, folder, split, city), exist_ok=True)
                    with open(os.path.join(root, folder, split, city, name), "wb") as handle:
                        handle.write(_png(data))
                # Other gtFine files of the real release are ignored.
                with open(os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_polygons.json"), "w") as h:
                    h.write("{}")
                out[split].append((image, label, disparity))
    return out


def _expected_depth(raw, mode="depth"):
    raw = raw.astype(np.float64)
    d = np.where(raw > 0, (raw - 1) / 256.0, 0.0)
    if mode == "disparity":
        return d
    with np.errstate(divide="ignore"):
        return np.where(d > 0, CITYSCAPES_BASELINE_M * CITYSCAPES_FOCAL_PX / d, 0.0)


@pytest.fixture
def cityscapes(tmp_path):
    root = str(tmp_path / "cityscapes")
    return root, _write_cityscapes(root)


def test_cityscapes_label_tables_match_the_official_definition():
    ids = np.array(sorted(EXPECTED_REMAP))
    np.testing.assert_array_equal(cityscapes_tfds.label_id_to_train_id(ids), [EXPECTED_REMAP[i][0] for i in ids])
    np.testing.assert_array_equal(cityscapes_tfds.label_id_to_category(ids), [EXPECTED_REMAP[i][1] for i in ids])
    assert cityscapes_tfds.CITYSCAPES_TRAIN_CLASSES == (
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
        "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
    train_ids = cityscapes_tfds.label_id_to_train_id(np.arange(256))
    assert sorted(set(train_ids.tolist())) == list(range(-1, 19))
    assert (train_ids[34:] == -1).all()
    assert sorted(set(cityscapes_tfds.label_id_to_category(np.arange(256)).tolist())) == list(range(-1, 7))


@pytest.mark.parametrize("num_classes, column", [(19, 0), (7, 1)])
def test_cityscapes_values_remap_and_depth(cityscapes, num_classes, column):
    root, data = cityscapes
    dataset = load_cityscapes(root, "train", batch_size=2, num_classes=num_classes)
    images, labels = _collect(dataset)
    assert images.dtype == np.float32 and images.shape == (3, CH, CW, 3)
    assert labels["segmentation"].dtype == np.int32 and labels["depth"].shape == (3, CH, CW, 1)
    for i, (image, label, disparity) in enumerate(data["train"]):
        np.testing.assert_array_equal(images[i], image.astype(np.float32))
        expected = np.vectorize(lambda v: EXPECTED_REMAP[int(v)][column])(label)
        np.testing.assert_array_equal(labels["segmentation"][i], expected)
        np.testing.assert_allclose(labels["depth"][i, ..., 0], _expected_depth(disparity), rtol=1e-6)
    # The hand-checked first row: p = 0 and p = 1 invalid, p = 257 -> d = 1 -> depth = b * f.
    row = labels["depth"][0, 0, :, 0]
    assert row[0] == 0 and row[1] == 0 and row[6] == 0
    assert row[2] == pytest.approx(0.209313 * 2262.52, rel=1e-6)
    assert row[3] == pytest.approx(0.209313 * 2262.52 / 100, rel=1e-6)


def test_cityscapes_disparity_mode_and_resize(cityscapes):
    root, data = cityscapes
    _, labels = _collect(load_cityscapes(root, "val", batch_size=3, depth_mode="disparity"))
    np.testing.assert_allclose(labels["depth"][0, 0, :, 0], [0, 0, 1, 100, 2, 8, 0, 65534 / 256], rtol=1e-6)
    images, labels = _collect(load_cityscapes(root, "val", batch_size=3, depth_mode="disparity",
                                              image_size=(2 * CH, 2 * CW), num_classes=19))
    assert images.shape == (3, 2 * CH, 2 * CW, 3)
    image, label, disparity = data["val"][0]
    remapped = np.vectorize(lambda v: EXPECTED_REMAP[int(v)][0])(label)
    np.testing.assert_array_equal(labels["segmentation"][0], _up2(remapped))
    # Disparity is in pixels of the output image: doubled width -> doubled disparity.
    np.testing.assert_allclose(labels["depth"][0, ..., 0], _up2(_expected_depth(disparity, "disparity")) * 2,
                               rtol=1e-6)
    _, labels = _collect(load_cityscapes(root, "val", batch_size=3, image_size=(2 * CH, 2 * CW)))
    np.testing.assert_allclose(labels["depth"][0, ..., 0], _up2(_expected_depth(disparity)), rtol=1e-6)


def test_cityscapes_tasks_and_shuffle(cityscapes, tmp_path):
    root, _ = cityscapes
    os.rename(os.path.join(root, "disparity"), str(tmp_path / "moved"))
    with pytest.raises(FileNotFoundError, match="disparity"):
        load_cityscapes(root, "train")
    images, labels = _collect(load_cityscapes(root, "train", tasks="segmentation", shuffle=True, seed=1))
    assert set(labels) == {"segmentation"} and images.shape[0] == 3


def test_cityscapes_errors_missing(cityscapes, tmp_path):
    root, _ = cityscapes
    with pytest.raises(FileNotFoundError, match="Expected layout"):
        load_cityscapes(str(tmp_path / "nowhere"), "train")
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit[/\\]test"):
        load_cityscapes(root, "test")
    missing = os.path.join(root, "gtFine", "train", "bonn", "bonn_000000_000019_gtFine_labelIds.png")
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match="bonn_000000_000019_gtFine_labelIds.png") as info:
        load_cityscapes(root, "train")
    assert "{city}_{seq}_{frame}_leftImg8bit.png" in str(info.value)
    os.remove(os.path.join(root, "disparity", "val", "aachen", "aachen_000001_000019_disparity.png"))
    with pytest.raises(FileNotFoundError, match="aachen_000001_000019_disparity.png"):
        load_cityscapes(root, "val", tasks=["depth"])


@pytest.mark.parametrize(
    "folder, suffix, data, pattern",
    [
        ("gtFine", "_gtFine_labelIds.png", np.zeros((CH, CW, 3), np.uint8), "color type 2"),
        ("gtFine", "_gtFine_labelIds.png", np.full((CH, CW, 1), 40, np.uint8), "id 40"),
        ("gtFine", "_gtFine_labelIds.png", np.zeros((CH + 1, CW, 1), np.uint8), "5x8"),
        ("gtFine", "_gtFine_labelIds.png", b"not a png", "not a PNG"),
        ("disparity", "_disparity.png", np.zeros((CH, CW, 1), np.uint8), "bit depth 8"),
        ("disparity", "_disparity.png", np.zeros((CH, CW - 1, 1), np.uint16), "4x7"),
        ("leftImg8bit", "_leftImg8bit.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 30, "not a PNG"),
    ],
)
def test_cityscapes_malformed_files(cityscapes, folder, suffix, data, pattern):
    root, _ = cityscapes
    path = os.path.join(root, folder, "train", "aachen", "aachen_000000_000019" + suffix)
    with open(path, "wb") as handle:
        handle.write(data if isinstance(data, bytes) else _png(data))
    with pytest.raises(ValueError, match=pattern) as info:
        load_cityscapes(root, "train")
    assert "aachen_000000_000019" in str(info.value)


def test_cityscapes_validate_all_catches_later_records(cityscapes):
    root, _ = cityscapes
    path = os.path.join(root, "gtFine", "train", "bonn", "bonn_000000_000019_gtFine_labelIds.png")
    with open(path, "wb") as handle:
        handle.write(_png(np.full((CH, CW, 1), 99, np.uint8)))
    load_cityscapes(root, "train")
    with pytest.raises(ValueError, match="bonn_000000_000019_gtFine_labelIds.png"):
        load_cityscapes(root, "train", validate="all")


def test_cityscapes_bad_arguments(cityscapes):
    root, _ = cityscapes
    with pytest.raises(ValueError, match="num_classes"):
        load_cityscapes(root, "train", num_classes=34)
    with pytest.raises(ValueError, match="depth_mode"):
        load_cityscapes(root, "train", depth_mode="inverse")
    with pytest.raises(ValueError, match="available tasks"):
        load_cityscapes(root, "train", tasks=["normal"])
    with pytest.raises(ValueError, match="depth_mode"):
        cityscapes_tfds.disparity_to_depth([1], depth_mode="meters")


# ---------------------------------------------------------------------------- Cityscapes through tfds


def _zip_tree(root, folder, zip_path):
    with zipfile.ZipFile(zip_path, "w") as archive:
        for dirpath, _, files in os.walk(os.path.join(root, folder)):
            for name in files:
                full = os.path.join(dirpath, name)
                archive.write(full, os.path.relpath(full, root))


def test_cityscapes_tfds_builder_gives_the_same_examples(tmp_path):
    root = str(tmp_path / "cityscapes")
    _write_cityscapes(root, splits=("train", "val", "test"), per_split=(("aachen", 1), ("bonn", 1)))
    manual = tmp_path / "manual"
    manual.mkdir()
    with pytest.raises(FileNotFoundError, match="manual_dir"):
        load_cityscapes_tfds("val", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(FileNotFoundError, match="gtFine_trainvaltest.zip"):
        load_cityscapes_tfds("val", data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
    for folder in ("leftImg8bit", "gtFine", "disparity"):
        _zip_tree(root, folder, str(manual / f"{folder}_trainvaltest.zip"))

    via_tfds = load_cityscapes_tfds("val", batch_size=4, data_dir=str(tmp_path / "tfds"), manual_dir=str(manual),
                                    num_classes=19, image_size=(2 * CH, 2 * CW))
    images, labels = _collect(via_tfds)
    direct_images, direct_labels = _collect(
        load_cityscapes(root, "val", batch_size=4, num_classes=19, image_size=(2 * CH, 2 * CW)))
    # tfds may store the examples in another order: match them by image content.
    order = [int(np.argmin(np.abs(direct_images - im).sum(axis=(1, 2, 3)))) for im in images]
    assert sorted(order) == [0, 1]
    np.testing.assert_array_equal(images, direct_images[order])
    np.testing.assert_array_equal(labels["segmentation"], direct_labels["segmentation"][order])
    np.testing.assert_allclose(labels["depth"], direct_labels["depth"][order], rtol=1e-6)
    # Full 16-bit precision survives tfds (its default decoder would give 8-bit values).
    assert labels["depth"][0, 0, 6, 0] == pytest.approx(0.209313 * 2262.52 / 100, rel=1e-6)
    # Prepared: a second call needs no manual_dir.
    _, labels = _collect(load_cityscapes_tfds("train", data_dir=str(tmp_path / "tfds"), tasks=["depth"]))
    assert set(labels) == {"depth"} and labels["depth"].shape == (2, CH, CW, 1)
    with pytest.raises(ValueError, match="split"):
        load_cityscapes_tfds("train_extra", data_dir=str(tmp_path / "tfds"))


# ============================================================================ BDD100K

BH, BW = 32, 64
COLORS = {"a": (200, 30, 60), "b": (10, 250, 120), "c": (90, 90, 90)}
CAR, SIGN, PEDESTRIAN = 2, 9, 0


def _frames():
    return [
        {"name": "a.jpg", "attributes": {"weather": "clear"}, "labels": [
            {"id": "1", "category": "car", "box2d": {"x1": 8.0, "y1": 4.0, "x2": 24.0, "y2": 20.0}},
            {"id": "2", "category": "other vehicle", "box2d": {"x1": 30, "y1": 2, "x2": 40, "y2": 10}},
            {"id": "3", "category": "traffic sign", "box2d": {"x1": 40, "y1": 16, "x2": 56, "y2": 28}},
            {"id": "4", "category": "area/drivable", "poly2d": [{"vertices": [[0, 0]], "types": "L"}]},
        ]},
        {"name": "b.jpg", "labels": None},
        {"name": "c.jpg", "labels": [
            {"category": "person", "box2d": {"x1": 0, "y1": 0, "x2": 16, "y2": 32}}]},
    ]


def _drivable(seed):
    return np.random.default_rng(seed).integers(0, 3, (BH, BW)).astype(np.uint8)


def _lane(seed):
    lane = np.full((BH, BW), 255, np.uint8)
    lane[seed, :10] = 6               # single white, solid, parallel
    lane[seed + 1, :10] = 6 | 16      # single white, dashed
    lane[seed + 2, :10] = 0 | 32      # crosswalk, vertical
    return lane


def _write_bdd(root, split="train", frames=None):
    image_dir = os.path.join(root, "images", "100k", split)
    os.makedirs(image_dir, exist_ok=True)
    for task in ("drivable", "lane"):
        os.makedirs(os.path.join(root, "labels", task, "masks", split), exist_ok=True)
    os.makedirs(os.path.join(root, "labels", "det_20"), exist_ok=True)
    for seed, (stem, color) in enumerate(COLORS.items()):
        Image.new("RGB", (BW, BH), color).save(os.path.join(image_dir, f"{stem}.jpg"), quality=95)
        Image.fromarray(_drivable(seed)).save(os.path.join(root, "labels", "drivable", "masks", split, f"{stem}.png"))
        Image.fromarray(_lane(seed)).save(os.path.join(root, "labels", "lane", "masks", split, f"{stem}.png"))
    with open(os.path.join(root, "labels", "det_20", f"det_{split}.json"), "w") as handle:
        json.dump(_frames() if frames is None else frames, handle)


@pytest.fixture
def bdd(tmp_path):
    root = str(tmp_path / "bdd100k")
    _write_bdd(root)
    return root


def test_bdd100k_targets(bdd):
    num_classes = len(BDD100K_DETECTION_CLASSES)
    assert BDD100K_DETECTION_CLASSES[CAR] == "car" and BDD100K_DETECTION_CLASSES[SIGN] == "traffic sign"
    images, labels = _collect(load_bdd100k(bdd, "train", image_size=(2 * BH, 2 * BW), batch_size=2))
    assert images.shape == (3, 2 * BH, 2 * BW, 3) and images.dtype == np.float32
    for i, color in enumerate(COLORS.values()):
        np.testing.assert_allclose(images[i].mean(axis=(0, 1)), color, atol=3)  # JPEG, [0, 255]
    detection = labels["detection"]
    assert detection.shape == (3, 2 * BH // 4, 2 * BW // 4, num_classes + 5)
    # The car box (x 8..24, y 4..20) doubles to (x 16..48, y 8..40): center (24, 32) px -> cell (6, 8),
    # size 8x8 cells, offset 0.
    a = detection[0]
    assert a[6, 8, num_classes + 4] == 1.0
    assert a[6, 8, CAR] == 1.0 and a[..., CAR].max() == 1.0
    np.testing.assert_allclose(a[6, 8, num_classes:num_classes + 4], [8, 8, 0, 0])
    # The traffic sign (x 40..56, y 16..28) -> (x 80..112, y 32..56) -> center (44, 96) px -> cell (11, 24).
    assert a[11, 24, SIGN] == 1.0 and a[11, 24, num_classes + 4] == 1.0
    assert a[..., num_classes + 4].sum() == 2  # "other vehicle" and the poly2d label are skipped
    expected = encode_centernet_targets([[8, 16, 40, 48], [32, 80, 56, 112]], [CAR, SIGN], (2 * BH, 2 * BW),
                                        num_classes, stride=4)
    np.testing.assert_allclose(a, expected, rtol=1e-6, atol=1e-30)  # TF threads flush denormals
    np.testing.assert_array_equal(detection[1], 0.0)  # "labels": null -> no objects
    assert detection[2, ..., PEDESTRIAN].max() == 1.0  # "person" read as pedestrian
    for i in range(3):
        np.testing.assert_array_equal(labels["drivable"][i], _up2(_drivable(i)))
        lane = _up2(_lane(i))
        np.testing.assert_array_equal(labels["lane"][i], (lane != 255).astype(np.int32))
    assert labels["drivable"].dtype == np.int32 and labels["lane"].dtype == np.int32


def test_bdd100k_original_size_and_lane_modes(bdd):
    images, labels = _collect(load_bdd100k(bdd, "train", image_size=None, batch_size=3, lane_mode="category"))
    assert images.shape == (3, BH, BW, 3) and labels["detection"].shape == (3, BH // 4, BW // 4, 15)
    expected = encode_centernet_targets([[4, 8, 20, 24], [16, 40, 28, 56]], [CAR, SIGN], (BH, BW), 10)
    np.testing.assert_allclose(labels["detection"][0], expected, rtol=1e-6, atol=1e-30)
    lane = _lane(0)
    np.testing.assert_array_equal(labels["lane"][0], np.where(lane == 255, 8, lane & 7))
    for mode, shift in (("style", 4), ("direction", 5)):
        _, labels = _collect(load_bdd100k(bdd, "train", image_size=None, tasks=["lane"], lane_mode=mode))
        np.testing.assert_array_equal(labels["lane"][0], np.where(lane == 255, 2, (lane >> shift) & 1))
    _, labels = _collect(load_bdd100k(bdd, "train", image_size=None, tasks="lane", lane_mode="raw"))
    np.testing.assert_array_equal(labels["lane"][0], lane)


def test_bdd100k_tasks_subset_needs_only_its_files(bdd):
    os.remove(os.path.join(bdd, "labels", "det_20", "det_train.json"))
    with pytest.raises(FileNotFoundError, match="det_train.json"):
        load_bdd100k(bdd, "train", image_size=(BH, BW))
    _, labels = _collect(load_bdd100k(bdd, "train", image_size=(BH, BW), tasks=["drivable"], shuffle=True, seed=0))
    assert set(labels) == {"drivable"} and labels["drivable"].shape == (3, BH, BW)


def test_bdd100k_missing_detection_policies(tmp_path):
    root = str(tmp_path / "bdd")
    _write_bdd(root, frames=_frames()[:2])  # c.jpg has no frame
    with pytest.raises(ValueError, match="c.jpg") as info:
        load_bdd100k(root, "train", image_size=(BH, BW))
    assert "missing_detection" in str(info.value)
    images, _ = _collect(load_bdd100k(root, "train", image_size=(BH, BW), missing_detection="skip"))
    assert images.shape[0] == 2
    _, labels = _collect(load_bdd100k(root, "train", image_size=(BH, BW), missing_detection="missing"))
    assert (labels["detection"][2] == MISSING_VALUE).all()
    assert labels["detection"][0, ..., CAR].max() == 1.0 and labels["detection"][1].max() == 0.0
    _write_bdd(str(tmp_path / "other"), frames=[{"name": "zzz.jpg", "labels": []}])
    with pytest.raises(ValueError, match="none of the 3 images"):
        load_bdd100k(str(tmp_path / "other"), "train", image_size=(BH, BW), missing_detection="missing")


def test_bdd100k_missing_files(bdd, tmp_path):
    with pytest.raises(FileNotFoundError, match="Expected layout"):
        load_bdd100k(str(tmp_path / "none"), "train", image_size=(BH, BW))
    with pytest.raises(FileNotFoundError, match=r"images[/\\]100k[/\\]val"):
        load_bdd100k(bdd, "val", image_size=(BH, BW))
    os.remove(os.path.join(bdd, "labels", "lane", "masks", "train", "b.png"))
    with pytest.raises(FileNotFoundError, match=r"b\.png") as info:
        load_bdd100k(bdd, "train", image_size=(BH, BW))
    assert "labels/lane/masks/{split}/{name}.png" in str(info.value)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("[{\"name\": \"a.jpg\", ", "not valid JSON"),
        ("{\"frames\": []}", "JSON list"),
        ("[{\"labels\": []}]", "string \"name\""),
        ("[{\"name\": \"a.jpg\", \"labels\": {}}]", "must be a list"),
        ("[{\"name\": \"a.jpg\", \"labels\": [{\"box2d\": {}}]}]", "string \"category\""),
        ("[{\"name\": \"a.jpg\", \"labels\": [{\"category\": \"car\", \"box2d\": {\"x1\": 1}}]}]", "x1, y1, x2, y2"),
        ("[{\"name\": \"a.jpg\", \"labels\": [{\"category\": \"car\", \"box2d\": "
         "{\"x1\": NaN, \"y1\": 0, \"x2\": 4, \"y2\": 4}}]}]", "NaN or inf"),
        ("[{\"name\": \"a.jpg\", \"labels\": [{\"category\": \"car\", \"box2d\": "
         "{\"x1\": 9, \"y1\": 0, \"x2\": 4, \"y2\": 4}}]}]", "x2 < x1"),
        ("[{\"name\": \"a.jpg\"}, {\"name\": \"a.jpg\"}]", "listed twice"),
    ],
)
def test_bdd100k_malformed_json(bdd, text, pattern):
    path = os.path.join(bdd, "labels", "det_20", "det_train.json")
    with open(path, "w") as handle:
        handle.write(text)
    with pytest.raises(ValueError, match=pattern) as info:
        load_bdd100k(bdd, "train", image_size=(BH, BW), missing_detection="missing")
    assert "det_train.json" in str(info.value) and "Expected layout" in str(info.value)


@pytest.mark.parametrize(
    "task, array, pattern",
    [
        ("drivable", np.zeros((BH, BW, 3), np.uint8), "color type 2"),
        ("drivable", np.full((BH, BW), 5, np.uint8), "value 5"),
        ("drivable", np.zeros((BH, BW - 2), np.uint8), "32x62"),
        ("lane", np.full((BH, BW), 8, np.uint8), "value 8"),
        ("lane", np.full((BH, BW), 64, np.uint8), "value 64"),
        ("lane", np.zeros((BH, BW), np.uint16), "bit depth 16"),
    ],
)
def test_bdd100k_malformed_masks(bdd, task, array, pattern):
    path = os.path.join(bdd, "labels", task, "masks", "train", "a.png")
    with open(path, "wb") as handle:
        handle.write(_png(array if array.ndim == 3 else array[..., None]))
    with pytest.raises(ValueError, match=pattern) as info:
        load_bdd100k(bdd, "train", image_size=(BH, BW))
    assert "a.png" in str(info.value)


def test_bdd100k_corrupt_image_and_validate_all(bdd):
    with open(os.path.join(bdd, "labels", "drivable", "masks", "train", "c.png"), "wb") as handle:
        handle.write(_png(np.full((BH, BW, 1), 3, np.uint8)))
    load_bdd100k(bdd, "train", image_size=(BH, BW))  # the first example is fine
    with pytest.raises(ValueError, match=r"c\.png"):
        load_bdd100k(bdd, "train", image_size=(BH, BW), validate="all")
    with open(os.path.join(bdd, "images", "100k", "train", "a.jpg"), "wb") as handle:
        handle.write(b"not a jpeg")
    with pytest.raises(ValueError, match=r"a\.jpg"):
        load_bdd100k(bdd, "train", image_size=(BH, BW))


def test_bdd100k_bad_arguments(bdd):
    with pytest.raises(ValueError, match="lane_mode"):
        load_bdd100k(bdd, "train", image_size=(BH, BW), lane_mode="color")
    with pytest.raises(ValueError, match="available tasks"):
        load_bdd100k(bdd, "train", image_size=(BH, BW), tasks=["depth"])
    with pytest.raises(ValueError, match="missing_detection"):
        load_bdd100k(bdd, "train", image_size=(BH, BW), missing_detection="ignore")
    with pytest.raises(ValueError, match="image_size"):
        load_bdd100k(bdd, "train", image_size=(2, 2))
    with pytest.raises(ValueError, match="lane_mode"):
        bdd100k.decode_lane_mask([1], "bits")


def test_decode_lane_mask_bit_layout():
    values = np.array([255, 0, 7, 6 | 16, 3 | 32, 5 | 16 | 32], np.uint8)
    np.testing.assert_array_equal(bdd100k.decode_lane_mask(values, "binary"), [0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(bdd100k.decode_lane_mask(values, "category"), [8, 0, 7, 6, 3, 5])
    np.testing.assert_array_equal(bdd100k.decode_lane_mask(values, "style"), [2, 0, 0, 1, 0, 1])
    np.testing.assert_array_equal(bdd100k.decode_lane_mask(values, "direction"), [2, 0, 0, 0, 1, 1])


def test_readers_are_registered_with_mtlzoo_data_load(nyu):
    nyu = nyu[0]
    import mtlzoo.data

    assert {"nyuv2_npy", "cityscapes_npy", "cityscapes", "bdd100k"} <= set(mtlzoo.data.DATASETS)
    ds = mtlzoo.data.load("nyuv2_npy", split="validation", data_dir=str(nyu), image_size=(32, 64), batch_size=2)
    image, labels = next(iter(ds))
    assert image.shape[1:] == (32, 64, 3) and {"segmentation", "depth", "normal"} <= set(labels)
    with pytest.raises(ValueError, match="pass data_dir="):
        mtlzoo.data.load("nyuv2_npy", image_size=(32, 64), batch_size=2)
    with pytest.raises(ValueError, match="label_fractions"):
        mtlzoo.data.load("nyuv2_npy", data_dir=str(nyu), image_size=(32, 64), batch_size=2, label_fractions={"depth": 0.5})


# ============================================================================ the real-data recipes, end to end
def _real_dataset(kind, root):
    if kind == "nyuv2":
        _write_npy_split(root, "train", 4)
        _write_npy_split(root, "val", 2, seed=1)
    elif kind == "cityscapes":
        _write_npy_split(root, "train", 4, dataset="cityscapes", depth_2d=True)
        _write_npy_split(root, "val", 2, dataset="cityscapes", seed=1)
    else:
        _write_bdd(root, "train")
        _write_bdd(root, "val")
    return root


@pytest.mark.parametrize("recipe,kind", [("cityscapes_seg_depth", "cityscapes"), ("nyuv2_seg_depth_normal", "nyuv2"),
                                         ("bdd100k_yolop", "bdd100k")])
def test_real_data_recipe_trains_and_evaluates_on_files_in_the_real_layout(recipe, kind, tmp_path):
    """Recipe + reader + heads fit together: a tiny trunk, one epoch on fixture files, every task's loss finite."""
    import math

    import mtlzoo
    from mtlzoo.evaluation import evaluate
    from mtlzoo.training import DataCheckError, train

    spec = mtlzoo.get_recipe(recipe)
    from mtlzoo.testing import TINY_IMAGE

    tiny = {**TINY_IMAGE, "training.batch_size": 2}
    with pytest.raises((DataCheckError, ValueError), match="data_dir"):
        train(recipe, epochs=1, verbose=0, **tiny)  # the folder is the user's to give
    root = _real_dataset(kind, str(tmp_path / kind))
    result = train(recipe, epochs=1, verbose=0, **tiny, **{"data.data_dir": root})
    for task in spec.tasks:
        assert math.isfinite(result.history[f"{task}_loss"][-1]), task
        assert f"val_{task}_loss" in result.history
    report = evaluate(result.model, None, batch_size=2)
    assert set(report.metrics) == set(spec.tasks)
    if "normal" in spec.tasks:
        assert 0.0 <= report.metrics["normal"]["mean_angle"] <= 180.0
