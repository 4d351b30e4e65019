"""The `train`, `evaluate` and `baselines` subcommands of the `mtlzoo` command line, and the demo.

```
mtlzoo train RECIPE [key=value ...] [--epochs N] [--out DIR] [--overwrite] [--data-dir DIR]
             [--strategy mirrored|multi_worker|one_device|tpu] [--cpu-replicas N]
mtlzoo evaluate MODEL --data NAME [--baselines PATH] [--split S] [--num-examples N]
mtlzoo baselines RECIPE [key=value ...] [--epochs N] [--out DIR] [--data-dir DIR]
```

`register(subparsers)` adds them to an argparse parser; each sets
`func=...` returning an exit code (0 success, 1 training stopped on
non-finite losses, 2 bad input). `run_demo(out_dir)` is the body of
`make demo`.

Example:
```python
from mtlzoo.cli import training as cli_training
result = cli_training.run_demo("demo_out")
result.model_path, result.validation_data
```
"""

from __future__ import annotations

import os
import sys
import time
from typing import NamedTuple

__all__ = [
    "add_strategy_arguments",
    "allow_intermixed",
    "cmd_baselines",
    "cmd_evaluate",
    "cmd_train",
    "DEMO_SETTINGS",
    "DemoResult",
    "prepare_strategy",
    "register",
    "run_demo",
]


def _overrides(args):
    from mtlzoo.recipe import parse_cli_overrides

    overrides = parse_cli_overrides(getattr(args, "overrides", None) or [])
    if getattr(args, "data_dir", None):
        overrides["data.data_dir"] = args.data_dir
    return overrides


def _error(command, error):
    print(f"mtlzoo {command}: error: {error}", file=sys.stderr)
    return 2


def _final_line(history):
    keys = [k for k in history if k.endswith("_loss") or k == "loss"]
    return ", ".join(f"{k} {history[k][-1]:.4g}" for k in sorted(keys) if history[k])


def prepare_strategy(args, command):
    """Checks `--strategy` and applies `--cpu-replicas` before TensorFlow starts its devices.

    Returns the strategy name (or None) for `mtlzoo.train` / `mtlzoo.tuning.tune`;
    raises ValueError naming the problem and the fix.
    """
    from mtlzoo import distribute

    strategy = getattr(args, "strategy", None)
    replicas = getattr(args, "cpu_replicas", None)
    if strategy is not None:
        distribute.check_strategy(strategy)
    if replicas is not None:
        if replicas < 1:
            raise ValueError(f"--cpu-replicas must be >= 1, got {replicas}.")
        if strategy is None:
            raise ValueError(f"--cpu-replicas {replicas} splits the CPU for a distribution strategy: "
                             f"add --strategy mirrored ({command} without a strategy uses one device).")
        distribute.use_logical_cpus(replicas)
    return strategy


def cmd_train(args):
    """`mtlzoo train`: trains a recipe into `--out`.

    An interrupted run there resumes, a finished run of the same recipe continues to `--epochs`, a run of
    a different recipe is refused (exit 2, naming the changed keys) unless `--overwrite`.
    """
    from mtlzoo.data.splits import DataCheckError
    from mtlzoo.training import train

    overrides = _overrides(args)
    out = args.out or os.path.join("runs", os.path.splitext(os.path.basename(args.recipe))[0])
    try:
        strategy = prepare_strategy(args, "train")
        result = train(args.recipe, epochs=args.epochs, out_dir=out, seed=args.seed, strategy=strategy,
                       steps_per_epoch=args.steps_per_epoch, verbose=args.verbose,
                       overwrite=getattr(args, "overwrite", False), **overrides)
    except (DataCheckError, ValueError) as e:
        return _error("train", e)
    if strategy is not None:
        print(f"strategy {strategy}: {result.model.distribute_strategy.num_replicas_in_sync} replica(s) in sync")
    print(f"trained {result.recipe.name}: {len(next(iter(result.history.values()), []))} epochs "
          f"({result.timing.get('train_step_s', float('nan')) * 1000:.0f} ms/step); {_final_line(result.history)}")
    print(f"files in {out}: best.keras, last.keras, history.csv, logs/ "
          f"(tensorboard --logdir {os.path.join(out, 'logs')})")
    if result.stopped_reason:
        print(f"stopped early: {result.stopped_reason}", file=sys.stderr)
        return 1
    return 0


def cmd_evaluate(args):
    """`mtlzoo evaluate`: per-task metrics, Δm against baselines and cost of a saved model."""
    from mtlzoo.evaluation import evaluate
    from mtlzoo.data.splits import DataCheckError

    try:
        report = evaluate(args.model, args.data, baselines=args.baselines, split=args.split,
                          num_examples=args.num_examples, batch_size=args.batch_size, data_dir=args.data_dir,
                          max_batches=args.max_batches)
    except DataCheckError as e:
        return _error("evaluate", e)
    print(report.table())
    if args.json:
        report.to_json(args.json)
        print(f"report written to {args.json}")
    return 0


def cmd_baselines(args):
    """`mtlzoo baselines`: trains one single-task model per task and writes baselines.json."""
    from mtlzoo.evaluation import baselines
    from mtlzoo.recipe import get_recipe
    from mtlzoo.data.splits import DataCheckError

    recipe = get_recipe(args.recipe, **_overrides(args))
    out = args.out or os.path.join("baselines", os.path.splitext(os.path.basename(args.recipe))[0])
    try:
        stored = baselines(recipe, epochs=args.epochs, out_dir=out, tasks=args.tasks,
                           num_examples=args.num_examples, steps_per_epoch=args.steps_per_epoch,
                           verbose=args.verbose)
    except DataCheckError as e:
        return _error("baselines", e)
    rows = []
    for task, entry in stored["tasks"].items():
        values = ", ".join(f"{k} {v:.4f}" if v is not None else f"{k} -" for k, v in entry["metrics"].items())
        rows.append(f"  {task}: {values}; {entry['cost']['params']:,} params")
    print(f"single-task baselines of {stored['recipe']} ({stored.get('epochs')} epochs) in {out}/baselines.json")
    print("\n".join(rows))
    return 0


def _verbose(value):
    return value if value == "auto" else int(value)


def allow_intermixed(parser):
    """Lets `key=value` overrides come after the options (`mtlzoo tune R --trials 5 a=b`).

    argparse's subparser action calls `parse_known_args`, which ends the
    positional `overrides` at the first option; route it through
    `parse_known_intermixed_args` instead (which itself calls
    `parse_known_args`, hence the re-entrancy flag).
    """
    import argparse

    state = {"inside": False}

    def parse_known_args(args=None, namespace=None):
        if state["inside"]:
            return argparse.ArgumentParser.parse_known_args(parser, args, namespace)
        state["inside"] = True
        try:
            return argparse.ArgumentParser.parse_known_intermixed_args(parser, args, namespace)
        finally:
            state["inside"] = False

    parser.parse_known_args = parse_known_args


def add_strategy_arguments(parser):
    """Adds `--strategy` and `--cpu-replicas` (shared by `train` and `tune`)."""
    parser.add_argument("--strategy", default=None,
                        help="tf.distribute strategy: mirrored, multi_worker (reads TF_CONFIG), one_device or tpu "
                        "(default: none, one device)")
    parser.add_argument("--cpu-replicas", type=int, default=None,
                        help="split the CPU into N logical devices so that --strategy mirrored runs N replicas "
                        "without accelerators (testing distribution on one machine)")


def register(subparsers):
    """Adds the `train`, `evaluate` and `baselines` subcommands to an argparse subparsers object.

    Args:
        subparsers: the object returned by `parser.add_subparsers()`.

    Example:
    ```python
    import argparse
    from mtlzoo.cli import training as cli_training
    parser = argparse.ArgumentParser(prog="mtlzoo")
    cli_training.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", "tabular_demo", "--epochs", "1"])
    ```
    """
    p = subparsers.add_parser("train", help="train a recipe (logs, checkpoints, resumes an interrupted run)")
    p.add_argument("recipe", help="recipe name or YAML path")
    p.add_argument("overrides", nargs="*", help="key=value recipe overrides (dotted for nested keys)")
    p.add_argument("--epochs", type=int, help="number of epochs (default: training.epochs of the recipe)")
    p.add_argument("--out", help="output folder (default runs/RECIPE); rerun with the same one to resume, or with "
                   "more --epochs to continue a finished run")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a run already in --out (deletes only the files mtlzoo wrote there)")
    p.add_argument("--data-dir", help="dataset folder (data.data_dir)")
    p.add_argument("--steps-per-epoch", type=int, help="batches per epoch (the data is repeated)")
    p.add_argument("--seed", type=int, help="seed for weights and data order (default: the recipe's)")
    p.add_argument("--verbose", type=_verbose, default="auto", help="0, 1 or 2 as for Keras fit")
    add_strategy_arguments(p)
    p.set_defaults(func=cmd_train)
    allow_intermixed(p)

    p = subparsers.add_parser("evaluate", help="per-task metrics, delta_m against baselines, and cost")
    p.add_argument("model", help=".keras file or a train --out folder")
    p.add_argument("--data", help="dataset name (default: the one in the model's recipe)")
    p.add_argument("--baselines", help="baselines.json (or its folder) written by `mtlzoo baselines`")
    p.add_argument("--split", default="validation", help="split to evaluate (default validation)")
    p.add_argument("--num-examples", type=int, help="examples to evaluate (default: the whole split)")
    p.add_argument("--batch-size", type=int, help="batch size (default: the recipe's)")
    p.add_argument("--data-dir", help="dataset folder")
    p.add_argument("--max-batches", type=int, help="stop after this many batches")
    p.add_argument("--json", help="also write the report as JSON to this file")
    p.set_defaults(func=cmd_evaluate)

    p = subparsers.add_parser("baselines", help="train one single-task model per task and store their metrics")
    p.add_argument("recipe", help="recipe name or YAML path")
    p.add_argument("overrides", nargs="*", help="key=value recipe overrides (dotted for nested keys)")
    p.add_argument("--epochs", type=int, help="number of epochs (default: the recipe's, the same budget)")
    p.add_argument("--out", help="output folder (default baselines/RECIPE)")
    p.add_argument("--tasks", nargs="+", help="only these tasks (default: all)")
    p.add_argument("--data-dir", help="dataset folder (data.data_dir)")
    p.add_argument("--num-examples", type=int, help="evaluation examples (default: the whole split)")
    p.add_argument("--steps-per-epoch", type=int, help="batches per epoch (the data is repeated)")
    p.add_argument("--verbose", type=_verbose, default="auto", help="0, 1 or 2 as for Keras fit")
    p.set_defaults(func=cmd_baselines)
    allow_intermixed(p)
    return subparsers


class DemoResult(NamedTuple):
    """What `run_demo` returns.

    Attributes:
        model_path: str. The trained model (`.keras`, lowest validation loss).
        validation_data: `tf.data.Dataset` of (image, labels) batches of the
            demo's validation split, at the model's input size.
        report: the `EvaluationReport` printed by the demo.
    """

    model_path: str
    validation_data: object
    report: object


DEMO_SETTINGS = {
    "recipe": "driving_perception_lite",
    "image_size": (128, 256),
    "num_train": 192,
    "num_validation": 48,
    "batch_size": 16,
    "epochs": 3,
}


def run_demo(out_dir="demo_out", verbose=2, step_total=3, **settings):
    """The end-to-end demo: data, training, evaluation, in about two to three minutes on 2 CPU cores.

    Steps: renders a small `synthetic_driving` dataset into tfds files under
    `out_dir/data`; trains `driving_perception_lite` (MobileNetV3-Small, four
    tasks, 128×256) briefly into `out_dir/run` (TensorBoard logs, CSV
    history, checkpoints); evaluates it on the validation split and prints
    the per-task table.

    Args:
        out_dir: str. Output folder. Defaults to "demo_out".
        verbose: int. Keras progress output (2: one line per epoch).
        step_total: int. The N of the "== k/N" step headers it prints (a
            caller that appends steps passes its own total). Defaults to 3.
        **settings: replace entries of `DEMO_SETTINGS` (`recipe`,
            `image_size`, `num_train`, `num_validation`, `batch_size`,
            `epochs`).

    Returns:
        A `DemoResult(model_path, validation_data, report)`.

    Example:
    ```python
    from mtlzoo.cli.training import run_demo
    model_path, validation_data, report = run_demo("demo_out")
    ```
    """
    from mtlzoo.data.synthetic_driving import prepare
    from mtlzoo.evaluation import evaluate
    from mtlzoo.data.splits import load_split
    from mtlzoo.training import train

    unknown = set(settings) - set(DEMO_SETTINGS)
    if unknown:
        raise TypeError(f"run_demo: unknown settings {sorted(unknown)}; known: {sorted(DEMO_SETTINGS)}.")
    s = {**DEMO_SETTINGS, **settings}
    height, width = s["image_size"]
    data_dir = os.path.join(out_dir, "data")
    sizes = {"train": s["num_train"], "validation": s["num_validation"], "test": s["num_validation"]}
    start = time.perf_counter()
    print(f"== 1/{step_total} data: rendering synthetic_driving {height}x{width} "
          f"({sizes['train']} train, {sizes['validation']} validation) into {data_dir}")
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    prepare(data_dir, image_size=(height, width), seed=0, split_sizes=sizes)
    print(f"   done in {time.perf_counter() - start:.0f} s")

    print(f"== 2/{step_total} training {s['recipe']} for {s['epochs']} epochs into {os.path.join(out_dir, 'run')}")
    data = {"name": "synthetic_driving", "data_dir": data_dir, "split_sizes": sizes}
    # overwrite: each demo is a new run, whatever an earlier demo left in the folder.
    result = train(s["recipe"], epochs=s["epochs"], out_dir=os.path.join(out_dir, "run"), verbose=verbose,
                   input_shape=(height, width, 3), data=data, overwrite=True,
                   **{"training.batch_size": s["batch_size"]})
    print(f"   done in {time.perf_counter() - start:.0f} s "
          f"({result.timing.get('train_step_s', float('nan')) * 1000:.0f} ms per training step)")

    print(f"== 3/{step_total} evaluation on the validation split")
    model_path = result.best_path or result.last_path
    report = evaluate(model_path, data, batch_size=s["batch_size"])
    print(report.table())
    validation = load_split(data, "validation", image_size=(height, width), batch_size=s["batch_size"],
                            tasks=list(result.recipe.tasks), training=False)
    print(f"   data, training and evaluation done in {time.perf_counter() - start:.0f} s; model: {model_path}; "
          f"TensorBoard: tensorboard --logdir {os.path.join(out_dir, 'run', 'logs')}")
    return DemoResult(model_path, validation, report)
