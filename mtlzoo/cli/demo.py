"""`mtlzoo demo`: the end-to-end demo on built-in synthetic data."""

from __future__ import annotations

import os


def cmd_demo(args):
    """Data -> training -> evaluation (run_demo), then export -> LiteRT int8 -> prediction picture."""
    import time

    import numpy as np

    import mtlzoo
    from mtlzoo.cli.training import run_demo

    start = time.perf_counter()
    model_path, validation, _ = run_demo(args.out, step_total=4)
    print("== 4/4 deployment: TFLite float32 + int8 (verified against Keras), LiteRT run, prediction picture")
    model = mtlzoo.load(model_path, compile=False)
    export_dir = os.path.join(args.out, "export")
    result = mtlzoo.export(model, export_dir, formats=["tflite", "tflite_int8"], representative_data=validation,
                           overwrite=True)
    for fmt, path in result.paths.items():
        print(f"   {fmt:<12} {path} ({os.path.getsize(path) / 1e6:.2f} MB)" if os.path.isfile(path) else f"   {fmt:<12} {path}")
    print((result.out_dir / "verification.md").read_text())
    runner = mtlzoo.edge.load(result.paths["tflite_int8"])
    image = np.asarray(next(iter(validation))[0][0])
    outputs = runner(image[None])
    print(f"   LiteRT ({runner.backend}) int8 outputs: " + ", ".join(f"{t} {tuple(v.shape)}" for t, v in outputs.items()))
    from mtlzoo.predict import predict_image

    picture = os.path.join(args.out, "prediction.png")
    predict_image(runner, image, picture)
    print(f"== demo done in {time.perf_counter() - start:.0f} s: picture {picture}, exports in {export_dir}")
    return 0
