"""`mtlzoo bench methods`: every sharing mode, weighting and aggregator, over seeds, against single-task models.

On `synthetic_driving`, `driving_perception_lite` is trained once per (configuration, seed) with `mtlzoo.train`
(the seed's training scenes, the same steps and batch for all) and evaluated with `mtlzoo.evaluation.evaluate` on
one fixed set of validation scenes (the seed-0 split, for every seed). The configurations come from the
registries, so a newly registered method or sharing mode joins by itself: `single_task:<task>` (the recipe on one
task, as `mtlzoo.evaluation.baselines` builds it: the baselines of Δm, added to any selection), `sharing:<mode>`
(the recipe's fixed loss weights; `sharing:hard` is the recipe as shipped), `weighting:<name>` and
`aggregator:<name>` on hard sharing, and `aggregator:<name>_ub`, the representation-level variant of each
weight-based aggregator (`aggregator_args: {representation: true}`). A sharing mode whose builder takes `init_from`
(cross-stitch, soft_l2) also runs as `sharing:<mode>_init`, the way its paper trains it: each column and head
starts from this seed's trained single-task model (kept under `--models`, default runs/methods_models, and trained
there first when missing) and the cross-stitch units learn `INIT_LR_MULTIPLIER` times faster; its steps come on top
of the single-task models' training.

Each result is a JSON file `RESULTS/<budget>/<configuration>__seed<k>.json` (":" written "-"), written atomically
under a folder lock; a rerun skips existing files, so the table fills over several runs. It holds every metric, Δm
against the single-task models of its seed, the median train-step time (`mtlzoo.train`'s `StepTimer`), parameters,
FLOPs, wall time, load average, versions and the command that reproduces it. The report (after a run, or alone
with `--report`) tabulates per configuration the metrics and Δm as mean ± std over seeds, the seeds with Δm < 0,
the train-step time against `weighting:equal` and the parameters, between `<!-- methods-table:begin -->` and
`<!-- methods-table:end -->` in the doc, and plots Δm with error bars against the train-step cost as a PNG.

Budgets: `standard`, 64×128 images, batch 16, 512 training scenes × 8 epochs = 256 steps, 128 validation scenes,
BatchNorm momentum 0.9: one `sharing:hard` run took 148 s (2.5 min) on 2 CPU cores shared with other jobs (load
average 5), the baselines 84–118 s. `smoke`: the tiny trunk of `mtlzoo.testing.TINY_IMAGE` at 32×64, 4 steps.

Example:
```python
from mtlzoo.bench.methods import run
run({"budget": "smoke", "methods": "weighting:equal,mgda_ub", "seeds": "0",
     "results": "/tmp/methods", "doc": "/tmp/methods/table.md", "figure": "/tmp/methods/dm.png"})
```
Shell: `python -m mtlzoo.bench.methods --budget standard --seeds 0,1,2 --methods "aggregator:*"` or
`mtlzoo bench methods budget=standard seeds=0,1,2 "methods=aggregator:*"`; `--report` rebuilds table and figure.

Reference:
    Maninis et al., "Attentive Single-Tasking of Multiple Tasks", CVPR 2019 (Δm).
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import glob
import importlib
import json
import math
import os
import sys
import time
import traceback

from mtlzoo.bench.methods_table import (  # noqa: F401  (the table's pieces, re-exported)
    BEGIN,
    END,
    REFERENCE,
    baselines_of as _baselines_of,
    delta_m_against,
    markdown_table,
    spread as _spread,
    summarize,
    write_section,
)
from mtlzoo.bench.methods_table import plot as _plot

RECIPE = "driving_perception_lite"
FORMAT = "mtlzoo-bench-methods/1"
VALIDATION_SEED = 0  # every seed is evaluated on the validation scenes of this seed
#: Placeholder in a configuration's `sharing_args.init_from`: this seed's single-task models (trained when missing).
INIT_FROM_BASELINES = "@single_task_models"
#: Cross-stitch units learn this many times faster than the columns in the `_init` configurations (Misra et al.
#: train the units with a larger learning rate than the fine-tuned columns).
INIT_LR_MULTIPLIER = 10.0
BUDGETS = {
    # BatchNorm momentum 0.9: at 0.99 the moving statistics still hold 8% of their initial values after 256 steps,
    # and inference-mode outputs of the MobileNetV3 trunk are wrong (pixel accuracy 0.26 against 0.84 in training).
    "standard": {"image_size": (64, 128), "batch_size": 16, "num_train": 512, "num_validation": 128, "epochs": 8,
                 # bn_momentum None: neck and heads keep Keras's 0.99, as in every result so far (the recipes'
                 # own bn_momentum default came later; changing it here would mix two settings in one table).
                 "overrides": {"backbone_args.bn_momentum": 0.9, "bn_momentum": None}},
    # The zoo model's budget (saved_models/driving_perception_lite): the recipe's own training settings, and every
    # trained model kept under `--models` so that the best seed can be published.
    "zoo": {"image_size": (128, 256), "batch_size": 16, "num_train": 1000, "num_validation": 100, "epochs": 10,
            "save_models": True},
    "smoke": {"image_size": (32, 64), "batch_size": 4, "num_train": 8, "num_validation": 8, "epochs": 2, "tiny": True},
}
_DEFAULTS = {"budget": "standard", "methods": None, "seeds": "0,1,2", "recipe": RECIPE, "overrides": None,
             "results": os.path.join("docs", "results", "methods"), "doc": os.path.join("docs", "benchmarks.md"),
             "figure": os.path.join("docs", "methods_delta_m.png"), "report": False, "no_report": False,
             "models": os.path.join("runs", "methods_models"),
             "list": False, "verbose": 0}


#: One benchmarked configuration: its name (`aggregator:mgda_ub`), kind and the recipe overrides that make it.
Configuration = collections.namedtuple("Configuration", ["name", "kind", "overrides"])


def configurations(tasks) -> list:
    """Every configuration, in run order: baselines, `sharing:hard`, `weighting:equal`, then the other sharing
    modes, weightings and aggregators; `tasks` are the recipe's tasks (one `single_task:` baseline each)."""
    import mtlzoo.aggregators
    import mtlzoo.sharing
    import mtlzoo.weighting
    from mtlzoo.registry import AGGREGATORS, SHARING
    from mtlzoo.task_spec import accepted_args

    out = [Configuration(f"single_task:{t}", "single_task", {"tasks": [t], "sharing": "hard", "weighting": "fixed",
                                                              "aggregator": None, f"tasks.{t}.loss_weight": 1.0})
           for t in tasks]
    first = lambda names, head: sorted(names, key=lambda n: (n != head, n))  # noqa: E731
    sharing = []
    for m in first(SHARING.list(), "hard"):
        sharing.append(Configuration(f"sharing:{m}", "sharing", {"sharing": m}))
        accepted = accepted_args(SHARING.get(m))
        if "init_from" in accepted:  # as the paper trains it: columns from this seed's single-task models
            args = {"init_from": INIT_FROM_BASELINES, **({"lr_multiplier": INIT_LR_MULTIPLIER}
                                                          if "lr_multiplier" in accepted else {})}
            sharing.append(Configuration(f"sharing:{m}_init", "sharing", {"sharing": m, "sharing_args": args}))
    weighting = [Configuration(f"weighting:{w}", "weighting", {"weighting": w})
                 for w in first(mtlzoo.weighting.list(), "equal")]
    out += sharing[:1] + weighting[:1] + sharing[1:] + weighting[1:]
    for name in mtlzoo.aggregators.list():
        out.append(Configuration(f"aggregator:{name}", "aggregator", {"aggregator": name}))
        if getattr(AGGREGATORS.get(name), "weight_based", False):
            out.append(Configuration(f"aggregator:{name}_ub", "aggregator",
                                     {"aggregator": name, "aggregator_args": {"representation": True}}))
    return out


def select(configs, methods) -> list:
    """The configurations matching `methods` (names or globs, comma-separated or a list), plus the baselines.

    A pattern matches a full name (`aggregator:mgda_ub`, `weighting:*`) or the part after the colon (`mgda*`);
    the `single_task:` baselines are added whenever another configuration is selected (Δm needs them).
    """
    from mtlzoo.registry import suggestion

    if not methods:
        return list(configs)
    patterns = [p.strip() for p in (methods.split(",") if isinstance(methods, str) else methods) if str(p).strip()]
    chosen = set()
    for p in patterns:
        hits = {c.name for c in configs if fnmatch.fnmatch(c.name, p) or fnmatch.fnmatch(c.name.split(":", 1)[1], p)}
        if not hits:
            names = [c.name for c in configs]
            raise ValueError(f"methods: {p!r} matches no configuration.{suggestion(p, names)} "
                             f"Configurations: {', '.join(names)} (globs such as 'aggregator:*' work too).")
        chosen |= hits
    if any(not n.startswith("single_task:") for n in chosen):
        chosen |= {c.name for c in configs if c.kind == "single_task"}
    return [c for c in configs if c.name in chosen]


def parse_seeds(value) -> list:
    """The seeds of `--seeds` ("0,1,2", a list or one int), checked: integers >= 0."""
    items = value.split(",") if isinstance(value, str) else (value if isinstance(value, (list, tuple)) else [value])
    seeds = [int(s) for s in items if str(s).strip().isdigit()]
    if not seeds or len(seeds) != len([s for s in items if str(s).strip()]):
        raise ValueError(f"seeds must be one or more integers >= 0, e.g. 0,1,2; got {value!r}.")
    return seeds


def options(args) -> dict:
    """The benchmark's options (`_DEFAULTS` updated by `args`: a dict, a Namespace or None), validated."""
    from mtlzoo.recipe import parse_cli_overrides
    from mtlzoo.registry import suggestion

    source = {} if args is None else (dict(args) if isinstance(args, dict) else vars(args))
    for key in source:
        if key not in _DEFAULTS:
            raise ValueError(f"mtlzoo bench methods has no option {key!r}.{suggestion(key, _DEFAULTS)} "
                             f"Options: {', '.join(_DEFAULTS)}.")
    opts = {**_DEFAULTS, **{k: v for k, v in source.items() if v is not None}}
    if opts["budget"] not in BUDGETS:
        raise ValueError(f"Unknown budget {opts['budget']!r}; use one of {', '.join(BUDGETS)}.")
    opts["seeds"] = parse_seeds(opts["seeds"])
    if opts["budget"] != "standard" and source.get("figure") is None:  # one figure per budget
        opts["figure"] = opts["figure"].replace(".png", f"_{opts['budget']}.png")
    overrides = opts["overrides"] or {}
    opts["overrides"] = overrides if isinstance(overrides, dict) else parse_cli_overrides(overrides)
    return opts


def base_recipe(opts):
    """The recipe every configuration starts from, at the budget's image size and data settings."""
    from mtlzoo.recipe import get_recipe

    budget = BUDGETS[opts["budget"]]
    settings = {"input_shape": (*budget["image_size"], 3), "data.name": "synthetic_driving",
                "data.num_examples": budget["num_train"], "training.batch_size": budget["batch_size"]}
    if budget.get("tiny"):
        from mtlzoo.testing import TINY_IMAGE

        settings.update({k: v for k, v in TINY_IMAGE.items() if k != "input_shape"})
    settings.update(budget.get("overrides", {}))
    return get_recipe(opts["recipe"], **{**settings, **opts["overrides"]})  # an override may replace a budget setting


def _finite(value):
    """A JSON-safe copy of `value`: NaN and ±inf become None, tuples lists, NumPy scalars numbers."""
    return json.loads(json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v)),
                      parse_constant=lambda _: None)


def _command(config, seed, opts) -> str:
    words = [f"python -m mtlzoo.bench.methods --budget {opts['budget']} --seeds {seed} --methods {config.name}",
             "--no-report"] + ([f"--results {opts['results']}"] if opts["results"] != _DEFAULTS["results"] else [])
    return " ".join(words + [f"--override '{k}={json.dumps(v)}'" for k, v in opts["overrides"].items()])


def run_one(config, seed, opts, validation, steps_per_epoch=None, also_evaluate=None, callbacks=()) -> dict:
    """Trains and evaluates one (configuration, seed); returns its result (Δm not yet filled in).

    `steps_per_epoch` fixes the number of steps whatever the data size (the data repeats); `also_evaluate`
    ({name: dataset}) adds `metrics_<name>` (e.g. the training scenes, for the train/validation gap); `callbacks`
    are extra Keras callbacks of the training (e.g. a loss-curve recorder).
    """
    import keras

    from mtlzoo.evaluation import evaluate
    from mtlzoo.training import train

    budget = BUDGETS[opts["budget"]]
    overrides = dict(config.overrides)
    if overrides.get("sharing_args", {}).get("init_from") == INIT_FROM_BASELINES:
        overrides["sharing_args"] = dict(overrides["sharing_args"], init_from=single_task_models(opts, seed, validation))
    keras.backend.clear_session()
    recipe = base_recipe(opts).override(**overrides)
    start = time.perf_counter()
    result = train(recipe, epochs=budget["epochs"], seed=seed, validation_data=False, verbose=opts["verbose"],
                   steps_per_epoch=steps_per_epoch, callbacks=list(callbacks))
    trained = time.perf_counter() - start
    if config.kind == "single_task" or budget.get("save_models"):
        save_model_atomic(result.model, single_task_model_path(opts, config.name, seed))
    report = evaluate(result.model, validation, batch_size=budget["batch_size"], timing_repeats=5).to_dict()
    extra = {f"metrics_{name}": evaluate(result.model, data, batch_size=budget["batch_size"],
                                         timing_repeats=1).to_dict()["metrics"]
             for name, data in (also_evaluate or {}).items()}
    cost, timing = report["cost"], result.timing
    return _finite({**extra,
        "format": FORMAT, "configuration": config.name, "kind": config.kind, "seed": seed, "budget": opts["budget"],
        "metrics": report["metrics"], "higher_is_better": report["higher_is_better"], "delta_m": None,
        "delta_m_per_task": {}, "train_step_ms": 1000.0 * timing["train_step_s"], "params": cost["params"],
        "steps": timing["timed_steps"] + 1, "epochs": result.epochs, "stopped_reason": result.stopped_reason,
        "flops": cost["flops"], "inference_ms": 1000.0 * cost["step_time_s"], "train_s": trained,
        "wall_s": time.perf_counter() - start, "validation_examples": report["num_examples"],
        "final_logs": {k: v[-1] for k, v in result.history.items() if v},
        "settings": {**budget, "validation_seed": VALIDATION_SEED, "overrides": opts["overrides"]},
        "recipe": result.recipe.to_dict(), "command": _command(config, seed, opts), "argv": list(sys.argv),
        "versions": {n: importlib.import_module(n).__version__ for n in ("mtlzoo", "tensorflow", "keras", "numpy")}
        | {"python": sys.version.split()[0]}, "cpus": os.cpu_count(), "load_average": list(os.getloadavg()),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })


def single_task_model_path(opts, name, seed) -> str:
    """Where a run keeps its trained model under `opts["models"]`: every single-task run (for the `_init`
    configurations), and every run of a budget with `save_models` (the zoo budget, whose best seed is published)."""
    return os.path.join(opts["models"], opts["budget"], f"{name.replace(':', '-')}__seed{seed}.keras")


def save_model_atomic(model, path) -> None:
    from mtlzoo.fileio import atomic_save_model

    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_save_model(model, path)


def single_task_models(opts, seed, validation) -> dict:
    """{task: .keras path} of this seed's single-task models; a missing one is trained first (the same run as its
    `single_task:` configuration, so its result file is written too when it is missing)."""
    from mtlzoo.fileio import atomic_write_json

    folder = os.path.join(opts["results"], opts["budget"])
    paths = {}
    for config in (c for c in configurations(list(base_recipe(opts).tasks)) if c.kind == "single_task"):
        path = single_task_model_path(opts, config.name, seed)
        if not os.path.exists(path):
            print(f"    training {config.name} seed {seed} for its model ({path})", flush=True)
            result = run_one(config, seed, opts, validation)
            if not os.path.exists(_result_path(folder, config, seed)):
                atomic_write_json(_result_path(folder, config, seed), result, indent=2)
        paths[config.name.split(":", 1)[1]] = path
    return paths


def load_results(folder) -> list:
    """Every result file of one budget folder (JSON files of another format are ignored)."""
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path) as f:
            try:
                data = json.load(f)
            except ValueError as e:
                raise ValueError(f"{path} is not valid JSON ({e}); delete it and rerun to redo that result.") from None
        out += [data] if isinstance(data, dict) and data.get("format") == FORMAT else []
    return out


def _result_path(folder, config, seed):
    return os.path.join(folder, f"{config.name.replace(':', '-')}__seed{seed}.json")


def report(opts) -> dict:
    """Builds the table and the figure from the result files of `opts`' budget; returns the rows and the markdown."""
    folder = os.path.join(opts["results"], opts["budget"])
    results, budget = load_results(folder), BUDGETS[opts["budget"]]
    rows = summarize(results, [c.name for c in configurations(list(base_recipe(opts).tasks))])
    (height, width), batch = budget["image_size"], budget["batch_size"]
    steps = budget["epochs"] * math.ceil(budget["num_train"] / batch)
    header = (f"Budget `{opts['budget']}`: {len(results)} runs of {len(rows)} configurations, seeds "
              f"{sorted({r['seed'] for r in results})}; {height}×{width}, batch {batch}, "
              f"{budget['num_train']} training scenes × {budget['epochs']} epochs = {steps} steps, "
              f"{budget['num_validation']} validation scenes (seed {VALIDATION_SEED}); built "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from `{folder}`.")
    markdown = header + "\n\n" + markdown_table(rows) + "\n"
    write_section(opts["doc"], markdown, opts["budget"])
    drawn = _plot(rows, opts["figure"], RECIPE)
    print(markdown + (f"\nfigure: {opts['figure']}" if drawn else "\n(no figure yet: no Δm and reference step time)"))
    return {"rows": rows, "markdown": markdown, "figure": opts["figure"] if drawn else None}


def _train_all(opts) -> list:
    from mtlzoo.fileio import RunLock, atomic_write_json
    from mtlzoo.data.splits import load_split

    budget = BUDGETS[opts["budget"]]
    base = base_recipe(opts)
    configs = select(configurations(list(base.tasks)), opts["methods"])
    folder = os.path.join(opts["results"], opts["budget"])
    # configuration-major, so an interrupted fill leaves whole configurations with every seed rather than
    # every configuration with a partial set of seeds
    plan = [(seed, c) for c in configs for seed in opts["seeds"]]
    todo = [(seed, c) for seed, c in plan if not os.path.exists(_result_path(folder, c, seed))]
    print(f"== methods benchmark ({opts['budget']}): {len(configs)} configurations × {len(opts['seeds'])} seeds = "
          f"{len(plan)} runs; {len(plan) - len(todo)} done already, {len(todo)} to run, into {folder}", flush=True)
    if not todo:
        return []
    validation = load_split(dict(base.data, num_validation_examples=budget["num_validation"]), "validation",
                            image_size=budget["image_size"], batch_size=budget["batch_size"], seed=VALIDATION_SEED,
                            training=False, with_boxes=True)
    failures = []
    with RunLock(folder, what="methods benchmark results folder"):
        for i, (seed, config) in enumerate(todo):
            try:
                result = run_one(config, seed, opts, validation)
            except Exception:  # one broken method must not stop the others; its file stays missing
                failures.append(f"{config.name} seed {seed}")
                print(f"  [{i + 1}/{len(todo)}] {config.name} seed {seed} FAILED\n{traceback.format_exc()}", flush=True)
                continue
            if config.kind != "single_task":
                result["delta_m"], result["delta_m_per_task"] = delta_m_against(
                    result["metrics"], result["higher_is_better"], _baselines_of(load_results(folder), seed))
            atomic_write_json(_result_path(folder, config, seed), result, indent=2)
            dm = "–" if result["delta_m"] is None else f"{result['delta_m']:+.2f}%"
            print(f"  [{i + 1}/{len(todo)}] {config.name} seed {seed}: Δm {dm}, {result['train_step_ms']:.0f} ms/step,"
                  f" {result['wall_s']:.0f} s", flush=True)
    return failures


def run(args=None) -> dict:
    """Runs the missing (configuration, seed) results, then rebuilds the table and the figure.

    Args:
        args: Namespace, dict (`mtlzoo bench methods key=value`) or None: `budget` ("standard", "smoke"),
            `methods` (names or globs; default all), `seeds` ("0,1,2", an int or a list), `results` (folder),
            `doc` (markdown file for the table), `figure` (PNG), `report` (only rebuild table and figure),
            `no_report` (train only), `list` (print the configurations), `recipe`, `overrides` (recipe
            overrides for every run: give them a results folder of their own), `verbose` (for `fit`).

    Returns:
        dict with `configurations`, `failures` and (unless `no_report`) the report's `rows`, `markdown`, `figure`.
    """
    opts = options(args)
    names = [c.name for c in select(configurations(list(base_recipe(opts).tasks)), opts["methods"])]
    if opts["list"]:
        print("\n".join(names))
        return {"configurations": names, "failures": []}
    failures = [] if opts["report"] else _train_all(opts)
    out = {"configurations": names, "failures": failures}
    if not opts["no_report"]:
        out.update(report(opts))
    if failures:
        print(f"== {len(failures)} runs failed (rerun to retry them): {', '.join(failures)}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mtlzoo.bench.methods", description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS))
    parser.add_argument("--methods", help="configurations: comma list of names or globs (default all)")
    for name in ("seeds", "results", "doc", "figure", "models"):
        parser.add_argument(f"--{name}", help=f"default {_DEFAULTS[name]}")
    parser.add_argument("--override", dest="overrides", action="append", help="recipe override key=value")
    for flag, text in (("--report", "only rebuild table and figure"), ("--no-report", "train only"),
                       ("--list", "print the selected configurations")):
        parser.add_argument(flag, action="store_true", help=text)
    parser.add_argument("--verbose", type=int)
    return 1 if run(parser.parse_args(argv))["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
