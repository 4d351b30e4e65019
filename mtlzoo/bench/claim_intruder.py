"""Claim `intruder` of `python -m mtlzoo.bench.claims`: a task unrelated to the others causes negative transfer,
the diagnostics single it out, and something recovers the others.

On synthetic_driving, the four tasks of the methods benchmark get a fifth, `intruder`: five bits of a hidden
variable that the scene does not show (`mtlzoo.data.pipeline.intruder_labels`, a hash of the seed and the scene
index), learned with a multi-label head like the scene tags. A model can only memorise it. Arms, each at the
methods benchmark's budget, seeds and validation scenes:

- `without` — the four tasks with equal weighting (`weighting:equal` of the methods benchmark, whose result is reused
  when it exists): what dropping the intruder gives;
- `intruder:equal` — the five tasks with equal weighting; `GradientConflictMonitor` and `TaskAffinity` run during its
  training on training batches and are asked which task is the odd one out;
- `intruder:aligned_mtl` — the five tasks with Aligned-MTL, the best gradient method of the methods table at seed 0;
- `intruder:branched` — the intruder on a trunk branch of its own from stage 2 (`sharing: branched`);
- `without:aligned_mtl` — the four tasks with Aligned-MTL (the methods benchmark's result, reused when it exists): so
  that the intruder's own effect under Aligned-MTL is told apart from what Aligned-MTL does anyway;
- `heavy:equal`, `heavy:aligned_mtl`, `heavy:branched` — the same three arms with a heavy intruder: the same bits as a
  regression whose loss is weighted to the scale of the largest original task's (`HEAVY_HEAD`), so that its gradient
  is not small beside the others'.

The report gives, per arm, Δm of the four original tasks against `without` of the same seed (positive: the intruder
hurts them), and per seed of the equal-weighting arms whether each diagnostic singled the intruder out: lowest mean
gradient cosine with the other tasks and lowest gradient coherence (`GradientConflictMonitor`), lowest mean lookahead
affinity towards them (`TaskAffinity`).

Example:
```python
from mtlzoo.bench.claims import run
run({"claim": "intruder", "seeds": "0", "budget": "smoke", "results": "/tmp/claims", "doc": "/tmp/when.md",
     "figures": "/tmp"})
```
Shell: `python -m mtlzoo.bench.claims --claim intruder --seeds 0,1,2`.

Reference:
    Standley et al., "Which Tasks Should Be Learned Together in Multi-task Learning?", ICML 2020 (negative
    transfer); Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020 (gradient conflict); Fifty et al.,
    "Efficiently Identifying Task Groupings for Multi-Task Learning", NeurIPS 2021 (lookahead affinity).
"""

from __future__ import annotations

import json
import os

from mtlzoo.bench.claims_common import FORMAT, NOISY_TASKS, cell, delta_m, figure_link, fmt, new_axes, spread

CLAIM = "intruder"
TASK = "intruder"
#: The intruder's head: multi-label over the hidden variable's bits, as the scene tags.
INTRUDER_HEAD = {"kind": "multilabel", "num_classes": 5, "hidden": 32, "loss_weight": 1.0}
#: The heavy intruder's head: the same five bits as a regression whose loss is weighted so that it starts near 4,
#: the scale of the largest original task's loss (depth's ends near 4.7, detection's near 2.1); the bits' variance is
#: 0.25, so 16 x MSE is about 4 at the best constant prediction.
HEAVY_HEAD = {"kind": "regression", "units": 5, "hidden": 32, "loss_weight": 16.0}
ORIGINAL = ("segmentation", "depth", "detection", "scene")
#: The original tasks without the scene tags, whose gradient is nearly as unrelated to the others' as the intruder's
#: (mean cosine 0.01-0.03 at the zoo budget): the `no_tags` arms ask whether the diagnostics single the intruder out
#: when it is the only such task.
DENSE = ("segmentation", "depth", "detection")
_BRANCHED = {"sharing": "branched", "sharing_args": {"groups": [list(ORIGINAL), [TASK]]}}
#: Arm -> (methods configuration, the intruder's head or None, extra recipe overrides).
ARMS = {
    "without": ("weighting:equal", None, {}),
    "intruder:equal": ("weighting:equal", INTRUDER_HEAD, {}),
    "intruder:aligned_mtl": ("aggregator:aligned_mtl", INTRUDER_HEAD, {}),
    "intruder:branched": ("weighting:equal", INTRUDER_HEAD, _BRANCHED),
    "without:aligned_mtl": ("aggregator:aligned_mtl", None, {}),
    "heavy:equal": ("weighting:equal", HEAVY_HEAD, {}),
    "heavy:aligned_mtl": ("aggregator:aligned_mtl", HEAVY_HEAD, {}),
    "heavy:branched": ("weighting:equal", HEAVY_HEAD, _BRANCHED),
    "no_tags": ("weighting:equal", None, {"tasks": list(DENSE)}),
    "no_tags:intruder": ("weighting:equal", INTRUDER_HEAD, {"tasks": [*DENSE, TASK]}),
}
#: The arms whose training runs the diagnostics (equal weighting, so that nothing hides the intruder's gradient).
DIAGNOSED = ("intruder:equal", "heavy:equal", "no_tags:intruder")
#: The diagnostics asked to single out the intruder, as `singled_out` names them.
DIAGNOSTICS = ("conflict", "coherence", "affinity")
#: Each arm with the intruder against the same training without it (the intruder's own effect), besides `without`
#: (equal weighting, the plain model every remedy is measured against).
SAME_WITHOUT = {"intruder:equal": "without", "intruder:aligned_mtl": "without:aligned_mtl",
                "intruder:branched": "without", "heavy:equal": "without", "heavy:aligned_mtl": "without:aligned_mtl",
                "heavy:branched": "without", "no_tags:intruder": "no_tags"}
#: Where the methods benchmark keeps its results (the `without` arm is its `weighting:equal`).
METHODS_RESULTS = os.path.join("docs", "results", "methods")
#: Diagnostics of the `DIAGNOSED` arms: measured every `DIAGNOSE_EVERY` epochs on training batches.
DIAGNOSE_EVERY = 2
#: Batches per measurement of both diagnostics (>= 2, so that the gradient coherence is measured).
DIAGNOSE_BATCHES = 4


#: The arms run at the methods benchmark's `zoo` budget (128×256, 630 steps), where the scene tags and detection are
#: learned (at the standard budget their validation mAP is at chance level, tags 0.51-0.55 against 0.50, so an
#: unlearned intruder does not stand apart from them): the diagnosed arm and its reference.
ZOO_ARMS = ("without", "intruder:equal", "no_tags", "no_tags:intruder")
#: The arms run only at the zoo budget (at the standard budget detection is at chance too, so removing the tags does
#: not leave the intruder as the only unrelated task).
ZOO_ONLY = ("no_tags", "no_tags:intruder")


def runs(seeds, budget="standard") -> list:
    """[(file stem, arm, seed)]: every standard arm, or `ZOO_ARMS` at the zoo budget."""
    arms = ZOO_ARMS if budget == "zoo" else tuple(a for a in ARMS if a not in ZOO_ONLY)
    return [(f"{arm.replace(':', '-')}__seed{seed}", arm, seed) for seed in seeds for arm in arms]


def _command(seed, budget) -> str:
    return f"python -m mtlzoo.bench.claims --claim intruder --seeds {seed}" + (
        f" --budget {budget}" if budget != "standard" else "")


def _reused(seed, budget, methods_results, name="weighting:equal"):
    """The methods benchmark's result of configuration `name` at this seed and budget, or None."""
    path = os.path.join(methods_results, budget, f"{name.replace(':', '-')}__seed{seed}.json")
    if not os.path.exists(path):
        return None
    result = json.load(open(path))
    return None if (result.get("settings") or {}).get("overrides") else result  # only the recipe as it is


def train_one(run, validation, budget, models_root, methods_results=METHODS_RESULTS):
    """Trains one arm at one seed (or reuses the methods benchmark's result for `without`); returns (result, line)."""
    from mtlzoo.bench import methods
    from mtlzoo.data.splits import load_split

    _, arm, seed = run
    name, head, extra = ARMS[arm]
    with_intruder = head is not None
    reused = _reused(seed, budget, methods_results, name) if not (with_intruder or extra) else None
    if reused is not None:
        result = dict(reused, reused_from=os.path.join(methods_results, budget,
                                                       f"{name.replace(':', '-')}__seed{seed}.json"))
    else:
        overrides = {f"tasks.{TASK}": dict(head)} if with_intruder else {}
        opts = methods.options({"budget": budget, "overrides": overrides,
                                "models": os.path.join(models_root, "intruder")})
        base = methods.base_recipe(opts)
        config = {c.name: c for c in methods.configurations(list(base.tasks))}[name]
        config = config._replace(overrides={**config.overrides, **extra})
        callbacks = []
        if with_intruder:
            spec = methods.BUDGETS[budget]
            tasks = list(extra.get("tasks") or base.tasks)
            validation = load_split(dict(base.data, num_validation_examples=spec["num_validation"]), "validation",
                                    image_size=spec["image_size"], batch_size=spec["batch_size"],
                                    seed=methods.VALIDATION_SEED, training=False, with_boxes=True, tasks=tasks)
            if arm in DIAGNOSED:
                callbacks = _diagnostics(base, spec, seed, tasks)
        result = methods.run_one(config, seed, opts, validation, callbacks=[c for c, _ in callbacks])
        for callback, read in callbacks:
            result.update(read(callback))
    result.update(format=FORMAT, claim=CLAIM, arm=arm, seed=seed, command=_command(seed, budget))
    metrics = result["metrics"]
    return result, f"{arm} seed {seed}: " + ", ".join(
        f"{t} {fmt(next(iter(m.values())))}" for t, m in metrics.items() if m)


def _diagnostics(base, spec, seed, tasks):
    """[(callback, reader)] of the diagnostics run during `intruder:equal`, on training batches of this seed."""
    from mtlzoo.data.splits import load_split
    from mtlzoo.diagnostics import GradientConflictMonitor, TaskAffinity

    probe = load_split(dict(base.data), "train", image_size=spec["image_size"], batch_size=spec["batch_size"],
                       seed=seed, training=False, tasks=tasks)
    conflict = GradientConflictMonitor(data=probe, num_batches=DIAGNOSE_BATCHES, every=DIAGNOSE_EVERY)
    affinity = TaskAffinity(data=probe, interval=DIAGNOSE_EVERY, num_batches=DIAGNOSE_BATCHES)

    def read_conflict(cb):
        s = cb.summary()
        return {"conflict": {"tasks": s["tasks"], "cosine": s["cosine"].tolist(),
                             "conflict_fraction": s["conflict_fraction"].tolist(),
                             "grad_norm": s["grad_norm"].tolist(), "coherence": s["coherence"].tolist(),
                             "samples": s["samples"]}}

    def read_affinity(cb):
        m = cb.mean_matrix()
        return {"affinity": {"tasks": list(tasks), "matrix": None if m is None else m.tolist()}}

    return [(conflict, read_conflict), (affinity, read_affinity)]


def singled_out(result) -> dict:
    """Which task each diagnostic of a diagnosed arm's result points at: {diagnostic: (task, its score)}.

    Conflict: the task with the lowest mean gradient cosine with the others; coherence: the task whose gradient
    agrees least with itself from batch to batch (when measured); affinity: the task whose lookahead step helps the
    others least (lowest mean of its row)."""
    import numpy as np

    out = {}
    if result.get("conflict"):
        tasks, cos = result["conflict"]["tasks"], np.array(result["conflict"]["cosine"], float)
        score = [np.nanmean([cos[i, j] if i < j else cos[j, i] for j in range(len(tasks)) if j != i])
                 for i in range(len(tasks))]
        out["conflict"] = (tasks[int(np.nanargmin(score))], float(np.nanmin(score)))
    coherence = np.array((result.get("conflict") or {}).get("coherence") or [], float)
    if coherence.size and np.isfinite(coherence).any():
        tasks = result["conflict"]["tasks"]
        out["coherence"] = (tasks[int(np.nanargmin(coherence))], float(np.nanmin(coherence)))
    if result.get("affinity") and result["affinity"].get("matrix") is not None:
        tasks, z = result["affinity"]["tasks"], np.array(result["affinity"]["matrix"], float)
        score = [np.nanmean([z[i, j] for j in range(len(tasks)) if j != i]) for i in range(len(tasks))]
        out["affinity"] = (tasks[int(np.nanargmin(score))], float(np.nanmin(score)))
    return out


def _delta(result, reference):
    """(Δm of the original tasks, Δm without detection, Δm per task) against `reference`."""
    from mtlzoo.bench.methods_table import delta_m_against

    metrics = {t: v for t, v in result["metrics"].items() if t in ORIGINAL}
    higher = result["higher_is_better"]
    base = {t: reference["metrics"][t] for t in metrics if t in reference["metrics"]}
    dm, per_task = delta_m_against(metrics, higher, base)
    return dm, delta_m(metrics, higher, base, exclude=NOISY_TASKS), per_task


def report(results, opts) -> str:
    """The section's markdown: Δm of the original tasks per arm against `without`, and the diagnostics per seed."""
    rows = [r for r in results if r.get("claim") == CLAIM]
    if not rows:
        return "No run has finished yet."
    without = {r["seed"]: r for r in rows if r["arm"] == "without"}
    lines = ["| arm | Δm of the original tasks it trains vs without ↓ | Δm without detection ↓ | " + " | ".join(
        f"{t} Δ % ↓" for t in ORIGINAL) + " | intruder's validation metric (chance: mAP ≈ 0.5, MAE 0.5) | seeds | Δm without detection vs the same "
        "training without the intruder ↓ |", "|---|---:|---:|" + "---:|" * len(ORIGINAL) + "---:|---|---:|"]
    bars = {}
    by_arm = {a: {r["seed"]: r for r in rows if r["arm"] == a} for a in ARMS}
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        deltas, clean, per = [], [], {t: [] for t in ORIGINAL}
        for r in mine:
            if arm != "without" and r["seed"] in without:
                dm, dm_clean, per_task = _delta(r, without[r["seed"]])
                deltas.append(dm)
                clean.append(dm_clean)
                for t in ORIGINAL:
                    per[t].append(per_task.get(t))
        s, c = spread(deltas), spread(clean)
        same = by_arm.get(SAME_WITHOUT.get(arm, ""), {})
        own = spread([_delta(r, same[r["seed"]])[1] for r in mine if r["seed"] in same])
        bars[arm] = c
        metric = "map" if (ARMS[arm][1] or {}).get("kind") == "multilabel" else "mae"
        intruder = spread([r["metrics"].get(TASK, {}).get(metric) for r in mine])
        lines.append(f"| {arm} | " + " | ".join("reference" if arm == "without" else
                                                ("–" if v is None else f"{v[0]:+.2f} ± {v[1]:.2f} % (n={v[2]})")
                                                for v in (s, c)) + " | "
                     + " | ".join("–" if arm == "without" or spread(per[t]) is None
                                  else f"{spread(per[t])[0]:+.1f} ± {spread(per[t])[1]:.1f}" for t in ORIGINAL)
                     + f" | {'–' if intruder is None else metric + ' ' + cell(intruder)} | {', '.join(str(r['seed']) for r in sorted(mine, key=lambda r: r['seed']))}"
                     + f" | {'–' if own is None else f'{own[0]:+.2f} ± {own[1]:.2f} % (n={own[2]})'} |")
    diag = ["", "| arm | seed | lowest mean gradient cosine with the others | lowest gradient coherence (batch to batch) "
                "| lowest mean affinity towards the others |", "|---|---:|---|---|---|"]
    for r in sorted((r for r in rows if r["arm"] in DIAGNOSED), key=lambda r: (DIAGNOSED.index(r["arm"]), r["seed"])):
        found = singled_out(r)
        diag.append(f"| {r['arm']} | {r['seed']} | " + " | ".join(
            "–" if k not in found else f"{found[k][0]} ({found[k][1]:+.3g})" + (" ✓" if found[k][0] == TASK else "")
            for k in DIAGNOSTICS) + " |")
    text = "\n".join(lines + (diag if len(diag) > 3 else []))
    figure = _plot(bars, opts)
    return text + (f"\n\n{figure_link(opts, figure, 'Δm of the original tasks per arm')}" if figure else "")


def _plot(bars, opts):
    from mtlzoo.fileio import atomic_savefig

    points = [(arm, s) for arm, s in bars.items() if arm not in ("without",) and s is not None]
    if not points:
        return None
    fig, ax = new_axes(7.5, 3.2)
    ax.bar(range(len(points)), [s[0] for _, s in points], yerr=[s[1] for _, s in points], capsize=4,
           color=["tab:red" if s[0] > 0 else "tab:green" for _, s in points])
    ax.set_xticks(range(len(points)), [arm.replace("intruder:", "intruder,\n").replace("heavy:", "heavy intruder,\n")
                                        .replace("without:", "no intruder,\n") for arm, _ in points], fontsize=7)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("Δm without detection vs without (%) ↓")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    suffix = "" if opts.get("budget", "standard") == "standard" else f"_{opts['budget']}"
    path = os.path.join(opts["figures"], f"claims_intruder{suffix}.png")
    atomic_savefig(fig, path, dpi=110)
    return path


def finding(results, opts=None) -> str | None:
    """One sentence for `mtlzoo diagnose`: what the intruder did to the others, what recovered them, and whether the
    diagnostics found it."""
    zoo = (opts or {}).get("budget", "standard") != "standard"
    rows = [r for r in results if r.get("claim") == CLAIM]
    by_arm = {a: {r["seed"]: r for r in rows if r["arm"] == a} for a in ARMS}
    parts = []
    for arm in (a for a in ARMS if a not in ("without", "no_tags")):
        reference = by_arm[SAME_WITHOUT[arm] if arm.startswith("no_tags") else "without"]
        s = spread([_delta(r, reference[r["seed"]])[1] for r in rows if r["arm"] == arm and r["seed"] in reference])
        if s:
            label = "without the scene tags" if arm.startswith("no_tags") else arm.replace("intruder:", "")
            parts.append(f"{label} {s[0]:+.1f} ± {s[1]:.1f} % (n={s[2]})")
    if not parts:
        return None
    found = []
    for arm in DIAGNOSED:
        seen = [singled_out(r) for r in rows if r["arm"] == arm]
        if seen:
            counts = {k: sum(1 for f in seen if f.get(k, (None,))[0] == TASK) for k in DIAGNOSTICS}
            measured = sum(1 for f in seen if "coherence" in f)
            found.append(f"{'the three dense tasks and the intruder' if arm == 'no_tags:intruder' else arm}: "
                         f"gradient cosine {counts['conflict']} of {len(seen)} seeds, gradient coherence "
                         + (f"{counts['coherence']} of {measured}" if measured else "not measured")
                         + f", lookahead affinity {counts['affinity']} of {len(seen)}")
    return (("At the zoo budget (every task learned), with" if zoo else "With")
            + " a task unrelated to the scene added, Δm of the original tasks ("
            + ("" if zoo else "detection left out: its mAP is near 0 at this budget; ")
            + "positive = they got worse) against training without it: " + ", ".join(parts)
            + ". Diagnostics that singled the intruder out (lowest score): " + ("; ".join(found) or "none run")
            + ("" if zoo else "; dropping the task restores the 'without' model by construction") + ".")
