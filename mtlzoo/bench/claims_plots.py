"""Figures of the claims whose tables live in `mtlzoo.bench.claims` (overfitting) and `claim_unequal`.

Example:
```python
from mtlzoo.bench.claims_plots import plot_overfit
from mtlzoo.bench.claims import overfit_gap
plot_overfit(results, {"depth": "abs_rel"}, (100, 300, 1000), "/tmp/overfit.png", overfit_gap)
```
"""

from __future__ import annotations

from mtlzoo.bench.claims_common import new_axes, spread


def plot_overfit(results, metrics, sizes, path, gap) -> bool:
    """The generalisation gap (`gap(result, task, metric)`, mean ± std over seeds) against the training-set size,
    one panel per task, single-task against multi-task; False (no file) when there is nothing to draw."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mtlzoo.fileio import atomic_savefig

    fig = Figure(figsize=(4.0 * len(metrics), 3.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    drawn = False
    for ax, (task, metric) in zip(axes, metrics.items()):
        for arm, color in ((f"single_task:{task}", "tab:gray"), ("weighting:equal", "tab:blue")):
            points = []
            for n in sizes:
                s = spread([gap(r, task, metric) for r in results
                            if r.get("arm") == arm and r.get("num_train") == n and task in r.get("metrics", {})
                            and task in r.get("metrics_train", {})])
                if s:
                    points.append((n, s))
            if points:
                ax.errorbar([p[0] for p in points], [p[1][0] for p in points], yerr=[p[1][1] for p in points],
                            marker="o", capsize=3, color=color,
                            label="single-task" if arm.startswith("single") else "multi-task (equal)")
                drawn = True
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("training scenes")
        ax.set_title(f"{task} {metric}: gap, train better than validation", fontsize=9)
        ax.grid(alpha=0.3)
    if not drawn:
        return False
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
            break
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    return True


def plot_unequal(changes, tasks, scarce, path) -> bool:
    """Grouped bars: per arm, each task's change (%) against its full-data single-task model."""
    from mtlzoo.fileio import atomic_savefig

    arms = [a for a in changes if not a.startswith("single")]
    if not arms:
        return False
    fig, ax = new_axes(6.0, 3.4)
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        stats = [spread(changes[arm].get(t, [])) for t in tasks]
        xs = [k + i * width for k, s in enumerate(stats) if s]
        ax.bar(xs, [s[0] for s in stats if s], width, yerr=[s[1] for s in stats if s], capsize=3, label=arm)
    ax.set_xticks([k + width * (len(arms) - 1) / 2 for k in range(len(tasks))],
                  [f"{t}{' (scarce)' if t == scarce else ''}" for t in tasks], fontsize=8)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylabel("change vs single-task, full data (%) ↓")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    return True
