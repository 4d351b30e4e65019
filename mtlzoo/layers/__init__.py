"""Custom Keras layers of mtlzoo (all serializable, no Lambda layers)."""

from mtlzoo.layers.cross_stitch import CrossStitch
from mtlzoo.layers.image_preprocessing import ImagePreprocessing
from mtlzoo.layers.scaled_sigmoid import ScaledSigmoid
from mtlzoo.layers.unit_normalization import UnitNormalization

__all__ = ["CrossStitch", "ImagePreprocessing", "ScaledSigmoid", "UnitNormalization"]
