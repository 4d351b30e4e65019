"""`python -m mtlzoo.bench.defaults`: which training defaults close the gap between training and validation.

`driving_perception_lite` on `synthetic_driving` is trained with cumulative changes of its training defaults and
evaluated on the same validation scenes, so each change's effect is measured against the one before it:

- `before`: the recipe as it was (every BatchNorm layer at Keras's momentum 0.99, constant learning rate, flips only);
- `bn_momentum`: + `bn_momentum: 0.9` on every BatchNorm layer (backbone, neck, heads);
- `cosine`: + a linear warm-up over 5% of the steps and a cosine decay (Keras `CosineDecay`);
- `color_jitter`: + photometric augmentation of the training images (`data.color_jitter: 0.2`).

Budgets: `demo` is what `make demo` trains (128×256, 192 scenes, 3 epochs of batch 16 = 36 steps, 48 validation
scenes); `standard` is the methods benchmark's budget (64×128, 512 scenes, 8 epochs = 256 steps, 128 validation
scenes); `smoke` is for the tests. Every (variant, budget, seed) result is a JSON file under
`docs/results/defaults/<budget>/` that a rerun skips; the report is a markdown table of the validation metrics (mean
± std over seeds) with the training loss beside them.

Example:
```python
from mtlzoo.bench.defaults import run
run({"budget": "smoke", "seeds": "0", "results": "/tmp/defaults"})
```
Shell: `python -m mtlzoo.bench.defaults --budget demo --seeds 0,1`.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import time

RECIPE = "driving_perception_lite"
FORMAT = "mtlzoo-bench-defaults/1"
BEFORE = {"bn_momentum": None, "optimizer": {"name": "adam", "learning_rate": 0.002}, "data.color_jitter": 0.0}
#: Cumulative variants: each adds its overrides to the previous one's.
VARIANTS = (
    ("before", BEFORE),
    ("bn_momentum", {"bn_momentum": 0.9}),
    ("cosine", {"optimizer": {"name": "adam", "learning_rate": 0.002, "schedule": "cosine", "warmup": 0.05}}),
    ("color_jitter", {"data.color_jitter": 0.2}),
)
BUDGETS = {
    "demo": {"image_size": (128, 256), "num_train": 192, "num_validation": 48, "epochs": 3, "batch_size": 16},
    "standard": {"image_size": (64, 128), "num_train": 512, "num_validation": 128, "epochs": 8, "batch_size": 16},
    "smoke": {"image_size": (32, 64), "num_train": 8, "num_validation": 8, "epochs": 1, "batch_size": 4, "tiny": True},
}


def variant_overrides(name) -> dict:
    """The recipe overrides of variant `name`: its own and those of every variant before it."""
    out = {}
    for variant, overrides in VARIANTS:
        out.update(overrides)
        if variant == name:
            return out
    raise ValueError(f"Unknown variant {name!r}; variants: {', '.join(v for v, _ in VARIANTS)}.")


def run_one(variant, seed, budget_name, validation) -> dict:
    import keras

    from mtlzoo.evaluation import evaluate
    from mtlzoo.recipe import get_recipe
    from mtlzoo.training import train

    budget = BUDGETS[budget_name]
    settings = {"input_shape": (*budget["image_size"], 3), "data.name": "synthetic_driving",
                "data.num_examples": budget["num_train"], "training.batch_size": budget["batch_size"]}
    if budget.get("tiny"):
        from mtlzoo.testing import TINY_IMAGE

        settings.update({k: v for k, v in TINY_IMAGE.items() if k != "input_shape"})
    keras.backend.clear_session()
    recipe = get_recipe(RECIPE, **settings).override(**variant_overrides(variant))
    start = time.perf_counter()
    result = train(recipe, epochs=budget["epochs"], seed=seed, validation_data=False, verbose=0)
    report = evaluate(result.model, validation, batch_size=budget["batch_size"], timing_repeats=1).to_dict()
    return json.loads(json.dumps({
        "format": FORMAT, "variant": variant, "seed": seed, "budget": budget_name, "metrics": report["metrics"],
        "higher_is_better": report["higher_is_better"],
        "final_train_logs": {k: v[-1] for k, v in result.history.items() if v},
        "overrides": variant_overrides(variant), "wall_s": time.perf_counter() - start,
        "command": f"python -m mtlzoo.bench.defaults --budget {budget_name} --seeds {seed} --variants {variant}",
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, default=lambda v: v.item() if hasattr(v, "item") else str(v)), parse_constant=lambda _: None)


def _path(folder, variant, seed):
    return os.path.join(folder, f"{variant}__seed{seed}.json")


def report(folder) -> str:
    """Markdown table: per variant, each validation metric as mean ± std over seeds, and the final training loss."""
    results = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(folder, "*.json")))]
    results = [r for r in results if r.get("format") == FORMAT]
    if not results:
        return "(no results yet)"
    columns = [(t, m) for t, ms in results[0]["metrics"].items() for m in ms]
    arrows = {(t, m): "↑" if results[0]["higher_is_better"][t][m] else "↓" for t, m in columns}

    def cell(values):
        values = [v for v in values if isinstance(v, (int, float))]
        if not values:
            return "–"
        mean = statistics.fmean(values)
        return f"{mean:.3g}" + (f" ± {statistics.stdev(values):.2g}" if len(values) > 1 else "")

    lines = ["| variant | seeds | " + " | ".join(f"{t} {m} {arrows[(t, m)]}" for t, m in columns) + " | train loss |",
             "|---|---|" + "---|" * (len(columns) + 1)]
    for variant, _ in VARIANTS:
        rows = [r for r in results if r["variant"] == variant]
        if rows:
            cells = [cell([r["metrics"].get(t, {}).get(m) for r in rows]) for t, m in columns]
            loss = cell([r["final_train_logs"].get("loss") for r in rows])
            lines.append(f"| {variant} | {len(rows)} | " + " | ".join(cells) + f" | {loss} |")
    return "\n".join(lines)


def run(args=None) -> str:
    """Trains the missing (variant, seed) results of a budget and returns the report table."""
    from mtlzoo.data.splits import load_split
    from mtlzoo.fileio import RunLock, atomic_write_json

    opts = {"budget": "demo", "seeds": "0,1", "variants": None, "results": os.path.join("docs", "results", "defaults"),
            "doc": os.path.join("docs", "benchmarks.md"),
            **({} if args is None else {k: v for k, v in (args if isinstance(args, dict) else vars(args)).items()
                                        if v is not None})}
    if opts["budget"] not in BUDGETS:
        raise ValueError(f"Unknown budget {opts['budget']!r}; use one of {', '.join(BUDGETS)}.")
    budget = BUDGETS[opts["budget"]]
    seeds = [int(s) for s in str(opts["seeds"]).split(",")]
    names = [v for v, _ in VARIANTS]
    chosen = names if not opts["variants"] else [v.strip() for v in str(opts["variants"]).split(",")]
    for v in chosen:
        variant_overrides(v)
    folder = os.path.join(opts["results"], opts["budget"])
    os.makedirs(folder, exist_ok=True)
    todo = [(v, s) for s in seeds for v in chosen if not os.path.exists(_path(folder, v, s))]
    if todo:
        data = {"name": "synthetic_driving", "num_validation_examples": budget["num_validation"]}
        validation = load_split(data, "validation", image_size=budget["image_size"], batch_size=budget["batch_size"],
                                seed=0, training=False, with_boxes=True)
        with RunLock(folder, what="defaults benchmark results folder"):
            for i, (variant, seed) in enumerate(todo):
                result = run_one(variant, seed, opts["budget"], validation)
                atomic_write_json(_path(folder, variant, seed), result, indent=2)
                print(f"  [{i + 1}/{len(todo)}] {variant} seed {seed}: {result['wall_s']:.0f} s", flush=True)
    table = report(folder)
    print(table)
    if opts.get("doc"):
        write_table(opts["doc"], opts["budget"], table)
    return table


def write_table(doc, budget, table) -> bool:
    """Puts `table` between `<!-- defaults-BUDGET:begin -->` and `<!-- defaults-BUDGET:end -->` of `doc` (when there)."""
    from mtlzoo.fileio import atomic_write_text

    begin, end = f"<!-- defaults-{budget}:begin -->", f"<!-- defaults-{budget}:end -->"
    text = open(doc).read() if os.path.exists(doc) else ""
    if begin not in text or end not in text:
        return False
    header = f"Budget `{budget}` ({BUDGETS[budget]['num_train']} scenes, {BUDGETS[budget]['epochs']} epochs of batch " \
             f"{BUDGETS[budget]['batch_size']}); validation metrics, mean ± std over seeds:"
    atomic_write_text(doc, text[: text.index(begin)] + f"{begin}\n{header}\n\n{table}\n{end}" + text[text.index(end) + len(end):])
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mtlzoo.bench.defaults", description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS))
    parser.add_argument("--seeds", help="default 0,1")
    parser.add_argument("--variants", help="comma list (default all): " + ", ".join(v for v, _ in VARIANTS))
    parser.add_argument("--results", help="default docs/results/defaults")
    parser.add_argument("--doc", help="markdown file with the defaults-BUDGET markers (default docs/benchmarks.md)")
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
