"""Δm of a task grouping: the branched recipe `mtlzoo group` wrote, hard sharing and single-task models.

The grouping (the `groups` and `branch_stage` of a recipe with `sharing: branched`, or given directly) is
trained by the methods benchmark (`mtlzoo.bench.methods`) as the configuration `sharing:branched`, next to
`sharing:hard` and the `single_task:<task>` baselines, on the same budget, seeds, data and evaluation. The
groupings are given to it as recipe overrides (`sharing=branched`, `sharing_args={...}`), so every result
file records the `python -m mtlzoo.bench.methods ...` command that reproduces it. Results are resumable JSON
files under `RESULTS/<grouping>/<budget>/` (default `docs/results/grouping/`), one folder per grouping so
that results of different groupings never mix; the folder also receives the table (`table.md`) and the Δm
figure (`delta_m.png`).

Example:
```python
from mtlzoo.bench.grouping import run
run({"grouping": "lite_grouped.yaml", "budget": "smoke", "seeds": "0", "results": "/tmp/grouping"})
```
Shell: `python -m mtlzoo.bench.grouping lite_grouped.yaml --budget standard --seeds 0,1,2`.

Reference:
    Fifty et al., "Efficiently Identifying Task Groupings for Multi-Task Learning", NeurIPS 2021;
    Maninis et al., "Attentive Single-Tasking of Multiple Tasks", CVPR 2019 (Δm).
"""

from __future__ import annotations

import argparse
import os

from mtlzoo.bench import methods

CONFIGURATIONS = ("sharing:hard", "sharing:branched")
_DEFAULTS = {"grouping": None, "groups": None, "branch_stage": None, "budget": "standard", "seeds": "0,1,2",
             "recipe": methods.RECIPE, "results": os.path.join("docs", "results", "grouping"), "report": False,
             "verbose": 0}


def grouping_of(options) -> tuple:
    """(groups, branch_stage) from `options`: a recipe file's `sharing_args` (`grouping`) or `groups`."""
    from mtlzoo.recipe import get_recipe

    groups, stage = options.get("groups"), options.get("branch_stage")
    if options.get("grouping"):
        rec = get_recipe(options["grouping"])
        if rec.sharing != "branched":
            raise ValueError(f"{options['grouping']}: sharing is {rec.sharing!r}, not 'branched'; give the recipe "
                             "`mtlzoo group` wrote (or groups=... directly).")
        groups = groups or rec.sharing_args.get("groups")
        stage = rec.sharing_args.get("branch_stage") if stage is None else stage
    if not groups:
        raise ValueError("No grouping given: pass the recipe `mtlzoo group` wrote (grouping=FILE.yaml) or "
                         "groups=[[a, b], [c]].")
    return [list(g) for g in groups], (None if stage is None else int(stage))


def folder_name(groups, branch_stage) -> str:
    """`segmentation+depth__detection+scene__stage2`: the results folder of one grouping."""
    return "__".join("+".join(g) for g in groups) + ("" if branch_stage is None else f"__stage{branch_stage}")


def method_options(options) -> dict:
    """The `mtlzoo.bench.methods.run` options that train this grouping, hard sharing and the baselines."""
    import yaml

    from mtlzoo.recipe import get_recipe
    from mtlzoo.sharing.branched import check_groups

    opts = {**_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    unknown = [k for k in opts if k not in _DEFAULTS]
    if unknown:
        raise ValueError(f"grouping benchmark: unknown option {unknown[0]!r}; options: {', '.join(_DEFAULTS)}.")
    if isinstance(opts["groups"], str):
        opts["groups"] = yaml.safe_load(opts["groups"])
    groups, stage = grouping_of(opts)
    tasks = list(get_recipe(opts["recipe"]).tasks)
    used = [t for t in tasks if any(t in g for g in groups)]
    check_groups(groups, used)  # names every unknown task (with the near match) or a task in two groups
    overrides = {"sharing": "branched",
                 "sharing_args": {"groups": groups, **({} if stage is None else {"branch_stage": stage})}}
    if used != tasks:
        overrides = {"tasks": used, **overrides}
    folder = os.path.join(opts["results"], folder_name(groups, stage))
    out = {"budget": opts["budget"], "seeds": opts["seeds"], "methods": ",".join(CONFIGURATIONS),
           "recipe": opts["recipe"], "results": folder, "doc": os.path.join(folder, "table.md"),
           "figure": os.path.join(folder, "delta_m.png"), "overrides": overrides, "verbose": opts["verbose"],
           "report": bool(opts["report"])}
    if hasattr(methods, "single_task_model_path"):  # single-task models (for `_init` modes) stay here too
        out["models"] = os.path.join(folder, "models")
    return out


def run(options) -> dict:
    """Trains what is missing (grouping, hard sharing, single-task baselines), then prints Δm of both.

    Args:
        options: dict: `grouping` (recipe file with `sharing: branched`) or `groups` (list of lists, or
            its YAML text) with optional `branch_stage`; `budget` (`standard`, `smoke`), `seeds`
            ("0,1,2"), `recipe` (default `driving_perception_lite`), `results` (root folder), `report`
            (only rebuild the table), `verbose`.

    Returns:
        The `mtlzoo.bench.methods.run` result plus `delta_m`: {configuration: (mean, std, seeds)}.
    """
    opts = method_options(options)
    print(f"== grouping benchmark: {opts['overrides']['sharing_args']} against hard sharing and single-task "
          f"models, into {opts['results']}", flush=True)
    out = methods.run(opts)
    rows = {r["configuration"]: r for r in out.get("rows", [])}
    out["delta_m"] = {name: rows[name]["delta_m"] for name in CONFIGURATIONS if name in rows}
    for name in CONFIGURATIONS:
        spread = out["delta_m"].get(name)
        text = "no result yet" if spread is None else (f"Δm {spread[0]:+.2f}%" + (
            "" if spread[1] is None else f" ± {spread[1]:.2f}") + f" over {spread[2]} seeds")
        label = "grouping (branched)" if name == "sharing:branched" else "hard sharing"
        print(f"  {label:20s} {text}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mtlzoo.bench.grouping", description=__doc__.splitlines()[0])
    parser.add_argument("grouping", nargs="?", help="recipe file written by `mtlzoo group` (sharing: branched)")
    parser.add_argument("--groups", help="the groups instead of a file, as YAML: '[[segmentation, depth], [scene]]'")
    parser.add_argument("--branch-stage", dest="branch_stage", type=int)
    parser.add_argument("--budget", choices=sorted(methods.BUDGETS))
    for name in ("seeds", "recipe", "results"):
        parser.add_argument(f"--{name}", help=f"default {_DEFAULTS[name]}")
    parser.add_argument("--report", action="store_true", help="only rebuild the table and figure")
    parser.add_argument("--verbose", type=int)
    return 1 if run(vars(parser.parse_args(argv)))["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
