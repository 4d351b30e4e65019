"""The multi-task model: the Keras contract (`MultiTaskModel`) and the plumbing it delegates to."""

import mtlzoo.optimizers  # noqa: F401  (registers the optimizers a saved model may have been compiled with)
from mtlzoo.model.multi_task_model import MultiTaskModel

__all__ = ["MultiTaskModel"]
