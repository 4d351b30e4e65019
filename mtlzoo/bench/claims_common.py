"""What every claim of `mtlzoo.bench.claims` shares: the result format, mean ± std, the doc sections, the resumable
runner and the validation scenes.

A claim module (`mtlzoo.bench.claim_<name>`) plugs into `python -m mtlzoo.bench.claims --claim <name>` by defining:

- `CLAIM`: its name (the results folder `docs/results/claims/<CLAIM>/` and the doc section `claims-<CLAIM>`);
- `runs(seeds) -> list`: tuples whose first item is the file stem of one (arm, setting, seed) result;
- `train_one(run, validation, budget, models_root) -> (result dict, one-line summary)`: trains and evaluates one run
  (`validation`: `validation_scenes(budget)`); the result carries `format=FORMAT` and `claim=CLAIM`;
- `report(results, opts) -> str`: the markdown of its doc section from every result of its folder (it may draw a
  figure under `opts["figures"]` and link it relative to `opts["doc"]`).

Example:
```python
from mtlzoo.bench.claims_common import spread
spread([1.0, 2.0, None])  # (1.5, 0.7071..., 2)
```
"""

from __future__ import annotations

import glob
import json
import os
import statistics

from mtlzoo.bench.methods_table import NOISY_TASKS  # the claims' "Δm without detection" leaves these out

FORMAT = "mtlzoo-bench-claims/1"
BEGIN, END = "<!-- claims-{}:begin -->", "<!-- claims-{}:end -->"
#: Where claims keep the single-task models they train: apart from the methods benchmark's (which `_init`
#: configurations load), since a claim trains them on other data.
MODELS_ROOT = os.path.join("runs", "claims_models")


def spread(values):
    """(mean, sample std, n) of the numbers in `values` (None and non-numbers skipped); None when there are none."""
    values = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def cell(s, digits=3) -> str:
    """A `spread` as a table cell: `0.123 ± 0.004 (n=3)`, or `–`."""
    return "–" if s is None else f"{s[0]:.{digits}f} ± {s[1]:.{digits}f} (n={s[2]})"


def relative_change(value, reference, higher_is_better) -> float | None:
    """Percent change of `value` against `reference`, signed so that negative is better (as Δm)."""
    if not isinstance(value, (int, float)) or not isinstance(reference, (int, float)) or not reference:
        return None
    sign = -1.0 if higher_is_better else 1.0
    return sign * 100.0 * (value - reference) / abs(reference)


def fmt(value, digits=3) -> str:
    """A metric for a summary line: `0.123`, or `–` when it is missing (a diverged run's NaN is stored as None)."""
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


#: One metric per synthetic_driving task, the one the claims tabulate.
TASK_METRIC = {"segmentation": "miou", "depth": "abs_rel", "detection": "map50", "scene": "map"}
#: The same without `NOISY_TASKS`: what the claims compare task by task (detection is trained but not tabulated).
TABULATED_METRIC = {t: m for t, m in TASK_METRIC.items() if t not in NOISY_TASKS}
#: Metrics that are better when lower (when a result does not say, `higher_is_better` falls back on this).
LOWER_IS_BETTER = ("abs_rel", "abs_err", "mae", "rmse")


def higher_is_better(result, task, metric) -> bool:
    """Whether `metric` of `task` is better higher: from the result's `higher_is_better`, else `LOWER_IS_BETTER`."""
    return (result.get("higher_is_better") or {}).get(task, {}).get(metric, metric not in LOWER_IS_BETTER)


def delta_m(metrics, higher_is_better, baselines, exclude=()) -> float | None:
    """Δm % (positive = worse) of `metrics` against `baselines` ({task: {metric: value}}), without the tasks in
    `exclude`; None when a task has no baseline."""
    from mtlzoo.bench.methods_table import delta_m_against

    kept = {t: v for t, v in metrics.items() if t not in exclude}
    return delta_m_against(kept, higher_is_better, {t: v for t, v in baselines.items() if t not in exclude})[0]


def write_section(doc, claim, text) -> None:
    """Replaces the text between the claim's markers in `doc` (appends the markers when missing)."""
    from mtlzoo.fileio import atomic_write_text

    begin, end = BEGIN.format(claim), END.format(claim)
    old = open(doc).read() if os.path.exists(doc) else "# When multi-task learning helps\n"
    block = f"{begin}\n{text}\n{end}"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(doc, new)


def validation_scenes(budget):
    """The methods benchmark's validation scenes (every label present, raw boxes for mAP)."""
    from mtlzoo.bench import methods
    from mtlzoo.data.splits import load_split

    opts = methods.options({"budget": budget})
    spec = methods.BUDGETS[budget]
    return load_split(dict(methods.base_recipe(opts).data, num_validation_examples=spec["num_validation"]),
                      "validation", image_size=spec["image_size"], batch_size=spec["batch_size"],
                      seed=methods.VALIDATION_SEED, training=False, with_boxes=True)


def results_folder(opts, claim) -> str:
    return os.path.join(opts["results"], claim if opts["budget"] == "standard" else f"{claim}-{opts['budget']}")


def fill(opts, claim, runs, train_one, validation=None) -> list:
    """Trains the runs whose JSON file is missing (unless `opts["report"]`); returns every result of the claim's
    folder. `runs` are tuples starting with the file stem; `train_one(run, validation)` returns (result, summary)."""
    from mtlzoo.bench import methods
    from mtlzoo.fileio import RunLock, atomic_write_json

    if opts["budget"] not in methods.BUDGETS:
        raise ValueError(f"Unknown budget {opts['budget']!r}; use one of {', '.join(methods.BUDGETS)}.")
    folder = results_folder(opts, claim)
    os.makedirs(folder, exist_ok=True)
    todo = [r for r in runs if not os.path.exists(os.path.join(folder, r[0] + ".json"))]
    if not opts["report"] and todo:
        validation = validation_scenes(opts["budget"]) if validation is None else validation
        with RunLock(folder, what="claims results folder"):
            for i, run in enumerate(todo):
                if os.path.exists(os.path.join(folder, run[0] + ".json")):
                    continue
                result, line = train_one(run, validation)
                atomic_write_json(os.path.join(folder, run[0] + ".json"), result, indent=2)
                print(f"  [{i + 1}/{len(todo)}] {line} ({result.get('wall_s', 0):.0f} s)", flush=True)
    return load_results(folder)


def load_results(folder) -> list:
    results = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(folder, "*.json")))]
    return [r for r in results if r.get("format") == FORMAT]


def figure_link(opts, path, alt) -> str:
    """Markdown image link to `path`, relative to the doc's folder."""
    return f"![{alt}]({os.path.relpath(path, os.path.dirname(opts['doc']) or '.')})"


def new_axes(width=5.5, height=3.6):
    """(figure, axes) of a headless Matplotlib figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()
