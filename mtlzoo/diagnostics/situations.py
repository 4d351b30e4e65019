"""Which measured situation of docs/when-mtl-helps.md a run looks like, and what was measured there.

`mtlzoo bench claims` measures the claims of multi-task learning (an unrelated task, tasks learning at unequal rates,
scarce or unequal labels, small training sets, a small trunk) and records one finding per claim in `findings.json`
beside this module. `situations(report, recipe)` reads a `diagnose` report (gradient cosines, lookahead affinity,
per-task loss history) and the recipe (label fractions, training-set size, trunk width), names each situation the
run matches with the evidence, and quotes the finding measured for it; `diagnose` appends them to its reading.

Example:
```python
from mtlzoo.diagnostics import diagnose, situations
report = diagnose("driving_perception_lite", "diag", epochs=2, steps=10)
for s in report["situations"]:
    print(s["claim"], s["evidence"], s["measured"])
```
"""

from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["FINDINGS", "situations"]

#: The findings `mtlzoo bench claims` recorded (one sentence per claim).
FINDINGS = os.path.join(os.path.dirname(__file__), "findings.json")
#: A task is flagged as an intruder when its mean gradient cosine with the other tasks is below this.
INTRUDER_COSINE = 0.0
#: Unequal training rates: the slowest task's relative loss L(end)/L(start) over the fastest's at least this.
UNEQUAL_RATES = 1.5
#: Scarce labels: a task labelled on at most this fraction; unequal data: fractions differing this many times.
SCARCE_FRACTION = 0.25
UNEQUAL_DATA = 5.0
#: Small training sets: at most this many training examples (the overfitting claim measured 100-1000 scenes).
SMALL_DATA = 1000


def _findings(path):
    return json.load(open(path)) if path and os.path.exists(path) else {}


def _names(tasks) -> str:
    return tasks[0] if len(tasks) == 1 else ", ".join(tasks[:-1]) + f" and {tasks[-1]}"


def _incoherent(report):
    """A sentence on the tasks whose gradient barely agrees with itself from batch to batch, or None.

    Named when at least two measured tasks stay above the threshold (with fewer there is nothing they stand out
    from): a task that only memorises its labels (measured: the intruder of `mtlzoo bench claims`) and a task the
    model has not learned yet look alike here, so every such task is named."""
    from mtlzoo.diagnostics.conflict import COHERENCE_LOW

    tasks = list(report.get("tasks") or [])
    coherence = report.get("gradient", {}).get("coherence") or {}
    values = {t: float(coherence[t]) for t in tasks if t in coherence and np.isfinite(coherence[t])}
    low = sorted((t for t, c in values.items() if c < COHERENCE_LOW), key=values.get)
    if len(values) < 3 or not low or len(values) - len(low) < 2:
        return None
    others = min(c for t, c in values.items() if t not in low)
    scores = ", ".join(f"{values[t]:+.2f}" for t in low)
    if len(low) == 1:
        return (f"{low[0]}'s gradient barely agrees with itself from batch to batch (coherence {scores}, "
                f"the other tasks' {others:+.2f} or more): its labels look unrelated to the input, or it is not "
                "being learned yet.")
    return (f"{_names(low)}'s gradients barely agree with themselves from batch to batch (coherence {scores}, the "
            f"other tasks' {others:+.2f} or more): their labels look unrelated to the input, or they are not being "
            "learned yet; train with and without each to tell which one costs the others.")


def _intruder(report):
    cosine = _intruder_by_cosine(report)
    coherence = _incoherent(report)
    return " ".join(t for t in (cosine, coherence) if t) or None


def _intruder_by_cosine(report):
    tasks = list(report.get("tasks") or [])
    cosine = report.get("gradient", {}).get("cosine")
    if cosine is None or len(tasks) < 3:
        return None
    cos = np.array(cosine, float)
    cos = np.where(np.isfinite(cos), cos, np.where(np.isfinite(cos.T), cos.T, np.nan))  # either triangle filled
    pairs = [[cos[i, j] for j in range(len(tasks)) if j != i] for i in range(len(tasks))]
    score = np.array([np.nanmean(p) if np.isfinite(p).any() else np.nan for p in pairs])
    if not np.isfinite(score).any():
        return None
    low = [i for i in np.argsort(score) if score[i] < INTRUDER_COSINE]
    if not low or np.isfinite(score).sum() - len(low) < 2:
        return None
    worst = int(low[0])
    if len(low) > 1:
        return (f"{_names([tasks[i] for i in low])}'s gradients have mean cosines of "
                + ", ".join(f"{score[i]:+.2f}" for i in low) + " with the other tasks': they behave like tasks "
                "unrelated to the others; train with and without each to tell which one costs the others.")
    text = f"{tasks[worst]}'s gradient has a mean cosine of {score[worst]:+.2f} with the other tasks'"
    matrix = report.get("affinity", {}).get("matrix")
    if matrix is not None:
        z = np.array(matrix, float)
        row = np.nanmean([z[worst, j] for j in range(len(tasks)) if j != worst])
        if np.isfinite(row):
            text += f" and its steps {'raise' if row < 0 else 'lower'} their losses (mean affinity {row:+.2g})"
    return text + ": it behaves like a task unrelated to the others."


def _rates(report):
    history = report.get("history") or {}
    ratios = {}
    for task in report.get("tasks") or []:
        values = [v for v in history.get(f"{task}_loss", []) if v is not None and np.isfinite(v)]
        if len(values) >= 2 and values[0] > 0:
            ratios[task] = values[-1] / values[0]
    if len(ratios) < 2 or min(ratios.values()) <= 0:
        return None
    slow, fast = max(ratios, key=ratios.get), min(ratios, key=ratios.get)
    if ratios[slow] / ratios[fast] < UNEQUAL_RATES:
        return None
    return (f"{slow}'s loss fell to {ratios[slow]:.2f} of its first-epoch value, {fast}'s to {ratios[fast]:.2f}: "
            f"the tasks train at unequal rates ({ratios[slow] / ratios[fast]:.1f}x).")


def _data(recipe):
    data = dict(getattr(recipe, "data", None) or {})
    tasks = list(getattr(recipe, "tasks", None) or [])
    fractions = {t: float((data.get("label_fractions") or {}).get(t, 1.0)) for t in tasks}
    found = []
    scarce = sorted((t for t, f in fractions.items() if f <= SCARCE_FRACTION), key=fractions.get)
    if scarce:
        found.append(("scarce_labels", ", ".join(f"{t} is labelled on {100 * fractions[t]:g}% of the examples"
                                                 for t in scarce) + ".", scarce[0]))
    positive = {t: f for t, f in fractions.items() if f > 0}
    if len(positive) >= 2 and max(positive.values()) / min(positive.values()) >= UNEQUAL_DATA:
        ratio = max(positive.values()) / min(positive.values())
        found.append(("unequal_data", f"the tasks' labelled fractions differ {ratio:.0f}x.", min(positive, key=positive.get)))
    n = data.get("num_examples")
    if isinstance(n, int) and n <= SMALL_DATA:
        found.append(("overfitting", f"the training set has {n} examples.", None))
    alpha = (getattr(recipe, "backbone_args", None) or {}).get("alpha")
    if isinstance(alpha, (int, float)) and alpha < 1.0:
        found.append(("capacity", f"the trunk is {getattr(recipe, 'backbone', 'the backbone')} at width {alpha:g}.",
                      None))
    return found


def _entry(measured, claim, task):
    """The finding of `claim` (per-task claims are recorded as `claim-task`: this task's, else another task's)."""
    if claim in measured:
        return measured[claim]
    keyed = sorted(k for k in measured if k.startswith(claim + "-"))
    return measured.get(f"{claim}-{task}") or (measured[keyed[0]] if keyed else None)


def situations(report, recipe=None, findings=FINDINGS) -> list:
    """The measured situations a `diagnose` report (and its recipe) matches.

    Args:
        report: dict. A `diagnose` report (`tasks`, `gradient.cosine`, `affinity.matrix`, `history`).
        recipe: `Recipe` or None. Its `data` (label fractions, size) and `backbone_args` (width) are checked too.
        findings: path of the findings file. Defaults to the one `mtlzoo bench claims` writes in the package.

    Returns:
        list of dicts: `claim` (the section of docs/when-mtl-helps.md), `evidence` (what in this run matched) and
        `measured` (the finding recorded for that claim, or a note that it has not been measured yet).
    """
    found = []
    intruder = _intruder(report)
    if intruder:
        found.append(("intruder", intruder, None))
    rates = _rates(report)
    if rates:
        found.append(("difficulty", rates, None))
    if recipe is not None:
        found += _data(recipe)
    measured = _findings(findings)
    out = []
    for claim, evidence, task in found:
        # the claim's finding, then the same claim measured at other budgets (recorded as `claim_budget`)
        entries = [_entry(measured, claim, task)] + [measured[k] for k in sorted(measured) if k.startswith(claim + "_")]
        text = " ".join(f"{e['finding']} (seeds {', '.join(map(str, e['seeds']))}; {e['section']})"
                        for e in entries if e) or f"not measured yet (docs/when-mtl-helps.md, claim {claim})."
        out.append({"claim": claim, "evidence": evidence, "measured": text})
    return out
