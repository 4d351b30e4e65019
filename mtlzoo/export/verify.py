"""Checks every exported file against the Keras model and writes the verification report.

Each format is run on the same real inputs as the Keras model (the
verification data) and compared task by task:

- SavedModel and float32 TFLite: the largest absolute difference of every
  output must stay within `tolerance * max(1, max |keras output|)` (1e-5 for
  the SavedModel, 1e-4 for float32 TFLite: absolute for outputs within ±1,
  relative to the output's magnitude beyond, e.g. depth in metres). A failure
  raises `ExportVerificationError`;
- float16 TFLite (float16 weights): the same check with a looser tolerance
  (2e-2 by default), as weights are rounded to 11 significant bits;
- int8 TFLite: differences are reported but not bounded; instead each task's
  metrics are computed for the float model and the int8 model, against the
  labels when the verification data has them (mIoU and pixel accuracy for
  segmentation, abs_err/abs_rel/delta1 for depth, F1 for multilabel, center
  recall for detection, accuracy for classification, MAE for regression),
  and as agreement with the float model's own predictions always (argmax
  agreement, depth error against the float depth, decoded-box agreement...).
  A drop larger than `int8_max_drop` (when given) or non-finite outputs fail.

The report is a dict (written as `verification.json`) and a readable
`verification.md` next to the exported files.

Example:
```python
result = mtlzoo.export(model, "saved_models/driving_perception_lite",
                       formats=["saved_model", "tflite", "tflite_int8"], representative_data=val_ds)
result.report["formats"]["tflite_int8"]["metrics"]["segmentation"]
```
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

#: Default tolerance factor of each format (see the module docstring); int8 has none.
TOLERANCES = {"saved_model": 1e-5, "tflite": 1e-4, "tflite_fp16": 2e-2}

#: Metrics where smaller is better (their drop is int8 - float).
LOWER_IS_BETTER = ("abs_err", "abs_rel", "mae", "depth_abs_err", "depth_abs_rel", "value_mae", "heatmap_max_abs_diff")


class ExportVerificationError(RuntimeError):
    """An exported model disagrees with the Keras model beyond its tolerance.

    Nothing is published when this is raised: the previous export at the
    target (if any) stays in place.

    Attributes:
        report: the verification report dict (what `verification.json` would hold).
    """

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


def _finite(x):
    return bool(np.all(np.isfinite(x)))


def _num(value):
    value = float(value)
    return value if math.isfinite(value) else None


def compare_outputs(reference: dict, outputs: dict, tolerance: float) -> dict:
    """Per-task differences between two output dicts.

    Args:
        reference: dict task -> array (Keras).
        outputs: dict task -> array (exported model).
        tolerance: float. Allowed max abs diff is `tolerance * max(1, max |reference|)`.

    Returns:
        dict task -> {max_abs_diff, mean_abs_diff, max_abs_reference, allowed,
        passed, problem (when failed)}.
    """
    result = {}
    for task, ref in reference.items():
        ref = np.asarray(ref, np.float32)
        entry = {"max_abs_reference": _num(np.max(np.abs(ref))) if ref.size else 0.0}
        scale = max(1.0, entry["max_abs_reference"] or 0.0)
        entry["allowed"] = tolerance * scale
        if task not in outputs:
            entry.update(passed=False, problem=f"output {task!r} missing (outputs: {sorted(outputs)})")
            result[task] = entry
            continue
        got = np.asarray(outputs[task], np.float32)
        if got.shape != ref.shape:
            entry.update(passed=False, problem=f"shape {got.shape} != Keras {ref.shape}")
            result[task] = entry
            continue
        if not _finite(got):
            entry.update(passed=False, problem="non-finite values (NaN or inf)")
            result[task] = entry
            continue
        diff = np.abs(got - ref)
        entry["max_abs_diff"] = _num(diff.max()) if diff.size else 0.0
        entry["mean_abs_diff"] = _num(diff.mean()) if diff.size else 0.0
        entry["passed"] = entry["max_abs_diff"] <= entry["allowed"]
        if not entry["passed"]:
            entry["problem"] = f"max abs diff {entry['max_abs_diff']:.3g} > allowed {entry['allowed']:.3g}"
        result[task] = entry
    return result


def diff_only(reference: dict, outputs: dict) -> dict:
    """Per-task max/mean abs differences without a pass/fail decision (int8)."""
    out = {}
    for task, ref in reference.items():
        got = np.asarray(outputs[task], np.float32)
        diff = np.abs(got - np.asarray(ref, np.float32))
        out[task] = {
            "max_abs_diff": _num(diff.max()) if diff.size else 0.0,
            "mean_abs_diff": _num(diff.mean()) if diff.size else 0.0,
            "finite": _finite(got),
        }
    return out


# ------------------------------------------------------------------ metrics
def _metric_values(head, label, prediction) -> dict:
    values = {}
    for metric in head.metrics():
        metric.update_state(label, prediction)
        values[metric.name] = _num(np.asarray(metric.result()))
    return values


def label_metrics(model, outputs: dict, labels: dict) -> dict:
    """dict task -> {metric: value} of each task head's metrics against `labels` (tasks without labels skipped)."""
    result = {}
    for task in model.task_names:
        if labels is None or task not in labels:
            continue
        prediction = np.asarray(outputs[task], np.float32)
        result[task] = _metric_values(model.heads[task], np.asarray(labels[task]), prediction)
    return result


def _box_iou(a, b):
    y0 = np.maximum(a[:, None, 0], b[None, :, 0])
    x0 = np.maximum(a[:, None, 1], b[None, :, 1])
    y1 = np.minimum(a[:, None, 2], b[None, :, 2])
    x1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(y1 - y0, 0, None) * np.clip(x1 - x0, 0, None)
    area = lambda z: np.clip(z[:, 2] - z[:, 0], 0, None) * np.clip(z[:, 3] - z[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_agreement(head, reference, prediction, iou_threshold=0.5, score_threshold=0.1, max_detections=50) -> dict:
    """Agreement of decoded boxes: the reference model's boxes found by the other (same class, IoU >= threshold).

    Both outputs are decoded with `head.decode` (max-pool peaks above
    `score_threshold`, at most `max_detections` per image).

    Returns:
        dict with `box_recall` (share of reference boxes matched), `box_precision`
        (share of predicted boxes matched), `box_f1`, and the box counts.
    """
    matched_ref = matched_pred = n_ref = n_pred = 0
    for ref_one, pred_one in zip(reference, prediction):
        rb, _, rc = head.decode(ref_one, score_threshold=score_threshold, max_detections=max_detections)
        pb, _, pc = head.decode(pred_one, score_threshold=score_threshold, max_detections=max_detections)
        n_ref += len(rb)
        n_pred += len(pb)
        if len(rb) and len(pb):
            iou = _box_iou(rb, pb) * (rc[:, None] == pc[None, :])
            hits = iou >= iou_threshold
            matched_ref += int(hits.any(axis=1).sum())
            matched_pred += int(hits.any(axis=0).sum())
    recall = matched_ref / n_ref if n_ref else 1.0
    precision = matched_pred / n_pred if n_pred else 1.0
    f1 = 2 * recall * precision / (recall + precision) if recall + precision else 0.0
    return {"box_recall": recall, "box_precision": precision, "box_f1": f1,
            "reference_boxes": n_ref, "predicted_boxes": n_pred}


def agreement_metrics(model, reference: dict, outputs: dict) -> dict:
    """dict task -> agreement of `outputs` with the reference (float) model's own predictions."""
    result = {}
    for task in model.task_names:
        kind = model.tasks[task]["kind"]
        ref = np.asarray(reference[task], np.float32)
        got = np.asarray(outputs[task], np.float32)
        if kind == "segmentation":
            from mtlzoo.metrics import MeanIoU

            ref_class = ref.argmax(-1)
            metric = MeanIoU(ref.shape[-1])
            metric.update_state(ref_class, got)
            result[task] = {
                "pixel_agreement": float(np.mean(ref_class == got.argmax(-1))),
                "miou_vs_float": _num(np.asarray(metric.result())),
            }
        elif kind == "depth":
            safe = np.maximum(ref, 1e-6)
            result[task] = {
                "depth_abs_err": float(np.mean(np.abs(got - ref))),
                "depth_abs_rel": float(np.mean(np.abs(got - ref) / safe)),
            }
        elif kind == "detection":
            head = model.heads[task]
            c = head.num_classes
            entry = {"heatmap_max_abs_diff": float(np.max(np.abs(got[..., :c] - ref[..., :c])))}
            entry.update(box_agreement(head, ref, got, score_threshold=0.1))
            # The 10 strongest peaks per image whatever their score: informative even for weak detectors.
            top = box_agreement(head, ref, got, score_threshold=0.0, max_detections=10)
            entry["top10_box_recall"] = top["box_recall"]
            result[task] = entry
        elif kind == "multilabel":
            ref_tags, got_tags = ref > 0, got > 0
            tp = float(np.sum(ref_tags & got_tags))
            fp = float(np.sum(~ref_tags & got_tags))
            fn = float(np.sum(ref_tags & ~got_tags))
            result[task] = {
                "tag_agreement": float(np.mean(ref_tags == got_tags)),
                "f1_vs_float": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
            }
        elif kind == "classification":
            result[task] = {"class_agreement": float(np.mean(ref.argmax(-1) == got.argmax(-1)))}
        else:
            result[task] = {"value_mae": float(np.mean(np.abs(got - ref)))}
    return result


def quality_drop(float_metrics: dict, quantized_metrics: dict) -> dict:
    """dict task -> {metric: {float, int8, drop}}; a positive drop means the int8 model is worse."""
    out = {}
    for task, values in float_metrics.items():
        out[task] = {}
        for name, fv in values.items():
            qv = quantized_metrics.get(task, {}).get(name)
            if fv is None or qv is None:
                drop = None
            elif name in LOWER_IS_BETTER:
                drop = qv - fv
            else:
                drop = fv - qv
            out[task][name] = {"float": fv, "int8": qv, "drop": drop}
    return out


def check_int8(drops: dict, agreement: dict, max_drop) -> list:
    """Problems of an int8 model: metric drops above `max_drop` (float, or dict metric/task -> float)."""
    problems = []
    if max_drop is None:
        return problems
    for task, metrics in drops.items():
        for name, entry in metrics.items():
            if entry["drop"] is None:
                continue
            limit = max_drop
            if isinstance(max_drop, dict):
                limit = max_drop.get(f"{task}.{name}", max_drop.get(name, max_drop.get(task)))
            if limit is not None and entry["drop"] > float(limit):
                problems.append(f"{task} {name}: int8 {entry['int8']:.4g} vs float {entry['float']:.4g} "
                                f"(drop {entry['drop']:.4g} > {limit})")
    return problems


# ------------------------------------------------------------------ report files
def _fmt(value, digits=3):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def to_markdown(report: dict) -> str:
    """The human-readable `verification.md` of a report."""
    lines = [f"# Export verification: {report.get('model', '?')}", ""]
    status = "PASSED" if report.get("passed") else "FAILED"
    versions = report.get("versions", {})
    lines.append(f"**Status: {status}** — {report.get('created', '')}, TensorFlow {versions.get('tensorflow', '?')}, "
                 f"Keras {versions.get('keras', '?')}, ai-edge-litert {versions.get('ai_edge_litert', '?')}.")
    data = report.get("verify_data", {})
    lines.append("")
    lines.append(f"Verification data: {data.get('source', '?')}, {data.get('num_examples', 0)} examples"
                 f"{', with labels' if data.get('has_labels') else ', no labels'}.")
    lines.append("Tolerance rule: max |exported - Keras| <= tolerance x max(1, max |Keras output|) per task.")
    for fmt, entry in report.get("formats", {}).items():
        lines += ["", f"## {fmt}: `{entry.get('file', '')}`", ""]
        facts = []
        if entry.get("size_bytes") is not None:
            facts.append(f"{entry['size_bytes'] / 1e6:.3f} MB")
        if entry.get("io"):
            facts.append(f"I/O {entry['io']}")
        if entry.get("tolerance") is not None:
            facts.append(f"tolerance {entry['tolerance']:g}")
        if entry.get("input_shape"):
            facts.append(f"input shape {entry['input_shape']}")
        if entry.get("delegation"):
            d = entry["delegation"]
            left = ", ".join(f"{k} x{v}" for k, v in d["undelegated_ops"].items()) or "none"
            facts.append(f"{d['partitions']} delegated partition(s) holding {d['delegated_ops']} of {d['ops']} ops, "
                         f"on the builtin kernels: {left}")
        if entry.get("ops"):
            facts.append(f"ops: {', '.join(entry['ops'])}")
        if entry.get("signatures"):
            facts.append("signatures: " + "; ".join(f"{k} -> {', '.join(v)}" for k, v in entry["signatures"].items()))
        if facts:
            lines.append(", ".join(facts) + ".")
            lines.append("")
        outputs = entry.get("outputs", {})
        if outputs:
            lines.append("| task | max abs diff | mean abs diff | allowed | max abs Keras | ok |")
            lines.append("|---|---:|---:|---:|---:|:-:|")
            for task, o in outputs.items():
                ok = o.get("passed", o.get("finite"))
                lines.append(f"| {task} | {_fmt(o.get('max_abs_diff'))} | {_fmt(o.get('mean_abs_diff'))} | "
                             f"{_fmt(o.get('allowed'))} | {_fmt(o.get('max_abs_reference'))} | {_fmt(ok)} |")
        if entry.get("metrics"):
            lines += ["", "Task metrics on the labels (float model vs int8 model; drop > 0 = int8 worse):", "",
                      "| task | metric | float | int8 | drop |", "|---|---|---:|---:|---:|"]
            for task, metrics in entry["metrics"].items():
                for name, m in metrics.items():
                    lines.append(
                        f"| {task} | {name} | {_fmt(m['float'], 4)} | {_fmt(m['int8'], 4)} | {_fmt(m['drop'], 3)} |"
                    )
        if entry.get("agreement"):
            lines += ["", "Agreement with the float model's predictions:", "",
                      "| task | measure | value |", "|---|---|---:|"]
            for task, metrics in entry["agreement"].items():
                for name, value in metrics.items():
                    lines.append(f"| {task} | {name} | {_fmt(value, 4)} |")
        for problem in entry.get("problems", []):
            lines.append(f"\n- **problem**: {problem}")
    lines.append("")
    return "\n".join(lines)


def write_report(report: dict, folder) -> dict:
    """Writes `verification.json` and `verification.md` into `folder`; returns their paths."""
    json_path = os.path.join(folder, "verification.json")
    md_path = os.path.join(folder, "verification.md")
    with open(json_path, "w") as f:
        json.dump(report, f, indent=2, default=_json_default)
    with open(md_path, "w") as f:
        f.write(to_markdown(report))
    return {"json": json_path, "markdown": md_path}


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def run_batched(fn, x, batch_size=8) -> dict:
    parts = {}
    for i in range(0, len(x), batch_size):
        for k, v in fn(x[i:i + batch_size]).items():
            parts.setdefault(k, []).append(np.asarray(v))
    return {k: np.concatenate(v) for k, v in parts.items()}


def verify_tflite(model, file, fmt, entry, reference, x, labels, tol, int8_max_drop):
    """Runs the TFLite file through `mtlzoo.edge.Runner` and fills `entry` with the checks."""
    from mtlzoo.edge import Runner

    runner = Runner(file, metadata={"task_names": list(model.task_names)})
    out_types = sorted({np.dtype(d["dtype"]).name for d in runner.output_details.values()})
    entry["io"] = f"{runner.input_dtype.name} input, {'/'.join(out_types)} outputs"
    entry["backend"] = runner.backend
    names = list(runner.output_details)
    if sorted(names) != sorted(model.task_names):
        entry.setdefault("problems", []).append(
            f"signature outputs {sorted(names)} != tasks {sorted(model.task_names)}"
        )
        return
    outputs = run_batched(runner, x)
    if fmt in ("tflite", "tflite_fp16"):
        entry["tolerance"] = tol[fmt]
        entry["outputs"] = compare_outputs(reference, outputs, tol[fmt])
        return
    entry["outputs"] = diff_only(reference, outputs)
    for task, o in entry["outputs"].items():
        if not o["finite"]:
            entry.setdefault("problems", []).append(f"{task}: non-finite int8 outputs")
    entry["agreement"] = agreement_metrics(model, reference, outputs)
    if labels is not None:
        drops = quality_drop(label_metrics(model, reference, labels), label_metrics(model, outputs, labels))
        entry["metrics"] = drops
        entry.setdefault("problems", []).extend(check_int8(drops, entry["agreement"], int8_max_drop))
        if not entry["problems"]:
            del entry["problems"]
