"""`mtlzoo bench step`: train-step cost of every weighting and aggregator, as ratios.

All candidates are built on the same recipe, traced once, stepped once more
after the last build (so no side effect of a build lands in a timed round), then timed in
interleaved rounds (one round = `steps` calls of each candidate in turn), so a
noisy neighbour slows every candidate alike. Reported per candidate: the median
step time over rounds, its ratio to the equal-weight step, and its ratio to the
floor for exact per-task gradients — a step that runs T separate backward
passes through the whole model (`t_backward`).

Memory (`memory=true`, the default; `memory=isolated` measures each candidate
in a fresh process holding only its model, which removes the allocator noise
of 27 models sharing one process): TensorFlow's CPU allocator keeps no
statistics unless it is the BFC allocator, so the benchmark sets
`TF_CPU_ALLOCATOR_USE_BFC=true` before TensorFlow allocates anything (run it in
a fresh process) and reports, per candidate, the step's peak allocation above
what was allocated before it (`tf.config.experimental.get_memory_info`), and
that extra against the equal-weight step in units of the [T, P] gradient
matrix of the shared parameters (T tasks × P shared parameters × 4 bytes).

PyTorch reference (`compare=torch`, needs `pip install 'mtlzoo[compare]'`):
the same architecture, losses and Adam in PyTorch
(`mtlzoo.bench.torch_reference`), one model per candidate that has a
counterpart built the same way (equal, t_backward, pcgrad, mgda_ub), timed
interleaved with the TensorFlow candidates in the same rounds, on the same
batch values and with TensorFlow's thread count; the table gains "torch ms"
and "× torch". `channels_last=true` trains the PyTorch models in the
channels-last memory format. `breakdown=true` prints the equal-weight step
in four cumulative stages for both: forward + losses (TF under a
`GradientTape`, both in training mode); + the backward through the heads only
(the trunk's outputs detached; in TF the model split at its shared features,
`shared_representation_model`, with `tf.stop_gradient` between the parts,
which runs the same layers as the whole model); + the full backward; the full
step (TF: `train_on_batch`, with its streaming metrics; PyTorch: zero_grad,
forward, losses, backward, Adam).

Recipe variants (`variants="fused_batch_norm=false;precision=mixed_bfloat16"`):
adds, per `key=value` (separated by `;`), the equal-weight step of the model
built with that recipe override (candidate `equal@key=value`), timed in the
same rounds as the others. `precision=P` is short for `variants=precision=P`.

Profile (`profile=DIR`): after the timed rounds, `steps` calls of the
equal-weight step (and of each `equal@` candidate) are recorded with the
TensorFlow profiler into DIR/<candidate> and summarised by op type and group
(`mtlzoo.bench.profile`).

Example:
```python
from mtlzoo.bench.step import run
run({"recipe": "driving_perception_lite", "steps": 5, "rounds": 3})
```
or `mtlzoo bench step steps=5 rounds=3 "overrides={input_shape: [64, 128, 3]}"`.
"""

from __future__ import annotations

import time

from mtlzoo.bench.step_breakdown import breakdown, flag, interleaved

_DEFAULTS = {
    "recipe": "driving_perception_lite",
    "overrides": (),
    "batch_size": 8,
    "steps": 5,
    "rounds": 3,
    "warmup": 3,
    "methods": None,
    "jit_compile": False,
    "memory": True,
    "compare": None,
    "breakdown": False,
    "channels_last": False,
    "precision": None,
    "variants": None,
    "profile": None,
}


class PerTaskBackward:
    """Reference hook: T separate backward passes through the model, summed (the plain gradient)."""

    persistent_tape = True

    def gradients(self, model, tape, task_losses, total, extra):
        variables = model.trainable_variables
        with tape:
            terms = [model.scale_loss_for_step(model.loss_weights[t] * task_losses[t]) for t in model.task_names]
        grads = [None] * len(variables)
        for term in terms + [extra]:
            for i, g in enumerate(tape.gradient(term, variables)):
                if g is not None:
                    grads[i] = g if grads[i] is None else grads[i] + g
        return grads


def _options(args):
    opts = dict(_DEFAULTS)
    if args is not None:
        source = args if isinstance(args, dict) else vars(args)
        opts.update({k: v for k, v in source.items() if k in opts and v is not None})
    return opts


def _candidates(methods):
    import mtlzoo.aggregators
    import mtlzoo.weighting

    out = [("equal", "plain", None), ("t_backward", "hook", PerTaskBackward)]
    for name in mtlzoo.aggregators.list():
        out.append((f"aggregator:{name}", "aggregator", (name, {})))
        if getattr(mtlzoo.aggregators.get(name), "weight_based", False) and name in ("mgda", "aligned_mtl"):
            out.append((f"aggregator:{name}_ub", "aggregator", (name, {"representation": True})))
    for name in mtlzoo.weighting.list():
        out.append((f"weighting:{name}", "weighting", name))
    if methods:
        if isinstance(methods, str):  # methods=equal,pcgrad on the command line
            methods = [m.strip() for m in methods.split(",") if m.strip()]
        wanted = set(methods) | {"equal", "t_backward"}
        out = [c for c in out if c[0] in wanted or c[0].split(":")[-1] in wanted]
    return out


def _memory_available() -> bool:
    import tensorflow as tf

    try:
        tf.config.experimental.reset_memory_stats("CPU:0")
        tf.config.experimental.get_memory_info("CPU:0")
        return True
    except (ValueError, RuntimeError):
        return False


def _step_peak_bytes(model, x, y) -> int:
    """Peak bytes the allocator held during one train step, above what it held before."""
    import tensorflow as tf

    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    tf.config.experimental.reset_memory_stats("CPU:0")
    model.train_on_batch(x, y)
    return int(tf.config.experimental.get_memory_info("CPU:0")["peak"] - before)


def _build_candidate(recipe, kind, spec, jit_compile):
    import mtlzoo.weighting
    from mtlzoo.training_hooks import make_aggregator_hook

    if kind == "variant":
        from mtlzoo.recipe import parse_cli_overrides

        recipe = recipe.override(**parse_cli_overrides([spec]))
    model = recipe.override(aggregator=None).build(compile=False)
    model.compile(optimizer=recipe.make_optimizer(), jit_compile=bool(jit_compile))
    if kind == "hook":
        model.set_step_hook(spec())
    elif kind == "aggregator":
        model.set_step_hook(make_aggregator_hook(*spec))
    elif kind == "weighting":
        callback = mtlzoo.weighting.get(spec)
        callback.set_model(model)
        callback.on_train_begin({})
    return model


def _variants(opts) -> list:
    """The `key=value` recipe overrides of the `variants` and `precision` options."""
    out = []
    if opts.get("variants"):
        listed = opts["variants"].split(";") if isinstance(opts["variants"], str) else list(opts["variants"])
        out += [v.strip() for v in listed if v.strip()]
    if opts.get("precision"):
        listed = opts["precision"].split(",") if isinstance(opts["precision"], str) else list(opts["precision"])
        out += [f"precision={p.strip()}" for p in listed if p.strip() and p.strip() != "float32"]
    bad = [v for v in out if "=" not in v]
    if bad:
        raise ValueError(f"bench step variants: {bad[0]!r} is not a recipe override key=value "
                         "(e.g. variants=\"fused_batch_norm=false;precision=mixed_bfloat16\").")
    return out


def _torch_reference(compare):
    """The PyTorch reference module (imported only here: everything else runs without torch)."""
    if str(compare).strip().lower() != "torch":
        raise ValueError(f"compare={compare!r}: the only reference framework is PyTorch; use compare=torch.")
    from mtlzoo.bench import torch_reference  # raises an ImportError naming pip install 'mtlzoo[compare]'

    return torch_reference


def _tf_threads() -> int:
    import os

    import tensorflow as tf

    return tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count() or 1


def _batch(recipe, batch_size):
    from mtlzoo.testing import random_inputs, random_labels

    probe = recipe.build(compile=False)
    return random_inputs(probe, batch_size), random_labels(probe, batch_size)


def _tensors(x, y):
    """The batch as TensorFlow tensors, made once: `fit` feeds tensors from tf.data, so a timed step should not
    convert NumPy arrays on every call (a copy of every input that the PyTorch side does not pay either)."""
    import tensorflow as tf

    return tf.constant(x), {t: tf.constant(v) for t, v in y.items()}


def _recipe(opts):
    from mtlzoo.recipe import get_recipe, parse_cli_overrides

    overrides = opts["overrides"] or {}
    if not isinstance(overrides, dict):
        overrides = parse_cli_overrides(overrides)
    return get_recipe(opts["recipe"], **overrides)


def _isolated_peak(opts, name) -> int:
    """The candidate's step peak measured in a fresh process holding only its model (`memory=isolated`)."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_CPP_MIN_LOG_LEVEL": "2"}
    payload = json.dumps({k: v for k, v in opts.items() if k in ("recipe", "overrides", "batch_size", "warmup",
                                                                 "jit_compile")}, default=list)
    proc = subprocess.run([sys.executable, "-m", "mtlzoo.bench.step", "--memory-of", name, payload],
                          env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement of {name} failed:\n{proc.stderr[-2000:]}")
    return int(json.loads(proc.stdout.strip().splitlines()[-1])["peak"])


def _memory_of(name, opts):
    import json

    recipe = _recipe(opts)
    x, y = _tensors(*_batch(recipe, int(opts["batch_size"])))
    if name.startswith("equal@"):
        kind, spec = "variant", name.split("@", 1)[1]
    else:
        (_, kind, spec), = [c for c in _candidates(None) if c[0] == name]
    model = _build_candidate(recipe, kind, spec, opts.get("jit_compile", False))
    for _ in range(int(opts.get("warmup", 3))):
        model.train_on_batch(x, y)
    print(json.dumps({"name": name, "peak": min(_step_peak_bytes(model, x, y) for _ in range(3))}))


def run(args=None) -> dict:
    """Times every candidate's train step; prints a markdown table and returns the numbers.

    Args:
        args: Namespace, dict or None with `recipe`, `overrides` (dict, or a
            list of key=value strings), `batch_size`, `steps` (per round), `rounds`, `methods`
            (names to keep, a list or a comma-separated string; default all), `jit_compile`, `memory` (peak
            step memory per candidate: true, "isolated" or false; see above), `compare` ("torch": time the
            PyTorch counterparts too), `channels_last` (PyTorch memory format), `breakdown` (the four-stage
            breakdown of the equal-weight step, both frameworks) and `precision` (a comma list of recipe
            precisions whose equal-weight step is timed too, e.g. "mixed_bfloat16"), `variants` (recipe overrides
            `key=value`, separated by `;`, each timed as one more equal-weight candidate) and `profile` (a folder for
            TensorFlow profiler traces of the equal-weight steps, summarised by op type).
    """
    import os

    opts = _options(args)
    if isinstance(opts["memory"], str) and opts["memory"].strip().lower() != "isolated":
        opts["memory"] = opts["memory"].strip().lower() not in ("0", "false", "no", "off")
    isolated = isinstance(opts["memory"], str)
    if opts["memory"] is True:
        os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")  # read when TensorFlow creates its CPU allocator
    ref_module = _torch_reference(opts["compare"]) if opts["compare"] else None  # fail before building anything
    recipe = _recipe(opts)
    x_np, y_np = _batch(recipe, opts["batch_size"])
    x, y = _tensors(x_np, y_np)
    threads = _tf_threads()

    models = {}
    candidates = _candidates(opts["methods"])
    candidates += [(f"equal@{v}", "variant", v) for v in _variants(opts)]
    # Each model is traced right after its build, and every one takes one more untimed step after the last
    # build: whatever a build does to the process (`tf.random.set_seed` clears TensorFlow's kernel caches,
    # which stalls the next step of every compiled model for seconds; `Recipe.build` no longer calls it)
    # cannot land in a timed round.
    for i, (name, kind, spec) in enumerate(candidates):
        began = time.perf_counter()
        models[name] = model = _build_candidate(recipe, kind, spec, opts["jit_compile"])
        for _ in range(int(opts["warmup"])):  # trace, then a few slow first executions
            model.train_on_batch(x, y)
        print(f"  [{i + 1}/{len(candidates)}] {name}: built and traced in {time.perf_counter() - began:.0f} s", flush=True)
    torch_steps = {}
    if ref_module is not None:
        torch_steps = ref_module.counterparts(recipe, list(models), x_np, y_np, threads, flag(opts["channels_last"]),
                                              int(opts["warmup"]))
    for model in models.values():
        model.train_on_batch(x, y)

    pairs = []
    for name, model in models.items():  # each PyTorch counterpart right after its TF candidate, every round
        pairs.append((name, lambda model=model: model.train_on_batch(x, y)))
        if name in torch_steps:
            pairs.append((("torch", name), torch_steps[name]))
    timed = interleaved(pairs, opts["rounds"], opts["steps"])
    med = {name: timed[name] for name in models}
    memory = {}
    if isolated:
        for name in models:
            memory[name] = _isolated_peak(opts, name)
            print(f"  memory of {name}: {memory[name] / 2**20:.1f} MB (own process)", flush=True)
    elif opts["memory"] and _memory_available():
        for name, model in models.items():
            memory[name] = min(_step_peak_bytes(model, x, y) for _ in range(2))
    elif opts["memory"]:
        print("  memory: the CPU allocator keeps no statistics in this process (TensorFlow started before "
              "TF_CPU_ALLOCATOR_USE_BFC=true could take effect); run the benchmark in a fresh process.")
    shared, _ = models["equal"].variable_groups()
    import math

    matrix_bytes = 4 * len(recipe.tasks) * sum(math.prod(v.shape) for v in shared)
    base, floor = med["equal"], med["t_backward"]
    rows = {name: {"ms": 1000 * m, "vs_equal": m / base, "vs_t_backward": m / floor} for name, m in med.items()}
    for name in torch_steps:
        rows[name]["torch_ms"] = 1000 * timed[("torch", name)]
        rows[name]["x_torch"] = med[name] / timed[("torch", name)]
    for name, peak in memory.items():
        rows[name]["peak_mb"] = peak / 2**20
        rows[name]["extra_vs_equal_in_TP"] = (peak - memory["equal"]) / matrix_bytes if matrix_bytes else None
    print(f"recipe {recipe.name} {recipe.input_shape} batch {opts['batch_size']}, T={len(recipe.tasks)}, "
          f"jit_compile={bool(opts['jit_compile'])}, {opts['rounds']} rounds x {opts['steps']} steps, median; "
          f"[T, P] gradient matrix of the shared parameters = {matrix_bytes / 2**20:.1f} MB; {threads} threads"
          + (f"; PyTorch {ref_module.torch.__version__}"
             f"{' channels_last' if flag(opts['channels_last']) else ''}" if ref_module else ""))
    header = "| method | step ms | × equal | × T backward passes |"
    if ref_module:
        header += " torch ms | × torch |"
    if memory:
        header += " step peak MB | extra vs equal, in [T, P] |"
    print(header, flush=True)
    print("| --- | ---: | ---: | ---: |" + (" ---: | ---: |" if ref_module else "") + (" ---: | ---: |" if memory else ""))
    for name, r in rows.items():
        line = f"| {name} | {r['ms']:.1f} | {r['vs_equal']:.2f} | {r['vs_t_backward']:.2f} |"
        if ref_module:
            line += f" {r['torch_ms']:.1f} | {r['x_torch']:.2f} |" if "torch_ms" in r else " - | - |"
        if "peak_mb" in r:
            line += f" {r['peak_mb']:.1f} | {r['extra_vs_equal_in_TP']:+.2f} |"
        print(line)
    result = {"recipe": recipe.name, "rows": rows, "matrix_bytes": matrix_bytes, "threads": threads,
              "options": {k: v for k, v in opts.items() if k != "overrides"}}
    if opts["profile"]:
        from mtlzoo.bench.profile import print_summary, profile_steps

        result["profile"] = {}
        for name, model in models.items():
            if name == "equal" or name.startswith("equal@"):
                print(f"profile of {name} ({opts['steps']} steps):")
                folder = os.path.join(str(opts["profile"]), name.replace("@", "_"))
                result["profile"][name] = profile_steps(lambda model=model: model.train_on_batch(x, y),
                                                        int(opts["steps"]), folder)
                print_summary(result["profile"][name])
    if flag(opts["breakdown"]):
        result["breakdown"] = breakdown(opts, recipe, models["equal"], x_np, y_np, ref_module, threads)
    return result


if __name__ == "__main__":
    import json
    import sys

    if len(sys.argv) == 4 and sys.argv[1] == "--memory-of":
        _memory_of(sys.argv[2], {**_DEFAULTS, **json.loads(sys.argv[3])})
    else:
        run()
