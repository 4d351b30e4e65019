"""mtlzoo.zoo: shipped models addressed as zoo:NAME, and the artifacts in saved_models/ themselves."""

import json
import pathlib

import numpy as np
import pytest

import mtlzoo
import mtlzoo.edge
from mtlzoo import zoo
from mtlzoo.testing import TINY_IMAGE

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.parent.name for p in (ROOT / "saved_models").glob("*/model.keras"))
TINY = TINY_IMAGE


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    """A zoo folder written by `zoo.publish` from a tiny trained model and its single-task baselines."""
    from mtlzoo.evaluation import baselines
    from mtlzoo.training import train

    work = tmp_path_factory.mktemp("zoo_work")
    common = {**TINY, "tasks": ["segmentation", "scene"], "data.num_examples": 16, "data.num_validation_examples": 8,
              "training.batch_size": 8, "seed": 0}
    run = train("driving_perception_lite", epochs=1, out_dir=str(work / "run"), verbose=0, **common)
    baselines("driving_perception_lite", epochs=1, out_dir=str(work / "stl"), verbose=0, **common)
    base = work / "zoo"
    path = zoo.publish(run.best_path, "tiny_lite", baselines=str(work / "stl"), command="mtlzoo train tiny",
                       budget="1 epoch of 16 scenes", out_root=base, num_verify=8, num_calibration=8,
                       sections=["## Over seeds\n\nspread of the tiny runs"])
    (base / "not_a_model").mkdir()
    return base, mtlzoo.load(run.best_path, compile=False), path


def test_publish_writes_a_complete_verified_folder(tiny_zoo):
    base, _, path = tiny_zoo
    assert path == base / "tiny_lite"
    names = sorted(p.name for p in path.iterdir())
    for required in ("MODEL_CARD.md", "baselines.json", "evaluation.json", "latency.json", "model.keras",
                     "model_fp16.tflite", "model_int8.tflite", "verification.json"):
        assert required in names
    assert "model_float32.tflite" not in names  # verified, then left out to keep the zoo small
    assert not [p for p in base.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    card = (path / "MODEL_CARD.md").read_text()
    for section in ("## Tasks", "## Data", "## Training", "## Metrics", "## Δm", "## Latency", "## Size", "## Limits"):
        assert section in card
    assert card.index("## Δm") < card.index("## Over seeds\n\nspread of the tiny runs") < card.index("## Latency")
    report = json.loads((path / "verification.json").read_text())
    assert report["passed"] and set(report["formats"]) == {"tflite", "tflite_fp16", "tflite_int8"}
    evaluation = json.loads((path / "evaluation.json").read_text())
    assert f"{evaluation['delta_m']:+.2f}%" in card  # the card prints the measured Δm
    assert f"training and {evaluation['num_examples']} validation scenes" in card  # the count evaluated on
    with pytest.raises(FileExistsError, match="overwrite=True"):
        zoo.publish(str(path / "model.keras"), "tiny_lite", baselines=str(path), command="x", budget="y",
                    out_root=base)


def test_zoo_specs_resolve_to_models_and_files(tiny_zoo, monkeypatch):
    base, model, _ = tiny_zoo
    monkeypatch.setenv("MTLZOO_ZOO_DIR", str(base))
    assert zoo.list_models() == ["tiny_lite"]
    loaded = mtlzoo.load("zoo:tiny_lite")
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 64, 3)).astype("float32")
    want, got = model(x), loaded(x)
    for task in model.task_names:
        np.testing.assert_allclose(np.asarray(got[task]), np.asarray(want[task]), atol=1e-6)
    runner = mtlzoo.edge.load("zoo:tiny_lite/model_fp16.tflite")
    out = runner(x)
    assert sorted(out) == sorted(model.task_names)
    np.testing.assert_allclose(out["scene"], np.asarray(want["scene"]), atol=1e-2)
    assert isinstance(mtlzoo.edge.load("zoo:tiny_lite"), mtlzoo.edge.Runner)  # the folder: its TFLite file
    assert zoo.model_card("tiny_lite").startswith("# tiny_lite")
    from mtlzoo.evaluation import evaluate

    report = evaluate("zoo:tiny_lite", "synthetic_driving", baselines="zoo:tiny_lite", num_examples=8)
    assert report.delta_m is not None  # the shipped baselines are found through the zoo: spec


def test_unknown_zoo_model_or_file_names_the_near_match(tiny_zoo, monkeypatch):
    base, _, _ = tiny_zoo
    monkeypatch.setenv("MTLZOO_ZOO_DIR", str(base))
    with pytest.raises(FileNotFoundError, match=r"No zoo model 'tiny_lit'\. Did you mean 'tiny_lite'\?.*Shipped models: tiny_lite"):
        mtlzoo.load("zoo:tiny_lit")
    with pytest.raises(FileNotFoundError, match=r"no file 'model_int9\.tflite'\. Did you mean 'model_int8\.tflite'"):
        mtlzoo.edge.load("zoo:tiny_lite/model_int9.tflite")
    with pytest.raises(ValueError, match="zoo:NAME"):
        zoo.resolve("tiny_lite")


def test_default_zoo_root_is_the_repository_or_installed_package(monkeypatch):
    monkeypatch.delenv("MTLZOO_ZOO_DIR", raising=False)
    assert zoo.root().resolve() == (ROOT / "saved_models").resolve()  # editable install maps the package there
    assert zoo.list_models() == SHIPPED


# ---------------------------------------------------------------- the shipped artifacts
def test_at_least_the_lite_recipe_is_shipped():
    assert "driving_perception_lite" in SHIPPED


def _total_size(folder):
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_card_and_files(name):
    folder = ROOT / "saved_models" / name
    card = (folder / "MODEL_CARD.md").read_text()
    for section in ("Tasks", "Data", "Training", "Metrics", "Δm", "Latency", "Size", "Limits"):
        assert section in card, f"MODEL_CARD.md of {name} lacks a {section!r} section"
    reproduce = card.split("Reproduce:", 1)[1].split("```")[1]  # the reproducible commands, as a code block
    assert "mtlzoo" in reproduce and "None" not in card
    assert (folder / "model_int8.tflite").is_file()
    assert any((folder / f).is_file() for f in ("model_float32.tflite", "model_fp16.tflite"))
    assert _total_size(ROOT / "saved_models") < 10 * 2**20  # the whole zoo stays small


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_verification_holds(name):
    """The reports written by the export: float within 1e-4 of Keras, int8 within 2 mIoU points."""
    report = json.loads((ROOT / "saved_models" / name / "verification.json").read_text())
    formats = report["formats"]
    for fmt, entry in formats.items():
        assert entry["passed"], (fmt, entry)
    miou = formats["tflite_int8"]["metrics"]["segmentation"]["miou"]
    drop = miou["float"] - miou["int8"]
    assert drop <= 0.02, f"int8 loses {drop * 100:.2f} points of segmentation mIoU"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_runs_in_keras_and_litert_alike(name):
    model = mtlzoo.load(f"zoo:{name}")
    runner = mtlzoo.edge.load(f"zoo:{name}/model_int8.tflite")
    h, w = model.input_shape[1:3]
    from mtlzoo.data.synthetic_driving import render_scene

    scene = render_scene(seed=12345, index=0, image_size=(h, w))
    x = scene["image"][None].astype("float32")
    want = model.predict(x, verbose=0)
    got = runner(x)
    assert sorted(got) == sorted(model.task_names)
    seg_agree = np.mean(np.argmax(got["segmentation"], -1) == np.argmax(want["segmentation"], -1))
    assert seg_agree > 0.9, seg_agree
    assert np.isfinite(got["depth"]).all()


@pytest.mark.parametrize("name", SHIPPED)
def test_predict_command_on_a_shipped_int8_model(name, tmp_path):
    from PIL import Image

    from mtlzoo import cli
    from mtlzoo.data.synthetic_driving import render_scene

    h, w = mtlzoo.load(f"zoo:{name}", compile=False).input_shape[1:3]
    street = tmp_path / "street.png"
    Image.fromarray(render_scene(seed=7, index=3, image_size=(h, w))["image"].astype("uint8")).save(street)
    out = tmp_path / "street_prediction.png"
    assert cli.main(["predict", f"zoo:{name}/model_int8.tflite", str(street), "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000  # the picture: overlay, depth map, boxes, tags
