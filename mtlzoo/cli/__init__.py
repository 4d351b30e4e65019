"""The `mtlzoo` command line: `mtlzoo COMMAND [RECIPE] [key=value ...]`.

Each subcommand parses its own arguments; recipe settings are given as
`key=value` overrides (dotted for nested keys), validated like the recipe.

An expected failure (a missing, truncated or corrupt file, a bad option, an
output folder that cannot be written, an untrusted SavedModel, ...) prints one
line, `mtlzoo COMMAND: error: ...`, naming the file or option, and exits 2;
`--debug` (before or after the command) shows the full traceback instead.
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
    """Data -> training -> evaluation (run_demo), then export -> LiteRT int8 -> prediction picture."""
    import time

    import numpy as np

    import mtlzoo
    from mtlzoo.cli_training import run_demo

    start = time.perf_counter()
    model_path, validation, _ = run_demo(args.out, step_total=4)
    print("== 4/4 deployment: TFLite float32 + int8 (verified against Keras), LiteRT run, prediction picture")
    model = mtlzoo.load(model_path, compile=False)
    export_dir = os.path.join(args.out, "export")
    result = mtlzoo.export(model, export_dir, formats=["tflite", "tflite_int8"], representative_data=validation,
                           overwrite=True)
    for fmt, path in result.paths.items():
        print(f"   {fmt:<12} {path} ({os.path.getsize(path) / 1e6:.2f} MB)" if os.path.isfile(path) else f"   {fmt:<12} {path}")
    print((result.out_dir / "verification.md").read_text())
    runner = mtlzoo.edge.load(result.paths["tflite_int8"])
    image = np.asarray(next(iter(validation))[0][0])
    outputs = runner(image[None])
    print(f"   LiteRT ({runner.backend}) int8 outputs: " + ", ".join(f"{t} {tuple(v.shape)}" for t, v in outputs.items()))
    from mtlzoo.predict import predict_image

    picture = os.path.join(args.out, "prediction.png")
    predict_image(runner, image, picture)
    print(f"== demo done in {time.perf_counter() - start:.0f} s: picture {picture}, exports in {export_dir}")
    return 0


BENCHMARKS = ("data", "step", "latency", "scale", "quality", "methods")
# `mtlzoo bench all`: the ones that finish in minutes (methods takes hours; it resumes, run it by name).
QUICK_BENCHMARKS = ("data", "step", "latency", "scale", "quality")


def cmd_bench(args):
    import importlib

    from mtlzoo.recipe import parse_cli_overrides

    names = QUICK_BENCHMARKS if args.name == "all" else (args.name,)
    options = parse_cli_overrides(args.options)
    for name in names:
        module = importlib.import_module(f"mtlzoo.bench.{name}")
        print(f"== mtlzoo bench {name} ==")
        module.run(dict(options))
    return 0


def cmd_diagnose(args):
    from mtlzoo.diagnostics import run_diagnose

    return run_diagnose(args)


def _representative_data(model, args):
    """Calibration/verification batches for `mtlzoo export`: the recipe's dataset (validation split) or random vectors."""
    import numpy as np

    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3:
        return np.random.default_rng(0).normal(size=(args.num_calibration,) + shape).astype("float32")
    import mtlzoo.data

    recipe = (getattr(model, "metadata", None) or {}).get("recipe") or {}
    name = args.data or (recipe.get("data") or {}).get("name") or "synthetic_driving"
    options = {"tasks": [t for t in model.task_names if t in mtlzoo.data.TASKS]} if name == "synthetic_driving" else {}
    return mtlzoo.data.load(name, split="validation", batch_size=8, image_size=shape[:2],
                            num_examples=args.num_calibration, data_dir=args.data_dir, **options)


def _load_any(source, overrides=(), trusted=False):
    """A Keras model from a .keras file or a recipe; an edge runner for .tflite files and export folders."""
    import mtlzoo

    source = str(source)
    if source.endswith(".keras") or (source.startswith("zoo:") and not source.endswith(".tflite")):
        return mtlzoo.load(source, compile=False)  # zoo:NAME is the shipped Keras model
    if source.endswith(".tflite") or os.path.isdir(source):
        import mtlzoo.edge

        return mtlzoo.edge.load(source, trusted=trusted)
    from mtlzoo.recipe import parse_cli_overrides

    return mtlzoo.build(source, compile=False, **parse_cli_overrides(overrides))


def cmd_export(args):
    from mtlzoo.export import atomic, export, normalize_formats

    try:
        formats = normalize_formats(args.formats)
    except ValueError as e:
        raise ValueError(f"--formats {args.formats!r}: {e}") from e
    atomic.check_target(args.out, args.overwrite)  # before loading anything: a file, a folder of other files, ...
    if str(args.model).endswith(".tflite") or os.path.isdir(args.model):
        raise ValueError(f"{args.model!r} is already exported; mtlzoo export reads a .keras model, a zoo model "
                         "(zoo:NAME) or a recipe.")
    model = _load_any(args.model, args.overrides)
    if not hasattr(model, "heads"):
        raise ValueError(f"{args.model!r} is not an mtlzoo multi-task model (.keras) or a recipe.")
    data = None if (args.no_verify and "tflite_int8" not in formats) else _representative_data(model, args)
    result = export(model, args.out, formats=formats, representative_data=data, overwrite=args.overwrite,
                    verify=not args.no_verify, int8_io=args.int8_io)
    for fmt, path in result.paths.items():
        print(f"{fmt:<12} {path}")
    if result.report.get("verified"):
        print()
        print((result.out_dir / "verification.md").read_text())
    return 0


def cmd_predict(args):
    from mtlzoo.predict import load_image, predict_image

    load_image(args.image)  # a missing or unreadable image fails before the model is loaded
    target = _load_any(args.model, trusted=args.trust_savedmodel)
    out = args.out or os.path.splitext(os.path.basename(args.image))[0] + "_prediction.png"
    predict_image(target, args.image, out, score_threshold=args.score_threshold)
    return 0


def make_parser():
    parser = argparse.ArgumentParser(prog="mtlzoo", description="Multi-task learning model zoo (Keras 3).")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
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

    from mtlzoo import cli_training, cli_tune

    cli_training.register(sub)
    cli_tune.register(sub)

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

    p = sub.add_parser("export", help="export to SavedModel/TFLite (float32, fp16, int8), verified against Keras")
    p.add_argument("model", help="a .keras file, a zoo model (zoo:NAME), or a recipe name/YAML "
                   "(exports its untrained model)")
    p.add_argument("overrides", nargs="*", help="key=value recipe overrides (recipes only)")
    p.add_argument("--formats", default="saved_model,tflite",
                   help="comma-separated: saved_model, tflite, tflite_fp16, tflite_int8, or all (default: saved_model,tflite)")
    p.add_argument("--out", required=True, help="export folder (written atomically)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier mtlzoo export at --out (anything else there is left alone: an error)")
    p.add_argument("--int8-io", action="store_true", help="int8 inputs/outputs for tflite_int8 (default: float I/O)")
    p.add_argument("--no-verify", action="store_true", help="skip the comparison with the Keras model")
    p.add_argument("--data", default=None, help="calibration/verification dataset (default: the recipe's)")
    p.add_argument("--data-dir", default=None, help="data_dir of that dataset")
    p.add_argument("--num-calibration", type=int, default=64, help="calibration examples (default 64)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="run a model on one image: print per-task results, save a picture")
    p.add_argument("model", help="a .keras file, a .tflite file, a SavedModel, an export folder, or a zoo "
                   "model (zoo:NAME, zoo:NAME/model_int8.tflite)")
    p.add_argument("image", help="image file (PNG, JPEG)")
    p.add_argument("--out", default=None, help="output PNG (default: IMAGE_prediction.png)")
    p.add_argument("--score-threshold", type=float, default=0.3, help="minimum detection score (default 0.3)")
    p.add_argument("--trust-savedmodel", action="store_true",
                   help="run a SavedModel that mtlzoo did not export (a SavedModel is code: only from a source "
                   "you trust)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("demo", help="the end-to-end demo on built-in synthetic data")
    p.add_argument("--out", default="demo_out", help="output folder")
    p.set_defaults(func=cmd_demo)
    for command in sub.choices.values():  # `mtlzoo COMMAND ... --debug` works as well as `mtlzoo --debug COMMAND`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the full traceback of an error")
    return parser


def _is_expected(error) -> bool:
    """True for the failures a user can fix (bad input, files, options), reported in one line without traceback."""
    if isinstance(error, (ValueError, OSError)):  # RecipeError, UnknownNameError, ModelFileError, ... are ValueErrors
        return True
    from mtlzoo.export.tflite import ConversionError
    from mtlzoo.export.verify import ExportVerificationError

    return isinstance(error, (ConversionError, ExportVerificationError))


def error_message(command, error) -> str:
    """`mtlzoo COMMAND: error: MESSAGE` on one line (a verification report keeps its lines)."""
    from mtlzoo.export.verify import ExportVerificationError

    text = str(error).strip() or type(error).__name__
    if not isinstance(error, ExportVerificationError):
        text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return f"mtlzoo {command}: error: {text}"


def main(argv=None):
    """Runs `mtlzoo ARGS`; returns the exit status (2 with one `error:` line for an expected failure).

    Example:
    ```python
    from mtlzoo import cli
    cli.main(["export", "zoo:driving_perception_lite", "--formats", "tflite", "--out", "exported"])
    ```
    """
    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Exception as e:  # noqa: BLE001 - sorted below: expected ones become one line, the rest propagate
        if getattr(args, "debug", False) or not _is_expected(e):
            raise
        print(error_message(args.command, e), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
