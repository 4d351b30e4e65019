"""`mtlzoo tune RECIPE [key=value ...]`: hyperparameter search of a recipe's loss weights (and more).

Hooked into the `mtlzoo` command by `register(subparsers)` from `mtlzoo.cli`.

Example:
```
mtlzoo tune driving_perception_lite --tuner bayesian --trials 20 --epochs 3 --out tuning \\
    --search-weighting fixed,dwa --search-aggregator none,pcgrad data.num_examples=256
mtlzoo train tuning/best_recipe.yaml
```
Running the same command again with the same `--out` resumes the search
(`--overwrite` starts over). For keras-tuner's distributed search, start the
same command in every process with `KERASTUNER_TUNER_ID` (`chief`, `tuner0`,
...), `KERASTUNER_ORACLE_IP` and `KERASTUNER_ORACLE_PORT` set.
"""

from __future__ import annotations

import json
import os
import sys

from mtlzoo.cli import training as cli_training


def _names(value):
    """"a,b" -> ["a", "b"]; "all" -> True; "" / None -> False."""
    if value is None or value == "":
        return False
    if value.strip().lower() in ("all", "true", "default"):
        return True
    return [v.strip() for v in value.split(",") if v.strip()]


def _range(value):
    parts = value.replace(":", ",").split(",")
    if len(parts) != 2:
        raise ValueError(f"--weight-range must look like LOW,HIGH (e.g. 0.01,10), got {value!r}.")
    return float(parts[0]), float(parts[1])


def _baselines(value):
    if value is None:
        return None
    text = open(value).read() if os.path.isfile(value) else value
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--baselines must be a JSON file or string {{task: {{metric: value}}}}: {e}") from None
    if isinstance(data, dict) and "baselines" in data:
        return data["baselines"], data.get("higher_is_better")
    return data, None


def cmd_tune(args):
    """Runs `mtlzoo.tuning.tune` from parsed arguments; prints the table and the best recipe path."""
    import keras_tuner as kt

    from mtlzoo.recipe import parse_cli_overrides
    from mtlzoo.tuning import tune

    try:
        overrides = parse_cli_overrides(args.overrides)
        objective = args.objective
        if args.direction:
            objective = kt.Objective(objective, args.direction)
        baselines = _baselines(args.baselines)
        baselines, higher_is_better = baselines if baselines else (None, None)
        result = tune(
            args.recipe,
            tuner=args.tuner,
            trials=args.trials,
            directory=args.out,
            project_name=args.project,
            objective=objective,
            strategy=cli_training.prepare_strategy(args, "tune"),
            baselines=baselines,
            higher_is_better=higher_is_better,
            search_weights=None if args.weights == "none" else args.weights,
            weight_range=_range(args.weight_range),
            search_weighting=_names(args.search_weighting),
            search_aggregator=_names(args.search_aggregator),
            search_sharing=_names(args.search_sharing),
            epochs=args.epochs,
            overwrite=args.overwrite,
            tuner_seed=args.tuner_seed,
            out_dir=args.out,
            verbose=args.verbose,
            **overrides,
        )
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"mtlzoo tune: error: {e}", file=sys.stderr)
        return 2
    if result.role == "worker":
        print("mtlzoo tune: worker finished its trials.")
        return 0
    print(open(result.table_md).read())
    print(f"best: trial score {result.objective.name}={result.best_score:.6g}")
    print(f"best recipe: {result.best_recipe_path}   (train it: mtlzoo train {result.best_recipe_path})")
    print(f"table: {result.table_csv}, {result.table_md}; plot: {result.plot}")
    return 0


def register(subparsers):
    """Adds the `tune` subcommand to an argparse subparsers object.

    Example:
    ```python
    sub = parser.add_subparsers(dest="command")
    mtlzoo.cli.tune.register(sub)
    ```
    """
    p = subparsers.add_parser(
        "tune",
        help="search loss weights (and weighting / aggregator / sharing) of a recipe with keras-tuner",
        description="Hyperparameter search of a recipe. Writes tuning_results.csv/.md, tuning_plot.png and "
        "best_recipe.yaml to --out; rerun with the same --out to resume.",
    )
    p.add_argument("recipe", help="recipe name or YAML path")
    p.add_argument("overrides", nargs="*", help="key=value recipe overrides (e.g. data.num_examples=256)")
    p.add_argument("--tuner", default="bayesian", help="random, bayesian or hyperband (default: bayesian)")
    p.add_argument("--trials", type=int, default=10, help="number of trials (random, bayesian); default 10")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: the recipe's)")
    p.add_argument("--out", default="tuning", help="working and output folder (default: tuning)")
    p.add_argument("--project", default=None, help="project name inside --out (default: RECIPE_TUNER)")
    p.add_argument("--objective", default="val_norm_loss",
                   help="val_norm_loss (default), val_delta_m or a logged metric")
    p.add_argument("--direction", choices=("min", "max"), default=None, help="direction of a custom objective")
    p.add_argument("--baselines", default=None, help="JSON file or string {task: {metric: value}} for val_delta_m")
    p.add_argument("--weights", default="log_uniform", choices=("log_uniform", "simplex", "none"),
                   help="how loss weights are searched (default: log_uniform)")
    p.add_argument("--weight-range", default="0.01,10", help="LOW,HIGH of the loss weights (default: 0.01,10)")
    p.add_argument("--search-weighting", default=None, help="weighting methods to try: a,b,c or 'all'")
    p.add_argument("--search-aggregator", default=None,
                   help="aggregators to try (none = plain gradients): a,b or 'all'")
    p.add_argument("--search-sharing", default=None, help="sharing modes to try: hard,cross_stitch,soft_l2 or 'all'")
    cli_training.add_strategy_arguments(p)
    p.add_argument("--tuner-seed", type=int, default=None, help="seed of the tuner's draws (the recipe's is seed=N)")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    p.add_argument("--verbose", type=int, default=1, help="keras-tuner verbosity (default 1)")
    p.set_defaults(func=cmd_tune)
    cli_training.allow_intermixed(p)
    return p
