"""Claim `difficulty` of `python -m mtlzoo.bench.claims`: tasks of different difficulty train at different rates.

Each task's training loss is recorded at every step (`TaskLossCurve`) while `driving_perception_lite` trains on
synthetic_driving under equal weighting, GradNorm, DWA and uncertainty weighting: the `weighting:` configurations
of the methods benchmark (same recipe, budget, seeds and validation scenes as `mtlzoo bench methods`). From the
curves, smoothed by a window mean of `WINDOW` steps (fewer on short curves): the relative loss
`L̃_i(t) = L_i(t) / L_i(0)` (`L_i(0)` the first window's mean), GradNorm's inverse training rate
`r_i(t) = L̃_i(t) / mean_j L̃_j(t)` and the inequality of the training rates `max_i r_i(t) / min_i r_i(t)` (1: every
task at the same relative rate), its mean over training and its last value, and per task the final `L̃_i` (the
largest: the slowest task). The report tabulates them per arm (mean ± std over seeds) with Δm against the methods
benchmark's single-task models of the same seed, where those results exist, and plots `L̃_i(t)` for equal weighting
and GradNorm. Each result is `docs/results/claims/difficulty/<arm>__seed<k>.json` (`difficulty-smoke/` for the smoke
budget) and holds the curves (`curves`, `weights`: one value per step, 5 significant digits).

Example:
```python
from mtlzoo.bench.claims import run
run({"claim": "difficulty", "seeds": "0", "budget": "smoke", "results": "/tmp/claims", "doc": "/tmp/claims.md",
     "figures": "/tmp"})
from mtlzoo.bench.claim_difficulty import rate_inequality
rate_inequality({"a": [1.0, 0.5], "b": [1.0, 1.0]}, window=1)["final"]  # 2.0: task a trains twice as fast
```
Shell: `python -m mtlzoo.bench.claims --claim difficulty --seeds 0,1,2`.

Reference:
    Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask Networks", ICML 2018.
    Liu et al., "End-to-End Multi-Task Learning with Attention", CVPR 2019 (DWA).
    Kendall et al., "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and Semantics", CVPR 2018.
"""

from __future__ import annotations

import collections
import math
import os

import keras
import numpy as np

from mtlzoo.bench.claims_common import FORMAT, NOISY_TASKS, cell, delta_m, figure_link, spread

CLAIM = "difficulty"
ARMS = ("weighting:equal", "weighting:gradnorm", "weighting:dwa", "weighting:uncertainty")
#: Table and figure order of the tasks (others follow in the order of the results).
TASKS = ("segmentation", "depth", "detection", "scene")
#: Steps of the smoothing window (a quarter of the curve when that is fewer).
WINDOW = 16
PLOTTED_ARMS = ("weighting:equal", "weighting:gradnorm")


def runs(seeds) -> list:
    """[(file stem, arm, seed)] of the claim."""
    return [(f"{arm.replace(':', '-')}__seed{seed}", arm, seed) for seed in seeds for arm in ARMS]


def _round(value, digits=5):
    return float(f"{value:.{digits}g}") if isinstance(value, (int, float)) and math.isfinite(value) else None


class TaskLossCurve(keras.callbacks.Callback):
    """Records each task's training loss (unweighted) and loss weight at every training step.

    Keras 3 gives `on_train_batch_end` the running mean of `{task}_loss` since the epoch began (batch: the index in
    the epoch), so the steps since the previous call (after `p` steps) are recovered by differencing:
    `v = ((b+1)·m_b − p·m_p) / (b + 1 − p)` (one step: `p = b`). Exact when the epoch's batches have one size
    (Keras weights the mean by batch size: a smaller last batch is off). With `steps_per_execution` k > 1 a call
    covers k steps: their mean is recorded k times (Keras then reports the last execution's end index even when
    the epoch ends inside it; the index is capped at the epoch's known number of steps). The batch logs hold no
    `{task}_weight` (written at the epoch's end): the weights are the model weighting's `current_weights()` (those
    the step used).

    Example:
    ```python
    curve = TaskLossCurve()
    model.fit(x, y, epochs=2, callbacks=[curve])
    curve.curves["depth"]  # one loss per step
    ```
    """

    def __init__(self):
        super().__init__()
        self.curves, self.weights = {}, {}
        self._seen, self._means = 0, {}

    def on_epoch_begin(self, epoch, logs=None):
        self._seen, self._means = 0, {}

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        tasks = list(getattr(self.model, "task_names", None) or
                     [k[:-len("_loss")] for k in logs if k.endswith("_loss")])
        steps = (self.params or {}).get("steps")
        seen = batch + 1 if not steps else min(batch + 1, steps)
        count = max(1, seen - self._seen)
        weights = self._current_weights(logs, tasks)
        for task in tasks:
            if f"{task}_loss" not in logs:
                continue
            mean = float(np.mean(np.asarray(logs[f"{task}_loss"])))
            value = (seen * mean - self._seen * self._means.get(task, 0.0)) / count
            self.curves.setdefault(task, []).extend([value] * count)
            self._means[task] = mean
            if task in weights:
                self.weights.setdefault(task, []).extend([weights[task]] * count)
        self._seen += count

    def _current_weights(self, logs, tasks) -> dict:
        weighting = getattr(self.model, "weighting", None)
        found = weighting.current_weights() if weighting is not None else getattr(self.model, "get_loss_weights",
                                                                                  dict)()
        return {t: float(np.asarray(logs[f"{t}_weight"])) if f"{t}_weight" in logs else found[t]
                for t in tasks if f"{t}_weight" in logs or t in found}

    def to_json(self) -> dict:
        """{"curves": {task: [...]}, "weights": {task: [...]}} rounded to 5 significant digits."""
        return {name: {t: [_round(v) for v in values] for t, values in series.items()}
                for name, series in (("curves", self.curves), ("weights", self.weights))}


# ------------------------------------------------------------------------------------------------------ measures
def smooth(curve, window=None) -> np.ndarray:
    """Trailing window means of `curve` (None counts as NaN): len(curve) − window + 1 values; the window defaults to
    `WINDOW` steps, or a quarter of the curve when that is fewer (at least 1)."""
    values = np.asarray([np.nan if v is None else v for v in curve], dtype=np.float64)
    window = window_of(len(values)) if window is None else max(1, min(int(window), len(values)))
    if not len(values):
        return values
    sums = np.cumsum(np.concatenate([[0.0], values]))
    return (sums[window:] - sums[:-window]) / window


def window_of(steps) -> int:
    return max(1, min(WINDOW, steps // 4))


def relative_losses(curves, window=None) -> dict:
    """{task: L̃_i(t)}: each smoothed curve over its first value, on the tasks' common length. A task whose first
    value is not a positive number is left out (it has no training rate)."""
    length = min((len(c) for c in curves.values()), default=0)
    window = window_of(length) if window is None else window
    out = {}
    for task, curve in curves.items():
        smoothed = smooth(list(curve)[:length], window)
        if len(smoothed) and math.isfinite(smoothed[0]) and smoothed[0] > 0:
            out[task] = smoothed / smoothed[0]
    return out


def inverse_training_rates(curves, window=None) -> dict:
    """{task: r_i(t) = L̃_i(t) / mean_j L̃_j(t)}, GradNorm's inverse training rate (> 1: slower than the mean)."""
    relative = relative_losses(curves, window)
    if not relative:
        return {}
    mean = np.mean(np.stack(list(relative.values())), axis=0)
    return {t: v / mean for t, v in relative.items()}


def rate_inequality(curves, window=None) -> dict:
    """How unequal the tasks' training rates are: `max_i r_i(t) / min_i r_i(t)` (1.0: every task at the same
    relative rate), its `mean` over training and `final` value, `final_relative` ({task: final L̃_i}) and `slowest`
    (the task of the largest final L̃_i); None where undefined (no curve, a non-positive or non-finite loss)."""
    rates = inverse_training_rates(curves, window)
    out = {"mean": None, "final": None, "final_relative": {}, "slowest": None}
    if not rates:
        return out
    stacked = np.stack(list(rates.values()))
    with np.errstate(divide="ignore", invalid="ignore"):
        inequality = np.where(np.min(stacked, axis=0) > 0, np.max(stacked, axis=0) / np.min(stacked, axis=0), np.nan)
    finite = inequality[np.isfinite(inequality)]
    final = {t: v[-1] for t, v in relative_losses(curves, window).items()}
    out["mean"] = float(np.mean(finite)) if len(finite) else None
    out["final"] = float(inequality[-1]) if math.isfinite(inequality[-1]) else None
    out["final_relative"] = {t: float(v) if math.isfinite(v) else None for t, v in final.items()}
    known = {t: v for t, v in out["final_relative"].items() if v is not None}
    out["slowest"] = max(known, key=known.get) if known else None
    return out


# ------------------------------------------------------------------------------------------------------ training
def train_one(run, validation, budget, models_root) -> tuple:
    """Trains and evaluates one (arm, seed) with its loss curves; returns (result, one-line summary)."""
    from mtlzoo.bench import methods

    _, arm, seed = run
    opts = methods.options({"budget": budget, "models": os.path.join(models_root, CLAIM)})
    config = {c.name: c for c in methods.configurations(list(methods.base_recipe(opts).tasks))}[arm]
    recorder = TaskLossCurve()
    result = methods.run_one(config, seed, opts, validation, callbacks=[recorder])
    result.update(recorder.to_json())
    result.update(format=FORMAT, claim=CLAIM, arm=arm,
                  command=f"python -m mtlzoo.bench.claims --claim {CLAIM} --seeds {seed}"
                          + (f" --budget {budget}" if budget != "standard" else ""))
    m = {k: "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else v)
         for k, v in rate_inequality(result["curves"]).items()}
    return result, f"{arm} seed {seed}: rate inequality mean {m['mean']}, final {m['final']}, slowest {m['slowest']}"


# ------------------------------------------------------------------------------------------------------ report
def _tasks(results) -> list:
    seen = [t for r in results for t in r.get("curves", {})]
    return [t for t in TASKS if t in seen] + [t for t in dict.fromkeys(seen) if t not in TASKS]


def difficulty_table(results, methods_results=()) -> str:
    """Markdown: per arm (mean ± std over seeds) the training-rate inequality, the final L̃ per task, Δm against the
    single-task results of the same seed in `methods_results` (the methods benchmark's) and the slowest task."""
    from mtlzoo.bench.methods_table import baselines_of, delta_m_against

    tasks = _tasks(results)
    header = ["arm", "rate inequality, mean ↓", "rate inequality, final ↓"] + [f"final L̃ {t}" for t in tasks] \
        + ["Δm % ↓", "Δm without detection % ↓", "slowest task"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 2) + "---|"]
    for arm in list(ARMS) + sorted({r["arm"] for r in results} - set(ARMS)):
        mine = [r for r in results if r["arm"] == arm]
        if not mine:
            continue
        measures = [rate_inequality(r["curves"]) for r in mine]
        deltas = [delta_m_against(r["metrics"], r["higher_is_better"], baselines_of(methods_results, r["seed"]))[0]
                  if r.get("metrics") and r.get("higher_is_better") else None for r in mine]
        clean = [delta_m(r["metrics"], r["higher_is_better"], baselines_of(methods_results, r["seed"]), NOISY_TASKS)
                 if r.get("metrics") and r.get("higher_is_better") else None for r in mine]
        slowest = collections.Counter(m["slowest"] for m in measures if m["slowest"])
        top = max(slowest, key=lambda t: (slowest[t], -tasks.index(t) if t in tasks else 0)) if slowest else None
        cells = [arm, cell(spread([m["mean"] for m in measures])), cell(spread([m["final"] for m in measures]))]
        cells += [cell(spread([m["final_relative"].get(t) for m in measures])) for t in tasks]
        cells += [cell(spread(deltas), 2), cell(spread(clean), 2), f"{top} ({slowest[top]}/{len(mine)})" if top else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_relative_losses(results, arm) -> dict:
    """{task: (steps, L̃_i(t) averaged over the arm's seeds)} on the seeds' common length; a step is the end of its
    smoothing window."""
    mine = [r for r in results if r["arm"] == arm and r.get("curves")]
    per_seed = [p for p in (relative_losses(r["curves"]) for r in mine) if p]
    if not per_seed:
        return {}
    offset = window_of(min(len(c) for r in mine for c in r["curves"].values()))
    out = {}
    for task in _tasks([{"curves": p} for p in per_seed]):
        curves = [p[task] for p in per_seed if task in p]
        length = min(len(c) for c in curves)
        out[task] = (np.arange(length) + offset, np.mean(np.stack([c[:length] for c in curves]), axis=0))
    return out


def plot_relative_losses(results, path) -> bool:
    """Two panels (equal weighting, GradNorm): each task's L̃_i(t), mean over seeds, against the step."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mtlzoo.fileio import atomic_savefig

    panels = {arm: mean_relative_losses(results, arm) for arm in PLOTTED_ARMS}
    if not any(panels.values()):
        return False
    fig = Figure(figsize=(10, 3.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(PLOTTED_ARMS), sharey=True)
    for ax, (arm, curves) in zip(axes, panels.items()):
        seeds = len({r["seed"] for r in results if r["arm"] == arm})
        for task, (steps, values) in curves.items():
            ax.plot(steps, values, label=task)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{arm} ({seeds} seed{'s' if seeds != 1 else ''})", fontsize=10)
        ax.set_xlabel("training step (end of the smoothing window)")
        ax.grid(alpha=0.3)
        if curves:
            ax.legend(fontsize=8)
    axes[0].set_ylabel("relative training loss L̃ = L(t) / L(0)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_savefig(fig, path, dpi=110)
    return True


def report(results, opts) -> str:
    """The doc section: the table over seeds and the figure (`claims_difficulty[_<budget>].png` in
    `opts["figures"]`). Δm uses the methods benchmark's single-task results in `opts["methods_results"]/<budget>`
    (default docs/results/methods)."""
    from mtlzoo.bench import methods

    results = [r for r in results if r.get("claim") == CLAIM and r.get("curves")]
    if not results:
        return "No run has finished yet."
    budget = opts.get("budget", "standard")
    folder = os.path.join(opts.get("methods_results") or os.path.join("docs", "results", "methods"), budget)
    baselines = [r for r in methods.load_results(folder) if r.get("kind") == "single_task"]
    steps = sorted({len(c) for r in results for c in r["curves"].values()})
    text = (f"Budget `{budget}`: {len(results)} runs, seeds {sorted({r['seed'] for r in results})}, "
            f"{'/'.join(map(str, steps))} steps. Rate inequality: max_i r_i(t) / min_i r_i(t), r_i = L̃_i / mean_j "
            f"L̃_j (GradNorm's inverse training rate), L̃_i(t) = L_i(t) / L_i(0) on the training losses smoothed over "
            f"{window_of(steps[0])} steps (1: every task at the same relative rate). Δm against the single-task models"
            f" of the same seed in `{folder}` ({len(baselines)} found).\n\n")
    text += difficulty_table(results, baselines)
    suffix = "" if budget == "standard" else f"_{budget}"
    figure = os.path.join(opts.get("figures", "docs"), f"claims_difficulty{suffix}.png")
    if plot_relative_losses(results, figure):
        text += "\n\n" + figure_link(opts, figure, "relative training loss per task, equal weighting and GradNorm")
    return text


def finding(results, opts=None) -> str | None:
    """One sentence for `mtlzoo diagnose`: the rate inequality per arm and the slowest task under equal weighting."""
    from mtlzoo.bench import methods
    from mtlzoo.bench.methods_table import baselines_of

    opts = opts or {}
    folder = os.path.join(opts.get("methods_results") or os.path.join("docs", "results", "methods"),
                          opts.get("budget", "standard"))
    single = [r for r in methods.load_results(folder) if r.get("kind") == "single_task"] if os.path.isdir(folder) else []
    parts, slow = [], collections.Counter()
    for arm in ARMS:
        mine = [r for r in results if r.get("arm") == arm and r.get("curves")]
        measures = [rate_inequality(r["curves"]) for r in mine]
        s = spread([m["mean"] for m in measures])
        dm = spread([delta_m(r["metrics"], r["higher_is_better"], baselines_of(single, r["seed"]), NOISY_TASKS)
                     for r in mine if r.get("metrics") and r.get("higher_is_better")])
        if s:
            parts.append(f"{arm.split(':', 1)[1]} {s[0]:.2f} ± {s[1]:.2f} (n={s[2]}"
                         + (f"; Δm without detection {dm[0]:+.1f} ± {dm[1]:.1f} %" if dm else "") + ")")
        if arm == "weighting:equal":
            slow.update(m["slowest"] for m in measures if m["slowest"])
    if not parts:
        return None
    top = f"; the slowest task under equal weighting: {slow.most_common(1)[0][0]}" if slow else ""
    return ("Inequality of the tasks' training rates (max/min of GradNorm's inverse training rate, mean over "
            "training; 1 = all equal): " + ", ".join(parts) + top + ".")
