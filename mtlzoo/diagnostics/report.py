"""`diagnose`: train a recipe briefly with both probes and save the report folder."""

from __future__ import annotations

import math
import os

import keras
import numpy as np
import tensorflow as tf

from mtlzoo import fileio
from mtlzoo.diagnostics.affinity import TaskAffinity
from mtlzoo.diagnostics.conflict import COHERENCE_LOW, GradientConflictMonitor
from mtlzoo.diagnostics.probes import check_positive_int, task_pairs

__all__ = ["diagnose", "run_diagnose", "synthetic_data"]


# ---------------------------------------------------------------- data for diagnose
def synthetic_data(model, num_examples, seed=0):
    """Learnable synthetic data for a vector-input model: (x, labels dict).

    A random teacher maps `x ~ N(0, I)` to a shared latent `h = tanh(xA)`; each
    task reads its own random projection of `h` (classification: arg-max
    class; multilabel: positive entries; regression: the projection plus a
    little noise), so the tasks share structure, as MTL data does.

    Args:
        model: a `MultiTaskModel` with a vector input (D,).
        num_examples: int. Number of examples.
        seed: int. Teacher and sampling seed.
    """
    shape = tuple(model.input_shape[1:])
    if len(shape) != 1:
        raise ValueError(f"synthetic_data makes vector inputs only; this model takes {shape}. Pass data= instead.")
    rng = np.random.default_rng(seed)
    d = shape[0]
    x = rng.normal(size=(num_examples, d)).astype("float32")
    latent = np.tanh(x @ rng.normal(size=(d, 8)) / math.sqrt(d))
    labels = {}
    for t, head in model.heads.items():
        kind = model.tasks[t]["kind"]
        if kind == "classification":
            logits = latent @ rng.normal(size=(8, head.num_classes)) * 3.0
            labels[t] = np.argmax(logits + 0.3 * rng.normal(size=logits.shape), axis=-1).astype("int32")
        elif kind == "multilabel":
            logits = latent @ rng.normal(size=(8, head.num_classes))
            labels[t] = (logits > 0).astype("float32")
        elif kind == "regression":
            out = latent @ rng.normal(size=(8, head.units))
            labels[t] = (out + 0.1 * rng.normal(size=out.shape)).astype("float32")
        else:
            raise ValueError(f"synthetic_data: task {t!r} of kind {kind!r} needs image data; pass data= instead.")
    return x, labels


def _recipe_data(recipe, model, steps, batch_size, probe_batches, seed):
    """(train dataset, probe data) for a recipe: its dataset if it names one, else synthetic data."""
    name = (recipe.data or {}).get("name")
    shape = tuple(recipe.input_shape)
    if name and len(shape) == 3:
        import mtlzoo.data

        options = {"tasks": list(recipe.tasks)}
        fractions = recipe.data.get("label_fractions")
        train = mtlzoo.data.load(name, split="train", batch_size=batch_size, image_size=shape[:2],
                                 num_examples=steps * batch_size, seed=seed, label_fractions=fractions,
                                 shuffle=True, **options)
        probe = mtlzoo.data.load(name, split="validation", batch_size=batch_size, image_size=shape[:2],
                                 num_examples=probe_batches * batch_size, seed=seed, shuffle=False, **options)
        return train.repeat(), probe
    x, y = synthetic_data(model, steps * batch_size + probe_batches * batch_size, seed)
    n = steps * batch_size
    train = tf.data.Dataset.from_tensor_slices((x[:n], {t: v[:n] for t, v in y.items()}))
    train = train.shuffle(n, seed=seed).batch(batch_size).repeat()
    probe = tf.data.Dataset.from_tensor_slices((x[n:], {t: v[n:] for t, v in y.items()})).batch(batch_size)
    return train, probe


class _WeightRecorder(keras.callbacks.Callback):
    """Records the model's loss weights after every training step."""

    def __init__(self):
        super().__init__()
        self.steps = []
        self.weights = {}
        self._step = 0

    def _record(self):
        for t, v in self.model.loss_weights.items():
            self.weights.setdefault(t, []).append(float(v.numpy()))
        self.steps.append(self._step)

    def on_train_begin(self, logs=None):
        self._record()

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        self._record()


# ---------------------------------------------------------------- report
def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _coherence_reading(tasks, coherence):
    """One sentence on the task whose gradient agrees least with itself from batch to batch (if measured)."""
    if coherence is None:
        return []
    found = [(float(c), t) for c, t in zip(coherence, tasks) if np.isfinite(c)]
    if len(found) < 2:
        return []
    low, high = min(found), max(found)
    return [f"{low[1]}'s gradient agrees least with itself from batch to batch (coherence {low[0]:+.2f}; "
            f"{high[1]}'s {high[0]:+.2f})" + (": its labels look unrelated to the input, or too noisy to learn."
                                              if low[0] < COHERENCE_LOW else ".")]


def _reading(tasks, conflict, affinity, weights):
    """Plain-language sentences from the measured numbers."""
    lines = []
    fraction, cosine, norms = conflict["conflict_fraction"], conflict["cosine"], conflict["grad_norm"]
    pairs = [(i, j) for i, j in task_pairs(tasks) if np.isfinite(fraction[i, j])]
    pairs.sort(key=lambda p: (-fraction[p], cosine[p]))
    n = conflict["samples"]
    for i, j in pairs:
        f, c = fraction[i, j], cosine[i, j]
        verdict = "they mostly conflict" if f >= 0.5 else ("they often conflict" if f >= 0.25 else
                                                           ("they rarely conflict" if f > 0 else "they agree"))
        lines.append(
            f"{tasks[i]} conflicts with {tasks[j]} in {f:.0%} of sampled steps "
            f"(mean gradient cosine {c:+.2f} over {n} batches): {verdict}."
        )
    finite = [(norms[i], tasks[i]) for i in range(len(tasks)) if np.isfinite(norms[i]) and norms[i] > 0]
    if len(finite) >= 2:
        hi, lo = max(finite), min(finite)
        ratio = hi[0] / lo[0]
        line = f"{hi[1]} has the largest loss gradient on the shared parameters ({ratio:.1f}x that of {lo[1]})"
        last = {t: v[-1] for t, v in (weights or {}).items() if v}
        if hi[1] in last and lo[1] in last and last[lo[1]] > 0:
            weighted = ratio * last[hi[1]] / last[lo[1]]
            line += (f"; with the final loss weights ({last[hi[1]]:.3g} vs {last[lo[1]]:.3g}) "
                     f"its share of the update is {weighted:.1f}x")
            ratio = weighted
        line += " and dominates the shared update." if ratio >= 10 else "."
        lines.append(line)
    lines += _coherence_reading(tasks, conflict.get("coherence"))
    if affinity is not None:
        entries = [(affinity[i, j], tasks[i], tasks[j]) for i in range(len(tasks)) for j in range(len(tasks))
                   if i != j and np.isfinite(affinity[i, j])]
        entries.sort(reverse=True)
        for z, a, b in entries:
            if z > 0:
                lines.append(f"A step on {a} lowers {b}'s loss (affinity {z:+.2g}): {a} helps {b}.")
            elif z < 0:
                lines.append(f"A step on {a} raises {b}'s loss (affinity {z:+.2g}): {a} hurts {b}.")
            else:
                lines.append(f"A step on {a} leaves {b}'s loss unchanged (affinity 0).")
    if weights:
        first = {t: v[0] for t, v in weights.items() if v}
        last = {t: v[-1] for t, v in weights.items() if v}
        if first != last:
            moved = ", ".join(f"{t} {first[t]:.3g} -> {last[t]:.3g}" for t in tasks if t in first)
            lines.append(f"The loss weights moved during training: {moved}.")
        else:
            fixed = ", ".join(f"{t} {last[t]:.3g}" for t in tasks if t in last)
            lines.append(f"The loss weights stayed fixed: {fixed}.")
    return lines


def _heatmap(ax, matrix, labels, title, vmin, vmax, cmap, fmt, row_label=None, col_label=None, diagonal="hide"):
    """Annotated heatmap; the diagonal is left uncoloured ("hide": no text, "text": value in grey)."""
    matrix = np.asarray(matrix, np.float64)
    k = len(labels)
    mask = ~np.isfinite(matrix) | np.eye(k, dtype=bool)
    image = ax.imshow(np.ma.masked_array(np.nan_to_num(matrix), mask), vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_facecolor("#eeeeee")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticklabels(labels)
    ax.set_title(title)
    if row_label:
        ax.set_ylabel(row_label)
    if col_label:
        ax.set_xlabel(col_label)
    span = max(abs(vmin), abs(vmax)) or 1.0
    for i in range(k):
        for j in range(k):
            value = matrix[i, j]
            if i == j:
                if diagonal == "text" and np.isfinite(value):
                    ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=8, color="#777777")
                continue
            text = "n/a" if not np.isfinite(value) else fmt.format(value)
            strong = np.isfinite(value) and abs(value - (0.0 if vmin < 0 else vmin)) > 0.6 * span
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if strong else "black")
    return image


def _new_figure(width, height):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plot_conflict(path, tasks, conflict):
    fig = _new_figure(4.2 * 2 + 1, 4.2)
    ax1, ax2 = fig.subplots(1, 2)
    im1 = _heatmap(ax1, conflict["cosine"], tasks, "mean gradient cosine", -1.0, 1.0, "RdBu", "{:+.2f}")
    fig.colorbar(im1, ax=ax1, shrink=0.8)
    im2 = _heatmap(ax2, conflict["conflict_fraction"], tasks, "fraction of steps with cosine < 0", 0.0, 1.0,
                   "Reds", "{:.0%}")
    fig.colorbar(im2, ax=ax2, shrink=0.8)
    fileio.atomic_savefig(fig, path, dpi=100)


def _plot_affinity(path, tasks, matrix):
    fig = _new_figure(5.5, 4.6)
    ax = fig.subplots()
    shown = np.asarray(matrix, np.float64) if matrix is not None else np.full((len(tasks), len(tasks)), np.nan)
    off = shown[~np.eye(len(tasks), dtype=bool)]
    off = np.abs(off[np.isfinite(off)])
    limit = float(off.max()) if off.size and off.max() > 0 else 1.0
    image = _heatmap(ax, shown, tasks, "lookahead task affinity Z(i -> j)", -limit, limit, "RdBu", "{:+.2g}",
                     row_label="step on task i", col_label="loss of task j", diagonal="text")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fileio.atomic_savefig(fig, path, dpi=100)


def _plot_weights(path, steps, weights):
    fig = _new_figure(6.5, 3.8)
    ax = fig.subplots()
    for t, values in weights.items():
        ax.plot(steps[: len(values)], values, label=t)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss weight")
    ax.set_title("loss-weight trajectories")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    fileio.atomic_savefig(fig, path, dpi=100)


def diagnose(recipe, out_dir, epochs=3, steps=20, *, overrides=None, batch_size=None, num_batches=4,
             affinity_interval=1, affinity_batches=1, affinity_learning_rate=None, data=None, probe_data=None,
             seed=0, verbose=0):
    """Trains a recipe briefly and writes a negative-transfer report folder.

    The recipe's model is built and compiled (with its aggregator, if any)
    and trained for `epochs` x `steps` steps with its loss weighting, a
    `GradientConflictMonitor` and a `TaskAffinity`. Data: `data` if given;
    else the recipe's dataset (`data: {name: synthetic_driving}`) for image
    recipes; else learnable synthetic data (`synthetic_data`) for vector
    inputs. The folder receives:

    - `conflict.png`: heatmaps of the mean gradient cosine and of the fraction
      of sampled steps with a negative cosine;
    - `affinity.png`: heatmap of the lookahead affinity `Z(i -> j)`;
    - `loss_weights.png`: the loss weights after every training step;
    - `report.json`: all numbers (NaN as null), the training history, the
      reading and the `situations` of docs/when-mtl-helps.md the run matches
      (`mtlzoo.diagnostics.situations`, with the finding measured for each);
      `report.txt`: the reading, one sentence per line.

    Args:
        recipe: str, path, dict or `Recipe`.
        out_dir: str. Output folder (created).
        epochs: int >= 1. Defaults to 3.
        steps: int >= 1. Training steps per epoch. Defaults to 20.
        overrides: dict or None. Recipe overrides (as for `mtlzoo.build`).
        batch_size: int or None. None: the recipe's `training.batch_size`
            (default 16).
        num_batches: int >= 1. Batches sampled per epoch for gradient conflict.
        affinity_interval: int >= 1. Epochs between affinity measurements.
        affinity_batches: int >= 1. Batches per affinity measurement.
        affinity_learning_rate: float or None. Lookahead step (None: the
            optimizer's learning rate).
        data: training data (`tf.data.Dataset` of (x, y) repeating, or
            (x, y) arrays) or None.
        probe_data: data the diagnostics sample from; None: the recipe's
            validation split (or held-out synthetic data), or `data`.
        seed: int. Data seed. Defaults to 0.
        verbose: int. Keras `fit` verbosity. Defaults to 0.

    Returns:
        The report dict (also saved as `report.json`), with `files` listing the
        written paths.

    Example:
    ```python
    from mtlzoo.diagnostics import diagnose
    report = diagnose("driving_perception_lite", "diag", epochs=2, steps=10,
                      overrides={"backbone": "tiny", "input_shape": (64, 128, 3)})
    print("\\n".join(report["reading"]))
    ```
    """
    import mtlzoo.weighting
    from mtlzoo.recipe import get_recipe

    epochs = check_positive_int("diagnose", "epochs", epochs)
    steps = check_positive_int("diagnose", "steps", steps)
    rec = get_recipe(recipe, **(overrides or {}))
    batch_size = int(batch_size or (rec.training or {}).get("batch_size", 16))
    model = rec.build()
    if data is None:
        train, probe = _recipe_data(rec, model, steps, batch_size, num_batches, seed)
    else:
        train = data
        probe = probe_data if probe_data is not None else data
    if probe_data is not None:
        probe = probe_data
    if isinstance(train, (tuple, list)):
        x, y = train[0], train[1]
        fit_kwargs = {"x": x, "y": y, "batch_size": batch_size}
    else:
        fit_kwargs = {"x": train, "steps_per_epoch": steps, "shuffle": False}

    weighting = mtlzoo.weighting.get(rec.weighting, **rec.weighting_args)
    recorder = _WeightRecorder()
    monitor = GradientConflictMonitor(probe, num_batches=num_batches, batch_size=batch_size)
    affinity = TaskAffinity(probe, interval=affinity_interval, num_batches=affinity_batches,
                            learning_rate=affinity_learning_rate, batch_size=batch_size)
    callbacks = ([weighting] if weighting is not None else []) + [recorder, monitor, affinity]
    history = model.fit(epochs=epochs, callbacks=callbacks, verbose=verbose, **fit_kwargs)

    tasks = list(model.task_names)
    conflict = monitor.summary()
    z = affinity.mean_matrix()
    reading = _reading(tasks, conflict, z, recorder.weights)

    os.makedirs(out_dir, exist_ok=True)
    files = {
        "conflict": os.path.join(out_dir, "conflict.png"),
        "affinity": os.path.join(out_dir, "affinity.png"),
        "loss_weights": os.path.join(out_dir, "loss_weights.png"),
        "json": os.path.join(out_dir, "report.json"),
        "text": os.path.join(out_dir, "report.txt"),
    }
    _plot_conflict(files["conflict"], tasks, conflict)
    _plot_affinity(files["affinity"], tasks, z)
    _plot_weights(files["loss_weights"], recorder.steps, recorder.weights)
    report = {
        "recipe": rec.name,
        "tasks": tasks,
        "weighting": rec.weighting,
        "weighting_args": rec.weighting_args,
        "aggregator": rec.aggregator,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "batch_size": batch_size,
        "gradient": {
            "grad_norm": dict(zip(tasks, conflict["grad_norm"])),
            "cosine": conflict["cosine"],
            "conflict_fraction": conflict["conflict_fraction"],
            "conflict_strength": conflict["conflict_strength"],
            "coherence": dict(zip(tasks, conflict["coherence"])),
            "sampled_batches": conflict["samples"],
            "per_epoch": [
                {"epoch": h["epoch"], "grad_norm": h["grad_norm"], "cosine": h["cosine"],
                 "conflict_fraction": h["conflict_fraction"], "coherence": h["coherence"]} for h in monitor.history
            ],
        },
        "affinity": {
            "matrix": z,
            "rows": "source task i (lookahead step on L_i)",
            "columns": "target task j (relative change of L_j, positive = helped)",
            "per_epoch": affinity.history,
        },
        "loss_weights": {"steps": recorder.steps, **recorder.weights},
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
        "reading": reading,
        "files": files,
    }
    from mtlzoo.diagnostics.situations import situations

    report["situations"] = situations(report, rec)
    reading += [f"This run looks like the '{s['claim']}' situation of docs/when-mtl-helps.md: {s['evidence']} "
                f"Measured there: {s['measured']}" for s in report["situations"]]
    report["reading"] = reading
    fileio.atomic_write_json(files["json"], _json_ready(report), indent=2, allow_nan=False)
    fileio.atomic_write_text(files["text"], "\n".join(reading) + "\n")
    return report


def run_diagnose(args):
    """Body of `mtlzoo diagnose RECIPE [key=value ...] --out DIR --epochs N --steps N`.

    Args:
        args: an argparse Namespace with `recipe`, `overrides` (list of
            "key=value"), `out`, `epochs`, `steps`.

    Returns:
        0 (the process exit status).
    """
    from mtlzoo.recipe import parse_cli_overrides

    overrides = parse_cli_overrides(getattr(args, "overrides", None) or [])
    out = getattr(args, "out", None) or "diagnose_out"
    report = diagnose(args.recipe, out, epochs=int(getattr(args, "epochs", None) or 3),
                      steps=int(getattr(args, "steps", None) or 20), overrides=overrides)
    print(f"mtlzoo diagnose {report['recipe']}: tasks {', '.join(report['tasks'])}; "
          f"{report['epochs']} epochs x {report['steps_per_epoch']} steps, weighting {report['weighting']}")
    for line in report["reading"]:
        print("  " + line)
    print("report written to " + ", ".join(report["files"].values()))
    return 0
