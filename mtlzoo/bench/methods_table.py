"""The methods benchmark's table and figure: Δm against the single-task runs of each seed, mean ± std over seeds."""

from __future__ import annotations

import math
import os
import statistics

REFERENCE = "weighting:equal"  # train-step times are reported against this configuration
BEGIN, END = "<!-- methods-table:begin -->", "<!-- methods-table:end -->"


def delta_m_against(metrics, higher, baselines):
    """(Δm %, Δm per task) of `metrics` against single-task `baselines` ({task: {metric: value}}), or (None, {})
    when a task has no baseline. Metrics with an undefined or zero value or baseline are left out, as `evaluate` does.
    """
    from mtlzoo.metrics import delta_m

    ok = lambda v: isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
    everything, per_task = ({}, {}, {}), {}
    for task, values in metrics.items():
        if task not in baselines:
            return None, {}
        base = baselines[task]
        keys = [n for n, v in values.items() if ok(v) and ok(base.get(n)) and base[n] != 0]
        if keys:
            parts = ({n: values[n] for n in keys}, {n: base[n] for n in keys}, {n: higher[task][n] for n in keys})
            per_task[task] = delta_m(*parts)
            for whole, part in zip(everything, parts):
                whole.update({f"{task}/{n}": v for n, v in part.items()})
    return (delta_m(*everything) if everything[0] else None), per_task


def baselines_of(results, seed) -> dict:
    runs = [r for r in results if r["kind"] == "single_task" and r["seed"] == seed]
    return {t: r["metrics"].get(t, {}) for t, r in ((r["configuration"].split(":", 1)[1], r) for r in runs)}


#: Left out of the last column, "Δm without detection": detection's mAP@0.5 at the standard budget is 0.001-0.015, so
#: its relative changes (often ±100 %) outweigh the other metrics of Δm.
NOISY_TASKS = ("detection",)


def spread(values):
    values = [v for v in values if v is not None]
    return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values)) if values \
        else None


def summarize(results, order=()) -> list:
    """One row per configuration (in `order`, then the others): metrics, Δm, seeds below 0, step cost, params."""
    by_name = {n: [r for r in results if r["configuration"] == n] for n in {r["configuration"] for r in results}}
    names = [n for n in order if n in by_name] + sorted(n for n in by_name if n not in order)
    reference = spread([r["train_step_ms"] for r in by_name.get(REFERENCE, [])])
    rows = []
    for name in names:
        runs = sorted(by_name[name], key=lambda r: r["seed"])
        deltas = [] if runs[0]["kind"] == "single_task" else [
            delta_m_against(r["metrics"], r["higher_is_better"], baselines_of(results, r["seed"]))[0] for r in runs]
        clean = [] if runs[0]["kind"] == "single_task" else [
            delta_m_against({t: v for t, v in r["metrics"].items() if t not in NOISY_TASKS}, r["higher_is_better"],
                            baselines_of(results, r["seed"]))[0] for r in runs]
        metrics = {}
        for task, metric, value in ((t, m, v) for r in runs for t, vs in r["metrics"].items() for m, v in vs.items()):
            metrics.setdefault((task, metric), []).append(value)
        step = spread([r["train_step_ms"] for r in runs])
        rows.append({
            "configuration": name, "kind": runs[0]["kind"], "seeds": [r["seed"] for r in runs],
            "delta_m": spread(deltas), "delta_m_below_0": sum(1 for d in deltas if d is not None and d < 0),
            "delta_m_seeds": sum(1 for d in deltas if d is not None), "train_step_ms": step,
            "delta_m_without_noisy": spread(clean),
            "vs_reference": step[0] / reference[0] if step and reference else None,
            "params": runs[0]["params"], "wall_s": spread([r["wall_s"] for r in runs]),
            "metrics": {k: spread(v) for k, v in metrics.items()},
        })
    return rows


def _cell(spread, digits=3):
    if spread is None:
        return "–"
    return f"{spread[0]:.{digits}f}" + ("" if spread[1] is None else f" ± {spread[1]:.{digits}f}")


def markdown_table(rows) -> str:
    """The report's markdown table from `summarize` rows (one line per configuration)."""
    from mtlzoo.bench.quality import COLUMNS

    labels = {(task, metric): label for task, metric, label in COLUMNS}
    columns = []
    for row in rows:
        columns += [k for k in row["metrics"] if k not in columns]
    headers = ["configuration", "seeds", "Δm % ↓", "Δm < 0", "train ms/step", f"× {REFERENCE.split(':')[1]}",
               "params"] + [labels.get(k, f"{k[0]} {k[1]}") for k in columns] \
        + [f"Δm % without {', '.join(NOISY_TASKS)} ↓"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    for row in rows:
        cells = [row["configuration"], str(len(row["seeds"])), _cell(row["delta_m"], 2),
                 f"{row['delta_m_below_0']}/{row['delta_m_seeds']}" if row["delta_m_seeds"] else "–",
                 _cell(row["train_step_ms"], 0), f"{row['vs_reference']:.2f}" if row["vs_reference"] else "–",
                 f"{row['params'] / 1e6:.2f}M"] + [_cell(row["metrics"].get(k)) for k in columns] \
            + [_cell(row.get("delta_m_without_noisy"), 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows, path, recipe="driving_perception_lite") -> bool:
    """Δm (mean ± std over seeds) against train-step time × `weighting:equal`, one point per configuration; a second
    panel gives Δm without the `NOISY_TASKS`, the column the table is read on."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state (renders with Agg)

    from mtlzoo.fileio import atomic_savefig

    panels = [(key, title) for key, title in (
        ("delta_m", "Δm, all tasks"), ("delta_m_without_noisy", f"Δm without {', '.join(NOISY_TASKS)}"))
        if any(r.get(key) is not None and r["vs_reference"] is not None for r in rows)]
    if not panels:
        return False
    figure = Figure(figsize=(8 * len(panels), 7.5), layout="constrained")
    count = len([r for r in rows if r["delta_m"] is not None and r["vs_reference"] is not None])
    figure.suptitle(f"{recipe} on synthetic_driving: {count} configurations, mean ± std over seeds")
    for i, (key, title) in enumerate(panels):
        points = [r for r in rows if r.get(key) is not None and r["vs_reference"] is not None]
        axes = figure.add_subplot(1, len(panels), i + 1, title=title, xscale="log",
                                  xlabel=f"train-step time × {REFERENCE} (training cost; same steps for all)",
                                  ylabel="Δm % against the single-task models (lower is better)")
        axes.axhline(0.0, color="grey", linestyle="--", linewidth=1, label="single-task models (Δm = 0)")
        for kind, color in (("sharing", "tab:green"), ("weighting", "tab:blue"), ("aggregator", "tab:red")):
            group = [r for r in points if r["kind"] == kind]
            if group:
                axes.errorbar([r["vs_reference"] for r in group], [r[key][0] for r in group],
                              yerr=[r[key][1] or 0.0 for r in group], fmt="o", color=color, capsize=3, label=kind)
            for r in group:
                axes.annotate(r["configuration"].split(":", 1)[1], (r["vs_reference"], r[key][0]), fontsize=6,
                              xytext=(4, 3), textcoords="offset points")
        axes.grid(alpha=0.3, which="both")
        axes.legend(loc="best", fontsize=8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_savefig(figure, path, dpi=100)
    return True


def write_section(doc, text, budget="standard") -> None:
    """Writes `text` between the methods-table markers of `doc` (a new section at its end when they are missing);
    each budget but `standard` has markers of its own (`<!-- methods-table-zoo:begin -->`)."""
    from mtlzoo.fileio import atomic_write_text

    begin, end = (BEGIN, END) if budget == "standard" else (BEGIN.replace("table", f"table-{budget}"),
                                                            END.replace("table", f"table-{budget}"))
    content = open(doc).read() if os.path.exists(doc) else ""
    block = f"{begin}\n{text.strip()}\n{end}"
    if begin in content and end in content.split(begin, 1)[1]:
        head, rest = content.split(begin, 1)
        content = head + block + rest.split(end, 1)[1]
    else:
        title = "" if budget == "standard" else f", budget `{budget}`"
        content = f"{content.rstrip()}\n\n## Methods over seeds (`mtlzoo bench methods`{title})\n\n{block}\n".lstrip()
    os.makedirs(os.path.dirname(os.path.abspath(doc)), exist_ok=True)
    atomic_write_text(doc, content)
