"""Publishing a trained model into the zoo: verified exports, baselines, latency and the model card."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mtlzoo.zoo.lookup import MODEL_FILE, list_models, root


# ---------------------------------------------------------------- publishing a trained model
def _fmt(value, digits=3):
    return "–" if value is None else f"{value:.{digits}f}"


def _latency(model, files, image, repeats=30):
    """Median batch-1 latency (ms) of the Keras direct call and each TFLite file (1 and 2 threads), interleaved."""
    import time

    import mtlzoo.edge

    from mtlzoo.export.saved_model import keras_direct_call

    runners = {"Keras direct call (tf.function)": keras_direct_call(model)}
    for label, path in files.items():
        for threads in (1, 2):
            runner = mtlzoo.edge.load(path, num_threads=threads)
            runners[f"{label}, {threads} thread{'s' if threads > 1 else ''}"] = runner
    for fn in runners.values():  # warm-up: tracing and first executions
        for _ in range(3):
            fn(image)
    times = {k: [] for k in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            start = time.perf_counter()
            fn(image)
            times[name].append((time.perf_counter() - start) * 1000)
    import numpy as np

    return {k: float(np.median(v)) for k, v in times.items()}


def publish(model_path, name, *, baselines, command, budget, out_root=None, num_verify=64, num_calibration=100,
            overwrite=False, notes=()):
    """Assembles a zoo folder from a trained model: Keras file, verified TFLite files, baselines and model card.

    Writes `out_root/name/` (default: the repository's `saved_models/`) with
    `model.keras` (the trained weights in an uncompiled model of the same
    recipe: no optimizer state; `recipe.compile(model)` or `model.compile(...)`
    to fine-tune), `model_fp16.tflite` and `model_int8.tflite`
    (exported and verified by `mtlzoo.export` on `num_verify` validation
    scenes), `verification.json/.md`, `baselines.json` (the single-task
    baselines Δm is measured against), `evaluation.json` and `MODEL_CARD.md`
    (metrics, Δm, latency and sizes measured here, the commands that produced
    the model, and its limits). The float32 TFLite file is exported and
    verified too, then left out to keep the zoo small (`mtlzoo export
    zoo:NAME --formats tflite` writes it again).

    Args:
        model_path: str. The trained `.keras` file (e.g. a run's `best.keras`).
        name: str. Folder name, used as `zoo:NAME`.
        baselines: str. `baselines.json` (or its folder) of the single-task
            models trained with the same budget.
        command: str. The command(s) that trained the model and its baselines.
        budget: str. The training budget in words (scenes, epochs, batch, time).
        out_root: folder of the zoo. Defaults to `root()`.
        num_verify: int. Validation scenes for the verification and the int8 metrics.
        num_calibration: int. Calibration scenes for int8.
        overwrite: bool. Replace an earlier zoo folder of that name (one
            holding `mtlzoo_export.json`); anything else there is refused
            with `FileExistsError` and left untouched.
        notes: extra lines for the card's Limits section.

    Returns:
        `pathlib.Path` of the published folder.

    Example:
    ```python
    from mtlzoo import zoo
    zoo.publish("runs/lite/best.keras", "driving_perception_lite", baselines="runs/lite_stl",
                command="mtlzoo train driving_perception_lite ...", budget="10 epochs of 1000 scenes")
    ```
    """
    import json
    import shutil
    import tempfile

    import mtlzoo
    import mtlzoo.data
    from mtlzoo.evaluation import evaluate
    from mtlzoo.export import export
    from mtlzoo.recipe import Recipe

    from mtlzoo.export import atomic

    out_root = Path(out_root) if out_root is not None else root()
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"A zoo model name is one folder name (e.g. 'driving_perception_lite'); got {name!r}.")
    target = out_root / name
    # Before any work: only an earlier zoo folder (it holds mtlzoo_export.json) is ever replaced.
    atomic.check_target(target, overwrite)
    trained = mtlzoo.load(model_path, compile=False)
    recipe = Recipe.from_dict(trained.metadata["recipe"])
    # Uncompiled: a compiled model would save its optimizer's slots (3x the weights).
    model = recipe.build(compile=False)
    model.set_weights(trained.get_weights())
    h, w = recipe.input_shape[:2]
    data = dict(recipe.data)
    data_name = data.get("name", "synthetic_driving")
    tasks = [t for t in model.task_names if t in mtlzoo.data.TASKS]
    val = mtlzoo.data.load(data_name, split="validation", batch_size=8, image_size=(h, w),
                           num_examples=max(num_verify, num_calibration), tasks=tasks, seed=int(recipe.seed))
    report = evaluate(model, data_name, baselines=baselines, batch_size=16,
                      num_examples=data.get("num_validation_examples"))

    out_root.mkdir(parents=True, exist_ok=True)
    # Staged beside the target (same file system), moved into place at the end.
    work = Path(tempfile.mkdtemp(prefix=f".{name}.staging-", dir=out_root))
    try:
        result = export(model, work / "export", formats=["tflite", "tflite_fp16", "tflite_int8"],
                        representative_data=val, num_verify=num_verify, num_calibration=num_calibration)
        image = next(iter(val))[0][:1].numpy()
        latency = _latency(model, {"TFLite float32": result.paths["tflite"], "TFLite fp16": result.paths["tflite_fp16"],
                                   "TFLite int8": result.paths["tflite_int8"]}, image)
        sizes = {fmt: Path(result.paths[fmt]).stat().st_size for fmt in ("tflite", "tflite_fp16", "tflite_int8")}
        stage = work / name
        shutil.copytree(work / "export", stage)
        (stage / Path(result.paths["tflite"]).name).unlink()  # verified above; left out to keep the zoo small
        model.save(stage / MODEL_FILE)
        sizes["keras"] = (stage / MODEL_FILE).stat().st_size
        from mtlzoo.evaluation import read_baselines  # the same reader evaluate uses

        shutil.copy(Path(baselines) / "baselines.json" if Path(baselines).is_dir() else baselines,
                    stage / "baselines.json")
        read_baselines(stage / "baselines.json")  # still readable where it now lies
        report.to_json(stage / "evaluation.json")
        card = _card(name, recipe, model, report, result.report, latency, sizes, command, budget, notes)
        (stage / "MODEL_CARD.md").write_text(card)
        with open(stage / "latency.json", "w") as f:
            json.dump({"median_ms": latency, "sizes_bytes": sizes}, f, indent=2)
        atomic.publish(stage, target, overwrite=overwrite)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _card(name, recipe, model, report, verification, latency, sizes, command, budget, notes):
    formats = verification["formats"]
    lines = [f"# {name}", "", f"{recipe.description}", ""]
    lines += ["## Tasks", ""]
    for task in model.task_names:
        spec = recipe.tasks[task]
        classes = spec.head_args.get("num_classes") or getattr(model.heads.get(task), "num_classes", None)
        lines.append(f"- `{task}`: {spec.kind}" + (f", {classes} classes" if classes else ""))
    params = model.count_params()
    lines += ["", f"Backbone `{recipe.backbone}`, `{recipe.sharing}` sharing, input {recipe.input_shape[0]}×"
              f"{recipe.input_shape[1]} RGB (0–255), {params / 1e6:.2f}M parameters, "
              f"{report.cost.get('flops', 0) / 1e6:.0f}M FLOPs per image.", ""]
    lines += ["## Data", "", f"`{recipe.data.get('name', 'synthetic_driving')}`: procedurally rendered street scenes "
              "generated offline by mtlzoo (`mtlzoo.data.load(\"synthetic_driving\")`), "
              f"{recipe.data.get('num_examples')} training and {recipe.data.get('num_validation_examples')} validation "
              f"scenes, seed {recipe.seed}.", ""]
    lines += ["## Training", "", f"Budget: {budget}", "", "Reproduce:", "", "```", command.strip(), "```", ""]
    lines += ["## Metrics", "", f"On {report.num_examples} validation scenes (`mtlzoo evaluate zoo:{name} "
              f"--baselines zoo:{name}`), against single-task models of the same backbone and budget "
              "(`baselines.json`):", "", "| task | metric | multi-task | single-task |", "|---|---|---:|---:|"]
    for task, values in report.metrics.items():
        for metric, value in values.items():
            arrow = "↑" if report.higher_is_better[task][metric] else "↓"
            base = (report.baseline_metrics or {}).get(task, {}).get(metric)
            lines.append(f"| {task} | {metric} {arrow} | {_fmt(value)} | {_fmt(base)} |")
    per_task = ", ".join(f"{t} {v:+.1f}%" for t, v in report.delta_m_per_task.items())
    lines += ["", "## Δm", "", f"Δm = **{report.delta_m:+.2f}%** against the single-task models (lower is better; "
              f"negative: the multi-task model is better on average). Per task: {per_task}.", ""]
    lines += ["## Export verification", "", "Checked by `mtlzoo.export` against the Keras model "
              f"({verification.get('verify_data', {}).get('num_examples', '')} validation scenes; `verification.json`):",
              ""]
    for fmt, entry in formats.items():
        if fmt == "tflite_int8" and entry.get("metrics"):
            drops = ", ".join(f"{t} {m} {v['float']:.3f} → {v['int8']:.3f}" for t, ms in entry["metrics"].items()
                              for m, v in ms.items() if v.get("float") is not None and v.get("int8") is not None)
            lines.append(f"- `{fmt}`: passed={entry['passed']}; float → int8: {drops}")
        else:
            diffs = [o.get("max_abs_diff") for o in entry.get("outputs", {}).values() if isinstance(o, dict)]
            diffs = [d for d in diffs if d is not None]
            worst = f"max abs diff {max(diffs):.2e}" if diffs else ""
            lines.append(f"- `{fmt}`: passed={entry['passed']} {worst}".rstrip())
    lines += ["", "## Latency", "", "Batch 1, median of 30 interleaved runs on this project's development machine "
              "(2 shared x86 CPU cores, no accelerator; measured while publishing, `latency.json`):", "",
              "| runtime | ms |", "|---|---:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in latency.items()]
    mb = lambda b: f"{b / 2**20:.2f} MB"  # noqa: E731
    lines += ["", "## Size", "", f"- `model.keras`: {mb(sizes['keras'])} (weights, no optimizer state)",
              f"- `model_fp16.tflite`: {mb(sizes['tflite_fp16'])}",
              f"- `model_int8.tflite`: {mb(sizes['tflite_int8'])} (float32 inputs and outputs)",
              f"- float32 TFLite (verified, not shipped): {mb(sizes['tflite'])}; "
              f"`mtlzoo export zoo:{name} --formats tflite --out DIR` writes it", ""]
    lines += ["## Use", "", "```python", "import mtlzoo, mtlzoo.edge", f"model = mtlzoo.load(\"zoo:{name}\")",
              f"runner = mtlzoo.edge.load(\"zoo:{name}/model_int8.tflite\")",
              "outputs = runner(image)   # dict keyed by task, as model(image)", "```", "",
              f"`mtlzoo predict zoo:{name}/model_int8.tflite street.png` saves a picture of every task's output.", ""]
    lines += ["## Limits", "",
              "- Trained on synthetic scenes only: it has never seen a real photograph and is not expected to work "
              "on one. It shows the path from recipe to edge file, it is not a perception model for a vehicle.",
              "- A small budget on 2 CPU cores; the metrics are those of a briefly trained model."]
    int8_ms, float_ms = latency.get("TFLite int8, 1 thread"), latency.get("TFLite float32, 1 thread")
    if int8_ms is not None and float_ms is not None and int8_ms >= 0.9 * float_ms:
        lines.append(f"- int8 is not faster than float32 on this x86 machine ({int8_ms:.2f} vs {float_ms:.2f} ms): "
                     "its gain here is size; ARM CPUs with int8 kernels are where it also saves time.")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def main(argv=None):
    """`python -m mtlzoo.zoo publish MODEL NAME --baselines DIR --command ... --budget ...`; `list`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mtlzoo.zoo", description="The mtlzoo model zoo.")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="list the shipped models")
    p = sub.add_parser("publish", help="assemble a zoo folder from a trained .keras model")
    p.add_argument("model")
    p.add_argument("name")
    p.add_argument("--baselines", required=True)
    p.add_argument("--command", required=True, help="the training command(s), for the model card")
    p.add_argument("--budget", required=True, help="the training budget in words, for the model card")
    p.add_argument("--out-root", default=None)
    p.add_argument("--note", action="append", default=[], help="an extra line for the Limits section")
    p.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.action == "list":
        print("\n".join(list_models()) or "(no shipped models)")
        return 0
    try:
        path = publish(args.model, args.name, baselines=args.baselines, command=args.command, budget=args.budget,
                       out_root=args.out_root, overwrite=args.overwrite, notes=args.note)
    except (ValueError, OSError) as e:  # expected failures: one line, no traceback
        print(f"python -m mtlzoo.zoo publish: error: {e}", file=sys.stderr)
        return 2
    print((path / "MODEL_CARD.md").read_text())
    print(f"published {path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
