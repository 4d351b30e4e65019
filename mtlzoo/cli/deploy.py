"""`mtlzoo export` and `mtlzoo predict`: exported models and predictions."""

from __future__ import annotations

import os


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
                    verify=not args.no_verify, int8_io=args.int8_io,
                    int8_float_ops=args.int8_float_ops)
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
