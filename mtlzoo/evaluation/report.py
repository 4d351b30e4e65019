"""`EvaluationReport`: the result of `evaluate`, as a table and as JSON."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

__all__ = ["EvaluationReport", "json_safe"]


# ============================================================================ report
def json_safe(value):
    """JSON-safe copy: NaN/inf -> None, numpy -> Python."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _fmt(value, digits=4):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    return f"{value:.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}f}"


def _fmt_count(n):
    if n is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


@dataclasses.dataclass
class EvaluationReport:
    """The result of `evaluate`.

    Attributes:
        model: str. Model name.
        data: str. Description of the evaluation data.
        num_examples: int. Examples evaluated.
        tasks: dict task -> head kind.
        metrics: dict task -> {metric: value} (headline metrics).
        details: dict task -> per-class values and counts.
        higher_is_better: dict task -> {metric: bool}.
        baseline_metrics: dict task -> {metric: value} of the single-task
            models, or None without baselines.
        delta_m: float or None. Δm in percent over every headline metric with
            a non-zero baseline (lower is better; negative beats the baselines).
        delta_m_per_task: dict task -> Δm over that task's metrics.
        cost: dict: `params`, `flops` (per example), `step_time_s`
            (inference, one batch of `batch_size`), `batch_size`.
        baseline_cost: dict with the same keys summed over the single-task
            models (plus `train_step_s` when stored), or None.
        cost_ratio: dict key -> multi-task / sum of single-task, or None.
        notes: list of str. Metrics skipped and why.
    """

    model: str
    data: str
    num_examples: int
    tasks: dict
    metrics: dict
    details: dict
    higher_is_better: dict
    cost: dict
    baseline_metrics: dict | None = None
    delta_m: float | None = None
    delta_m_per_task: dict = dataclasses.field(default_factory=dict)
    baseline_cost: dict | None = None
    cost_ratio: dict | None = None
    notes: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-safe dict (NaN -> None)."""
        return json_safe(dataclasses.asdict(self))

    def to_json(self, path) -> None:
        """Writes `to_dict()` as JSON to `path`."""
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    def table(self) -> str:
        """The per-task table (metric, value, baseline, relative change), Δm and cost, as text."""
        rows = []
        for task, values in self.metrics.items():
            for name, value in values.items():
                base = (self.baseline_metrics or {}).get(task, {}).get(name)
                change = "-"
                if base not in (None, 0) and value is not None and not math.isnan(value) and not math.isnan(base):
                    sign = 1 if self.higher_is_better[task][name] else -1
                    change = f"{sign * (value - base) / abs(base) * 100:+.1f}%"
                arrow = "↑" if self.higher_is_better[task][name] else "↓"
                rows.append([task, f"{name} {arrow}", _fmt(value), _fmt(base), change])
        headers = ["task", "metric", "value", "single-task", "better by"]
        if self.baseline_metrics is None:
            headers, rows = headers[:3], [r[:3] for r in rows]
        widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
        line = lambda r: "  ".join(str(v).ljust(w) if i < 2 else str(v).rjust(w)  # noqa: E731
                                   for i, (v, w) in enumerate(zip(r, widths)))
        out = [f"{self.model} on {self.data} ({self.num_examples} examples)",
               line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows]
        if self.delta_m is not None:
            per_task = ", ".join(f"{t} {v:+.2f}%" for t, v in self.delta_m_per_task.items())
            out.append(f"Δm = {self.delta_m:+.2f}% (lower is better; per task: {per_task})")
        c = self.cost
        cost = (f"cost: {_fmt_count(c.get('params'))} params, {_fmt_count(c.get('flops'))} FLOPs/example, "
                f"{c.get('step_time_s', float('nan')) * 1000:.1f} ms/batch of {c.get('batch_size')}")
        out.append(cost)
        if self.baseline_cost:
            b, r = self.baseline_cost, self.cost_ratio or {}
            out.append(
                f"single-task models together: {_fmt_count(b.get('params'))} params, {_fmt_count(b.get('flops'))} "
                f"FLOPs, {b.get('step_time_s', float('nan')) * 1000:.1f} ms/batch -> ratio "
                + ", ".join(f"{k} {v:.2f}x" for k, v in r.items() if v is not None)
            )
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)

    def __str__(self):
        return self.table()
