"""Keeps the command line's output to what a user can act on.

TensorFlow, XLA, LiteRT and tensorflow-datasets write notices to the process's
standard error that no `mtlzoo` user can act on: the oneDNN notice, "Could not
find cuda drivers", "failed call to cuInit" on a machine without a GPU, the
converter's "fully_quantize: 0, ..." line, "Created TensorFlow Lite XNNPACK
delegate", tfds's "Using custom data configuration" and its `FeatureConnector.dtype`
deprecation. Many of them come from C++ before Python's logging is set up,
so `TF_CPP_MIN_LOG_LEVEL` does not hide them (measured with TF 2.21 here).

`filtered_stderr()` routes file descriptor 2 through a pipe for the duration
of a command and forwards every line except those matching `NOISE`, as it
arrives. Everything else, warnings and errors included, is shown unchanged.
`mtlzoo --debug ...` or `MTLZOO_SHOW_ALL_LOGS=1` shows everything.

Example:
```python
from mtlzoo.cli.quiet import filtered_stderr
with filtered_stderr():
    import tensorflow as tf
    tf.config.list_physical_devices()
```
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import warnings

#: Lines (regular expressions, searched) that carry nothing a user can act on.
NOISE = tuple(re.compile(p) for p in (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"oneDNN supports DT_\w+ only on platforms with",
    r"Could not find cuda drivers on your machine",
    r"failed call to cuInit",
    r"cuda_platform\.cc|cudart_stub\.cc|cuda_executor\.cc|cuda_dnn\.cc|cuda_blas\.cc|cuda_fft\.cc",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"To enable the following instructions: .* in other operations, rebuild TensorFlow",
    r"TF-TRT Warning: Could not find TensorRT",
    r"NodeDef mentions attribute \w+ which is not in the op definition",
    r"fully_quantize: \d+, inference_type: \d+",
    r"Created TensorFlow Lite XNNPACK delegate for CPU",
    r"Estimated count of arithmetic ops",
    r"Ignored (output_format|drop_control_dependency)\.",
    r"Using custom data configuration",
    r"`FeatureConnector\.dtype` is deprecated",
    r"^\s*$",
))

_WARNINGS = (  # Python warnings from dependencies, not from the user's code
    r".*`FeatureConnector\.dtype` is deprecated.*",
    r".*jax\.xla_computation is deprecated.*",
    r".*np\.find_common_type is deprecated.*",
)


def is_noise(line: str) -> bool:
    """True when `line` (one line of standard error) matches a `NOISE` pattern."""
    return any(p.search(line) for p in NOISE)


def show_all_logs(args=None) -> bool:
    """True when the user asked for every log line (`--debug` or `MTLZOO_SHOW_ALL_LOGS=1`)."""
    return bool(getattr(args, "debug", False)) or os.environ.get("MTLZOO_SHOW_ALL_LOGS", "") not in ("", "0")


@contextlib.contextmanager
def filtered_stderr(stream_fd: int = 2):
    """Within the block, lines written to file descriptor `stream_fd` (C++ and Python alike) pass through a
    filter that drops `NOISE`; the others are forwarded as they arrive.

    Args:
        stream_fd: int. The descriptor to filter. Defaults to 2 (standard error).
    """
    for category in _WARNINGS:
        warnings.filterwarnings("ignore", message=category)
    try:
        sys.stderr.flush()
        saved = os.dup(stream_fd)
        read_fd, write_fd = os.pipe()
    except (OSError, ValueError, AttributeError):  # no real descriptor (e.g. a captured stream): leave it alone
        yield
        return
    os.dup2(write_fd, stream_fd)
    os.close(write_fd)

    def forward():
        with os.fdopen(read_fd, "rb") as pipe:
            for raw in pipe:
                if not is_noise(raw.decode("utf-8", "replace")):
                    try:
                        os.write(saved, raw)
                    except OSError:  # the block ended while a child process still held the pipe
                        return

    thread = threading.Thread(target=forward, name="mtlzoo-stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, stream_fd)  # closes the pipe's last write end: the reader sees EOF and drains
        thread.join(timeout=5.0)
        os.close(saved)


def quiet_tensorflow_start() -> None:
    """Imports TensorFlow and lists its devices with the start-up notices filtered out.

    Call once at the start of a command when the whole command does not run
    inside `filtered_stderr()`.
    """
    with filtered_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()
