"""Task heads, registered by task kind.

`get(kind, **config)` returns a head object; `list()` the known kinds.
"""

from mtlzoo.heads.base import Head
from mtlzoo.heads.classification import ClassificationHead
from mtlzoo.heads.depth import DepthHead
from mtlzoo.heads.detection import DetectionHead
from mtlzoo.heads.multilabel import MultiLabelHead
from mtlzoo.heads.normal import NormalHead
from mtlzoo.heads.regression import RegressionHead
from mtlzoo.heads.segmentation import SegmentationHead
from mtlzoo.registry import HEADS


def get(kind, **config):
    """A head of task kind `kind` built with `config` (unknown kinds list near matches)."""
    return HEADS.get(kind)(**config)


def list():  # noqa: A001 - mirrors Registry.list
    return HEADS.list()


__all__ = [
    "Head", "ClassificationHead", "DepthHead", "DetectionHead", "MultiLabelHead", "NormalHead",
    "RegressionHead", "SegmentationHead", "get", "list",
]
