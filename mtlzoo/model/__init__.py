"""The multi-task model: the Keras contract (`MultiTaskModel`) and the plumbing it delegates to."""

from mtlzoo.model.multi_task_model import MultiTaskModel

__all__ = ["MultiTaskModel"]
