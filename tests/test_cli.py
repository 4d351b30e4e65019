import subprocess
import sys

from mtlzoo import cli


def test_recipes_table_lists_every_recipe(capsys):
    assert cli.main(["recipes", "--no-build"]) == 0
    out = capsys.readouterr().out
    import mtlzoo

    for name in mtlzoo.list_recipes():
        assert name in out
    assert "segmentation,depth,detection,scene" in out


def test_recipes_table_with_params_and_flops(capsys):
    assert cli.main(["recipes", "tabular*"]) == 0
    out = capsys.readouterr().out
    assert "tabular_demo" in out and "params" in out and "FLOPs" in out
    # MLP 16-64-64 + heads: 16*64+64 + 64*64+64 + 64*3+3 + 64+1 = 5,508 params.
    assert "5.51k" in out


def test_build_prints_shared_and_task_parameters(capsys, tmp_path):
    path = tmp_path / "m.keras"
    rc = cli.main(["build", "driving_perception_lite", "backbone=tiny", "input_shape=[64, 64, 3]", "--save", str(path)])
    assert rc == 0
    out = capsys.readouterr().out
    for part in ("shared", "segmentation", "depth", "detection", "scene", "total", "FLOPs"):
        assert part in out
    assert path.exists()


def test_bad_override_exits_2_with_suggestion(capsys):
    assert cli.main(["build", "driving_perception", "sharing=cross_stich"]) == 2
    assert "Did you mean 'cross_stitch'" in capsys.readouterr().err


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "mtlzoo.cli", "recipes", "--no-build"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "driving_perception" in result.stdout
