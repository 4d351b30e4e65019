"""`mtlzoo group RECIPE`: which tasks should share a trunk? Measures lookahead affinity, writes a branched recipe.

Hooked into the `mtlzoo` command by `register(subparsers)` from `mtlzoo.cli`.

Example:
```
mtlzoo group driving_perception_lite --steps 120 --out lite_grouped.yaml
mtlzoo train lite_grouped.yaml
python -m mtlzoo.bench.grouping lite_grouped.yaml --budget standard --seeds 0,1,2   # Δm vs hard, single-task
```
"""

from __future__ import annotations

import datetime
import os

import yaml


def register(sub):
    """Adds the `group` command to the `mtlzoo` subparsers."""
    p = sub.add_parser("group", help="task grouping: measure lookahead task affinity, write a branched recipe")
    p.add_argument("recipe", help="recipe name or YAML path")
    p.add_argument("--steps", type=int, default=60, help="training steps of the affinity run (default 60)")
    p.add_argument("--measurements", type=int, default=5,
                   help="affinity measurements spread over the run, averaged (default 5)")
    p.add_argument("--k", type=int, default=None,
                   help="number of groups to write (default: the best score; fewer groups on a tie)")
    p.add_argument("--branch-stage", type=int, default=None,
                   help="backbone stage where the group branches start (default: 2, or 0 for a one-stage mlp)")
    p.add_argument("--out", default=None, help="recipe file to write (default: RECIPENAME_grouped.yaml)")
    p.add_argument("--override", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="recipe override for the affinity run and the written recipe (e.g. input_shape=[64,128,3])")
    p.set_defaults(func=cmd_group)


def _plain(value):
    """A YAML-safe copy: tuples become lists, NumPy scalars numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def _groups_text(groups):
    return " ".join("[" + ", ".join(g) + "]" for g in groups)


def cmd_group(args):
    """Runs the affinity training, prints the matrix and the best grouping for every k, writes the recipe."""
    from mtlzoo import fileio
    from mtlzoo.diagnostics.grouping import (best_groupings, choose_grouping, format_matrix, group_recipe,
                                             measure_affinity)
    from mtlzoo.recipe import get_recipe, parse_cli_overrides

    overrides = parse_cli_overrides(args.overrides or [])
    source = get_recipe(args.recipe, **overrides)
    if args.k is not None and not 1 <= args.k <= len(source.tasks):
        raise ValueError(f"--k must be in [1, {len(source.tasks)}] (recipe {source.name!r} has "
                         f"{len(source.tasks)} tasks), got {args.k}.")
    out = args.out or f"{source.name}_grouped.yaml"
    if not out.endswith((".yaml", ".yml")):
        raise ValueError(f"--out must name a .yaml file (it is a recipe), got {out!r}.")
    # Checked before the training, so that a bad --branch-stage fails at once.
    group_recipe(source, [list(source.tasks)], args.branch_stage)
    print(f"mtlzoo group {source.name}: tasks {', '.join(source.tasks)}; training with hard sharing for "
          f"{args.steps} steps, affinity measured {args.measurements} times", flush=True)
    measured = measure_affinity(source, steps=args.steps, measurements=args.measurements)
    tasks = measured.tasks
    print("\nlookahead affinity Z(i -> j) = 1 - L_j(after a step on L_i) / L_j (positive: i helps j), "
          f"mean of {len(measured.history)} measurements over {measured.steps} steps:")
    print(format_matrix(measured.matrix, tasks))
    groupings = best_groupings(measured.matrix, tasks)
    chosen = choose_grouping(groupings, args.k)
    how = f"--k {args.k}" if args.k is not None else "best score"
    print(f"\nbest split into k groups (score: sum over tasks of the mean affinity received from its group; "
          f"{groupings[0].method} search):")
    for g in groupings:
        mark = f"   <- written ({how})" if g is chosen else ""
        print(f"  k={g.k}  score {g.score:+.4g}  {_groups_text(g.groups)}{mark}")
    recipe = group_recipe(source, chosen.groups, args.branch_stage)
    header = [
        f"Written by `mtlzoo group {args.recipe}` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
        f" ({measured.steps} steps of hard-sharing training, {len(measured.history)} affinity measurements).",
        f"Chosen ({how}): k={chosen.k}, score {chosen.score:+.4g}: {_groups_text(chosen.groups)}.",
        "Best split for every k:",
        *[f"  k={g.k}  score {g.score:+.4g}  {_groups_text(g.groups)}" for g in groupings],
        "Affinity Z(i -> j), rows: step on task i, columns: loss of task j:",
        *["  " + line for line in format_matrix(measured.matrix, tasks).splitlines()],
    ]
    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(_plain(recipe.to_dict()), sort_keys=False)
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    fileio.atomic_write_text(out, text)
    print(f"\nwrote {out}: sharing branched, groups {_groups_text(chosen.groups)}, branch_stage "
          f"{recipe.sharing_args['branch_stage']}")
    print(f"train it: mtlzoo train {out}")
    print(f"Δm against hard sharing and single-task models: python -m mtlzoo.bench.grouping {out} "
          "--budget standard --seeds 0,1,2")
    return 0
