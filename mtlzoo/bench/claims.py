"""`python -m mtlzoo.bench.claims`: the claims of multi-task learning, measured (docs/when-mtl-helps.md).

Each claim is an experiment of several arms (single-task, multi-task, a method), trained with the same budget and
seeds and evaluated on the same validation data. Every (claim, arm, setting, seed) result is a JSON file under
`docs/results/claims/<claim>/` that a rerun skips, so an experiment fills over several sessions; `--report` rebuilds
the tables and figures without training.

Claims implemented so far:

- `relatedness`: the synthetic pair of regression tasks with correlation ρ of Ma et al. (KDD 2018, section 3;
  dataset `correlated_tasks`), ρ ∈ {1.0, 0.9, 0.5, 0.0}: single-task MLPs, a shared-bottom MLP (hard sharing) and
  MMoE, each task's validation MAE. The paper's finding: shared-bottom degrades as ρ falls, MMoE much less.
- `scarce_labels`: on synthetic_driving, one task (`--task`, default depth) labelled on 100/25/10/5% of the training
  scenes and the others on all of them; that task's validation metric for its single-task model, the multi-task
  model with equal weighting and with the best gradient method of the methods benchmark. Runs are configurations of
  `mtlzoo bench methods` (same recipe, budget, seeds and validation scenes) with `data.label_fractions` set.
- `overfitting`: training sets of 100, 300 and 1000 scenes, every arm trained for the methods budget's number of
  steps; each task's metric on its own training scenes and on the validation scenes, single-task against
  multi-task (equal weighting): the train/validation gap.

Example:
```python
from mtlzoo.bench.claims import run
run({"claim": "relatedness", "seeds": "0", "budget": "smoke", "results": "/tmp/claims", "doc": "/tmp/claims.md"})
```
Shell: `python -m mtlzoo.bench.claims --claim relatedness --seeds 0,1,2`.

Reference:
    Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import time

from mtlzoo.bench import claims_findings
from mtlzoo.bench.claims_common import BEGIN, END, FORMAT, MODELS_ROOT, write_section  # noqa: F401  (re-exported)
from mtlzoo.bench.claims_common import TABULATED_METRIC, TASK_METRIC, fmt, higher_is_better, relative_change
from mtlzoo.bench.claims_common import fill as _fill
from mtlzoo.bench.claims_common import spread as _spread
from mtlzoo.bench.claims_common import validation_scenes as scarce_validation  # noqa: F401  (re-exported)
from mtlzoo.bench.methods import parse_seeds

RHOS = (1.0, 0.9, 0.5, 0.0)
#: Arms of the relatedness claim: recipe overrides on `tabular_mmoe` (an MLP trunk of 64 units for shared-bottom
#: and single-task models, MMoE with 8 experts of 16 units; the same heads).
RELATEDNESS_ARMS = {
    "single_task:y1": {"tasks": ["y1"], "sharing": "hard", "sharing_args": {}},
    "single_task:y2": {"tasks": ["y2"], "sharing": "hard", "sharing_args": {}},
    "shared_bottom": {"sharing": "hard", "sharing_args": {}},
    "mmoe": {},
}
#: Claim `scarce_labels`: the labelled fractions of the one scarce task, and the arms (configurations of the methods
#: benchmark). `aggregator:aligned_mtl` had the best Δm of the hard-sharing methods in the methods table when this
#: claim was first run (seed 0, Δm -2.7 %; docs/benchmarks.md).
SCARCE_FRACTIONS = (1.0, 0.25, 0.10, 0.05)
SCARCE_ARMS = ("single_task:{task}", "weighting:equal", "aggregator:aligned_mtl")
#: The metric reported per scarce task (lower is better for depth's abs_rel).
SCARCE_METRIC = TASK_METRIC
#: Claim `overfitting`: training-set sizes (scenes), arms, and the metric per task (detection's mAP@0.5 is near 0 at
#: this budget, see the methods table, so it is trained but not tabulated).
OVERFIT_SIZES = (100, 300, 1000)
OVERFIT_ARMS = ("single_task:segmentation", "single_task:depth", "single_task:scene", "weighting:equal")
OVERFIT_METRIC = TABULATED_METRIC
BUDGETS = {"standard": {"epochs": 10, "num_train": 10000, "num_validation": 1000, "batch_size": 64},
           "smoke": {"epochs": 1, "num_train": 64, "num_validation": 32, "batch_size": 32}}


def relatedness_runs(seeds):
    """[(file stem, arm, rho, seed, recipe overrides)] of the relatedness claim."""
    return [(f"{arm.replace(':', '-')}__rho{rho:g}__seed{seed}", arm, rho, seed, {**overrides, "data.rho": rho})
            for seed in seeds for rho in RHOS for arm, overrides in RELATEDNESS_ARMS.items()]


def run_relatedness(stem, arm, rho, seed, overrides, budget) -> dict:
    import keras

    from mtlzoo.data.splits import load_split
    from mtlzoo.evaluation import evaluate
    from mtlzoo.recipe import get_recipe
    from mtlzoo.training import train

    keras.backend.clear_session()
    recipe = get_recipe("tabular_mmoe", **{"data.num_examples": budget["num_train"],
                                           "training.batch_size": budget["batch_size"]}).override(**overrides)
    start = time.perf_counter()
    result = train(recipe, epochs=budget["epochs"], seed=seed, validation_data=False, verbose=0)
    data = dict(recipe.data, num_validation_examples=budget["num_validation"])
    validation = load_split(data, "validation", image_size=None, batch_size=budget["batch_size"], seed=seed, training=False,
                            tasks=list(recipe.tasks))
    report = evaluate(result.model, validation, timing_repeats=1).to_dict()
    return {"format": FORMAT, "claim": "relatedness", "arm": arm, "rho": rho, "seed": seed,
            "metrics": report["metrics"], "params": report["cost"]["params"], "wall_s": time.perf_counter() - start,
            "overrides": overrides, "budget": budget,
            "command": f"python -m mtlzoo.bench.claims --claim relatedness --seeds {seed}",
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def scarce_runs(seeds, task):
    """[(file stem, arm, fraction, seed)] of the scarce-labels claim for `task`."""
    return [(f"{arm.format(task=task).replace(':', '-')}__{task}{fraction:g}__seed{seed}", arm.format(task=task),
             fraction, seed)
            for seed in seeds for fraction in SCARCE_FRACTIONS for arm in SCARCE_ARMS]


def _methods_opts(budget, task, fraction, models_root=MODELS_ROOT):
    from mtlzoo.bench import methods

    # Single-task runs keep their models for the methods benchmark's `_init` configurations: a claim's models (other
    # data) go to a folder of their own, or they would replace the methods benchmark's.
    return methods.options({"budget": budget, "overrides": {"data.label_fractions": {task: fraction}},
                            "models": os.path.join(models_root, f"scarce_labels-{task}{fraction:g}")})


def run_scarce(arm, fraction, seed, budget, task, validation, models_root=MODELS_ROOT) -> dict:
    from mtlzoo.bench import methods

    opts = _methods_opts(budget, task, fraction, models_root)
    config = {c.name: c for c in methods.configurations(list(methods.base_recipe(opts).tasks))}[arm]
    result = methods.run_one(config, seed, opts, validation)
    result.update(format=FORMAT, claim="scarce_labels", arm=arm, task=task, fraction=fraction,
                  command=f"python -m mtlzoo.bench.claims --claim scarce_labels --task {task} --seeds {seed}"
                          + (f" --budget {budget}" if budget != "standard" else ""))
    return result


def scarce_table(results, task) -> tuple:
    """(markdown table, {arm: {fraction: (mean, std, n)}}) of the scarce task's metric; MTL arms also as the change
    against the single-task model of the same seed and fraction."""
    metric = SCARCE_METRIC[task]
    rows = [r for r in results if r.get("claim") == "scarce_labels" and r.get("task") == task]
    single = {(r["seed"], r["fraction"]): r["metrics"][task][metric] for r in rows if r["arm"].startswith("single_task")}
    header = [f"labelled {100 * f:g}%" for f in SCARCE_FRACTIONS]
    lines = [f"| arm ({task} {metric}{' ↑' if metric != 'abs_rel' else ' ↓'}) | " + " | ".join(header) + " |",
             "|---|" + "---:|" * len(header)]
    curves = {}
    for arm in (a.format(task=task) for a in SCARCE_ARMS):
        cells, changes = [], []
        for fraction in SCARCE_FRACTIONS:
            mine = [r for r in rows if r["arm"] == arm and r["fraction"] == fraction]
            s = _spread([r["metrics"][task][metric] for r in mine])
            curves.setdefault(arm, {})[fraction] = s
            cells.append("–" if s is None else f"{s[0]:.3f} ± {s[1]:.3f} (n={s[2]})")
            rel = [relative_change(r["metrics"][task][metric], single[(r["seed"], fraction)], higher_is_better(r, task, metric))
                   for r in mine if (r["seed"], fraction) in single]
            c = _spread(rel)
            changes.append("–" if c is None else f"{c[0]:+.1f} ± {c[1]:.1f} % (n={c[2]})")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
        if not arm.startswith("single_task"):
            lines.append(f"| {arm}, change vs single-task | " + " | ".join(changes) + " |")
    return "\n".join(lines), curves


def plot_scarce(curves, task, path) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mtlzoo.fileio import atomic_savefig

    fig = Figure(figsize=(5.5, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    drawn = False
    for arm, points in curves.items():
        points = [(f, s) for f, s in points.items() if s is not None]
        if points:
            ax.errorbar([100 * p[0] for p in points], [p[1][0] for p in points], yerr=[p[1][1] for p in points],
                        marker="o", capsize=3, label=arm)
            drawn = True
    if not drawn:
        return False
    ax.set_xscale("log")
    ax.set_xlabel(f"{task} labels: % of the training scenes")
    ax.set_ylabel(f"validation {SCARCE_METRIC[task]}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    return True


def overfit_runs(seeds):
    """[(file stem, arm, training scenes, seed)] of the overfitting claim."""
    return [(f"{arm.replace(':', '-')}__n{n}__seed{seed}", arm, n, seed)
            for seed in seeds for n in OVERFIT_SIZES for arm in OVERFIT_ARMS]


def run_overfit(arm, n, seed, budget, validation, models_root=MODELS_ROOT) -> dict:
    """One arm on `n` training scenes for the budget's steps; metrics on the validation and the training scenes."""
    from mtlzoo.bench import methods
    from mtlzoo.data.splits import load_split

    opts = methods.options({"budget": budget, "overrides": {"data.num_examples": n},
                            "models": os.path.join(models_root, f"overfitting-n{n}")})
    spec = methods.BUDGETS[budget]
    base = methods.base_recipe(opts)
    config = {c.name: c for c in methods.configurations(list(base.tasks))}[arm]
    scenes = load_split(dict(base.data), "train", image_size=spec["image_size"], batch_size=spec["batch_size"],
                        seed=seed, training=False, with_boxes=True)
    steps = max(1, spec["num_train"] // spec["batch_size"])  # the methods budget's steps per epoch, whatever n is
    result = methods.run_one(config, seed, opts, validation, steps_per_epoch=steps, also_evaluate={"train": scenes})
    result.update(format=FORMAT, claim="overfitting", arm=arm, num_train=n,
                  command=f"python -m mtlzoo.bench.claims --claim overfitting --seeds {seed}"
                          + (f" --budget {budget}" if budget != "standard" else ""))
    return result


def overfit_gap(result, task, metric) -> float:
    """How much better `metric` is on the training scenes than on the validation scenes (positive: it overfits),
    whichever way the metric points: train − validation for mIoU and mAP, validation − train for abs rel."""
    train, val = result["metrics_train"][task][metric], result["metrics"][task][metric]
    return train - val if higher_is_better(result, task, metric) else val - train


def overfit_table(results) -> str:
    """Markdown: per task and training-set size, the training and validation metric and their gap (`overfit_gap`:
    positive = better on the training scenes), single-task against multi-task (mean ± std over seeds)."""
    rows = [r for r in results if r.get("claim") == "overfitting"]
    lines = ["| task (metric) | scenes | single-task: train / validation / gap ↓ | multi-task (equal): train / "
             "validation / gap ↓ |", "|---|---:|---|---|"]
    for task, metric in OVERFIT_METRIC.items():
        for n in OVERFIT_SIZES:
            cells = []
            for arm in (f"single_task:{task}", "weighting:equal"):
                mine = [r for r in rows if r["arm"] == arm and r["num_train"] == n and task in r["metrics"]]
                train = _spread([r["metrics_train"][task][metric] for r in mine])
                val = _spread([r["metrics"][task][metric] for r in mine])
                gap = _spread([overfit_gap(r, task, metric) for r in mine])
                cells.append(" / ".join("–" if s is None else f"{s[0]:.3f} ± {s[1]:.3f}" for s in (train, val, gap))
                             + (f" (n={gap[2]})" if gap else ""))
            lines.append(f"| {task} ({metric}) | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def relatedness_table(results) -> tuple:
    """(markdown table, {arm: {rho: (mean, std, n)}} of the mean of the two tasks' validation MAE)."""
    curves = {}
    lines = ["| arm | " + " | ".join(f"ρ = {r:g}: y1 / y2 MAE ↓" for r in RHOS) + " | params |",
             "|---|" + "---|" * (len(RHOS) + 1)]
    for arm in ("single_task", "shared_bottom", "mmoe"):
        cells, params = [], None
        for rho in RHOS:
            rows = [r for r in results if r["rho"] == rho and r["arm"].split(":")[0] == arm]
            per_task = {}
            for task in ("y1", "y2"):
                per_task[task] = _spread([r["metrics"][task]["mae"] for r in rows if task in r["metrics"]])
            by_seed = {}
            for r in rows:
                for task, values in r["metrics"].items():
                    by_seed.setdefault(r["seed"], []).append(values["mae"])
            curves.setdefault(arm, {})[rho] = _spread([statistics.fmean(v) for v in by_seed.values() if len(v) == 2])
            cells.append(" / ".join("–" if s is None else f"{s[0]:.3f} ± {s[1]:.3f} (n={s[2]})"
                                    for s in per_task.values()))
            params = params or (sum(r["params"] for r in rows if r["seed"] == rows[0]["seed"]) if rows else None)
        label = "single-task (two models)" if arm == "single_task" else arm
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {params if params else '–'} |")
    return "\n".join(lines), curves


def plot_relatedness(curves, path) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mtlzoo.fileio import atomic_savefig

    fig = Figure(figsize=(5.5, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    drawn = False
    for arm, color in (("single_task", "tab:gray"), ("shared_bottom", "tab:red"), ("mmoe", "tab:blue")):
        points = [(rho, s) for rho, s in curves.get(arm, {}).items() if s is not None]
        if points:
            ax.errorbar([p[0] for p in points], [p[1][0] for p in points], yerr=[p[1][1] for p in points],
                        marker="o", capsize=3, label=arm.replace("_", " "), color=color)
            drawn = True
    if not drawn:
        return False
    ax.set_xlabel("task correlation ρ")
    ax.set_ylabel("validation MAE, mean of the two tasks ↓")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    return True


def run(args=None) -> dict:
    """Trains the missing results of a claim, then rewrites its table (and figure) in the doc."""
    from mtlzoo.fileio import RunLock, atomic_write_json

    opts = {"claim": "relatedness", "seeds": "0,1,2", "budget": "standard", "report": False, "task": "depth",
            "results": os.path.join("docs", "results", "claims"), "doc": os.path.join("docs", "when-mtl-helps.md"),
            "figures": "docs"}
    opts.update({k: v for k, v in ({} if args is None else (args if isinstance(args, dict) else vars(args))).items()
                 if v is not None})
    if opts["claim"] not in CLAIMS:
        from mtlzoo.registry import suggestion

        raise ValueError(f"Unknown claim {opts['claim']!r}.{suggestion(str(opts['claim']), CLAIMS)} "
                         f"Implemented: {', '.join(CLAIMS)}.")
    if opts["claim"] == "scarce_labels":
        return _run_scarce(opts)
    if opts["claim"] == "overfitting":
        return _run_overfit(opts)
    if opts["claim"] in PLUGINS:
        return _run_plugin(opts)
    if opts["budget"] not in BUDGETS:
        raise ValueError(f"Unknown budget {opts['budget']!r}; use one of {', '.join(BUDGETS)}.")
    seeds = parse_seeds(opts["seeds"])
    folder = os.path.join(opts["results"], opts["claim"] if opts["budget"] == "standard" else f"{opts['claim']}-{opts['budget']}")
    os.makedirs(folder, exist_ok=True)
    todo = [r for r in relatedness_runs(seeds) if not os.path.exists(os.path.join(folder, r[0] + ".json"))]
    if not opts["report"] and todo:
        with RunLock(folder, what="claims results folder"):
            for i, (stem, arm, rho, seed, overrides) in enumerate(todo):
                result = run_relatedness(stem, arm, rho, seed, overrides, BUDGETS[opts["budget"]])
                atomic_write_json(os.path.join(folder, stem + ".json"), result, indent=2)
                print(f"  [{i + 1}/{len(todo)}] {arm} rho {rho:g} seed {seed}: "
                      + ", ".join(f"{t} MAE {m['mae']:.3f}" for t, m in result["metrics"].items())
                      + f" ({result['wall_s']:.0f} s)", flush=True)
    results = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(folder, "*.json")))]
    results = [r for r in results if r.get("format") == FORMAT]
    table, curves = relatedness_table(results)
    figure = os.path.join(opts["figures"], "claims_relatedness.png")
    drawn = plot_relatedness(curves, figure)
    text = table + (f"\n\n![validation MAE against ρ]({os.path.relpath(figure, os.path.dirname(opts['doc']) or '.')})"
                    if drawn else "")
    write_section(opts["doc"], opts["claim"], text)
    claims_findings.record(opts, "relatedness", claims_findings.relatedness(results, RHOS), results)
    print(table)
    return {"results": results, "table": table, "curves": curves}


def _run_scarce(opts) -> dict:
    task, budget = opts["task"], opts["budget"]
    if task not in SCARCE_METRIC:
        raise ValueError(f"scarce_labels: --task must be one of {', '.join(SCARCE_METRIC)}, got {task!r}.")
    metric = SCARCE_METRIC[task]

    def train_one(run, validation):
        _, arm, fraction, seed = run
        result = run_scarce(arm, fraction, seed, budget, task, validation)
        return result, (f"{arm} {task} labelled {100 * fraction:g}% seed {seed}: "
                        f"{metric} {fmt(result['metrics'][task][metric], 4)}")

    seeds = parse_seeds(opts["seeds"])
    results = _fill(opts, "scarce_labels", scarce_runs(seeds, task), train_one)
    table, curves = scarce_table(results, task)
    suffix = "" if budget == "standard" else f"_{budget}"
    figure = os.path.join(opts["figures"], f"claims_scarce_{task}{suffix}.png")
    drawn = plot_scarce(curves, task, figure)
    text = table + (f"\n\n![{task} with scarce labels]({os.path.relpath(figure, os.path.dirname(opts['doc']) or '.')})"
                    if drawn else "")
    write_section(opts["doc"], f"scarce_labels-{task}{suffix}", text)
    claims_findings.record(opts, f"scarce_labels-{task}", claims_findings.scarce_labels(
        results, task, metric, SCARCE_FRACTIONS), [r for r in results if r.get("task") == task])
    from mtlzoo.bench import claim_unequal

    methods_results = opts.get("methods_results") or claim_unequal.METHODS_RESULTS
    unequal = claim_unequal.table(results, task, methods_results=methods_results, budget=budget)
    figure = os.path.join(opts["figures"], f"claims_unequal_{task}{suffix}.png")
    if claim_unequal.plot(results, task, figure, methods_results=methods_results, budget=budget):
        unequal += f"\n\n![change of every task with {task} scarce]({os.path.relpath(figure, os.path.dirname(opts['doc']) or '.')})"
    write_section(opts["doc"], f"unequal_data-{task}{suffix}", unequal)
    claims_findings.record(opts, f"unequal_data-{task}", claim_unequal.finding(
        results, task, methods_results=methods_results, budget=budget),
        [r for r in results if r.get("task") == task and r.get("fraction") == claim_unequal.FRACTION])
    print(table)
    return {"results": results, "table": table, "curves": curves}


def _run_overfit(opts) -> dict:
    def train_one(run, validation):
        _, arm, n, seed = run
        return run_overfit(arm, n, seed, opts["budget"], validation), f"{arm} on {n} scenes seed {seed}"

    seeds = parse_seeds(opts["seeds"])
    results = _fill(opts, "overfitting", overfit_runs(seeds), train_one)
    from mtlzoo.bench.claims_common import figure_link
    from mtlzoo.bench.claims_plots import plot_overfit

    suffix = "" if opts["budget"] == "standard" else f"_{opts['budget']}"
    figure = os.path.join(opts["figures"], f"claims_overfitting{suffix}.png")
    table = overfit_table(results)
    if plot_overfit(results, OVERFIT_METRIC, OVERFIT_SIZES, figure, overfit_gap):
        table += "\n\n" + figure_link(opts, figure, "train minus validation metric against the training-set size")
    write_section(opts["doc"], "overfitting" + suffix, table)
    claims_findings.record(opts, "overfitting", claims_findings.overfitting(results, OVERFIT_METRIC, OVERFIT_SIZES, overfit_gap),
                           results)
    print(table)
    return {"results": results, "table": table}


def _run_plugin(opts) -> dict:
    """A claim of its own module (`claims_common` describes the interface)."""
    import importlib

    module = importlib.import_module(PLUGINS[opts["claim"]])
    seeds = parse_seeds(opts["seeds"])
    import inspect

    takes_budget = "budget" in inspect.signature(module.runs).parameters
    runs = module.runs(seeds, budget=opts["budget"]) if takes_budget else module.runs(seeds)
    results = _fill(opts, module.CLAIM, runs,
                    lambda run, validation: module.train_one(run, validation, opts["budget"], MODELS_ROOT))
    text = module.report(results, opts)
    write_section(opts["doc"], claims_findings.budget_key(module.CLAIM, opts["budget"]), text)
    if hasattr(module, "finding"):
        # one finding per budget (`record` keys a zoo finding `intruder_zoo`); `diagnose` quotes them together
        claims_findings.record(opts, module.CLAIM, module.finding(results, opts), results)
    print(text)
    return {"results": results, "table": text}


#: Claims with a module of their own, by `--claim`.
PLUGINS = {"intruder": "mtlzoo.bench.claim_intruder", "difficulty": "mtlzoo.bench.claim_difficulty",
           "capacity": "mtlzoo.bench.claim_capacity"}
#: The claims `run` knows, by `--claim`.
CLAIMS = ("relatedness", "scarce_labels", "overfitting", *PLUGINS)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mtlzoo.bench.claims", description=__doc__.splitlines()[0])
    parser.add_argument("--claim", help=", ".join(CLAIMS))
    parser.add_argument("--task", help="scarce_labels: the task with scarce labels (default depth)")
    parser.add_argument("--seeds", help="default 0,1,2")
    parser.add_argument("--budget", help="standard, smoke or zoo (the zoo model's budget, 128x256 and 630 steps)")
    parser.add_argument("--results", help="default docs/results/claims")
    parser.add_argument("--doc", help="default docs/when-mtl-helps.md")
    parser.add_argument("--report", action="store_true", help="only rebuild the table and figure")
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
