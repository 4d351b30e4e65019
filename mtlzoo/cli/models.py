"""`mtlzoo recipes` and `mtlzoo build`: recipes and built models described."""

from __future__ import annotations


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
