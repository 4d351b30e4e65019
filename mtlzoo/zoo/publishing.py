"""Publishing a trained model into the zoo: verified exports, baselines, latency and the model card."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mtlzoo.zoo.lookup import MODEL_FILE, list_models, root


# ---------------------------------------------------------------- publishing a trained model
def _fmt(value, digits=3):
    return "–" if value is None else f"{value:.{digits}f}"


def _latency(model, files, image, repeats=30, cpu=None):
    """Median batch-1 latency (ms) of the Keras direct call and each TFLite file (1 and 2 threads), interleaved.

    The runtimes are timed in a rotating order (every repeat runs each once),
    so load changes on a shared machine hit them alike. `cpu`, when given a
    dict, receives each runtime's median process CPU time per call (ms, all
    threads): on a loaded machine, the cost of a one-thread runtime without
    the time it waited for a core.
    """
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
    cpu_times = {k: [] for k in runners}
    names = list(runners)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn = runners[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            fn(image)
            times[name].append((time.perf_counter() - start) * 1000)
            cpu_times[name].append((time.process_time() - start_cpu) * 1000)
    import numpy as np

    if cpu is not None:
        cpu.update({k: float(np.median(v)) for k, v in cpu_times.items()})

    return {k: float(np.median(v)) for k, v in times.items()}


def publish(model_path, name, *, baselines, command, budget, out_root=None, num_verify=64, num_calibration=100,
            overwrite=False, notes=(), sections=()):
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
        sections: extra markdown sections (each with its `## ` title), placed after Δm (e.g. the spread over seeds).

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
        cpu = {}
        latency = _latency(model, {"TFLite float32": result.paths["tflite"], "TFLite fp16": result.paths["tflite_fp16"],
                                   "TFLite int8": result.paths["tflite_int8"]}, image, cpu=cpu)
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
        card = _card(name, recipe, model, report, result.report, latency, sizes, command, budget, notes, cpu,
                     sections)
        (stage / "MODEL_CARD.md").write_text(card)
        with open(stage / "latency.json", "w") as f:
            json.dump(_latency_json(latency, sizes, result.report, cpu), f, indent=2)
        atomic.publish(stage, target, overwrite=overwrite)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def refresh_edge(name, *, out_root=None, num_verify=64, num_calibration=100, repeats=100):
    """Exports a zoo model's TFLite files again with the current exporter, from its unchanged `model.keras`.

    Rewrites `model_fp16.tflite`, `model_int8.tflite`, `verification.json/.md`
    and `latency.json`, and the Export verification, Latency and Size sections
    (and the int8 line of Limits) of `MODEL_CARD.md`; `model.keras`, the
    metrics and the baselines are left as they are. Calibration and
    verification use the validation scenes `publish` used (same recipe seed).
    Each file is replaced atomically.

    Args:
        name: str. The zoo folder name.
        out_root: folder of the zoo. Defaults to `root()`.
        num_verify: int. Validation scenes for the verification.
        num_calibration: int. Calibration scenes for int8.
        repeats: int. Interleaved latency runs per runtime.

    Returns:
        dict: the new `latency.json` content.

    Example:
    ```python
    from mtlzoo.zoo.publishing import refresh_edge
    refresh_edge("driving_perception_lite")
    ```
    """
    import json
    import shutil
    import tempfile

    import mtlzoo
    import mtlzoo.data
    import mtlzoo.edge
    from mtlzoo.export import export
    from mtlzoo.recipe import Recipe

    folder = (Path(out_root) if out_root is not None else root()) / name
    if not (folder / MODEL_FILE).is_file():
        raise FileNotFoundError(f"No zoo model {name!r} at {str(folder)!r} (no {MODEL_FILE}); publish it first.")
    model = mtlzoo.load(folder / MODEL_FILE, compile=False)
    recipe = Recipe.from_dict(model.metadata["recipe"])
    h, w = recipe.input_shape[:2]
    tasks = [t for t in model.task_names if t in mtlzoo.data.TASKS]
    val = mtlzoo.data.load(dict(recipe.data).get("name", "synthetic_driving"), split="validation", batch_size=8,
                           image_size=(h, w), num_examples=max(num_verify, num_calibration), tasks=tasks,
                           seed=int(recipe.seed))
    work = Path(tempfile.mkdtemp(prefix=f".{name}.refresh-", dir=folder.parent))
    try:
        result = export(model, work / "export", formats=["tflite", "tflite_fp16", "tflite_int8"],
                        representative_data=val, num_verify=num_verify, num_calibration=num_calibration)
        files = {"TFLite float32": result.paths["tflite"], "TFLite fp16": result.paths["tflite_fp16"],
                 "TFLite int8": result.paths["tflite_int8"]}
        cpu = {}
        latency = _latency(model, files, next(iter(val))[0][:1].numpy(), repeats=repeats, cpu=cpu)
        sizes = {fmt: Path(result.paths[fmt]).stat().st_size for fmt in ("tflite", "tflite_fp16", "tflite_int8")}
        sizes["keras"] = (folder / MODEL_FILE).stat().st_size
        content = _latency_json(latency, sizes, result.report, cpu)
        card = (folder / "MODEL_CARD.md").read_text()
        sections = {"## Export verification": _verification_lines(result.report),
                    "## Latency": _latency_lines(latency, repeats, cpu), "## Size": _size_lines(name, sizes)}
        parts = card.split("\n## ")
        for i, part in enumerate(parts):
            title = "## " + part.split("\n", 1)[0]
            if title in sections:
                parts[i] = "\n".join(sections[title])[3:].rstrip("\n") + "\n"
            elif title == "## Limits":
                lines = [line for line in part.split("\n") if not line.startswith("- int8 is not faster")]
                at = next((j for j, line in enumerate(lines) if "briefly trained model" in line), len(lines) - 1)
                lines[at + 1:at + 1] = _int8_note(latency, cpu)
                parts[i] = "\n".join(lines)
        staged = {"MODEL_CARD.md": "\n## ".join(parts), "latency.json": json.dumps(content, indent=2)}
        for file in ("model_fp16.tflite", "model_int8.tflite", "verification.json", "verification.md"):
            shutil.copy(work / "export" / file, work / file)
        for file, text in staged.items():
            (work / file).write_text(text)
        for file in ("model_fp16.tflite", "model_int8.tflite", "verification.json", "verification.md",
                     "latency.json", "MODEL_CARD.md"):
            os.replace(work / file, folder / file)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return content


def _card(name, recipe, model, report, verification, latency, sizes, command, budget, notes, cpu=None, sections=()):
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
              f"{recipe.data.get('num_examples')} training and {report.num_examples} validation "
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
    for section in sections:
        lines += [section.strip(), ""]
    lines += _verification_lines(verification) + _latency_lines(latency, cpu=cpu) + _size_lines(name, sizes)
    lines += ["## Use", "", "```python", "import mtlzoo, mtlzoo.edge", f"model = mtlzoo.load(\"zoo:{name}\")",
              f"runner = mtlzoo.edge.load(\"zoo:{name}/model_int8.tflite\")",
              "outputs = runner(image)   # dict keyed by task, as model(image)", "```", "",
              f"`mtlzoo predict zoo:{name}/model_int8.tflite street.png` saves a picture of every task's output.", ""]
    lines += ["## Limits", "",
              "- Trained on synthetic scenes only: it has never seen a real photograph and is not expected to work "
              "on one. It shows the path from recipe to edge file, it is not a perception model for a vehicle.",
              "- A small budget on 2 CPU cores; the metrics are those of a briefly trained model."]
    lines += _int8_note(latency, cpu)
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def _latency_json(latency, sizes, verification, cpu=None):
    """The `latency.json` content: medians, sizes, int8 ratios and each file's XNNPACK delegation."""
    entries = verification["formats"]
    content = {"median_ms": latency, "sizes_bytes": sizes}
    if cpu:
        content["cpu_median_ms"] = cpu
    int8, float32 = latency.get("TFLite int8, 1 thread"), latency.get("TFLite float32, 1 thread")
    if int8 and float32:
        content["int8_over_float32_t1"] = round(int8 / float32, 3)
        content["int8_t1_over_keras_direct"] = round(int8 / latency["Keras direct call (tf.function)"], 3)
        if cpu:
            content["int8_over_float32_t1_cpu"] = round(
                cpu["TFLite int8, 1 thread"] / cpu["TFLite float32, 1 thread"], 3)
    content["delegation"] = {label: entries[fmt].get("delegation") for label, fmt in
                             (("TFLite float32", "tflite"), ("TFLite fp16", "tflite_fp16"),
                              ("TFLite int8", "tflite_int8")) if fmt in entries}
    content["tflite_input_shape"] = entries.get("tflite_int8", {}).get("input_shape")
    return content


def _verification_lines(verification):
    lines = ["## Export verification", "", "Checked by `mtlzoo.export` against the Keras model "
             f"({verification.get('verify_data', {}).get('num_examples', '')} validation scenes; `verification.json`):",
             ""]
    for fmt, entry in verification["formats"].items():
        if fmt == "tflite_int8" and entry.get("metrics"):
            drops = ", ".join(f"{t} {m} {v['float']:.3f} → {v['int8']:.3f}" for t, ms in entry["metrics"].items()
                              for m, v in ms.items() if v.get("float") is not None and v.get("int8") is not None)
            lines.append(f"- `{fmt}`: passed={entry['passed']}; float → int8: {drops}")
        else:
            diffs = [o.get("max_abs_diff") for o in entry.get("outputs", {}).values() if isinstance(o, dict)]
            diffs = [d for d in diffs if d is not None]
            worst = f"max abs diff {max(diffs):.2e}" if diffs else ""
            lines.append(f"- `{fmt}`: passed={entry['passed']} {worst}".rstrip())
    return lines + [""]


def _latency_lines(latency, repeats=30, cpu=None):
    lines = ["## Latency", "", f"Batch 1, median of {repeats} interleaved runs on this project's development machine "
             "(2 shared x86 CPU cores, no accelerator; measured while publishing, `latency.json`). The TFLite files "
             "have a static batch-1 signature and run as one XNNPACK partition (`mtlzoo bench latency` reports the "
             "partitions and any op left outside them)."]
    if cpu:
        lines[-1] += (" CPU ms is the process CPU time per call (all threads): on a shared machine, the cost of a "
                      "one-thread runtime without the time it waited for a core.")
        lines += ["", "| runtime | ms | CPU ms |", "|---|---:|---:|"]
        lines += [f"| {k} | {v:.2f} | {cpu[k]:.2f} |" for k, v in latency.items()]
    else:
        lines += ["", "| runtime | ms |", "|---|---:|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in latency.items()]
    return lines + [""]


def _size_lines(name, sizes):
    mb = lambda b: f"{b / 2**20:.2f} MB"  # noqa: E731
    return ["## Size", "", f"- `model.keras`: {mb(sizes['keras'])} (weights, no optimizer state)",
            f"- `model_fp16.tflite`: {mb(sizes['tflite_fp16'])}",
            f"- `model_int8.tflite`: {mb(sizes['tflite_int8'])} (float32 inputs and outputs)",
            f"- float32 TFLite (verified, not shipped): {mb(sizes['tflite'])}; "
            f"`mtlzoo export zoo:{name} --formats tflite --out DIR` writes it", ""]


def _int8_note(latency, cpu=None):
    source = cpu or latency
    int8_ms, float_ms = source.get("TFLite int8, 1 thread"), source.get("TFLite float32, 1 thread")
    if int8_ms is not None and float_ms is not None and int8_ms >= 0.9 * float_ms:
        return [f"- int8 is not faster than float32 on this x86 machine ({int8_ms:.2f} vs {float_ms:.2f} ms"
                f"{' of CPU' if cpu else ''}, 1 thread): both run as one XNNPACK partition, but XNNPACK's int8 "
                "depthwise and elementwise kernels are slower than its float32 ones on x86, and MobileNetV3-Small "
                "is mostly those. Its gain here is size; ARM CPUs with int8 kernels are where it also saves time."]
    return []


def main(argv=None):
    """`python -m mtlzoo.zoo publish MODEL NAME --baselines DIR ...`; `refresh-edge NAME`; `list`."""
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
    r = sub.add_parser("refresh-edge", help="export a zoo model's TFLite files again from its model.keras")
    r.add_argument("name")
    r.add_argument("--out-root", default=None)
    r.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args(argv)
    if args.action == "list":
        print("\n".join(list_models()) or "(no shipped models)")
        return 0
    if args.action == "refresh-edge":
        import json

        print(json.dumps(refresh_edge(args.name, out_root=args.out_root, repeats=args.repeats), indent=2))
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
