"""`mtlzoo bench quality`: multi-task quality against single-task models at a fixed budget.

On `synthetic_driving` at 128×256, with the same data, epochs and batch size
for every model, it trains

- the four single-task baselines (segmentation, depth, detection, scene tags):
  `driving_perception_lite` restricted to one task, i.e. a MobileNetV3-Small
  trunk, the 32-channel neck and one head — which is also one column of the
  cross-stitch model;
- the hard-sharing recipe `driving_perception_lite` (one trunk, four heads);
- the cross-stitch recipe `driving_perception_cross_stitch` (four columns tied
  by cross-stitch units);

evaluates each on the validation split with `mtlzoo.evaluation.evaluate`
(mIoU, pixel accuracy, depth errors, detection mAP@0.5, tag mAP and F1), and
reports Δm against the baselines (lower is better) and the cost of each
multi-task model against the four single-task models together: parameters,
FLOPs, seconds per training step and total training time. Results go to
`OUT/quality.md` (a markdown table) and `OUT/quality.json`.

Budgets: `full` (1000 training scenes, 10 epochs of batch 16 = 630 steps,
100 validation scenes; planned from measured step times — 0.5 s hard
sharing, 1.3 s cross-stitch, 1.6 s the four single-task models together at
128×256 — to take about 45 minutes on 2 idle CPU cores) and
`small` (128 scenes, 2 epochs, 48 validation scenes: a few minutes, a smoke
run whose numbers only show the machinery works). Each recipe keeps its own
optimizer settings.

Example:
```python
from mtlzoo.bench.quality import run
result = run({"budget": "small", "out": "bench_out/quality"})
print(result["markdown"])
```

Reference:
    Misra et al., "Cross-stitch Networks for Multi-task Learning", CVPR 2016;
    Maninis et al., "Attentive Single-Tasking of Multiple Tasks", CVPR 2019 (Δm).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

BUDGETS = {
    "full": {"num_train": 1000, "num_validation": 100, "epochs": 10, "batch_size": 16},
    "small": {"num_train": 128, "num_validation": 48, "epochs": 2, "batch_size": 16},
}
HARD_RECIPE = "driving_perception_lite"
CROSS_STITCH_RECIPE = "driving_perception_cross_stitch"
COLUMNS = (
    ("segmentation", "miou", "seg mIoU ↑"),
    ("segmentation", "pixel_acc", "pix acc ↑"),
    ("depth", "abs_err", "depth abs err ↓"),
    ("depth", "abs_rel", "abs rel ↓"),
    ("depth", "delta1", "δ<1.25 ↑"),
    ("detection", "map50", "det mAP@0.5 ↑"),
    ("scene", "map", "tag mAP ↑"),
    ("scene", "f1", "tag F1 ↑"),
)


def _options(args) -> dict:
    source = {} if args is None else (dict(args) if isinstance(args, dict) else vars(args))
    budget = source.get("budget") or "full"
    if budget not in BUDGETS:
        raise ValueError(f"Unknown budget {budget!r}; use one of {', '.join(BUDGETS)}.")
    opts = dict(BUDGETS[budget], budget=budget, out=source.get("out") or os.path.join("bench_out", "quality"),
                image_size=(128, 256), seed=0, verbose=2, overrides={})
    for key in ("num_train", "num_validation", "epochs", "batch_size", "seed", "verbose", "image_size", "overrides"):
        if source.get(key) is not None:
            opts[key] = source[key]
    if isinstance(opts["image_size"], str):
        opts["image_size"] = tuple(int(v) for v in opts["image_size"].lower().split("x"))
    opts["image_size"] = tuple(int(v) for v in opts["image_size"])
    return opts


def _fmt(value, digits=3):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _count(n):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def markdown_table(rows) -> str:
    """The benchmark's markdown table from its result rows (see `run`).

    Example:
    ```python
    from mtlzoo.bench.quality import markdown_table
    print(markdown_table(result["rows"]))
    ```
    """
    headers = ["model", "params", "FLOPs", "train s/step", "train s"] + [c[2] for c in COLUMNS] + [
        "Δm % ↓", "train step vs 4 STL", "params vs 4 STL"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
    for row in rows:
        cells = [row["model"], _count(row["params"]), _count(row["flops"]), _fmt(row["train_step_s"]),
                 f"{row['train_total_s']:.0f}"]
        for task, metric, _ in COLUMNS:
            cells.append(_fmt(row["metrics"].get(task, {}).get(metric)))
        cells.append(_fmt(row.get("delta_m"), 2) if row.get("delta_m") is not None else "–")
        ratio = row.get("train_step_ratio")
        cells.append(f"{ratio:.2f}×" if ratio is not None else "–")
        pratio = row.get("params_ratio")
        cells.append(f"{pratio:.2f}×" if pratio is not None else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args=None) -> dict:
    """Runs the quality benchmark, writes `quality.md` and `quality.json`, prints the table.

    Args:
        args: argparse Namespace, dict or None with optional `budget`
            ("full" or "small"), `out` (folder, default bench_out/quality),
            `epochs`, `num_train`, `num_validation`, `batch_size`,
            `image_size` ((H, W) or "HxW"; default 128x256), `seed`,
            `verbose`, `overrides` (recipe overrides applied to every model,
            e.g. a smaller backbone for a quick check).

    Returns:
        dict with `rows` (one per model: metrics, Δm, cost), `markdown`,
        `settings` and `seconds` (wall time of the whole benchmark).

    Example:
    ```python
    from mtlzoo.bench.quality import run
    run({"budget": "small"})
    ```
    """
    from mtlzoo.evaluation import baselines, evaluate
    from mtlzoo.training import train

    opts = _options(args)
    out = opts["out"]
    os.makedirs(out, exist_ok=True)
    height, width = opts["image_size"]
    common = {
        "input_shape": (height, width, 3),
        "seed": int(opts["seed"]),
        "data.name": "synthetic_driving",
        "data.num_examples": int(opts["num_train"]),
        "data.num_validation_examples": int(opts["num_validation"]),
        "training.batch_size": int(opts["batch_size"]),
        **opts["overrides"],
    }
    epochs = int(opts["epochs"])
    start = time.perf_counter()
    print(f"== quality benchmark ({opts['budget']}): synthetic_driving {height}x{width}, "
          f"{opts['num_train']} train / {opts['num_validation']} validation scenes, {epochs} epochs of batch "
          f"{opts['batch_size']}")

    print("== single-task baselines")
    stl = baselines(HARD_RECIPE, epochs=epochs, out_dir=os.path.join(out, "baselines"), verbose=opts["verbose"],
                    **common)
    rows = []
    stl_train_step = sum(stl["tasks"][t]["cost"]["train_step_s"] for t in stl["tasks"])
    stl_train_total = sum(stl["tasks"][t]["cost"]["train_total_s"] for t in stl["tasks"])
    stl_params = sum(stl["tasks"][t]["cost"]["params"] for t in stl["tasks"])
    for task, entry in stl["tasks"].items():
        rows.append({"model": f"single-task {task}", "params": entry["cost"]["params"],
                     "flops": entry["cost"]["flops"], "train_step_s": entry["cost"]["train_step_s"],
                     "train_total_s": entry["cost"]["train_total_s"], "metrics": {task: entry["metrics"]}})
    rows.append({"model": "4 single-task models", "params": stl_params,
                 "flops": sum(stl["tasks"][t]["cost"]["flops"] for t in stl["tasks"]),
                 "train_step_s": stl_train_step, "train_total_s": stl_train_total,
                 "metrics": {t: e["metrics"] for t, e in stl["tasks"].items()}, "delta_m": 0.0,
                 "train_step_ratio": 1.0, "params_ratio": 1.0})
    reports = {}
    for label, recipe in (("hard sharing", HARD_RECIPE), ("cross-stitch", CROSS_STITCH_RECIPE)):
        print(f"== {label}: {recipe}")
        result = train(recipe, epochs=epochs, out_dir=os.path.join(out, recipe), verbose=opts["verbose"], **common)
        report = evaluate(result.model, None, baselines=os.path.join(out, "baselines"),
                          batch_size=int(opts["batch_size"]))
        print(report.table())
        reports[label] = report.to_dict()
        rows.append({
            "model": f"{label} ({recipe})", "params": report.cost["params"], "flops": report.cost["flops"],
            "train_step_s": result.timing["train_step_s"], "train_total_s": result.timing["total_s"],
            "metrics": report.metrics, "delta_m": report.delta_m,
            "train_step_ratio": result.timing["train_step_s"] / stl_train_step if stl_train_step else None,
            "train_total_ratio": result.timing["total_s"] / stl_train_total if stl_train_total else None,
            "params_ratio": report.cost["params"] / stl_params if stl_params else None,
            "inference_ratio": (report.cost_ratio or {}).get("step_time_s"),
            "delta_m_per_task": report.delta_m_per_task,
        })
    seconds = time.perf_counter() - start
    table = markdown_table(rows)
    settings = {k: v for k, v in opts.items() if k != "overrides"}
    settings["overrides"] = {k: str(v) for k, v in opts["overrides"].items()}
    header = (f"Quality benchmark ({opts['budget']} budget): synthetic_driving {height}x{width}, "
              f"{opts['num_train']} training / {opts['num_validation']} validation scenes, {epochs} epochs, "
              f"batch {opts['batch_size']}, seed {opts['seed']}; {os.cpu_count()} CPUs, {seconds / 60:.1f} min in all. "
              "Δm: mean relative change against the single-task models over all listed metrics, lower is better. "
              "Train step: median seconds per training step (compilation excluded).")
    markdown = header + "\n\n" + table + "\n"
    with open(os.path.join(out, "quality.md"), "w") as f:
        f.write(markdown)
    result = {"rows": rows, "markdown": markdown, "settings": settings, "seconds": seconds, "reports": reports}
    with open(os.path.join(out, "quality.json"), "w") as f:
        json.dump(result, f, indent=2, default=str)
    print(markdown)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mtlzoo.bench.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="full")
    parser.add_argument("--out", default=None)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--num-train", type=int)
    parser.add_argument("--num-validation", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--image-size")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--verbose", type=int)
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
