"""`python -m mtlzoo.bench.claims`: the claims of multi-task learning, measured (docs/when-mtl-helps.md).

Each claim is an experiment of several arms (single-task, multi-task, a method), trained with the same budget and
seeds and evaluated on the same validation data. Every (claim, arm, setting, seed) result is a JSON file under
`docs/results/claims/<claim>/` that a rerun skips, so an experiment fills over several sessions; `--report` rebuilds
the tables and figures without training.

Claims implemented so far:

- `relatedness`: the synthetic pair of regression tasks with correlation ρ of Ma et al. (KDD 2018, section 3;
  dataset `correlated_tasks`), ρ ∈ {1.0, 0.9, 0.5, 0.0}: single-task MLPs, a shared-bottom MLP (hard sharing) and
  MMoE, each task's validation MAE. The paper's finding: shared-bottom degrades as ρ falls, MMoE much less.

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

FORMAT = "mtlzoo-bench-claims/1"
BEGIN, END = "<!-- claims-{}:begin -->", "<!-- claims-{}:end -->"

RHOS = (1.0, 0.9, 0.5, 0.0)
#: Arms of the relatedness claim: recipe overrides on `tabular_mmoe` (an MLP trunk of 64 units for shared-bottom
#: and single-task models, MMoE with 8 experts of 16 units; the same heads).
RELATEDNESS_ARMS = {
    "single_task:y1": {"tasks": ["y1"], "sharing": "hard", "sharing_args": {}},
    "single_task:y2": {"tasks": ["y2"], "sharing": "hard", "sharing_args": {}},
    "shared_bottom": {"sharing": "hard", "sharing_args": {}},
    "mmoe": {},
}
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


def _spread(values):
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


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


def write_section(doc, claim, text) -> None:
    """Replaces the text between the claim's markers in `doc` (appends the markers when missing)."""
    from mtlzoo.fileio import atomic_write_text

    begin, end = BEGIN.format(claim), END.format(claim)
    old = open(doc).read() if os.path.exists(doc) else "# When multi-task learning helps\n"
    block = f"{begin}\n{text}\n{end}"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(doc, new)


def run(args=None) -> dict:
    """Trains the missing results of a claim, then rewrites its table (and figure) in the doc."""
    from mtlzoo.fileio import RunLock, atomic_write_json

    opts = {"claim": "relatedness", "seeds": "0,1,2", "budget": "standard", "report": False,
            "results": os.path.join("docs", "results", "claims"), "doc": os.path.join("docs", "when-mtl-helps.md"),
            "figures": "docs"}
    opts.update({k: v for k, v in ({} if args is None else (args if isinstance(args, dict) else vars(args))).items()
                 if v is not None})
    if opts["claim"] != "relatedness":
        raise ValueError(f"Unknown claim {opts['claim']!r}; implemented: relatedness.")
    if opts["budget"] not in BUDGETS:
        raise ValueError(f"Unknown budget {opts['budget']!r}; use one of {', '.join(BUDGETS)}.")
    seeds = [int(s) for s in str(opts["seeds"]).split(",")]
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
    print(table)
    return {"results": results, "table": table, "curves": curves}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mtlzoo.bench.claims", description=__doc__.splitlines()[0])
    parser.add_argument("--claim", help="relatedness")
    parser.add_argument("--seeds", help="default 0,1,2")
    parser.add_argument("--budget", choices=sorted(BUDGETS))
    parser.add_argument("--results", help="default docs/results/claims")
    parser.add_argument("--doc", help="default docs/when-mtl-helps.md")
    parser.add_argument("--report", action="store_true", help="only rebuild the table and figure")
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
