"""Runs the distributed-training checks of tests/test_distribute.py in a fresh process.

Distribution needs its devices configured before TensorFlow initialises them
(2 logical CPUs for MirroredStrategy, a TF_CONFIG cluster for
MultiWorkerMirroredStrategy), so the tests start this script with
`python tests/dist_helper.py MODE ...` instead of changing the pytest process.

Modes:
    mirrored OUT.json SCENARIO...   2 logical CPUs: each scenario trained with the
                                    default strategy and with MirroredStrategy(2)
                                    in this process; writes the differences.
    worker OUT_DIR SCENARIO...      one worker of a MultiWorkerMirroredStrategy cluster
                                    (TF_CONFIG from the environment); writes its final
                                    weights to OUT_DIR/worker{i}_{scenario}.npz, and
                                    worker 0 also a single-device reference
                                    OUT_DIR/single_{scenario}.npz afterwards.

Scenarios (tabular model, 16 features, vector heads, no BatchNorm so the
single-device run is the exact reference):
    plain      SGD, 2 epochs of 4 steps, global batch 16
    weighting  + a loss-weighting callback (DWA, T=2) over 3 epochs: its weights change in epoch 3
    pcgrad     + PCGrad on 3 tasks (random task orders, seed 0)
    mgda       + MGDA on 3 tasks
    mgda_ub    + MGDA-UB (representation level: weights from the shared features' gradients)
    masked     class labels missing for the whole second half of every global batch
               (replica 1's shard) and for 2 examples of the first half
    nonfinite  Adam; one NaN regression label in replica 1's shard of step 2: the
               whole step must be skipped on every replica, optimizer state included
    gradnorm   step-level weighting: GradNorm (alpha 1.5) updates the loss weights every step
    famo       step-level weighting: FAMO (its own logits, updated every step)
    uncertainty  learned log-variances (model variables, trained with the weights)
    uncertainty_callback  the same, the log-variances owned by the callback (its own Adam)
    rlw        random loss weights, one draw per step for all replicas (seed 0)
    train_api  `mtlzoo.train(recipe, strategy=...)` itself (data checks, callbacks, DWA from the recipe)
    centernet  the CenterNet detection loss and its gradient, replica 1's shard without objects:
               normalised by the global object count (no training; see `centernet_check`)
"""

from __future__ import annotations

import json
import os
import sys
import time

SCENARIOS = ("plain", "weighting", "pcgrad", "mgda", "mgda_ub", "masked", "nonfinite", "gradnorm", "famo",
             "uncertainty", "uncertainty_callback", "rlw", "train_api", "centernet")
STEP_WEIGHTINGS = ("gradnorm", "famo", "uncertainty", "uncertainty_callback", "rlw")
GLOBAL_BATCH = 16
NUM_EXAMPLES = 64


def make_data(scenario):
    import numpy as np

    rng = np.random.default_rng(123)
    n = NUM_EXAMPLES
    x = rng.normal(size=(n, 16)).astype("float32")
    w = rng.normal(size=(16, 3)).astype("float32")
    y = {
        "label": np.argmax(x @ w + 0.5 * rng.normal(size=(n, 3)), axis=1).astype("int32"),
        "target": (x[:, :1] * 2.0 - x[:, 1:2] + 0.1 * rng.normal(size=(n, 1))).astype("float32"),
    }
    if scenario in ("pcgrad", "mgda", "mgda_ub"):
        # A third task that conflicts with `target`.
        y["aux"] = (-x[:, :1] * 2.0 + x[:, 2:3]).astype("float32")
    if scenario == "masked":
        pos = np.arange(n) % GLOBAL_BATCH
        y["label"][(pos >= GLOBAL_BATCH // 2) | (pos < 2)] = -1
    if scenario == "nonfinite":
        y["target"][GLOBAL_BATCH + GLOBAL_BATCH - 3] = np.nan  # step 2, second half of the batch
    return x, y


def epochs_of(scenario):
    return {"weighting": 3, "nonfinite": 1}.get(scenario, 2)


def make_model(scenario):
    import mtlzoo

    overrides = {"optimizer": {"name": "sgd", "learning_rate": 0.05}, "seed": 7}
    if scenario in ("pcgrad", "mgda", "mgda_ub"):
        overrides["add_tasks"] = {"aux": {"kind": "regression", "units": 1}}
        overrides["aggregator"] = scenario.replace("_ub", "")
        if scenario == "pcgrad":
            overrides["aggregator_args"] = {"seed": 0}
        if scenario == "mgda_ub":
            overrides["aggregator_args"] = {"representation": True}
    if scenario == "nonfinite":
        overrides["optimizer"] = {"name": "adam", "learning_rate": 0.01}
    if scenario in ("gradnorm", "famo", "uncertainty"):
        overrides["weighting"] = scenario
    return mtlzoo.build("tabular_demo", **overrides)


def make_callbacks(scenario):
    if scenario in STEP_WEIGHTINGS:
        import warnings

        import mtlzoo.weighting

        name = scenario.replace("_callback", "")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # uncertainty_callback: "the model does not own ..."
            return [mtlzoo.weighting.get(name, seed=0) if name == "rlw" else mtlzoo.weighting.get(name)]
    if scenario != "weighting":
        return []
    try:
        import mtlzoo.weighting

        return [mtlzoo.weighting.get("dwa", temperature=2.0)]
    except ImportError:
        import keras

        class EpochWeights(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                self.model.set_loss_weights({"label": 1.0 / (epoch + 2), "target": 1.0 + epoch})
                for t, v in self.model.get_loss_weights().items():
                    logs[f"{t}_weight"] = v

        return [EpochWeights()]


def snapshot(model, history=None):
    import numpy as np

    out = {f"w{i}": np.asarray(v.numpy()) for i, v in enumerate(model.weights)}
    out["loss_weights"] = np.array([model.get_loss_weights()[t] for t in model.task_names])
    out["iterations"] = np.array(int(model.optimizer.iterations.numpy()))
    if history is not None:
        for k, v in history.history.items():
            out[f"log_{k}"] = np.asarray(v, dtype="float64")
    return out


def train(scenario, strategy=None, dataset_fn=None):
    """Trains one scenario under `strategy` (None: default); returns a snapshot dict."""
    import contextlib

    import tensorflow as tf

    x, y = make_data(scenario)
    if scenario == "train_api":
        return _train_api(x, y, strategy)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = make_model(scenario)
    callbacks = make_callbacks(scenario)
    if dataset_fn is None:
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
        history = model.fit(data, epochs=epochs_of(scenario), verbose=0, callbacks=callbacks, shuffle=False)
    else:
        data = dataset_fn(x, y)
        history = model.fit(
            data, epochs=epochs_of(scenario), steps_per_epoch=NUM_EXAMPLES // GLOBAL_BATCH,
            verbose=0, callbacks=callbacks,
        )
    return snapshot(model, history)


def _train_api(x, y, strategy):
    """The same run through `mtlzoo.train`: the recipe's DWA callback, its checks and loggers."""
    import tensorflow as tf

    from mtlzoo.training import train as mtlzoo_train

    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    result = mtlzoo_train("tabular_demo", data=data, epochs=3, strategy=strategy, validation_data=False,
                          verbose=0, seed=7, weighting="dwa", optimizer={"name": "sgd", "learning_rate": 0.05})
    if strategy is not None:
        assert result.model.distribute_strategy is strategy
    return snapshot(result.model, result)


def compare(a, b):
    """Largest absolute and relative weight differences, and the logged-value difference."""
    import numpy as np

    weights = [k for k in a if k.startswith("w") and k != "loss_weights"]
    abs_diff = max(float(np.max(np.abs(a[k] - b[k]))) if a[k].size else 0.0 for k in weights)
    scale = max(float(np.max(np.abs(a[k]))) if a[k].size else 0.0 for k in weights)
    lw = float(np.max(np.abs(a["loss_weights"] - b["loss_weights"])))
    logs = {}
    for k in a:
        if k.startswith("log_") and k in b:
            logs[k[4:]] = float(np.nanmax(np.abs(a[k] - b[k]))) if a[k].size else 0.0
    return {
        "max_abs_weight_diff": abs_diff,
        "max_rel_weight_diff": abs_diff / max(scale, 1e-12),
        "loss_weight_diff": lw,
        "iterations": [int(a["iterations"]), int(b["iterations"])],
        "log_diffs": logs,
        "loss_weights": [a["loss_weights"].tolist(), b["loss_weights"].tolist()],
        "nonfinite_steps": [
            float(a["log_nonfinite_steps"][-1]) if "log_nonfinite_steps" in a else None,
            float(b["log_nonfinite_steps"][-1]) if "log_nonfinite_steps" in b else None,
        ],
    }


def centernet_check(strategy):
    """CenterNet loss and d loss / d y_pred on one device vs two replicas (replica 1: no objects)."""
    import numpy as np
    import tensorflow as tf

    from mtlzoo import distribute
    from mtlzoo.losses import CenterNetLoss

    rng = np.random.default_rng(5)
    b, h, w, c = 4, 4, 4, 2
    y_true = np.zeros((b, h, w, c + 5), np.float32)
    y_true[..., :c] = rng.uniform(0.0, 0.9, (b, h, w, c))
    for i, (yy, xx, k) in enumerate([(1, 2, 0), (3, 0, 1)]):  # objects only in examples 0 and 1 (replica 0)
        y_true[i, yy, xx, k] = 1.0
        y_true[i, yy, xx, c:c + 4] = rng.uniform(0.5, 2.0, 4)
        y_true[i, yy, xx, c + 4] = 1.0
    y_true[0, 0, 0, 1] = 1.0
    y_true[0, 0, 0, c:c + 5] = [1.0, 1.5, 0.2, 0.3, 1.0]
    y_pred = rng.uniform(0.05, 0.95, (b, h, w, c + 4)).astype(np.float32)
    loss = CenterNetLoss(num_classes=c)

    def loss_and_grad(yt, yp):
        with tf.GradientTape() as tape:
            tape.watch(yp)
            value = distribute.replica_task_loss(loss, yt, yp)
        return value, tape.gradient(value, yp)

    single_loss, single_grad = loss_and_grad(tf.constant(y_true), tf.constant(y_pred))
    half = b // 2

    def shard(array):
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(array[ctx.replica_id_in_sync_group * half:(ctx.replica_id_in_sync_group + 1) * half]))

    values, grads = strategy.run(tf.function(loss_and_grad), args=(shard(y_true), shard(y_pred)))
    replicas = strategy.num_replicas_in_sync
    local_losses = [float(v) for v in strategy.experimental_local_results(values)]
    local_grads = [g.numpy() for g in strategy.experimental_local_results(grads)]
    mirrored_loss = sum(local_losses) / replicas  # Keras divides each replica's loss by R and sums
    mirrored_grad = np.concatenate(local_grads) / replicas
    per_replica = [float(loss(tf.constant(y_true[i * half:(i + 1) * half]), tf.constant(y_pred[i * half:(i + 1) * half])))
                   for i in range(replicas)]
    return {
        "single_loss": float(single_loss),
        "mirrored_loss": mirrored_loss,
        "per_replica_normalised_loss": sum(per_replica) / replicas,
        "max_abs_grad_diff": float(np.max(np.abs(mirrored_grad - single_grad.numpy()))),
    }


def run_mirrored(out, scenarios):
    from mtlzoo import distribute

    distribute.use_logical_cpus(2)
    strategy = distribute.resolve_strategy("mirrored")
    results = {"replicas": int(strategy.num_replicas_in_sync)}
    for scenario in scenarios:
        start = time.time()
        try:
            if scenario == "centernet":
                results[scenario] = centernet_check(strategy)
                results[scenario]["seconds"] = round(time.time() - start, 2)
                continue
            single = train(scenario)
            mirrored = train(scenario, strategy)
            results[scenario] = compare(single, mirrored)
        except Exception as e:  # reported to the test, which fails with the message
            results[scenario] = {"error": f"{type(e).__name__}: {e}"}
        results[scenario]["seconds"] = round(time.time() - start, 2)
    with open(out, "w") as f:
        json.dump(results, f, indent=1)


def _worker_dataset_fn(strategy):
    """Each worker reads its contiguous slice of every global batch (the same global batches as one device)."""
    import tensorflow as tf

    def make(x, y):
        def fn(context):
            per_replica = context.get_per_replica_batch_size(GLOBAL_BATCH)
            start = context.input_pipeline_id * per_replica
            ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
            part = slice(start, start + per_replica)
            ds = ds.map(lambda a, b: (a[part], {k: v[part] for k, v in b.items()}))
            return ds.repeat()

        return strategy.distribute_datasets_from_function(fn)

    return make


def run_worker(out_dir, scenarios):
    import numpy as np

    from mtlzoo import distribute

    config = distribute.validate_tf_config()
    index = config["task"]["index"] if config else 0
    strategy = distribute.resolve_strategy("multi_worker")
    make = _worker_dataset_fn(strategy)
    for scenario in scenarios:
        start = time.time()
        snap = train(scenario, strategy, dataset_fn=make)
        snap["seconds"] = np.array(time.time() - start)
        np.savez(os.path.join(out_dir, f"worker{index}_{scenario}.npz"), **snap)
    if index == 0:
        for scenario in scenarios:
            np.savez(os.path.join(out_dir, f"single_{scenario}.npz"), **train(scenario))


def main(argv):
    mode, out, scenarios = argv[0], argv[1], argv[2:] or list(SCENARIOS)
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; known: {SCENARIOS}")
    if mode == "mirrored":
        run_mirrored(out, scenarios)
    elif mode == "worker":
        run_worker(out, scenarios)
    else:
        raise SystemExit(f"unknown mode {mode!r}: mirrored or worker")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main(sys.argv[1:])
