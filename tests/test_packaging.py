"""The wheel ships every subpackage and the recipes; an installed copy builds recipes offline."""

import os
import pathlib
import subprocess
import sys
import tomllib
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_pyproject_lists_every_subpackage():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "mtlzoo").rglob("__init__.py")
    }
    missing = found - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    assert "mtlzoo.recipes" in listed and "mtlzoo.zoo_models" in listed


@pytest.mark.slow
def test_wheel_installed_elsewhere_builds_driving_perception(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir), str(ROOT)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(wheel_dir.glob("mtlzoo-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for recipe in (ROOT / "recipes").glob("*.yaml"):
        assert f"mtlzoo/recipes/{recipe.name}" in names
    shipped = [p for p in (ROOT / "saved_models").glob("*/*") if p.suffix in (".keras", ".tflite", ".json", ".md")]
    for path in shipped:
        assert f"mtlzoo/zoo_models/{path.parent.name}/{path.name}" in names
    assert "mtlzoo/diagnostics/findings.json" in names  # `mtlzoo diagnose` quotes the claims' measured findings
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import mtlzoo; assert mtlzoo.__file__.startswith(%r), mtlzoo.__file__; "
            "m = mtlzoo.build('driving_perception', compile=False); print(sorted(m.output_names)); "
            "print('zoo', mtlzoo.zoo.root(), mtlzoo.zoo.list_models()); "
            "from mtlzoo.bench.claims_findings import load; print('findings', sorted(load()))") % str(target)
    env = {**os.environ, "PYTHONPATH": str(target), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "['depth', 'detection', 'scene', 'segmentation']" in out.stdout
    assert "relatedness" in next(line for line in out.stdout.splitlines() if line.startswith("findings "))
    zoo_line = next(line for line in out.stdout.splitlines() if line.startswith("zoo "))
    assert str(target) in zoo_line  # shipped models are read from the installed package
    for name in {p.parent.name for p in shipped}:
        assert repr(name) in zoo_line
