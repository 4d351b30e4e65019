"""Run a model (Keras or an exported runner) on one image, print per-task results and save a picture.

`predict_image(model_or_runner, image, out_png)` resizes the image to the
model's input size, runs every task, prints a short summary per task and
saves a figure (matplotlib, Agg backend) with the input image, the
segmentation overlay (one colour per class, legend with class names), the
depth colour map, the detected boxes with class names and scores, and the
scene tags with their probabilities.

Class names come from the export metadata (`mtlzoo_export.json`), else from
the `synthetic_driving` lists (`SEGMENTATION_CLASSES`, `DETECTION_CLASSES`,
`SCENE_TAGS`) when a task's class count matches, else class indices.

Example:
```python
import mtlzoo, mtlzoo.edge
from mtlzoo.predict import predict_image
runner = mtlzoo.edge.load("saved_models/driving_perception_lite/model_int8.tflite")
results = predict_image(runner, "street.png", "street_prediction.png")
results["detection"]["boxes"]
```
"""

from __future__ import annotations

import os
import re

import numpy as np

_KIND_LISTS = {
    "segmentation": "SEGMENTATION_CLASSES",
    "detection": "DETECTION_CLASSES",
    "multilabel": "SCENE_TAGS",
}


class ImageFileError(ValueError):
    """An image file that cannot be decoded (truncated, corrupt, another format); the message names the file."""


def default_class_names(tasks: dict) -> dict:
    """dict task -> list of class names: the `synthetic_driving` names when the class count matches, else indices.

    Args:
        tasks: dict task -> task config (`{"kind": ..., "num_classes": ...}`).
    """
    from mtlzoo.data.synthetic_driving import renderer

    names = {}
    for task, cfg in tasks.items():
        n = cfg.get("num_classes")
        if n is None:
            continue
        candidate = getattr(renderer, _KIND_LISTS.get(cfg.get("kind"), ""), None)
        if candidate is not None and len(candidate) == int(n):
            names[task] = list(candidate)
        else:
            names[task] = [str(i) for i in range(int(n))]
    return names


def palette(n: int) -> np.ndarray:
    """n distinct RGB colours in [0, 1] (tab10/tab20, then an HSV wheel)."""
    from matplotlib import colormaps

    if n <= 10:
        return np.asarray(colormaps["tab10"].colors[:n])
    if n <= 20:
        return np.asarray(colormaps["tab20"].colors[:n])
    return colormaps["hsv"](np.linspace(0, 1, n, endpoint=False))[:, :3]


def load_image(image, size=None) -> np.ndarray:
    """A float32 [H, W, 3] RGB image in [0, 255] from a path or an array, resized to `size` (H, W).

    Args:
        image: str path (PNG, JPEG, BMP, GIF), or an array [H, W, 3] in [0, 255]
            (uint8 or float; [0, 1] floats are scaled), or [H, W] grey.
        size: (H, W) or None.

    Raises:
        FileNotFoundError: no file at `image`.
        ImageFileError: (a `ValueError`) the file is not a readable PNG,
            JPEG, BMP or GIF image (truncated, corrupt, another format); the
            message names the file.
    """
    import tensorflow as tf

    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.exists(path):
            raise FileNotFoundError(f"No image file at {path!r}.")
        if os.path.isdir(path):
            raise ImageFileError(f"{path!r} is a folder; give an image file (PNG, JPEG, BMP or GIF).")
        with open(path, "rb") as f:
            data = f.read()
        try:
            array = tf.io.decode_image(data, channels=3, expand_animations=False).numpy().astype(np.float32)
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
            detail = re.sub(r"\{\{.*?\}\}|\[Op:\w+\]", "", getattr(e, "message", "") or str(e)).strip().splitlines()
            raise ImageFileError(
                f"{path!r} is not a readable PNG, JPEG, BMP or GIF image"
                f"{f' ({detail[0]})' if detail else ''}: it may be truncated or corrupt, or another kind of file."
            ) from e
    else:
        array = np.asarray(image)
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.shape[-1] == 4:
            array = array[..., :3]
        if np.issubdtype(array.dtype, np.floating) and array.size and array.max() <= 1.0:
            array = array * 255.0
        array = array.astype(np.float32)
    if size is not None and tuple(array.shape[:2]) != tuple(size):
        array = tf.image.resize(array, size, method="bilinear").numpy()
    return np.clip(array, 0.0, 255.0).astype(np.float32)


def _describe(model_or_runner):
    """(callable returning numpy dict, tasks config dict, input (H, W), class names dict, head decoders)."""
    tasks = getattr(model_or_runner, "tasks", None)
    if tasks is not None and hasattr(model_or_runner, "heads"):  # Keras MultiTaskModel
        model = model_or_runner
        shape = tuple(model.inputs[0].shape[1:3])

        def run(x):
            out = model(x, training=False)
            return {t: np.asarray(out[t], np.float32) for t in model.task_names}

        return run, dict(model.tasks), shape, default_class_names(model.tasks), list(model.task_names)
    runner = model_or_runner
    metadata = getattr(runner, "metadata", {}) or {}
    tasks = metadata.get("tasks")
    shape = tuple(int(d) for d in runner.input_details["shape_signature"][1:3])

    def run(x):
        return {t: np.asarray(v, np.float32) for t, v in runner(x).items()}

    if tasks is None:
        probe = run(np.zeros((1,) + shape + (3,), np.float32))
        tasks = {t: _guess_task(v, shape) for t, v in probe.items()}
    names = metadata.get("class_names") or default_class_names(tasks)
    return run, tasks, shape, names, list(getattr(runner, "task_names", tasks))


def _guess_task(value, shape) -> dict:
    """A task config guessed from an output's shape (exports without metadata)."""
    if value.ndim == 4 and tuple(value.shape[1:3]) == tuple(shape):
        if value.shape[-1] == 1:
            return {"kind": "depth"}
        return {"kind": "segmentation", "num_classes": int(value.shape[-1])}
    if value.ndim == 4:
        return {"kind": "detection", "num_classes": int(value.shape[-1]) - 4}
    return {"kind": "multilabel", "num_classes": int(value.shape[-1])}


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def summarize(outputs: dict, tasks: dict, class_names: dict, input_shape, score_threshold=0.3) -> dict:
    """Per-task results of one image's outputs (batch of 1) as plain Python values."""
    from mtlzoo.heads.centernet_targets import decode_centernet

    results = {}
    for task, value in outputs.items():
        kind = tasks.get(task, {}).get("kind")
        names = class_names.get(task)
        y = value[0]
        if kind == "segmentation":
            classes = y.argmax(-1)
            counts = np.bincount(classes.ravel(), minlength=y.shape[-1]) / classes.size
            order = np.argsort(-counts)
            results[task] = {
                "class_map": classes,
                "class_fractions": {names[i] if names else str(i): float(counts[i]) for i in order if counts[i] > 0},
            }
        elif kind == "depth":
            d = y[..., 0]
            results[task] = {"depth": d, "min": float(d.min()), "median": float(np.median(d)), "max": float(d.max())}
        elif kind == "detection":
            c = int(tasks[task].get("num_classes", y.shape[-1] - 4))
            stride = max(1, int(round(input_shape[0] / y.shape[0])))
            boxes, scores, cls = decode_centernet(y, c, stride=stride, score_threshold=score_threshold)
            results[task] = {
                "boxes": boxes,
                "scores": scores,
                "classes": cls,
                "labels": [names[int(k)] if names else str(int(k)) for k in cls],
            }
        elif kind == "multilabel":
            p = _sigmoid(y)
            results[task] = {"probabilities": {names[i] if names else str(i): float(p[i]) for i in range(len(p))}}
        elif kind == "classification":
            z = y - y.max()
            p = np.exp(z) / np.exp(z).sum()
            k = int(p.argmax())
            results[task] = {"class": names[k] if names else str(k), "probability": float(p[k]),
                             "probabilities": {names[i] if names else str(i): float(p[i]) for i in range(len(p))}}
        else:
            results[task] = {"values": [float(v) for v in np.ravel(y)]}
    return results


def _print(results, tasks):
    for task, r in results.items():
        kind = tasks.get(task, {}).get("kind", "?")
        head = task if task == kind else f"{task} ({kind})"
        if kind == "segmentation":
            top = ", ".join(f"{k} {v:.0%}" for k, v in list(r["class_fractions"].items())[:4])
            print(f"{head}: {top}")
        elif kind == "depth":
            print(f"{head}: min {r['min']:.1f} m, median {r['median']:.1f} m, max {r['max']:.1f} m")
        elif kind == "detection":
            print(f"{head}: {len(r['boxes'])} boxes")
            for box, score, label in zip(r["boxes"], r["scores"], r["labels"]):
                y0, x0, y1, x1 = box
                print(f"  {label:<14} {score:.2f}  (y {y0:.0f}-{y1:.0f}, x {x0:.0f}-{x1:.0f})")
        elif kind == "multilabel":
            tags = ", ".join(f"{k} {v:.2f}" for k, v in r["probabilities"].items())
            print(f"{head} tags: {tags}")
        elif kind == "classification":
            print(f"{head}: {r['class']} {r['probability']:.2f}")
        else:
            print(f"{head}: {', '.join(f'{v:.3g}' for v in r['values'])}")


def _plot(image, results, tasks, class_names, out_png, title=None):
    # A Figure on an Agg canvas: no pyplot, so the caller's backend and figures are left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    panels = [("input", None)]
    for task in results:
        kind = tasks.get(task, {}).get("kind")
        panels.append((task, kind))
    cols = min(3, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    aspect = image.shape[1] / max(image.shape[0], 1)
    fig = Figure(figsize=(2.2 * cols * min(max(aspect, 1.0), 2.5) + 1.0, 3.0 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    rgb = image / 255.0
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (task, kind) in zip(axes.ravel(), panels):
        r = results.get(task)
        if kind is None:
            ax.imshow(rgb)
            ax.set_title("input")
        elif kind == "segmentation":
            classes = r["class_map"]
            n = tasks[task].get("num_classes", int(classes.max()) + 1)
            colours = palette(n)
            ax.imshow(0.45 * rgb + 0.55 * colours[classes])
            names = class_names.get(task) or [str(i) for i in range(n)]
            present = [i for i in range(n) if (classes == i).any()]
            ax.legend(handles=[Patch(color=colours[i], label=names[i]) for i in present], loc="upper right",
                      fontsize=6, framealpha=0.7)
            ax.set_title(f"{task}")
        elif kind == "depth":
            im = ax.imshow(r["depth"], cmap="magma_r")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="m")
            ax.set_title(f"{task} (m)")
        elif kind == "detection":
            ax.imshow(rgb)
            n = tasks[task].get("num_classes", 1)
            colours = palette(max(n, 1))
            for box, score, cls, label in zip(r["boxes"], r["scores"], r["classes"], r["labels"]):
                y0, x0, y1, x1 = box
                colour = colours[int(cls) % len(colours)]
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.5))
                ax.text(x0, y0, f"{label} {score:.2f}", color="white", fontsize=6, va="bottom",
                        bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "linewidth": 0})
            ax.set_xlim(0, image.shape[1])
            ax.set_ylim(image.shape[0], 0)
            ax.set_title(f"{task} ({len(r['boxes'])} boxes)")
        elif kind in ("multilabel", "classification"):
            probs = r["probabilities"]
            ax.axis("on")
            ax.barh(list(probs)[::-1], list(probs.values())[::-1], color="tab:blue")
            ax.set_xlim(0, 1)
            ax.axvline(0.5, color="grey", linestyle=":", linewidth=1)
            ax.tick_params(labelsize=7)
            ax.set_title(f"{task} (probability)")
        else:
            ax.text(0.5, 0.5, "\n".join(f"{v:.3g}" for v in r["values"][:8]), ha="center", va="center")
            ax.set_title(task)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    folder = os.path.dirname(os.fspath(out_png))
    try:
        if folder:
            os.makedirs(folder, exist_ok=True)
        fig.savefig(out_png, dpi=120)
    except OSError as e:
        raise OSError(e.errno, f"Cannot write the picture {os.fspath(out_png)!r}: {e.strerror or e}"
                      f"{f' ({e.filename})' if e.filename else ''}. Choose a writable --out path.") from e


def predict_image(model_or_runner, image, out_png=None, class_names=None, score_threshold=0.3, verbose=True,
                  title=None) -> dict:
    """Runs every task on one image, prints the results and saves a picture of them.

    Args:
        model_or_runner: a Keras `MultiTaskModel` or a runner from
            `mtlzoo.edge.load` (TFLite or SavedModel).
        image: str path of an image file, or an array [H, W, 3] RGB in [0, 255].
        out_png: str or None. Where to save the figure (PNG); None for no figure.
        class_names: dict task -> list of names, overriding the defaults.
        score_threshold: float. Minimum detection score shown. Defaults to 0.3.
        verbose: bool. Print the per-task results. Defaults to True.
        title: str or None. Title of the figure (default: the image's file name).

    Returns:
        dict task -> results (segmentation `class_map` and `class_fractions`,
        depth map and statistics, detection `boxes`/`scores`/`classes`/`labels`,
        tag `probabilities`, ...), plus `"image"` (the resized input) and
        `"figure"` (the PNG path or None).

    Example:
    ```python
    from mtlzoo.predict import predict_image
    predict_image(mtlzoo.load("runs/lite/model.keras"), "street.png", "street_prediction.png")
    ```
    """
    run, tasks, shape, names, order = _describe(model_or_runner)
    names = dict(names, **(class_names or {}))
    x = load_image(image, shape)
    outputs = run(x[None])
    outputs = {t: outputs[t] for t in order if t in outputs}
    results = summarize(outputs, tasks, names, shape, score_threshold=score_threshold)
    if verbose:
        _print(results, tasks)
    if out_png is not None:
        if title is None and isinstance(image, (str, os.PathLike)):
            title = os.path.basename(os.fspath(image))
        _plot(x, results, tasks, names, out_png, title=title)
        if verbose:
            print(f"saved {out_png}")
    results["image"] = x
    results["figure"] = None if out_png is None else os.fspath(out_png)
    return results


def side_by_side(pictures, out_png, titles=None):
    """Puts PNG pictures (e.g. two `predict_image` figures) next to each other in one PNG.

    Args:
        pictures: list of PNG paths.
        out_png: str. Where to save the combined picture.
        titles: optional list of one title per picture, drawn above it.

    Returns:
        str: `out_png`.

    Example:
    ```python
    from mtlzoo.predict import side_by_side
    side_by_side(["mine.png", "zoo.png"], "comparison.png", ["my model", "zoo model"])
    ```
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    images = [imread(os.fspath(p)) for p in pictures]
    height = max(im.shape[0] for im in images)
    width = sum(im.shape[1] for im in images)
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi + (0.35 if titles else 0.0)), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(images), squeeze=False, width_ratios=[im.shape[1] for im in images])[0]
    for i, (ax, im) in enumerate(zip(axes, images)):
        ax.imshow(im)
        ax.axis("off")
        if titles:
            ax.set_title(titles[i], fontsize=11)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=0.93 if titles else 1, wspace=0.01)
    fig.savefig(out_png, dpi=dpi)
    return os.fspath(out_png)
