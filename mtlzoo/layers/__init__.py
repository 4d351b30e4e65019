"""Custom Keras layers of mtlzoo (all serializable, no Lambda layers)."""

from mtlzoo.layers.cross_stitch import CrossStitch
from mtlzoo.layers.fused_batch_normalization import FusedBatchNormalization, use_fused_batch_norm
from mtlzoo.layers.image_preprocessing import ImagePreprocessing
from mtlzoo.layers.pointwise_conv2d import PointwiseConv2D, use_pointwise_matmul
from mtlzoo.layers.scaled_sigmoid import ScaledSigmoid
from mtlzoo.layers.unit_normalization import UnitNormalization

# attention layers (MTAN) -- one import line per layer file below
from mtlzoo.layers.task_attention import TaskAttention
# mixture-of-experts layers (MMoE, CGC/PLE, DSelect-k) -- one import line per layer file below
from mtlzoo.layers.dselect_k_gate import DSelectKGate
from mtlzoo.layers.expert_gate import ExpertGate
# branching layers -- one import line per layer file below

__all__ = sorted(name for name in dir() if name[:1].isupper()) + ["use_fused_batch_norm", "use_pointwise_matmul"]
