"""`TuneResult` and its outputs: the trials table and the plot."""

from __future__ import annotations

import copy
import csv
import dataclasses

from mtlzoo import fileio
from mtlzoo.recipe import Recipe

__all__ = ["trial_rows", "TuneResult", "write_plot", "write_table"]


# ---------------------------------------------------------------- results
@dataclasses.dataclass
class TuneResult:
    """What `tune` found and wrote.

    Attributes:
        role: "single", "chief" or "worker" (workers write no outputs).
        objective: the `keras_tuner.Objective`.
        rows: one dict per trial (trial id, status, objective value, weights, choices).
        best_hyperparameters: dict of the best trial's values, or None.
        best_score: float or None.
        best_recipe: `Recipe` or None.
        best_recipe_path, table_csv, table_md, plot: output paths (None for workers).
        tuner: the keras-tuner tuner.
    """

    role: str
    objective: object
    rows: list
    best_hyperparameters: dict | None = None
    best_score: float | None = None
    best_recipe: Recipe | None = None
    best_recipe_path: str | None = None
    table_csv: str | None = None
    table_md: str | None = None
    plot: str | None = None
    tuner: object = None


def _short_message(message):
    if not message:
        return ""
    lines = [line.strip() for line in str(message).strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def trial_rows(tuner, hypermodel):
    objective = tuner.oracle.objective.name
    rows = []
    for trial_id in sorted(tuner.oracle.trials, key=lambda s: (len(s), s)):
        trial = tuner.oracle.trials[trial_id]
        hp = copy.deepcopy(trial.hyperparameters)
        try:
            config = hypermodel.trial_config(hp)
        except Exception:  # a trial whose values no longer fit the space
            config = None
        row = {"trial": trial_id, "status": str(trial.status), objective: trial.score}
        weights = (config or {}).get("weights") or {}
        for t in hypermodel.task_names:
            row[f"weight_{t}"] = weights.get(t, hypermodel.recipe.tasks[t].loss_weight)
        if config is not None:
            if hypermodel.weightings:
                row["weighting"] = config["weighting"]
            if hypermodel.aggregators:
                row["aggregator"] = config["aggregator"] or "none"
            if hypermodel.sharings:
                row["sharing"] = config["sharing"]
            for group in ("weighting_args", "aggregator_args", "sharing_args"):
                for k, v in config[group].items():
                    if k != "seed":
                        row[f"{config[group.split('_')[0]]}_{k}"] = v
        for k, v in trial.hyperparameters.values.items():
            if k.startswith("tuner/") and k in ("tuner/epochs",):
                row["epochs"] = v
        row["message"] = _short_message(trial.message) if str(trial.status) != "COMPLETED" else ""
        rows.append(row)
    # Same columns in every row, the failure message last.
    columns = []
    for row in rows:
        columns += [k for k in row if k not in columns and k != "message"]
    rows = [{**{k: row.get(k) for k in columns}, "message": row["message"]} for row in rows]
    return rows


def _fmt(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_table(rows, csv_path, md_path):
    """Writes the per-trial rows as CSV and as a markdown table."""
    columns = []
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    with fileio.atomic_write(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") if row.get(k) is not None else "" for k in columns})
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(k)).replace("|", "/") for k in columns) + " |")
    fileio.atomic_write_text(md_path, "\n".join(lines) + "\n")


def write_plot(rows, objective, tasks, path, direction="min"):
    """Objective per trial and chosen loss weights per task, as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = list(range(len(rows)))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6, 0.4 * len(rows) + 3), 7), sharex=True)
    ok = [(i, r[objective]) for i, r in zip(index, rows) if r["status"] == "COMPLETED" and r[objective] is not None]
    failed = [i for i, r in zip(index, rows) if r["status"] != "COMPLETED"]
    if ok:
        xs, ys = zip(*ok)
        ax1.plot(xs, ys, "o-", color="tab:blue", label="completed")
        best = (min if direction == "min" else max)(ok, key=lambda p: p[1])
        label = f"best (trial {rows[best[0]]['trial']})"
        ax1.plot([best[0]], [best[1]], "*", color="tab:orange", markersize=16, label=label)
    if failed:
        bottom = ax1.get_ylim()[0] if ok else 0.0
        ax1.plot(failed, [bottom] * len(failed), "x", color="tab:red", markersize=10, label="failed")
    ax1.set_ylabel(f"{objective} ({'lower' if direction == 'min' else 'higher'} is better)")
    ax1.legend(loc="best", fontsize=8)
    ax1.grid(alpha=0.3)
    for t in tasks:
        ax2.plot(index, [r.get(f"weight_{t}") for r in rows], "o-", label=t)
    ax2.set_yscale("log")
    ax2.set_ylabel("loss weight")
    ax2.set_xlabel("trial")
    ax2.set_xticks(index)
    ax2.set_xticklabels([r["trial"] for r in rows], rotation=90, fontsize=7)
    ax2.legend(loc="best", fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fileio.atomic_savefig(fig, path, dpi=100)
    plt.close(fig)
