"""Nothing lost, nothing corrupted: --overwrite, zoo: containment, untrusted SavedModels, one-line errors.

Every CLI case runs `mtlzoo.cli.main([...])` in-process and checks the single `mtlzoo COMMAND: error: ...` line on
stderr and the exit status 2.
"""

import contextlib
import errno
import hashlib
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import mtlzoo
import mtlzoo.edge
from mtlzoo import cli, zoo
from mtlzoo.edge import ModelFileError, UntrustedModelError
from mtlzoo.export import atomic, export
from mtlzoo.predict import ImageFileError, load_image
from mtlzoo.testing import TINY_IMAGE

#: A tiny one-task recipe on the command line (32x64 input, 4-channel trunk).
TINY_ARGS = ["driving_perception_lite", "backbone=tiny", "backbone_args={width: 4}", "neck_channels=16",
             "input_shape=[32, 64, 3]", "tasks=[scene]"]


def tree_digest(path):
    """Hash of a file, or of every file name and content under a folder."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        h.update(path.read_bytes())
        return h.hexdigest()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def run_cli(capsys, *argv):
    """(exit status, stderr) of `mtlzoo ARGV`."""
    rc = cli.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def one_error_line(err, command):
    """The single error line of `mtlzoo COMMAND` (asserting there is exactly one line and no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mtlzoo {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model saved as .keras, its export folder (SavedModel + float32 TFLite), and a PNG and a JPEG."""
    base = tmp_path_factory.mktemp("reliability")
    model = mtlzoo.build("driving_perception_lite", compile=False, tasks=["scene"], **TINY_IMAGE)
    model.save(base / "m.keras")
    result = export(model, base / "export", formats=["saved_model", "tflite"], verify=False, postprocessed=False)
    image = np.random.default_rng(0).uniform(0, 255, (32, 64, 3)).astype("uint8")
    (base / "street.png").write_bytes(tf.io.encode_png(image).numpy())
    (base / "street.jpg").write_bytes(tf.io.encode_jpeg(image).numpy())
    return {"base": base, "model": model, "keras": base / "m.keras", "export": result.out_dir,
            "tflite": result.paths["tflite"], "png": base / "street.png", "jpg": base / "street.jpg"}


# ---------------------------------------------------------------- --overwrite deletes only what mtlzoo wrote
def test_export_overwrite_refuses_unrelated_folder_file_and_link(files, tmp_path, capsys):
    unrelated = tmp_path / "photos"
    unrelated.mkdir()
    (unrelated / "holiday.jpg").write_bytes(b"not mine to delete")
    (unrelated / "notes").mkdir()
    (unrelated / "notes" / "a.txt").write_text("keep")
    regular = tmp_path / "thesis.pdf"
    regular.write_bytes(b"%PDF precious")
    link = tmp_path / "link"
    link.symlink_to(files["export"], target_is_directory=True)  # even a link to a real export is not replaced
    targets = (unrelated, regular, link)
    before = {t: tree_digest(t) for t in targets}
    for target in targets:
        # Library: refused before anything is written, with the reason.
        with pytest.raises(FileExistsError, match="left untouched") as info:
            export(files["model"], target, formats=["tflite"], overwrite=True, verify=False)
        assert str(target) in str(info.value)
        # CLI: one line, exit 2 (refused before the model is even loaded).
        rc, err = run_cli(capsys, "export", files["keras"], "--formats", "tflite", "--out", target, "--overwrite")
        line = one_error_line(err, "export")
        assert rc == 2 and str(target) in line and "left untouched" in line
    kinds = {unrelated: "not an mtlzoo export", regular: "is a file", link: "symbolic link"}
    for target, kind in kinds.items():
        with pytest.raises(FileExistsError, match=kind):
            atomic.check_target(target, overwrite=True)
    for target in targets:
        assert tree_digest(target) == before[target], f"{target} was touched"
    assert link.is_symlink() and (files["export"] / "mtlzoo_export.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "photos", "thesis.pdf"]  # no staging left


def test_export_overwrite_replaces_an_earlier_export(files, tmp_path, capsys):
    target = tmp_path / "out"
    shutil.copytree(files["export"], target)  # an earlier export: saved_model/, model_float32.tflite, metadata
    (target / "extra.txt").write_text("written by hand into an export folder")
    rc = cli.main(["export", *TINY_ARGS, "--formats", "tflite", "--no-verify", "--out", str(target), "--overwrite"])
    assert rc == 0, capsys.readouterr().err
    names = sorted(p.name for p in target.iterdir())
    assert names == ["model_float32.tflite", "mtlzoo_export.json", "verification.json", "verification.md"]
    assert list(mtlzoo.edge.load(target)(np.zeros((1, 32, 64, 3), np.float32))) == ["scene"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # An empty folder (made by hand beforehand) holds nothing to lose: --overwrite may use it.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert atomic.check_target(empty, overwrite=True) == empty.absolute()


def test_zoo_publish_overwrite_refuses_what_is_not_a_zoo_folder(tmp_path, capsys):
    (tmp_path / "lite").mkdir()
    (tmp_path / "lite" / "README.md").write_text("someone else's folder")
    before = tree_digest(tmp_path / "lite")
    # Refused first, before the (missing) model is read or anything is trained or exported.
    with pytest.raises(FileExistsError, match="not an mtlzoo export"):
        zoo.publish(tmp_path / "missing.keras", "lite", baselines="b", command="c", budget="b", out_root=tmp_path,
                    overwrite=True)
    rc = zoo.main(["publish", str(tmp_path / "missing.keras"), "lite", "--baselines", "b", "--command", "c",
                   "--budget", "b", "--out-root", str(tmp_path), "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "python -m mtlzoo.zoo publish: error:" in err and "lite" in err
    assert tree_digest(tmp_path / "lite") == before
    with pytest.raises(ValueError, match="one folder name"):
        zoo.publish(tmp_path / "missing.keras", "../outside", baselines="b", command="c", budget="b",
                    out_root=tmp_path)


# ---------------------------------------------------------------- --out that is a file, under a file, read-only
def test_out_that_is_a_file_or_under_a_file(files, tmp_path, capsys):
    regular = tmp_path / "file.txt"
    regular.write_text("x")
    rc, err = run_cli(capsys, "export", files["keras"], "--out", regular)
    line = one_error_line(err, "export")
    assert rc == 2 and str(regular) in line and "is a file" in line
    rc, err = run_cli(capsys, "export", files["keras"], "--out", regular / "sub" / "out")
    line = one_error_line(err, "export")
    assert rc == 2 and f"{str(regular)!r} is a file, not a folder" in line
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        export(files["model"], regular / "out", formats=["tflite"], verify=False)
    assert regular.read_text() == "x"
    # predict --out under a file: one line naming the picture.
    rc, err = run_cli(capsys, "predict", files["keras"], files["png"], "--out", regular / "pic.png")
    line = one_error_line(err, "predict")
    assert rc == 2 and str(regular / "pic.png") in line


@contextlib.contextmanager
def read_only_folder(path):
    """A folder where writes fail for real: a read-only tmpfs mount, else an immutable folder, else chmod 555.

    Root ignores permission bits, so as root the folder is a read-only tmpfs (needs CAP_SYS_ADMIN) or an
    immutable (`chattr +i`) folder; as another user `chmod 555` is enough.
    """
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield "chmod 555"
        finally:
            path.chmod(0o755)
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)],
                      capture_output=True).returncode == 0:
        try:
            yield "read-only tmpfs"
        finally:
            subprocess.run(["umount", str(path)], check=True)
        return
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        try:
            yield "chattr +i"
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        return
    pytest.skip("no way to make a read-only folder here: running as root without mount or chattr rights")


def test_out_on_a_read_only_folder(files, tmp_path, capsys):
    with read_only_folder(tmp_path / "ro") as how:
        target = tmp_path / "ro" / "out"
        with pytest.raises(OSError, match="Cannot write the export folder") as info:
            export(files["model"], target, formats=["tflite"], verify=False)
        assert info.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM), how
        rc, err = run_cli(capsys, "export", files["keras"], "--formats", "tflite", "--no-verify", "--out", target)
        line = one_error_line(err, "export")
        assert rc == 2 and str(target) in line and "writable" in line, how
        assert not os.listdir(tmp_path / "ro")


def test_read_only_file_system_error_from_the_real_write_path(files, tmp_path, monkeypatch, capsys):
    """EROFS itself (errno 30), raised by the lowest-level call the export makes to create its staging folder."""
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if str(tmp_path) in os.fspath(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    target = tmp_path / "out"
    rc, err = run_cli(capsys, "export", files["keras"], "--formats", "tflite", "--no-verify", "--out", target)
    line = one_error_line(err, "export")
    assert rc == 2 and "[Errno 30]" in line and "Read-only file system" in line and str(target) in line


# ---------------------------------------------------------------- zoo: specs stay inside the zoo
@pytest.fixture
def zoo_root(tmp_path, monkeypatch):
    """A zoo root (MTLZOO_ZOO_DIR) with one model folder, and a secret file outside it."""
    root = tmp_path / "zoo"
    (root / "m").mkdir(parents=True)
    (root / "m" / "model.keras").write_bytes(b"stand-in")
    (root / "m" / "MODEL_CARD.md").write_text("# m\n")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "model.keras").write_bytes(b"not from the zoo")
    (outside / "key.txt").write_text("secret")
    monkeypatch.setenv("MTLZOO_ZOO_DIR", str(root))
    return root, outside


@pytest.mark.parametrize("spec", ["zoo:m/../../secret/key.txt", "zoo:m/../../..", "zoo:../secret", "zoo:m/..",
                                  "zoo:/etc/passwd", "zoo:m/sub/../../../secret/key.txt"])
def test_zoo_spec_traversal_is_refused(zoo_root, spec):
    with pytest.raises(zoo.ZooSpecError) as info:
        zoo.resolve(spec)
    assert repr(spec) in str(info.value)


def test_zoo_symlinks_leading_outside_are_refused(zoo_root, files, capsys):
    root, outside = zoo_root
    (root / "m" / "key.txt").symlink_to(outside / "key.txt")  # a file link inside a model folder
    (root / "evil").symlink_to(outside, target_is_directory=True)  # a model folder that is a link outside
    assert zoo.resolve("zoo:m/MODEL_CARD.md") == root / "m" / "MODEL_CARD.md"  # inside: fine
    for spec in ("zoo:m/key.txt", "zoo:evil", "zoo:evil/key.txt"):
        with pytest.raises(zoo.ZooSpecError, match="outside the zoo folder") as info:
            zoo.resolve(spec)
        assert repr(spec) in str(info.value)
    with pytest.raises(zoo.ZooSpecError, match="'zoo:evil'"):
        mtlzoo.load("zoo:evil")
    with pytest.raises(zoo.ZooSpecError, match="'zoo:m/key.txt'"):
        mtlzoo.edge.load("zoo:m/key.txt")
    # A model file that is itself a link outside.
    (root / "m" / "model.keras").unlink()
    (root / "m" / "model.keras").symlink_to(outside / "model.keras")
    with pytest.raises(zoo.ZooSpecError, match="'zoo:m'"):
        mtlzoo.load("zoo:m")
    rc, err = run_cli(capsys, "predict", "zoo:m/../../secret", files["png"])
    line = one_error_line(err, "predict")
    assert rc == 2 and "'zoo:m/../../secret'" in line


# ---------------------------------------------------------------- untrusted SavedModels
class _Crafted(tf.Module):
    """A SavedModel whose signature does more than compute: it writes a file when called."""

    def __init__(self, sentinel):
        super().__init__()
        self.sentinel = sentinel

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 64, 3], tf.float32, name="image")])
    def serve(self, image):
        tf.io.write_file(self.sentinel, "the signature ran")
        return {"scene": tf.reduce_mean(image, axis=[1, 2])}


@pytest.fixture
def crafted_saved_model(tmp_path):
    sentinel = tmp_path / "side_effect.txt"
    module = _Crafted(str(sentinel))
    path = tmp_path / "crafted"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path, sentinel


def test_plain_saved_model_refused_without_trust(crafted_saved_model, files, tmp_path, capsys):
    path, sentinel = crafted_saved_model
    with pytest.raises(UntrustedModelError, match="trusted=True") as info:
        mtlzoo.edge.load(path)
    assert "--trust-savedmodel" in str(info.value) and str(path) in str(info.value)
    with pytest.raises(UntrustedModelError):
        mtlzoo.edge.SavedModelRunner(path)
    rc, err = run_cli(capsys, "predict", path, files["png"], "--out", tmp_path / "p.png")
    line = one_error_line(err, "predict")
    assert rc == 2 and "--trust-savedmodel" in line and str(path) in line
    assert not sentinel.exists() and not (tmp_path / "p.png").exists()  # its code never ran


def test_plain_saved_model_runs_when_trusted(crafted_saved_model, files, tmp_path, capsys):
    path, sentinel = crafted_saved_model
    runner = mtlzoo.edge.load(path, trusted=True)
    assert runner(np.ones((1, 32, 64, 3), np.float32))["scene"].shape == (1, 3)
    assert sentinel.exists()
    sentinel.unlink()
    rc = cli.main(["predict", str(path), str(files["png"]), "--out", str(tmp_path / "p.png"), "--trust-savedmodel"])
    assert rc == 0 and (tmp_path / "p.png").is_file() and sentinel.exists()


def test_mtlzoo_export_saved_model_is_accepted(files, tmp_path):
    folder = files["export"]
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 64, 3)).astype("float32")
    want = np.asarray(files["model"](x, training=False)["scene"])
    runner = mtlzoo.edge.load(folder / "saved_model")  # beside its mtlzoo_export.json: no trust needed
    np.testing.assert_allclose(runner(x)["scene"], want, atol=1e-4)
    assert mtlzoo.edge.is_mtlzoo_saved_model(folder / "saved_model")
    # The same SavedModel copied out of its export folder has lost its provenance.
    shutil.copytree(folder / "saved_model", tmp_path / "copy")
    assert not mtlzoo.edge.is_mtlzoo_saved_model(tmp_path / "copy")
    with pytest.raises(UntrustedModelError):
        mtlzoo.edge.load(tmp_path / "copy")


# ---------------------------------------------------------------- corrupt or truncated files: one clear line
def _truncated(src, dst, fraction=0.5):
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return dst


def test_truncated_or_corrupt_keras(files, tmp_path, capsys):
    truncated = _truncated(files["keras"], tmp_path / "truncated.keras")
    empty = tmp_path / "empty.keras"
    empty.write_bytes(b"")
    flipped = tmp_path / "flipped.keras"  # a whole zip with damaged weights (CRC mismatch)
    data = bytearray(files["keras"].read_bytes())
    info = zipfile.ZipFile(files["keras"]).getinfo("model.weights.h5")
    start = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    data[start:start + 64] = bytes(b ^ 0xFF for b in data[start:start + 64])
    flipped.write_bytes(bytes(data))
    for path in (truncated, empty, flipped):
        with pytest.raises(ModelFileError, match="not a valid .keras file") as raised:
            mtlzoo.load(path)
        assert str(path) in str(raised.value) and "truncated" in str(raised.value)
    for command in (["predict", truncated, files["png"]], ["export", truncated, "--out", tmp_path / "o"]):
        rc, err = run_cli(capsys, *command)
        line = one_error_line(err, command[0])
        assert rc == 2 and str(truncated) in line and "not a valid .keras file" in line
        assert "File not found" not in line  # Keras's own message for a file that exists
    with pytest.raises(ModelFileError, match="is a folder"):
        mtlzoo.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="No saved model"):
        mtlzoo.load(tmp_path / "missing.keras")


def test_truncated_or_corrupt_tflite(files, tmp_path, capsys):
    truncated = _truncated(files["tflite"], tmp_path / "truncated.tflite", 0.6)  # keeps the TFL3 identifier
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"definitely not a flatbuffer" * 4)
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    for path in (truncated, garbage, empty):
        with pytest.raises(ModelFileError, match="not a valid TFLite flatbuffer") as raised:
            mtlzoo.edge.load(path)
        assert str(path) in str(raised.value)
        rc, err = run_cli(capsys, "predict", path, files["png"])
        line = one_error_line(err, "predict")
        assert rc == 2 and str(path) in line and "not a valid TFLite flatbuffer" in line
    with pytest.raises(ModelFileError, match="bytes"):
        mtlzoo.edge.Runner(model_content=b"\x00" * 16)


def test_damaged_export_metadata(files, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(files["export"], folder)
    (folder / "mtlzoo_export.json").write_text('{"task_names": ["sce')  # truncated JSON
    with pytest.raises(ModelFileError, match="mtlzoo_export.json.*not valid JSON"):
        mtlzoo.edge.load(folder / "model_float32.tflite")


@pytest.mark.parametrize("kind", ["png", "jpg"])
def test_truncated_or_corrupt_images(files, tmp_path, capsys, kind):
    assert load_image(files[kind]).shape == (32, 64, 3)
    truncated = _truncated(files[kind], tmp_path / f"truncated.{kind}")
    garbage = tmp_path / f"garbage.{kind}"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 40 if kind == "png" else b"\xff\xd8\xff" + b"x" * 40)
    for path in (truncated, garbage):
        with pytest.raises(ImageFileError, match="not a readable PNG, JPEG") as raised:
            load_image(path)
        assert str(path) in str(raised.value)
        rc, err = run_cli(capsys, "predict", files["keras"], path)
        line = one_error_line(err, "predict")
        assert rc == 2 and str(path) in line and "truncated or corrupt" in line
    rc, err = run_cli(capsys, "predict", files["keras"], tmp_path / "missing.png")
    assert rc == 2 and "No image file at" in one_error_line(err, "predict")


# ---------------------------------------------------------------- options
def test_unknown_or_empty_formats(files, tmp_path, capsys):
    rc, err = run_cli(capsys, "export", files["keras"], "--out", tmp_path / "o", "--formats", "saved_model,tflite_fp61")
    line = one_error_line(err, "export")
    assert rc == 2 and "--formats" in line and "'tflite_fp61'" in line and "Did you mean 'tflite_fp16'" in line
    for empty in ("", ",", " , "):
        rc, err = run_cli(capsys, "export", files["keras"], "--out", tmp_path / "o", "--formats", empty)
        line = one_error_line(err, "export")
        assert rc == 2 and "--formats" in line and "saved_model, tflite, tflite_fp16, tflite_int8" in line
    assert not (tmp_path / "o").exists()


def test_debug_shows_the_traceback(files, tmp_path, monkeypatch):
    truncated = _truncated(files["keras"], tmp_path / "t.keras")
    for argv in (["--debug", "predict", str(truncated), str(files["png"])],
                 ["predict", str(truncated), str(files["png"]), "--debug"]):
        with pytest.raises(ModelFileError, match="not a valid .keras file"):
            cli.main(argv)

    def bug(args):
        raise ZeroDivisionError("a bug, not bad input")

    monkeypatch.setattr(cli, "cmd_recipes", bug)
    with pytest.raises(ZeroDivisionError):  # unexpected errors keep their traceback even without --debug
        cli.main(["recipes", "--no-build"])


def test_tune_overwrite_replaces_only_an_earlier_tuning_project(tmp_path):
    from mtlzoo.tuning import check_project_overwrite

    check_project_overwrite(tmp_path, "absent")  # nothing there: fine
    (tmp_path / "empty").mkdir()
    check_project_overwrite(tmp_path, "empty")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "oracle.json").write_text("{}")
    check_project_overwrite(tmp_path, "earlier")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match=r"not an earlier tuning project.*left untouched"):
        check_project_overwrite(tmp_path, "mine")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError, match=r"is not a tuning project folder"):
        check_project_overwrite(tmp_path, "afile")
    assert (mine / "thesis.tex").read_text() == "precious"


def test_cli_tune_overwrite_of_unrelated_files_is_one_line(tmp_path, capsys):
    from mtlzoo.cli import main

    project = tmp_path / "tabular_demo_random"
    project.mkdir()
    (project / "notes.txt").write_text("keep me")
    code = main(["tune", "tabular_demo", "--tuner", "random", "--trials", "1", "--out", str(tmp_path), "--overwrite",
                 "--objective", "loss", "--direction", "min"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("mtlzoo tune: error: --overwrite:")
    assert (project / "notes.txt").read_text() == "keep me"
