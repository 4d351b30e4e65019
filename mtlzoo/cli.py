"""The `mtlzoo` command line: `mtlzoo COMMAND [RECIPE] [key=value ...]`.

Each subcommand parses its own arguments; recipe settings are given as
`key=value` overrides (dotted for nested keys), validated like the recipe.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _table(rows, headers):
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    line = lambda r: "  ".join(str(v).ljust(w) if i == 0 else str(v).rjust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _fmt_count(n):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def cmd_recipes(args):
    import mtlzoo
    from mtlzoo.flops import count_flops

    rows = []
    for name in mtlzoo.list_recipes(args.pattern):
        recipe = mtlzoo.get_recipe(name)
        row = [name, ",".join(recipe.tasks), recipe.backbone, recipe.sharing, "x".join(map(str, recipe.input_shape))]
        if not args.no_build:
            model = recipe.build(compile=False)
            row += [_fmt_count(model.count_params()), _fmt_count(count_flops(model))]
        rows.append(row)
    headers = ["recipe", "tasks", "backbone", "sharing", "input"] + ([] if args.no_build else ["params", "FLOPs"])
    print(_table(rows, headers))
    return 0


def describe_model(model):
    """Per-task parameter table (shared vs task-specific) and totals."""
    from mtlzoo.flops import count_flops

    summary = model.parameter_summary()
    rows = [["shared", _fmt_count(summary["shared"]), "trunk, neck, cross-stitch units"]]
    for t in model.task_names:
        kind = model.tasks[t]["kind"]
        shape = "x".join(str(d) for d in model.output[t].shape[1:])
        rows.append([t, _fmt_count(summary[t]), f"{kind} head, output {shape}"])
    own = summary["total"] - summary["shared"] - sum(summary[t] for t in model.task_names)
    rows.append(["total", _fmt_count(summary["total"]), f"incl. {own} model-level (loss weights, ...)"])
    text = _table(rows, ["part", "params", "what"])
    return text + f"\nFLOPs per example: {_fmt_count(count_flops(model))}; loss weights: {model.get_loss_weights()}"


def cmd_build(args):
    import mtlzoo
    from mtlzoo.recipe import parse_cli_overrides

    overrides = parse_cli_overrides(args.overrides)
    model = mtlzoo.build(args.recipe, **overrides)
    print(f"recipe {args.recipe!r}: {model.name}, sharing={model.metadata['recipe']['sharing']}, "
          f"backbone={model.metadata['recipe']['backbone']}, input {tuple(model.input_shape[1:])}")
    print(describe_model(model))
    if args.save:
        model.save(args.save)
        print(f"saved to {args.save}")
    return 0


def cmd_demo(args):
    import mtlzoo

    print("== mtlzoo demo: build the default recipe ==")
    model = mtlzoo.build("driving_perception")
    print(describe_model(model))
    return 0


BENCHMARKS = ("data", "step", "latency", "scale", "quality")


def cmd_bench(args):
    import importlib

    from mtlzoo.recipe import parse_cli_overrides

    names = BENCHMARKS if args.name == "all" else (args.name,)
    options = parse_cli_overrides(args.options)
    for name in names:
        module = importlib.import_module(f"mtlzoo.bench.{name}")
        print(f"== mtlzoo bench {name} ==")
        module.run(dict(options))
    return 0


def cmd_diagnose(args):
    from mtlzoo.diagnostics import run_diagnose

    return run_diagnose(args)


def make_parser():
    parser = argparse.ArgumentParser(prog="mtlzoo", description="Multi-task learning model zoo (Keras 3).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("recipes", help="table of recipes with tasks, params and FLOPs")
    p.add_argument("pattern", nargs="?", default="*", help="shell pattern on recipe names")
    p.add_argument("--no-build", action="store_true", help="skip building (no params/FLOPs)")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("build", help="build a recipe and print shared vs task-specific parameters")
    p.add_argument("recipe", help="recipe name or YAML path")
    p.add_argument("overrides", nargs="*", help="key=value recipe overrides (e.g. sharing=cross_stitch)")
    p.add_argument("--save", help="also save the model to this .keras file")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("bench", help="benchmarks, measured side by side: " + ", ".join(BENCHMARKS))
    p.add_argument("name", choices=BENCHMARKS + ("all",))
    p.add_argument("options", nargs="*", help="key=value options of the benchmark (e.g. steps=5 rounds=3)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("diagnose", help="negative-transfer report: gradient conflict, task affinity, loss weights")
    p.add_argument("recipe", help="recipe name or YAML path")
    p.add_argument("overrides", nargs="*", help="key=value recipe overrides (e.g. weighting=dwa)")
    p.add_argument("--out", default="diagnose_out", help="report folder")
    p.add_argument("--epochs", type=int, default=3, help="training epochs")
    p.add_argument("--steps", type=int, default=20, help="training steps per epoch")
    p.set_defaults(func=cmd_diagnose)

    p = sub.add_parser("demo", help="the end-to-end demo on built-in synthetic data")
    p.add_argument("--out", default="demo_out", help="output folder")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    from mtlzoo.recipe import RecipeError
    from mtlzoo.registry import UnknownNameError

    try:
        return args.func(args)
    except (RecipeError, UnknownNameError, FileNotFoundError) as e:
        print(f"mtlzoo {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
