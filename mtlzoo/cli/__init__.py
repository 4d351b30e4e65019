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
import contextlib
import os
import sys

from mtlzoo.cli.bench import BENCHMARKS, QUICK_BENCHMARKS, cmd_bench  # noqa: F401  (QUICK_BENCHMARKS re-exported)
from mtlzoo.cli.demo import cmd_demo
from mtlzoo.cli.deploy import cmd_export, cmd_predict
from mtlzoo.cli.diagnose import cmd_diagnose
from mtlzoo.cli.models import cmd_build, cmd_recipes, describe_model  # noqa: F401  (describe_model re-exported)


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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

    from mtlzoo.cli import training as cli_training
    from mtlzoo.cli import tune as cli_tune

    cli_training.register(sub)
    cli_tune.register(sub)

    from mtlzoo.cli import group as cli_group

    cli_group.register(sub)

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
    p.add_argument("--int8-float-ops", default=None,
                   help="ops tflite_int8 keeps in float32: x86 (faster on x86 CPUs) or op names, comma-separated "
                   "(default: none, full int8)")
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
    from mtlzoo.cli.quiet import filtered_stderr, show_all_logs

    parser = make_parser()
    args = parser.parse_args(argv)
    try:
        with contextlib.nullcontext() if show_all_logs(args) else filtered_stderr():
            return args.func(args)
    except Exception as e:  # noqa: BLE001 - sorted below: expected ones become one line, the rest propagate
        if getattr(args, "debug", False) or not _is_expected(e):
            raise
        print(error_message(args.command, e), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
