"""The command line prints what a user can act on: no start-up notices, the demo's pictures and scene choice."""

import os
import subprocess
import sys

import numpy as np
import pytest

from mtlzoo.cli.quiet import filtered_stderr, is_noise

NOISY = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796185079.551914   16028 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.",
    "I0000 00:00:1796185079.554059   16028 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "E0000 00:00:1796185084.890358   16028 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1796183468.799451   30967 util.cc:131] oneDNN supports DT_INT32 only on platforms with AVX-512. "
    "Falling back to the default Eigen-based implementation if present.",
    "WARNING:absl:Using custom data configuration: SyntheticDrivingConfig(name='128x256-n192.48.48')",
    "WARNING:absl:`FeatureConnector.dtype` is deprecated. Please change your code to use NumPy with the field "
    "`FeatureConnector.np_dtype` or use TensorFlow with the field `FeatureConnector.tf_dtype`.",
    "E0000 00:00:1796183540.410303   31540 node_def_util.cc:682] NodeDef mentions attribute Truncate which is not in "
    "the op definition: Op<name=Identity; signature=input:T -> output:T; attr=T:type>",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32, output_inference_type: FLOAT32",
]

USEFUL = [
    "mtlzoo train: error: recipe 'driving_perceptoin' is not registered. Did you mean 'driving_perception'?",
    "UserWarning: task 'depth' has no labels in this batch",
    "E0000 00:00:1796183540.410303   31540 op_kernel.cc:1] OOM when allocating tensor with shape [16,128,256,10]",
    "Traceback (most recent call last):",
]


@pytest.mark.parametrize("line", NOISY)
def test_notices_nobody_can_act_on_are_noise(line):
    assert is_noise(line)


@pytest.mark.parametrize("line", USEFUL)
def test_errors_and_warnings_are_not_noise(line):
    assert not is_noise(line)


def _run(code):
    env = {k: v for k, v in os.environ.items() if k not in ("MTLZOO_SHOW_ALL_LOGS", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_filtered_stderr_drops_noise_from_cpp_and_python_and_keeps_the_rest():
    """Written straight to descriptor 2 (as C++ does) and through sys.stderr, inside the block and after it."""
    code = (
        "import os, sys\n"
        "from mtlzoo.cli.quiet import filtered_stderr\n"
        "with filtered_stderr():\n"
        f"    os.write(2, {NOISY[1]!r}.encode() + b'\\n')\n"
        "    os.write(2, b'kept from C++\\n')\n"
        f"    print({NOISY[5]!r}, file=sys.stderr)\n"
        "    print('kept from Python', file=sys.stderr)\n"
        "print('after the block', file=sys.stderr)\n"
        f"os.write(2, {NOISY[4]!r}.encode() + b'\\n')\n"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[:3] == ["kept from C++", "kept from Python", "after the block"]
    assert "oneDNN custom operations" not in result.stderr and "custom data configuration" not in result.stderr
    assert NOISY[4] in result.stderr  # outside the block nothing is filtered


def test_the_mtlzoo_command_starts_without_tensorflow_notices():
    """A command that imports TensorFlow and builds a model prints its table and no start-up notices."""
    result = subprocess.run([sys.executable, "-m", "mtlzoo.cli", "build", "tabular_demo"], capture_output=True,
                            text=True, timeout=300,
                            env={k: v for k, v in os.environ.items() if k != "MTLZOO_SHOW_ALL_LOGS"})
    assert result.returncode == 0, result.stderr
    assert "params" in result.stdout
    assert [line for line in result.stderr.splitlines() if line.strip()] == []


def test_side_by_side_puts_two_pictures_next_to_each_other(tmp_path):
    from matplotlib.image import imread, imsave

    from mtlzoo.predict import side_by_side

    left, right = tmp_path / "a.png", tmp_path / "b.png"
    imsave(left, np.zeros((40, 60, 3)))
    imsave(right, np.ones((40, 30, 3)))
    out = side_by_side([left, right], tmp_path / "both.png", titles=["mine", "zoo"])
    both = imread(out)
    assert both.shape[1] == 90 and both.shape[0] >= 40
    dark = both[..., :3].max(axis=-1) < 0.1
    assert dark[:, :55].mean() > 0.2  # the black picture fills much of the left two thirds
    assert not dark[-30:, 62:].any()  # below the titles, the right third holds the white picture only


def test_the_demo_shows_the_scene_with_the_most_objects():
    from mtlzoo.cli.demo import pick_busy_scene

    heatmaps = np.zeros((3, 4, 4, 2 + 4), np.float32)
    heatmaps[0, 0, 0, 0] = 1.0
    heatmaps[1, 1, 1, 0] = heatmaps[1, 2, 2, 1] = heatmaps[1, 3, 3, 1] = 1.0
    heatmaps[2, 0, 0, 4:] = 1.0  # box sizes are not objects
    images = np.arange(3, dtype=np.float32)[:, None, None, None] * np.ones((3, 16, 16, 3), np.float32)
    batches = [(images[:2], {"detection": heatmaps[:2]}), (images[2:], {"detection": heatmaps[2:]})]
    chosen = pick_busy_scene(batches)
    assert float(chosen[0, 0, 0]) == 1.0
