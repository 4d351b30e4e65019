"""The "unequal data per task" claim, read from the scarce-label runs of `mtlzoo.bench.claims`.

At a labelled fraction of 10%, the scarce task has 10× fewer labelled scenes than the other tasks: the runs of
`--claim scarce_labels` at that fraction are this experiment. `table` gives every task's change against the methods
benchmark's single-task model of the same seed (trained on every scene): what the task with little data gains and
what the tasks with plenty lose. `python -m mtlzoo.bench.claims --claim scarce_labels` writes it to the doc section
`claims-unequal_data`.

Example:
```python
from mtlzoo.bench.claim_unequal import table
print(table(results, "depth"))  # results: the scarce_labels claim's JSON results
```
"""

from __future__ import annotations

import os

from mtlzoo.bench.claims_common import TABULATED_METRIC, higher_is_better, relative_change, spread

CLAIM = "unequal_data"
FRACTION = 0.10
#: Detection is trained but not tabulated: its mAP@0.5 at this budget is 0.001-0.015 (methods table), so relative
#: changes of it are noise (hundreds of percent either way).
METRIC = TABULATED_METRIC
METHODS_RESULTS = os.path.join("docs", "results", "methods")


def _changes(results, task, fraction, methods_results, budget):
    """{arm: {task: [percent change per seed]}} (negative is better) against the methods single-task models."""
    from mtlzoo.bench import methods
    from mtlzoo.bench.methods_table import baselines_of

    reference = methods.load_results(os.path.join(methods_results, budget))
    out = {}
    for r in results:
        if r.get("task") != task or r.get("fraction") != fraction:
            continue
        base = baselines_of(reference, r["seed"])
        for t, metric in METRIC.items():
            value = r["metrics"].get(t, {}).get(metric)
            ref = base.get(t, {}).get(metric)
            higher = higher_is_better(r, t, metric)
            if r["arm"].startswith("single_task") and t != task:
                continue
            out.setdefault(r["arm"], {}).setdefault(t, []).append(relative_change(value, ref, higher))
    return out


def table(results, task, fraction=FRACTION, methods_results=METHODS_RESULTS, budget="standard") -> str:
    """Markdown: per arm, each task's change (mean ± std % over seeds) against the full-data single-task model."""
    changes = _changes(results, task, fraction, methods_results, budget)
    if not changes:
        return "No run has finished yet."
    tasks = [t for t in METRIC if any(t in c for c in changes.values())]
    lines = [f"| arm ({task} labelled on {100 * fraction:g}%, the others on 100%) | "
             + " | ".join(f"{t} {METRIC[t]}{' (scarce)' if t == task else ''}: change % ↓" for t in tasks) + " |",
             "|---|" + "---:|" * len(tasks)]
    for arm, per in sorted(changes.items(), key=lambda kv: (not kv[0].startswith("single"), kv[0])):
        cells = []
        for t in tasks:
            s = spread(per.get(t, []))
            cells.append("–" if s is None else f"{s[0]:+.1f} ± {s[1]:.1f} (n={s[2]})")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def finding(results, task, fraction=FRACTION, methods_results=METHODS_RESULTS, budget="standard") -> str | None:
    changes = _changes(results, task, fraction, methods_results, budget)
    parts = []
    for arm, per in sorted(changes.items()):
        if arm.startswith("single"):
            continue
        cells = [f"{t} {s[0]:+.1f} %" for t in METRIC if (s := spread(per.get(t, [])))]
        n = max((len([v for v in per.get(t, []) if v is not None]) for t in METRIC), default=0)
        parts.append(f"{arm}: " + ", ".join(cells) + f" (n={n})")
    if not parts:
        return None
    return (f"With {task} labelled on {100 * fraction:g}% of the scenes and the other tasks on all, change of each "
            "task against its single-task model trained on every scene (negative = better): " + "; ".join(parts) + ".")


def plot(results, task, path, fraction=FRACTION, methods_results=METHODS_RESULTS, budget="standard") -> bool:
    """The table's changes as grouped bars (`claims_plots.plot_unequal`); False when there is nothing to draw."""
    from mtlzoo.bench.claims_plots import plot_unequal

    changes = _changes(results, task, fraction, methods_results, budget)
    return plot_unequal(changes, [t for t in METRIC if any(t in c for c in changes.values())], task, path)
