"""Selective int8: which TFLite ops an int8 export keeps in float32, and which dtype each op of a model runs in.

`mtlzoo.export(..., int8_float_ops=...)` and `mtlzoo.export.tflite.convert(..., float_ops=...)` take the op names
that `int8_float_ops` returns; `op_input_dtypes` shows the result.
"""

from __future__ import annotations

import re

import numpy as np

from mtlzoo.export.tflite import open_interpreter

#: Named sets of TFLite ops that an int8 export keeps in float32 (`int8_float_ops=`). "x86": the ops whose int8
#: XNNPACK kernels were slower than their float32 ones on an AVX512-VNNI x86 CPU (depthwise convolutions,
#: hard-swish and the other element-wise and resampling ops); convolutions, fully connected layers, additions and
#: ReLUs stay int8. On that CPU it made the edge driving_perception_lite model 0.65-0.66x float32 at 1 thread, against
#: 0.85-1.08x for the full-int8 model (docs/benchmarks.md, "Edge latency").
INT8_FLOAT_OPS = {
    "x86": ("DEPTHWISE_CONV_2D", "HARD_SWISH", "MUL", "MEAN", "LOGISTIC", "RESIZE_BILINEAR", "CONCATENATION",
            "RESHAPE", "SUB", "AVERAGE_POOL_2D"),
}


def int8_float_ops(value) -> tuple:
    """The TFLite op names an int8 export keeps in float32: None/"none" (full int8), a preset of
    `INT8_FLOAT_OPS` ("x86"), or op names (a list or a comma-separated string)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return ()
    if isinstance(value, str) and value.strip().lower() in INT8_FLOAT_OPS:
        return INT8_FLOAT_OPS[value.strip().lower()]
    names = [v.strip().upper() for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()]
    bad = [n for n in names if not re.fullmatch(r"[A-Z][A-Z0-9_]*", n)]
    if bad or not names:
        raise ValueError(f"int8_float_ops: {value!r} is neither a preset ({', '.join(INT8_FLOAT_OPS)}, none) nor a "
                         "list of TFLite op names such as DEPTHWISE_CONV_2D,HARD_SWISH.")
    return tuple(names)


def op_input_dtypes(model) -> dict:
    """dict op name -> sorted dtype names of its first input over the ops of a TFLite model (bytes or path): which
    ops run in int8 and which in float32 (e.g. `{"CONV_2D": ["int8"], "DEPTHWISE_CONV_2D": ["float32"]}`)."""
    interpreter = open_interpreter(model)
    out = {}
    for op in interpreter._get_ops_details():
        inputs = [int(i) for i in op["inputs"] if int(i) >= 0]
        if inputs:
            dtype = np.dtype(interpreter._get_tensor_details(inputs[0], 0)["dtype"]).name
            out.setdefault(op["op_name"], set()).add(dtype)
    return {k: sorted(v) for k, v in out.items()}
