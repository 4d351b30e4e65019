"""`mtlzoo demo`: the end-to-end demo on built-in synthetic data."""

from __future__ import annotations

import os

#: The shipped model the demo shows beside the one it trains.
ZOO_MODEL = "driving_perception_lite"


def pick_busy_scene(validation, task="detection", max_batches=4):
    """The validation image with the most labelled objects (detection heatmap peaks), as an array [H, W, 3].

    A short training run is judged on a scene with cars and pedestrians in it,
    not on an empty road.
    """
    import numpy as np

    best, best_count = None, -1
    for i, (images, labels) in enumerate(validation):
        if i >= max_batches:
            break
        images = np.asarray(images)
        target = labels.get(task) if isinstance(labels, dict) else None
        for j in range(images.shape[0]):
            if target is None:
                count = 0
            else:
                y = np.asarray(target[j])
                count = int((y[..., : max(y.shape[-1] - 4, 1)] >= 0.999).sum())
            if count > best_count:
                best, best_count = images[j], count
    return best


def cmd_demo(args):
    """Data -> training -> evaluation (run_demo), then export -> LiteRT int8 -> prediction picture, then the shipped
    zoo model on the same scenes and the two pictures side by side."""
    import time

    import mtlzoo
    from mtlzoo.cli.training import run_demo
    from mtlzoo.predict import predict_image, side_by_side

    start = time.perf_counter()
    model_path, validation, _ = run_demo(args.out, step_total=5)
    print("== 4/5 deployment: TFLite float32 + int8 (verified against Keras), LiteRT run, prediction picture")
    model = mtlzoo.load(model_path, compile=False)
    export_dir = os.path.join(args.out, "export")
    result = mtlzoo.export(model, export_dir, formats=["tflite", "tflite_int8"], representative_data=validation,
                           overwrite=True)
    for fmt, path in result.paths.items():
        print(f"   {fmt:<12} {path} ({os.path.getsize(path) / 1e6:.2f} MB)" if os.path.isfile(path) else f"   {fmt:<12} {path}")
    report_md = result.out_dir / "verification.md"
    status = next((line for line in report_md.read_text().splitlines() if line.startswith("**Status")), "")
    print(f"   verification: {status.strip('*').strip()} (full report: {report_md})")
    runner = mtlzoo.edge.load(result.paths["tflite_int8"])
    image = pick_busy_scene(validation)
    outputs = runner(image[None])
    print(f"   LiteRT ({runner.backend}) int8 outputs: " + ", ".join(f"{t} {tuple(v.shape)}" for t, v in outputs.items()))
    mine = os.path.join(args.out, "prediction.png")
    predict_image(runner, image, mine, title="trained by this demo (int8 TFLite)")

    print(f"== 5/5 the shipped model zoo:{ZOO_MODEL} on the same validation scenes (its int8 TFLite for the picture)")
    from mtlzoo.evaluation import evaluate

    zoo_report = evaluate(f"zoo:{ZOO_MODEL}", validation, timing_repeats=0)
    print(zoo_report.table())
    zoo_runner = mtlzoo.edge.load(f"zoo:{ZOO_MODEL}/model_int8.tflite")
    theirs = os.path.join(args.out, "prediction_zoo.png")
    predict_image(zoo_runner, image, theirs, title=f"zoo:{ZOO_MODEL} (int8 TFLite)")
    picture = side_by_side([mine, theirs], os.path.join(args.out, "comparison.png"),
                           titles=["this demo's 3-epoch model", f"shipped zoo:{ZOO_MODEL}"])
    print(f"== demo done in {time.perf_counter() - start:.0f} s: side-by-side picture {picture} "
          f"(this demo's model: {mine}; zoo model: {theirs}), exports in {export_dir}")
    return 0
