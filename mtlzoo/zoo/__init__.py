"""The model zoo: trained models shipped with mtlzoo, addressed as `zoo:NAME`.

Each shipped model is a folder of the repository's `saved_models/` (installed
inside the wheel as the package `mtlzoo.zoo_models`) holding

- `model.keras`: the trained Keras model (no optimizer state), read by
  `mtlzoo.load("zoo:NAME")`;
- TFLite files written by `mtlzoo.export` (`model_fp16.tflite`,
  `model_int8.tflite`, ...) and their `verification.json`, read by
  `mtlzoo.edge.load("zoo:NAME")` or `"zoo:NAME/model_int8.tflite"`;
- `MODEL_CARD.md`: tasks, data, the training command and budget, metrics,
  Δm, latency, size and limits.

Example:
```python
import mtlzoo
import mtlzoo.edge

mtlzoo.zoo.list_models()                       # ['driving_perception_lite']
model = mtlzoo.load("zoo:driving_perception_lite")
runner = mtlzoo.edge.load("zoo:driving_perception_lite/model_int8.tflite")
```
"""

from mtlzoo.zoo.lookup import (MODEL_FILE, PREFIX, ZooSpecError, check_inside, is_zoo_spec, list_models,
                               model_card, resolve, root)

__all__ = ["MODEL_FILE", "PREFIX", "ZooSpecError", "check_inside", "is_zoo_spec", "list_models", "model_card",
           "publish", "resolve", "root"]

# Publishing composes training results, export, evaluation and latency (floor 6): it is reached lazily, so
# that resolving a `zoo:NAME` spec (floor 1) imports nothing above it.
_LAZY = {"publish": ("mtlzoo.zoo.publishing", "publish"), "main": ("mtlzoo.zoo.publishing", "main")}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
