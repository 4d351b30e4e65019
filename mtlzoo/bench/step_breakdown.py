"""Timing helpers of `mtlzoo bench step`: interleaved rounds and the four-stage breakdown of the equal step.

The breakdown times the equal-weight step in four cumulative stages, TensorFlow and (with `compare=torch`) the
PyTorch reference side by side: forward + losses; + the backward through the heads only; + the full backward; the
full step (see `mtlzoo.bench.step`).
"""

from __future__ import annotations

import statistics
import time


def flag(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off", "none")
    return bool(value)


def tf_stages(model, x, y):
    """The equal-weight step in four cumulative stages, as callables (see the module docstring)."""
    import tensorflow as tf

    trunk, heads = model.shared_representation_model()
    head_vars = [v for vs in model.variable_groups()[1].values() for v in vs]
    xt, yt = tf.constant(x), {t: tf.constant(v) for t, v in y.items()}

    def total(y_pred):
        return model.combine_task_losses(model.compute_task_losses(yt, y_pred))

    @tf.function
    def forward():
        with tf.GradientTape():
            return total(model(xt, training=True))

    @tf.function
    def heads_backward():
        with tf.GradientTape() as tape:
            features = [tf.stop_gradient(f) for f in trunk(xt, training=True)]
            loss = total(heads(features, training=True))
        return tape.gradient(loss, head_vars)

    @tf.function
    def full_backward():
        with tf.GradientTape() as tape:
            loss = total(model(xt, training=True))
        return tape.gradient(loss, model.trainable_variables)

    return {"forward+losses": forward, "+heads backward": heads_backward, "+full backward": full_backward,
            "full step": lambda: model.train_on_batch(xt, yt)}


def interleaved(pairs, rounds, steps):
    """Median seconds per call of each (name, callable) in `pairs`, timed in turn within each round."""
    times = {name: [] for name, _ in pairs}
    for _ in range(int(rounds)):
        for name, fn in pairs:
            start = time.perf_counter()
            for _ in range(int(steps)):
                fn()
            times[name].append((time.perf_counter() - start) / int(steps))
    return {name: statistics.median(ts) for name, ts in times.items()}


def breakdown(opts, recipe, model, x, y, ref_module, threads):
    """Prints the four-stage breakdown of the equal-weight step, TF and PyTorch side by side."""
    tf_fns = tf_stages(model, x, y)
    pairs = []
    torch_fns = {}
    if ref_module is not None:
        ref = ref_module.TorchReference.from_recipe(recipe, threads=threads, channels_last=flag(opts["channels_last"]))
        torch_fns = ref.stages(*ref.batch(x, y))
    for stage, fn in tf_fns.items():
        for _ in range(int(opts["warmup"])):
            fn()
            if stage in torch_fns:
                torch_fns[stage]()
        pairs.append((("tf", stage), fn))
        if stage in torch_fns:
            pairs.append((("torch", stage), torch_fns[stage]))
    med = interleaved(pairs, opts["rounds"], opts["steps"])
    print("| stage (equal weights) | TF ms | torch ms | × torch |")
    print("| --- | ---: | ---: | ---: |")
    out = {}
    for stage in tf_fns:
        tf_ms, torch_ms = 1000 * med[("tf", stage)], 1000 * med.get(("torch", stage), float("nan"))
        out[stage] = {"tf_ms": tf_ms, "torch_ms": torch_ms}
        theirs = f"{torch_ms:.1f} | {tf_ms / torch_ms:.2f}" if stage in torch_fns else "- | -"
        print(f"| {stage} | {tf_ms:.1f} | {theirs} |")
    return out
