"""`mtlzoo bench scale`: training throughput with 1 vs 2 replicas, and training cost vs number of tasks.

Two measurements, taken side by side in one process, each timed in
interleaved rounds (every configuration once per round) so that a load
change on a shared machine hits all configurations alike; the fastest round
is reported (other load only adds time), the median is in the returned dict:

1. **Replicas.** The same model and global batch trained with the default
   strategy (1 replica) and with `MirroredStrategy` over 2 logical CPU
   devices (`mtlzoo.distribute.use_logical_cpus(2)`, `ReductionToOneDevice`).
   On one CPU the two replicas share the same cores and thread pool, so this
   shows the overhead of the replicated step (splitting the batch, the
   gradient all-reduce, the mirrored update), not a speed-up: the speed-up of
   real devices needs GPUs/TPUs (see docs/distributed.md).
2. **Tasks.** 1 to `max_tasks` (default 6) heads on the same trunk for hard
   sharing, cross-stitch (one column per task) and soft-L2 (one column per
   task plus the penalty): milliseconds per training step, the growth
   relative to one task, and each mode relative to hard sharing at the same
   number of tasks. Cross-stitch and soft sharing need two tasks or more; at
   one task every mode is the single-task network. Heads, in order:
   segmentation (10 classes), depth, scene tags, lane segmentation (3 classes),
   a second depth-like map, weather classification.

Run it in a fresh process (the logical devices must be configured before
TensorFlow starts); when TensorFlow is running already, the replica part runs
in a subprocess.

Example:
```python
from mtlzoo.bench.scale import run
result = run({"image_size": "32x64", "width": 4, "max_tasks": 4, "steps": 5, "rounds": 3})
result["replicas"]["speedup"], result["tasks"]["hard"][4]["ratio_vs_1"]
```
```
python -m mtlzoo.bench.scale --image-size 32x64 --width 4 --max-tasks 4 --steps 5 --rounds 3
```
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

_DEFAULTS = {
    "image_size": (64, 128),
    "width": 8,
    "neck_channels": 16,
    "batch_size": 16,
    "max_tasks": 6,
    "modes": ("hard", "cross_stitch", "soft_l2"),
    "steps": 10,
    "rounds": 3,
    "warmup": 2,
    "replica_tasks": 2,
    "seed": 0,
    "skip_replicas": False,
    "skip_tasks": False,
}

# (name, head config) in the order tasks are added.
TASK_POOL = (
    ("segmentation", {"kind": "segmentation", "num_classes": 10, "channels": 16}),
    ("depth", {"kind": "depth", "max_depth": 100.0, "channels": 16}),
    ("scene", {"kind": "multilabel", "num_classes": 5, "hidden": 16}),
    ("lanes", {"kind": "segmentation", "num_classes": 3, "channels": 16}),
    ("height", {"kind": "depth", "max_depth": 10.0, "channels": 16}),
    ("weather", {"kind": "classification", "num_classes": 4}),
)


def _parse_size(value):
    if isinstance(value, str):
        return tuple(int(p) for p in value.lower().replace(",", "x").split("x") if p.strip())
    return tuple(int(v) for v in value)


def _options(args):
    opts = dict(_DEFAULTS)
    if args is not None:
        source = args if isinstance(args, dict) else vars(args)
        for key in _DEFAULTS:
            if source.get(key) is not None:
                opts[key] = source[key]
    opts["image_size"] = _parse_size(opts["image_size"])
    if isinstance(opts["modes"], str):
        opts["modes"] = tuple(m.strip() for m in opts["modes"].split(",") if m.strip())
    ints = ("width", "neck_channels", "batch_size", "max_tasks", "steps", "rounds", "warmup", "replica_tasks", "seed")
    for key in ints:
        opts[key] = int(opts[key])
    if not 1 <= opts["max_tasks"] <= len(TASK_POOL):
        raise ValueError(f"max_tasks must be in 1..{len(TASK_POOL)}, got {opts['max_tasks']}.")
    if opts["batch_size"] % 2:
        raise ValueError(f"batch_size must be even (split over 2 replicas), got {opts['batch_size']}.")
    if min(opts["steps"], opts["rounds"]) < 1:
        raise ValueError("steps and rounds must be >= 1.")
    return opts


def _recipe(opts, num_tasks, sharing):
    from mtlzoo.recipe import Recipe

    h, w = opts["image_size"]
    return Recipe.from_dict(
        {
            "name": f"scale_{sharing}_{num_tasks}",
            "input_shape": [h, w, 3],
            "backbone": "tiny",
            "backbone_args": {"width": opts["width"]},
            "neck_channels": opts["neck_channels"],
            "sharing": sharing,
            "tasks": {name: dict(cfg) for name, cfg in TASK_POOL[:num_tasks]},
            "optimizer": {"name": "adam", "learning_rate": 1e-3},
            "seed": opts["seed"],
        }
    )


def _random_batch(model, n, seed):
    """Random images in [0, 255] and labels of the right shape for every head."""
    from mtlzoo.testing import random_inputs, random_labels

    return random_inputs(model, n, seed), random_labels(model, n, seed)


class _Timed:
    """One configuration: a compiled model and an iterator over one repeated batch."""

    def __init__(self, opts, num_tasks, sharing, strategy=None):
        import contextlib

        import tensorflow as tf

        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope:
            self.model = _recipe(opts, num_tasks, sharing).build()
        x, y = _random_batch(self.model, opts["batch_size"], opts["seed"])
        ds = tf.data.Dataset.from_tensors((x, y)).repeat()
        # fit() builds the model's training state and the train function; the
        # warm-up calls then trace it for this iterator (not timed).
        self.model.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)
        if strategy is not None:
            ds = strategy.experimental_distribute_dataset(ds)
        self.iterator = iter(ds)
        self.step = self.model.train_function
        for _ in range(max(1, opts["warmup"])):
            logs = self.step(self.iterator)
        float(next(iter(logs.values())))
        self.batch = opts["batch_size"]
        self.params = int(self.model.count_params())
        self.samples = []

    def time(self, steps):
        logs = None
        start = time.perf_counter()
        for _ in range(steps):
            logs = self.step(self.iterator)
        float(next(iter(logs.values())))  # wait for the last step
        self.samples.append((time.perf_counter() - start) / steps)

    @property
    def ms_per_step(self):
        # The fastest round: on a shared machine other load only adds time.
        return 1000.0 * min(self.samples)

    @property
    def ms_per_step_median(self):
        return 1000.0 * statistics.median(self.samples)


def _rounds(configs, opts):
    # One untimed step of every configuration once they all exist: the first
    # call after other models were built can still be slow (measured: 1.6 s
    # instead of 20 ms for the first 1-replica step after building the
    # 2-replica model).
    for c in configs:
        c.time(1)
        c.samples.clear()
    for _ in range(opts["rounds"]):
        for c in configs:
            c.time(opts["steps"])


def measure_replicas(opts):
    """1 vs 2 replicas (logical CPUs) on the hard-sharing model; needs 2 logical CPU devices."""
    from mtlzoo import distribute

    devices = distribute.use_logical_cpus(2)
    strategy = distribute.resolve_strategy("mirrored")
    one = _Timed(opts, opts["replica_tasks"], "hard")
    two = _Timed(opts, opts["replica_tasks"], "hard", strategy)
    _rounds([one, two], opts)
    out = {"devices": devices, "tasks": opts["replica_tasks"], "global_batch": opts["batch_size"]}
    for name, c in (("1", one), ("2", two)):
        out[name] = {"ms_per_step": c.ms_per_step, "ms_per_step_median": c.ms_per_step_median,
                     "examples_per_s": 1000.0 * c.batch / c.ms_per_step}
    out["speedup"] = out["2"]["examples_per_s"] / out["1"]["examples_per_s"]
    return out


def _replicas_in_subprocess(opts):
    payload = {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()}
    code = (
        "import json, sys; from mtlzoo.bench.scale import measure_replicas, _options; "
        "print('RESULT' + json.dumps(measure_replicas(_options(json.loads(sys.argv[1])))))"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(payload)], capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT"):
            return json.loads(line[len("RESULT"):])
    raise RuntimeError(f"replica benchmark subprocess failed:\n{proc.stderr[-3000:]}")


def measure_tasks(opts):
    """ms/step for 1..max_tasks heads and each sharing mode, interleaved rounds."""
    configs = {}
    for k in range(1, opts["max_tasks"] + 1):
        for mode in opts["modes"]:
            if k == 1 and mode != "hard":
                continue  # cross-stitch / soft sharing need two tasks; k=1 is the single-task network
            configs[(mode, k)] = _Timed(opts, k, mode)
    _rounds(list(configs.values()), opts)
    out = {mode: {} for mode in opts["modes"]}
    base = configs[("hard", 1)].ms_per_step
    for (mode, k), c in configs.items():
        out[mode][k] = {"ms_per_step": c.ms_per_step, "ms_per_step_median": c.ms_per_step_median,
                        "params": c.params, "ratio_vs_1": c.ms_per_step / base}
    for mode in opts["modes"]:
        for k, row in out[mode].items():
            row["ratio_vs_hard"] = row["ms_per_step"] / out["hard"][k]["ms_per_step"] if k in out["hard"] else None
    return out


def markdown(result):
    """The two result tables as markdown."""
    lines = []
    rep = result.get("replicas")
    if rep:
        lines += [
            f"Replicas: hard sharing, {rep['tasks']} tasks, global batch {rep['global_batch']}, "
            f"logical devices {', '.join(rep['devices'])}",
            "",
            "| replicas | ms/step | examples/s | vs 1 replica |",
            "|---:|---:|---:|---:|",
        ]
        for name in ("1", "2"):
            r = rep[name]
            ratio = r["examples_per_s"] / rep["1"]["examples_per_s"]
            lines.append(f"| {name} | {r['ms_per_step']:.1f} | {r['examples_per_s']:.1f} | {ratio:.2f}x |")
        lines.append("")
    tasks = result.get("tasks")
    if tasks:
        modes = list(tasks)
        header = ["tasks"] + [f"{m} ms/step" for m in modes] + [f"{m} vs 1 task" for m in modes]
        header += [f"{m} vs hard" for m in modes if m != "hard"] + [f"{m} params" for m in modes]
        lines += ["Training cost vs number of tasks (same trunk):", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join("---:" for _ in header) + "|"]
        ks = sorted({k for m in modes for k in tasks[m]}, key=int)
        for k in ks:
            cells = [str(k)]

            def get(m, f, fmt, k=k):
                return fmt.format(tasks[m][k][f]) if k in tasks[m] and tasks[m][k][f] is not None else "-"

            cells += [get(m, "ms_per_step", "{:.1f}") for m in modes]
            cells += [get(m, "ratio_vs_1", "{:.2f}x") for m in modes]
            cells += [get(m, "ratio_vs_hard", "{:.2f}x") for m in modes if m != "hard"]
            cells += [get(m, "params", "{:,}") for m in modes]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args=None):
    """Runs both measurements, prints the markdown tables and returns the numbers.

    Args:
        args: argparse Namespace, dict or None with optional `image_size`
            ("HxW", default 64x128), `width` (tiny backbone, default 8),
            `neck_channels` (16), `batch_size` (global, even, 16),
            `max_tasks` (1..6, default 6), `modes` (sharing modes, default
            hard, cross_stitch, soft_l2), `steps` (per timing round, 10),
            `rounds` (3), `warmup` (2), `replica_tasks` (tasks of the replica
            model, 2), `skip_replicas`, `skip_tasks`.

    Returns:
        dict with `replicas` ({"1": {...}, "2": {...}, "speedup"}) and `tasks`
        ({mode: {num_tasks: {"ms_per_step", "ratio_vs_1", "ratio_vs_hard", "params"}}}),
        `options` and `cpu_count`.

    Example:
    ```python
    from mtlzoo.bench.scale import run
    run({"image_size": "32x64", "width": 4, "max_tasks": 3, "steps": 3, "rounds": 2})
    ```
    """
    opts = _options(args)
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()}
    result = {"options": options, "cpu_count": os.cpu_count()}
    if not opts["skip_replicas"]:
        try:
            result["replicas"] = measure_replicas(opts)
        except RuntimeError as e:
            if "initialised its devices" not in str(e):
                raise
            result["replicas"] = _replicas_in_subprocess(opts)
    if not opts["skip_tasks"]:
        result["tasks"] = measure_tasks(opts)
    h, w = opts["image_size"]
    print(f"mtlzoo bench scale: tiny backbone width {opts['width']}, {h}x{w}, batch {opts['batch_size']}, "
          f"{opts['steps']} steps x {opts['rounds']} interleaved rounds (fastest round), {os.cpu_count()} CPUs")
    print(markdown(result))
    return result


def make_parser(parser=None):
    """The argument parser (or adds the options to `parser`, e.g. a `bench scale` subparser)."""
    p = parser or argparse.ArgumentParser(prog="mtlzoo bench scale", description=__doc__.splitlines()[0])
    p.add_argument("--image-size", dest="image_size", default=None, help="HxW (default 64x128)")
    p.add_argument("--width", type=int, default=None, help="tiny backbone width (default 8)")
    p.add_argument("--neck-channels", dest="neck_channels", type=int, default=None)
    p.add_argument("--batch-size", dest="batch_size", type=int, default=None, help="global batch (default 16)")
    p.add_argument("--max-tasks", dest="max_tasks", type=int, default=None, help="1..6 (default 6)")
    p.add_argument("--modes", default=None, help="sharing modes, comma-separated (default hard,cross_stitch,soft_l2)")
    p.add_argument("--steps", type=int, default=None, help="steps per timing round (default 10)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per configuration (default 2)")
    p.add_argument("--skip-replicas", dest="skip_replicas", action="store_true", default=None)
    p.add_argument("--skip-tasks", dest="skip_tasks", action="store_true", default=None)
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    return p


def main(argv=None):
    args = make_parser().parse_args(argv)
    result = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
