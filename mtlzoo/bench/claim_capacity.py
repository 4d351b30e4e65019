"""Claim `capacity` of `python -m mtlzoo.bench.claims`: multi-task learning needs a trunk big enough for every task.

The trunk of `driving_perception_lite` (MobileNetV3-Small) at several widths, through its width multiplier
`backbone_args.alpha`: at each width the four single-task models (`single_task:<task>`) and the multi-task model
with equal weighting (`weighting:equal`), as configurations of `mtlzoo bench methods` (same recipe, budget, seeds
and validation scenes) with the width override. The report gives per width the parameters of the multi-task model
and of the four single-task models together, each task's metric single-task against multi-task, and Δm of the
multi-task model paired per seed against the single-task models of the same width and seed (mean ± std over seeds,
and the seeds with Δm < 0), with a figure of Δm against the width. The claim: Δm rises (multi-task learning loses)
as the trunk narrows, when the tasks compete for too few channels.

Budgets (`WIDTHS`): `standard` trains alpha 0.25 and 0.5 here and reads alpha 1.0, the recipe as shipped, from the
methods benchmark's own results (`docs/results/methods/standard/`: `single_task-*` and `weighting-equal`, the same
recipe, budget and seeds; `opts["methods_results"]` points elsewhere). `smoke` uses the tiny trunk of the methods
smoke budget, whose width is `backbone_args.width` (2 here, 4 in the methods results).

Example:
```python
from mtlzoo.bench import claim_capacity
claim_capacity.runs([0, 1])[0]  # ('single_task-segmentation__alpha0.25__seed0', 'single_task:segmentation', 0.25, 0)
```
Shell: `python -m mtlzoo.bench.claims --claim capacity --seeds 0,1,2` (30 runs, each up to 2.5 min on 2 cores), and
`python -m mtlzoo.bench.methods --methods weighting:equal --seeds 0,1,2` for the alpha 1.0 results it reads.

Reference:
    Howard et al., "Searching for MobileNetV3", ICCV 2019 (the width multiplier alpha).
    Kokkinos, "UberNet: Training a Universal Convolutional Neural Network for Low-, Mid-, and High-Level Vision
    using Diverse Datasets and Limited Memory", CVPR 2017 (tasks competing for a shared trunk's capacity).
    Standley et al., "Which Tasks Should Be Learned Together in Multi-task Learning?", ICML 2020 (whether tasks
    help each other changes with the network's size).
"""

from __future__ import annotations

import os

from mtlzoo.bench import claims_common
from mtlzoo.bench.claims_common import FORMAT, NOISY_TASKS, cell, delta_m, figure_link, new_axes, spread

CLAIM = "capacity"
#: The single-task models of the four tasks and the multi-task model with equal weighting (methods configurations).
TASK_METRIC = claims_common.TASK_METRIC
ARMS = tuple(f"single_task:{task}" for task in TASK_METRIC) + ("weighting:equal",)
MULTI_TASK = "weighting:equal"
#: Per budget: the recipe override that sets the trunk width (`label` names it in file stems and tables), the
#: widths trained here, and the `reference` width, read from the methods benchmark's results instead of trained
#: (the budget's recipe as it is: MobileNetV3-Small at alpha 1.0; the smoke budget's tiny trunk has width 4,
#: `mtlzoo.testing.TINY_IMAGE`).
WIDTHS = {
    "standard": {"key": "backbone_args.alpha", "label": "alpha", "trained": (0.25, 0.5), "reference": 1.0},
    "smoke": {"key": "backbone_args.width", "label": "width", "trained": (2,), "reference": 4},
}
#: Where the methods benchmark keeps its results (`<folder>/<budget>/`); `opts["methods_results"]` overrides it.
METHODS_RESULTS = os.path.join("docs", "results", "methods")


def widths(budget) -> dict:
    """The width settings of `budget` (`WIDTHS`), or a ValueError naming the budgets."""
    if budget not in WIDTHS:
        raise ValueError(f"capacity: unknown budget {budget!r}; use one of {', '.join(WIDTHS)}.")
    return WIDTHS[budget]


def runs(seeds, budget="standard") -> list:
    """[(file stem, arm, width, seed)] of the widths trained for `budget` (not the reference width)."""
    spec = widths(budget)
    return [(f"{arm.replace(':', '-')}__{spec['label']}{width:g}__seed{seed}", arm, width, seed)
            for seed in seeds for width in spec["trained"] for arm in ARMS]


def methods_options(budget, width, models_root):
    """The methods benchmark's options for one width: the budget with the width override, and a models folder of
    its own (single-task models of another width must not replace the methods benchmark's)."""
    from mtlzoo.bench import methods

    spec = widths(budget)
    # The whole mapping (`backbone_args: {...}`), so that the result's settings show every backbone argument.
    section, _, name = spec["key"].partition(".")
    args = dict(getattr(methods.base_recipe(methods.options({"budget": budget})), section), **{name: width})
    return methods.options({"budget": budget, "overrides": {section: args},
                            "models": os.path.join(models_root, f"capacity-{spec['label']}{width:g}")})


def train_one(run, validation, budget, models_root) -> tuple:
    """Trains and evaluates one (arm, width, seed) of `runs`; returns (result, one-line summary)."""
    from mtlzoo.bench import methods

    _, arm, width, seed = run
    spec = widths(budget)
    if width not in spec["trained"]:
        raise ValueError(f"capacity: {spec['label']} {width!r} is not a width of the {budget!r} budget "
                         f"({', '.join(f'{w:g}' for w in spec['trained'])}); list the runs with "
                         f"runs(seeds, budget={budget!r}).")
    if arm not in ARMS:
        raise ValueError(f"capacity: unknown arm {arm!r}; arms: {', '.join(ARMS)}.")
    opts = methods_options(budget, width, models_root)
    config = {c.name: c for c in methods.configurations(list(methods.base_recipe(opts).tasks))}[arm]
    result = methods.run_one(config, seed, opts, validation)
    result.update(format=FORMAT, claim=CLAIM, arm=arm, width=width, width_key=spec["key"],
                  command=f"python -m mtlzoo.bench.claims --claim capacity --seeds {seed}"
                          + (f" --budget {budget}" if budget != "standard" else ""))
    scores = ", ".join(f"{t} {m} {result['metrics'][t][m]:.4f}" for t, m in TASK_METRIC.items()
                       if isinstance(result["metrics"].get(t, {}).get(m), (int, float)))
    return result, f"{arm} {spec['label']} {width:g} seed {seed}: {scores}"


def _seeds(opts):
    value = opts.get("seeds")
    if value is None:
        return None
    from mtlzoo.bench.methods import parse_seeds

    return set(parse_seeds(value))


def reference_results(opts) -> list:
    """The methods benchmark's results of the arms at the budget's reference width, as claim rows (`arm`,
    `width`, `source: methods`); only runs of the recipe as it is (no overrides) and of `opts["seeds"]`."""
    from mtlzoo.bench import methods

    budget = opts.get("budget", "standard")
    folder = os.path.join(opts.get("methods_results") or METHODS_RESULTS, budget)
    seeds = _seeds(opts)
    out = []
    for r in methods.load_results(folder):
        if r.get("configuration") not in ARMS or (r.get("settings") or {}).get("overrides"):
            continue
        if seeds is not None and r.get("seed") not in seeds:
            continue
        out.append({**r, "arm": r["configuration"], "width": widths(budget)["reference"], "source": "methods"})
    return out


def summarize(rows) -> list:
    """One dict per width (ascending): parameters, per-task metrics single-task / multi-task, Δm per seed."""
    from mtlzoo.bench.methods_table import delta_m_against

    out = []
    for width in sorted({r["width"] for r in rows}):
        mine = [r for r in rows if r["width"] == width]
        single = {(r["arm"].split(":", 1)[1], r["seed"]): r for r in mine if r["arm"].startswith("single_task:")}
        multi = sorted((r for r in mine if r["arm"] == MULTI_TASK), key=lambda r: r["seed"])
        deltas, clean = {}, {}
        for r in multi:
            baselines = {t: single[(t, r["seed"])]["metrics"].get(t, {}) for t in r["metrics"]
                         if (t, r["seed"]) in single}
            deltas[r["seed"]] = delta_m_against(r["metrics"], r["higher_is_better"], baselines)[0]
            clean[r["seed"]] = delta_m(r["metrics"], r["higher_is_better"], baselines, exclude=NOISY_TASKS)
        params_single = {t: next((r["params"] for (task, _), r in single.items() if task == t), None)
                         for t in TASK_METRIC}
        metrics = {}
        for task, metric in TASK_METRIC.items():
            metrics[task] = (spread([r["metrics"].get(task, {}).get(metric) for (t, _), r in single.items()
                                     if t == task]),
                             spread([r["metrics"].get(task, {}).get(metric) for r in multi]))
        done = [d for d in deltas.values() if d is not None]
        out.append({
            "width": width, "sources": sorted({r.get("source", "claim") for r in mine}),
            "params_multi_task": multi[0]["params"] if multi else None,
            "params_single_task": (sum(params_single.values()) if all(params_single.values()) else None),
            "delta_m": spread(done), "delta_m_per_seed": deltas, "delta_m_below_0": sum(1 for d in done if d < 0),
            "delta_m_without_detection": spread([d for d in clean.values() if d is not None]),
            "metrics": metrics,
        })
    return out


def markdown(summary, spec) -> str:
    """The two tables of the report: Δm and parameters per width, then each task's metric per width."""
    label = spec["label"]
    lines = [f"| {label} | results | params: multi-task | params: 4 single-task | Δm % ↓ | Δm < 0 | "
             "Δm without detection % ↓ |", "|---:|---|---:|---:|---:|---:|---:|"]
    for s in summary:
        params = [f"{p / 1e6:.3f}M" if p else "–" for p in (s["params_multi_task"], s["params_single_task"])]
        seeds = f"{s['delta_m_below_0']}/{s['delta_m'][2]}" if s["delta_m"] else "–"
        lines.append(f"| {s['width']:g} | {', '.join(s['sources'])} | {params[0]} | {params[1]} | "
                     f"{cell(s['delta_m'], 2)} | {seeds} | {cell(s.get('delta_m_without_detection'), 2)} |")
    arrows = {"abs_rel": "↓"}
    lines += ["", f"| {label} | " + " | ".join(f"{t} {m} {arrows.get(m, '↑')}: single-task / multi-task"
                                               for t, m in TASK_METRIC.items()) + " |",
              "|---:|" + "---|" * len(TASK_METRIC)]
    for s in summary:
        lines.append(f"| {s['width']:g} | " + " | ".join(f"{cell(st)} / {cell(mt)}"
                                                         for st, mt in s["metrics"].values()) + " |")
    return "\n".join(lines)


def plot(summary, spec, path) -> bool:
    """Δm (mean ± std over seeds) against the trunk width; False (no file) when no width has a Δm."""
    from mtlzoo.fileio import atomic_savefig

    points = [s for s in summary if s["delta_m"] is not None]
    if not points:
        return False
    fig, ax = new_axes()
    ax.axhline(0.0, color="grey", linestyle="--", linewidth=1, label="single-task models of the same width")
    ax.errorbar([s["width"] for s in points], [s["delta_m"][0] for s in points],
                yerr=[s["delta_m"][1] for s in points], marker="o", capsize=3, color="tab:blue",
                label=f"multi-task ({MULTI_TASK})")
    ax.set_xscale("log", base=2)
    ax.set_xticks([s["width"] for s in points], [f"{s['width']:g}" for s in points])
    ax.set_xlabel(f"trunk width ({spec['key']})")
    ax.set_ylabel("Δm % against single-task ↓")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_savefig(fig, path, dpi=110)
    return True


def report(results, opts) -> str:
    """The markdown of the claim's doc section: the tables of `markdown` and the figure of `plot`
    (`claims_capacity.png` under `opts["figures"]`, `_<budget>` added when not standard)."""
    budget = opts.get("budget", "standard")
    spec = widths(budget)
    seeds = _seeds(opts)
    rows = [{**r, "source": "claim"} for r in results if r.get("claim") == CLAIM
            and (seeds is None or r.get("seed") in seeds)]  # the same seeds as the reference width's
    if not rows:
        return "No run has finished yet."
    reference = reference_results(opts)
    summary = summarize(rows + reference)
    suffix = "" if budget == "standard" else f"_{budget}"
    figure = os.path.join(opts.get("figures", "docs"), f"claims_capacity{suffix}.png")
    drawn = plot(summary, spec, figure)
    folder = os.path.join(opts.get("methods_results") or METHODS_RESULTS, budget)
    losing = [f"{s['width']:g}" for s in summary if s["delta_m"] and s["delta_m"][0] > 0]
    winning = [f"{s['width']:g}" for s in summary if s["delta_m"] and s["delta_m"][0] < 0]
    text = (f"Budget `{budget}`: trunk width `{spec['key']}` ∈ {{{', '.join(f'{w:g}' for w in spec['trained'])}}} "
            f"trained by this claim, {spec['label']} {spec['reference']:g} read from the methods benchmark "
            f"(`{folder}`, {len(reference)} runs). Δm (%, lower is better) of the multi-task model against the "
            "four single-task models of the same width and seed, mean ± std over seeds.\n\n"
            + markdown(summary, spec)
            + f"\n\nMean Δm > 0 (multi-task loses) at {spec['label']} {', '.join(losing) or '–'}; "
              f"< 0 (multi-task wins) at {', '.join(winning) or '–'}.")
    return text + (f"\n\n{figure_link(opts, figure, 'Δm against the trunk width')}" if drawn else "")


def finding(results, opts=None) -> str | None:
    """One sentence for `mtlzoo diagnose`: Δm of the multi-task model per trunk width."""
    opts = dict(opts or {}, budget=(opts or {}).get("budget", "standard"))
    seeds = _seeds(opts)
    rows = [{**r, "source": "claim"} for r in results if r.get("claim") == CLAIM
            and (seeds is None or r.get("seed") in seeds)]
    if not rows:
        return None
    spec = widths(opts["budget"])
    summary = summarize(rows + reference_results(opts))
    parts = [f"{spec['label']} {s['width']:g}: {s['delta_m'][0]:+.1f} ± {s['delta_m'][1]:.1f} % "
             f"(n={s['delta_m'][2]}, {s['delta_m_below_0']} below 0"
             + (f"; without detection {c[0]:+.1f} ± {c[1]:.1f} %" if (c := s["delta_m_without_detection"]) else "")
             + ")" for s in summary if s["delta_m"]]
    if not parts:
        return None
    return ("Δm of the multi-task model (equal weighting) against four single-task models of the same trunk width "
            "(negative = multi-task better): " + "; ".join(parts) + ".")
