"""Aligned-MTL: align the principal components of the gradient matrix."""

from __future__ import annotations

import tensorflow as tf

from mtlzoo.aggregators.base import Aggregator, check_range
from mtlzoo.registry import AGGREGATORS


@AGGREGATORS.register("aligned_mtl", aliases=("aligned-mtl",))
class AlignedMTL(Aggregator):
    """Aligned-MTL: make the gradient system well-conditioned before combining.

    With the Gram matrix M = G G^T = V diag(lambda) V^T of the task gradients
    G [T, P], keep the eigenvalues above `rtol * max(lambda)` (rank R), and
    B = sqrt(lambda_R) V diag(lambda^-1/2) V^T (lambda_R the smallest kept
    eigenvalue). The aligned gradients B G all have singular values
    sqrt(lambda_R) (condition number 1). The direction is 1^T B G, i.e. task
    weights w = B^T 1 (equal task preferences).

    Convention: like LibMTL's implementation, the preferences are ones (not
    1/T), so identical task gradients g give `T * g` (`identical_scale` T).
    The eigendecomposition (`tf.linalg.eigh`) is on the [T, T] Gram matrix.
    `rtol` (reference: T * float eps) is larger by default to be robust in
    float32, where a rank-deficient Gram matrix has eigenvalues around 1e-7
    relative that would otherwise dominate the direction.

    Args:
        rtol: float. Relative eigenvalue threshold for the rank, in (0, 1).
            Defaults to 1e-5.

    Example:
    ```python
    import mtlzoo.aggregators
    agg = mtlzoo.aggregators.get("aligned_mtl")
    d = agg([[1.0, 0.0], [-0.5, 1.0]])
    ```

    Reference:
        Senushkin et al., "Independent Component Alignment for Multi-Task
        Learning", CVPR 2023. https://arxiv.org/abs/2305.19000
    """

    name = "aligned_mtl"
    weight_based = True

    def __init__(self, rtol: float = 1e-5):
        super().__init__()
        self.rtol = check_range("AlignedMTL", "rtol", rtol, low=0.0, high=1.0, low_open=True, high_open=True)

    def identical_scale(self, num_tasks):
        return float(num_tasks)

    def _weights(self, grads, gram, losses, finite):
        t = grads.shape[0]
        gram = 0.5 * (gram + tf.transpose(gram))
        lam, vec = tf.linalg.eigh(gram)
        lam_max = tf.reduce_max(lam)
        keep = lam > self.rtol * lam_max
        keep = tf.logical_and(keep, lam > 0.0)
        lam_r = tf.reduce_min(tf.where(keep, lam, tf.fill([t], float("inf"))))
        inv_sqrt = tf.where(keep, tf.math.rsqrt(tf.where(keep, lam, tf.ones_like(lam))), tf.zeros_like(lam))
        scale = tf.sqrt(tf.where(tf.reduce_any(keep), lam_r, 1.0))
        b = scale * tf.matmul(vec * inv_sqrt[None, :], vec, transpose_b=True)
        w = tf.reduce_sum(b, axis=0)
        return tf.where(tf.reduce_any(keep), w, tf.ones([t]))
