"""Publishing a zoo model from the methods benchmark's `zoo` budget, with its single-task baselines and the spread
over seeds on the model card.

`python -m mtlzoo.bench.methods --budget zoo --methods 'single_task:*,CONFIG' --seeds 0,1,2` trains the configuration
and the four single-task models at the zoo model's budget (saved_models/driving_perception_lite: 1000 scenes at
128×256, 10 epochs of batch 16, the recipe's own training settings) for every seed, keeps every model under
`runs/methods_models/zoo/` and its result under `docs/results/methods/zoo/`. This module then

- writes one seed's single-task results as a `baselines.json` (the format `mtlzoo evaluate` and the zoo read; the
  methods benchmark evaluates on the same 100 validation scenes of dataset seed 0 as the zoo does);
- tabulates, over every seed that has the configuration and its four baselines, each metric of the multi-task and the
  single-task models (mean ± std) and Δm per seed;
- publishes the chosen seed's model with `mtlzoo.zoo.publish`, the table going onto the card.

The seed to publish is chosen by the caller before looking at the results (`--seed`, default 0), so the card's
spread is not that of a picked best run.

Example:
```python
from mtlzoo.bench.zoo_release import over_seeds
table = over_seeds("aggregator:aligned_mtl")  # markdown, from docs/results/methods/zoo
```
Shell: `python -m mtlzoo.bench.zoo_release --configuration aggregator:aligned_mtl --seed 0`.
"""

from __future__ import annotations

import argparse
import os
import sys

from mtlzoo.bench.claims_common import spread
from mtlzoo.bench.methods_table import baselines_of, delta_m_against

BUDGET = "zoo"
RESULTS = os.path.join("docs", "results", "methods")
MODELS = os.path.join("runs", "methods_models")


def _results(results_root=RESULTS):
    from mtlzoo.bench.methods import load_results

    return load_results(os.path.join(results_root, BUDGET))


def seeds_with_baselines(results, configuration) -> list:
    """The seeds that have `configuration` and a single-task result for each of its tasks."""
    out = []
    for r in results:
        if r["configuration"] == configuration:
            base = baselines_of(results, r["seed"])
            if all(t in base for t in r["metrics"]):
                out.append(r["seed"])
    return sorted(out)


def baselines_file(results, configuration, seed) -> dict:
    """The `mtlzoo-baselines/1` dict of one seed's single-task results (for `evaluate` and the zoo)."""
    from mtlzoo.evaluation import BASELINES_FORMAT

    mine = next((r for r in results if r["configuration"] == configuration and r["seed"] == seed), None)
    if mine is None:
        raise ValueError(f"No {BUDGET}-budget result of {configuration!r} at seed {seed}; train it with "
                         f"`python -m mtlzoo.bench.methods --budget {BUDGET} --methods 'single_task:*,{configuration}' "
                         f"--seeds {seed}`.")
    singles = {r["configuration"].split(":", 1)[1]: r for r in results if r["kind"] == "single_task"
               and r["seed"] == seed}
    missing = [t for t in mine["metrics"] if t not in singles]
    if missing:
        raise ValueError(f"Seed {seed} has no {BUDGET}-budget single-task result for {', '.join(missing)}; train it "
                         f"with `python -m mtlzoo.bench.methods --budget {BUDGET} --methods 'single_task:*' "
                         f"--seeds {seed}`.")
    recipe = mine["recipe"]
    tasks = {}
    for t in mine["metrics"]:
        r = singles[t]
        # The model path is relative to the baselines file's folder (`release` writes it beside the models).
        tasks[t] = {"metrics": r["metrics"][t], "details": {}, "model": f"../single_task-{t}__seed{seed}.keras",
                    "cost": {"params": r["params"], "flops": r["flops"], "step_time_s": r["inference_ms"] / 1000.0,
                             "batch_size": r["settings"]["batch_size"], "train_step_s": r["train_step_ms"] / 1000.0,
                             "train_total_s": r["train_s"]},
                    "epochs_run": r["epochs"], "stopped_reason": r["stopped_reason"]}
    return {"format": BASELINES_FORMAT, "recipe": recipe.get("name"), "data": recipe.get("data"), "seed": seed,
            "epochs": mine["epochs"], "tasks": tasks,
            "higher_is_better": {t: singles[t]["higher_is_better"][t] for t in mine["metrics"]},
            "evaluation_examples": mine["validation_examples"],
            "source": f"mtlzoo bench methods, budget {BUDGET}, seed {seed}"}


def over_seeds(configuration, results=None) -> str:
    """Markdown: each metric of the configuration and of the single-task models over seeds, and Δm per seed."""
    results = _results() if results is None else results
    seeds = seeds_with_baselines(results, configuration)
    if not seeds:
        return f"No seed has both {configuration} and its single-task baselines at the {BUDGET} budget yet."
    mine = {r["seed"]: r for r in results if r["configuration"] == configuration and r["seed"] in seeds}
    first = mine[seeds[0]]
    lines = [f"| task | metric | multi-task ({configuration}) | single-task |", "|---|---|---:|---:|"]
    for task, values in first["metrics"].items():
        for metric in values:
            arrow = "↑" if first["higher_is_better"][task][metric] else "↓"
            multi = spread([mine[s]["metrics"][task].get(metric) for s in seeds])
            single = spread([baselines_of(results, s)[task].get(metric) for s in seeds])
            lines.append(f"| {task} | {metric} {arrow} | " + " | ".join(
                "–" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}" for v in (multi, single)) + " |")
    deltas = {s: delta_m_against(mine[s]["metrics"], mine[s]["higher_is_better"], baselines_of(results, s))
              for s in seeds}
    total = spread([d[0] for d in deltas.values()])
    below = sum(1 for d in deltas.values() if d[0] is not None and d[0] < 0)
    per_seed = "; ".join(f"seed {s}: {d[0]:+.2f}% (" + ", ".join(f"{t} {v:+.1f}%" for t, v in d[1].items()) + ")"
                         for s, d in deltas.items() if d[0] is not None)
    return "\n".join(lines + ["", f"Δm over seeds {', '.join(map(str, seeds))}: **{total[0]:+.2f} ± {total[1]:.2f}%** "
                                  f"(mean ± std; below 0 in {below} of {len(seeds)}). Per seed: {per_seed}."])


def release(configuration, seed=0, name="driving_perception_lite", out_root=None, results_root=RESULTS,
            models_root=MODELS, overwrite=True, notes=()):
    """Writes the baselines file and publishes `configuration`'s model of `seed` with the spread over seeds."""
    from mtlzoo import zoo
    from mtlzoo.fileio import atomic_write_json

    results = _results(results_root)
    baselines = baselines_file(results, configuration, seed)
    model = os.path.join(models_root, BUDGET, f"{configuration.replace(':', '-')}__seed{seed}.keras")
    if not os.path.exists(model):
        raise FileNotFoundError(f"No saved model at {model}: the {BUDGET} budget saves every model under --models "
                                f"({models_root}); train it again there.")
    folder = os.path.join(models_root, BUDGET, f"baselines_seed{seed}")
    os.makedirs(folder, exist_ok=True)
    atomic_write_json(os.path.join(folder, "baselines.json"), baselines, indent=2)
    seeds = seeds_with_baselines(results, configuration)
    command = (f"python -m mtlzoo.bench.methods --budget {BUDGET} --methods 'single_task:*,{configuration}' "
               f"--seeds {','.join(map(str, seeds))}\npython -m mtlzoo.bench.zoo_release --configuration "
               f"{configuration} --seed {seed}")
    first = next(r for r in results if r["configuration"] == configuration and r["seed"] == seed)
    steps = first["steps"]
    budget = (f"{first['epochs']} epochs over {first['settings']['num_train']} rendered scenes ({steps} steps of batch "
              f"{first['settings']['batch_size']}), `{configuration}`, the recipe's own optimizer and schedule, the "
              f"last epoch's weights (no selection on validation data); seed {seed} is published, chosen before "
              f"training. {first['train_s'] / 60:.1f} minutes of training on 2 CPU cores.")
    section = ("## Over seeds\n\nThe same configuration and single-task models trained with seeds "
               f"{', '.join(map(str, seeds))} (`docs/results/methods/{BUDGET}/`), evaluated on the same validation "
               f"scenes:\n\n" + over_seeds(configuration, results))
    return zoo.publish(model, name, baselines=folder, command=command, budget=budget, out_root=out_root,
                       overwrite=overwrite, notes=notes, sections=[section])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mtlzoo.bench.zoo_release", description=__doc__.split("\n")[0])
    parser.add_argument("--configuration", default="aggregator:aligned_mtl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="driving_perception_lite")
    parser.add_argument("--out-root", default=None)
    parser.add_argument("--table-only", action="store_true", help="print the table over seeds, publish nothing")
    parser.add_argument("--note", action="append", default=[], help="an extra line for the card's Limits section")
    args = parser.parse_args(argv)
    if args.table_only:
        print(over_seeds(args.configuration))
        return 0
    try:
        path = release(args.configuration, args.seed, args.name, args.out_root, notes=args.note)
    except (ValueError, OSError) as e:
        print(f"python -m mtlzoo.bench.zoo_release: error: {e}", file=sys.stderr)
        return 2
    print(f"published {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
