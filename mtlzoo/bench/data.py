"""`mtlzoo bench data`: throughput of the synthetic renderer and the tf.data pipeline.

Measures
- the renderer alone, one scene after another in this process (one core):
  scenes per second per core;
- the full `mtlzoo.data.load("synthetic_driving")` pipeline (parallel render,
  flip, CenterNet encoding, batching) over a first uncached pass, and over a
  second pass served from its in-memory cache: examples per second, timed
  after the first batch so that start-up is not counted;
- the same pipeline reading tfds files prepared beforehand
  (`synthetic_driving.prepare`, not timed) without a cache: what every epoch
  of a run on prepared files costs (`prepared=false` skips it).

The render step is a `tf.numpy_function`, so it holds the GIL for much of its
work: the uncached pipeline runs at about the one-core renderer rate.

Example:
```python
from mtlzoo.bench.data import run
result = run({"image_size": (128, 256), "num_scenes": 40, "num_examples": 64})
result["renderer_scenes_per_s"], result["pipeline_examples_per_s"]
```
"""

from __future__ import annotations

import os
import time

_DEFAULTS = {
    "image_size": (128, 256),
    "num_scenes": 50,
    "num_examples": 128,
    "batch_size": 8,
    "seed": 0,
    "recipe": "driving_perception_lite",
    "train_steps": 5,
    "prepared": True,
    "data_dir": None,
}


def _parse_size(value):
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
        return tuple(int(p) for p in parts if p.strip())
    return tuple(int(v) for v in value)


def _options(args) -> dict:
    opts = dict(_DEFAULTS)
    if args is None:
        return opts
    source = args if isinstance(args, dict) else vars(args)
    for key in _DEFAULTS:
        if source.get(key) is not None:
            opts[key] = source[key]
    opts["image_size"] = _parse_size(opts["image_size"])
    for key in ("num_scenes", "num_examples", "batch_size", "seed", "train_steps"):
        opts[key] = int(opts[key])
    if isinstance(opts["prepared"], str):
        opts["prepared"] = opts["prepared"].strip().lower() not in ("0", "false", "no", "off")
    return opts


def _pass(ds) -> tuple:
    """(examples, seconds) of one pass, timed from the first batch on (skips start-up)."""
    iterator = iter(ds)
    next(iterator)
    count = 0
    start = time.perf_counter()
    for image, _ in iterator:
        count += int(image.shape[0])
    return count, max(time.perf_counter() - start, 1e-9)


def _prepared_rate(opts, image_size):
    """Examples per second of the pipeline over prepared tfds files, no cache (every epoch reads files)."""
    import shutil
    import tempfile

    from mtlzoo.data import load
    from mtlzoo.data.synthetic_driving import prepare

    data_dir = opts["data_dir"] or tempfile.mkdtemp(prefix="mtlzoo_bench_data_")
    try:
        sizes = {"train": opts["num_examples"], "validation": 1, "test": 1}
        prepare(data_dir, image_size=image_size, seed=opts["seed"], split_sizes=sizes)
        ds = load("synthetic_driving", split="train", batch_size=opts["batch_size"], image_size=image_size,
                  data_dir=data_dir, seed=opts["seed"], cache=False, shuffle=False, split_sizes=sizes)
        _pass(ds)  # file-system and tfds warm-up
        n, t = _pass(ds)
        return n / t
    finally:
        if not opts["data_dir"]:
            shutil.rmtree(data_dir, ignore_errors=True)


def _train_consumption(opts, ds, image_size):
    """Examples per second the recipe's train step consumes (same batch size, after warm-up)."""
    import mtlzoo

    model = mtlzoo.build(opts["recipe"], input_shape=tuple(image_size) + (3,))
    x, y = next(iter(ds))
    y = {t: v for t, v in y.items() if t in model.task_names}
    for _ in range(3):  # trace, then the slow first executions
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(opts["train_steps"]):
        model.train_on_batch(x, y)
    return opts["train_steps"] * int(x.shape[0]) / (time.perf_counter() - start)


def run(args=None) -> dict:
    """Runs the data benchmark, prints a small table and returns the numbers.

    Args:
        args: argparse Namespace, dict or None with optional `image_size`
            ((H, W) or "HxW"), `num_scenes` (renderer, default 50),
            `num_examples` (pipeline, default 128), `batch_size` (default 8),
            `seed` (default 0), `recipe` (whose train step is timed for the
            pipeline-vs-consumption ratio; default driving_perception_lite,
            None to skip), `train_steps` (default 5), `prepared` (also time
            reading prepared tfds files; default True) and `data_dir` (where
            to prepare them; default a temporary folder, removed afterwards).

    Returns:
        dict with `renderer_scenes_per_s` (one core), `pipeline_examples_per_s`
        (first, rendering pass), `pipeline_cached_examples_per_s` (second pass),
        `pipeline_prepared_examples_per_s` (prepared tfds files, uncached),
        `train_examples_per_s` (the recipe's train step), `image_size`,
        `cpu_count` and the sizes used.

    Example:
    ```python
    from mtlzoo.bench.data import run
    run({"image_size": "128x256"})
    ```
    """
    opts = _options(args)
    from mtlzoo.data import load, validate_image_size
    from mtlzoo.data.synthetic_driving import render_scene

    image_size = validate_image_size(opts["image_size"])
    if opts["num_scenes"] < 1:
        raise ValueError(f"num_scenes must be >= 1, got {opts['num_scenes']}.")
    if opts["batch_size"] < 1 or opts["num_examples"] < 2 * opts["batch_size"]:
        raise ValueError(
            f"num_examples ({opts['num_examples']}) must be at least two batches of batch_size "
            f"({opts['batch_size']}): the first batch is excluded from the timing."
        )
    render_scene(opts["seed"], 0, image_size)  # warm-up
    start = time.perf_counter()
    for i in range(opts["num_scenes"]):
        render_scene(opts["seed"], 1 + i, image_size)
    render_rate = opts["num_scenes"] / (time.perf_counter() - start)

    ds = load(
        "synthetic_driving",
        split="train",
        batch_size=opts["batch_size"],
        image_size=image_size,
        num_examples=opts["num_examples"],
        seed=opts["seed"],
        cache=True,
        shuffle=False,  # a shuffle buffer after the cache would fill (render everything) before batch 1
    )
    n1, t1 = _pass(ds)
    n2, t2 = _pass(ds)
    prepared_rate = _prepared_rate(opts, image_size) if opts["prepared"] else None
    train_rate = _train_consumption(opts, ds, image_size) if opts["recipe"] and opts["train_steps"] > 0 else None
    result = {
        "train_examples_per_s": train_rate,
        "image_size": image_size,
        "cpu_count": os.cpu_count(),
        "num_scenes": opts["num_scenes"],
        "num_examples": opts["num_examples"],
        "batch_size": opts["batch_size"],
        "renderer_scenes_per_s": render_rate,
        "pipeline_examples_per_s": n1 / t1,
        "pipeline_cached_examples_per_s": n2 / t2,
        "pipeline_prepared_examples_per_s": prepared_rate,
    }
    rows = [
        ("renderer (1 core)", f"{render_rate:8.1f} scenes/s"),
        ("pipeline, rendering", f"{n1 / t1:8.1f} examples/s"),
        ("pipeline, cached", f"{n2 / t2:8.1f} examples/s"),
    ]
    if prepared_rate:
        rows.append(("pipeline, prepared files", f"{prepared_rate:8.1f} examples/s"))
    if train_rate:
        ratio = f"{n1 / t1 / train_rate:8.1f}x rendering, {n2 / t2 / train_rate:.1f}x cached"
        if prepared_rate:
            ratio += f", {prepared_rate / train_rate:.1f}x prepared files"
        rows += [
            (f"train step ({opts['recipe']})", f"{train_rate:8.1f} examples/s"),
            ("pipeline / train step", ratio),
        ]
    print(f"synthetic_driving {image_size[0]}x{image_size[1]}, batch {opts['batch_size']}, "
          f"{os.cpu_count()} CPUs")
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    return result
