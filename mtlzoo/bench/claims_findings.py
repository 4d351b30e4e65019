"""The measured findings of `mtlzoo bench claims`, one sentence per claim, for `mtlzoo diagnose`.

Each claim's report condenses its table into one finding (numbers and seeds included) and records it in
`mtlzoo/diagnostics/findings.json`, which ships with the package: `mtlzoo diagnose` quotes it when a user's run looks
like that claim's situation (`mtlzoo.diagnostics.situations`). A report written elsewhere than the default doc (tests,
a smoke budget) records its findings next to that doc instead, never in the package.

Example:
```python
from mtlzoo.bench.claims_findings import load
load()["intruder"]["finding"]
```
"""

from __future__ import annotations

import json
import os
import time

from mtlzoo.bench.claims_common import higher_is_better, relative_change, spread

PACKAGE_FINDINGS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "diagnostics", "findings.json")
DEFAULT_DOC = os.path.join("docs", "when-mtl-helps.md")


def findings_path(opts) -> str:
    """The package's findings file for the default doc at the standard and zoo budgets (`record` keys a zoo finding
    `claim_zoo`); else `findings.json` beside the doc (a smoke run never reaches the package)."""
    if opts.get("findings"):
        return opts["findings"]
    default = (os.path.normpath(opts["doc"]) == os.path.normpath(DEFAULT_DOC)
               and opts.get("budget", "standard") in ("standard", "zoo"))
    return PACKAGE_FINDINGS if default else os.path.join(os.path.dirname(opts["doc"]) or ".", "findings.json")


def load(path=PACKAGE_FINDINGS) -> dict:
    """{claim: {"finding", "seeds", "updated", "section"}}; {} when nothing was recorded."""
    return json.load(open(path)) if os.path.exists(path) else {}


def budget_key(name, budget) -> str:
    """`name` at the standard budget, else `name_<budget>`: the key of a doc section and of a finding."""
    return name if budget == "standard" else f"{name}_{budget}"


def record(opts, claim, finding, results) -> None:
    """Stores `finding` (a sentence, or None to leave the claim's entry as it is) for `claim`, as `claim_<budget>`
    when the budget is not the standard one (so it never replaces the standard finding)."""
    from mtlzoo.fileio import atomic_write_json

    if not finding:
        return
    path = findings_path(opts)
    data = load(path)
    claim = budget_key(claim, opts.get("budget", "standard"))
    data[claim] = {"finding": finding, "seeds": sorted({r["seed"] for r in results if "seed" in r}),
                   "updated": time.strftime("%Y-%m-%d"), "section": f"docs/when-mtl-helps.md (claims-{claim})"}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write_json(path, dict(sorted(data.items())), indent=2)


def _pct(s) -> str:
    return "–" if s is None else f"{s[0]:+.1f} ± {s[1]:.1f} % (n={s[2]})"


def relatedness(results, rhos) -> str | None:
    """Change of the mean MAE against the two single-task models of the same seed, per arm, at the extreme ρ."""
    by = {}
    for r in results:
        by.setdefault((r["rho"], r["seed"]), {}).setdefault(r["arm"].split(":")[0], []).append(
            sum(m["mae"] for m in r["metrics"].values()) / len(r["metrics"]))
    parts = []
    for arm, label in (("shared_bottom", "shared-bottom"), ("mmoe", "MMoE")):
        cells = []
        for rho in (max(rhos), min(rhos)):
            changes = [100.0 * (sum(v[arm]) / len(v[arm]) - sum(v["single_task"]) / 2) / (sum(v["single_task"]) / 2)
                       for (ro, _), v in by.items() if ro == rho and arm in v and len(v.get("single_task", [])) == 2]
            cells.append(f"ρ = {rho:g}: {_pct(spread(changes))}")
        parts.append(f"{label} {', '.join(cells)}")
    if not by:
        return None
    return ("Mean validation MAE of the pair against two single-task models of the same seed (negative is better): "
            + "; ".join(parts) + ".")


def scarce_labels(results, task, metric, fractions) -> str | None:
    """Change of the scarce task's metric against its single-task model per labelled fraction and multi-task arm."""
    rows = [r for r in results if r.get("task") == task]
    single = {(r["seed"], r["fraction"]): r["metrics"][task][metric] for r in rows if r["arm"].startswith("single")}
    arms = sorted({r["arm"] for r in rows if not r["arm"].startswith("single")})
    parts = []
    for arm in arms:
        cells = []
        for f in fractions:
            changes = [relative_change(r["metrics"][task][metric], single[(r["seed"], f)],
                                       higher_is_better(r, task, metric))
                       for r in rows if r["arm"] == arm and r["fraction"] == f and (r["seed"], f) in single]
            cells.append(f"{100 * f:g}% labelled {_pct(spread(changes))}")
        parts.append(f"{arm}: " + ", ".join(cells))
    if not parts:
        return None
    return (f"{task} {metric} of the multi-task model against the single-task model trained on the same labelled "
            f"scenes (change %, negative = better): " + "; ".join(parts) + ".")


def overfitting(results, metrics, sizes, gap) -> str | None:
    """Generalisation gap (`gap(result, task, metric)`, positive = better on the training scenes) of single-task
    against multi-task models at the smallest training set."""
    n = min(sizes)
    parts = []
    for task, metric in metrics.items():
        gaps = {}
        for arm in (f"single_task:{task}", "weighting:equal"):
            gaps[arm] = spread([gap(r, task, metric) for r in results
                                if r["arm"] == arm and r["num_train"] == n and task in r.get("metrics", {})])
        if all(gaps.values()):
            parts.append(f"{task} {metric} gap {gaps[f'single_task:{task}'][0]:+.3f} single-task vs "
                         f"{gaps['weighting:equal'][0]:+.3f} multi-task (n={gaps['weighting:equal'][2]})")
    if not parts:
        return None
    return (f"Gap between training and validation metric on {n} training scenes, same steps (positive = better on "
            "the training scenes): " + "; ".join(parts) + ".")
