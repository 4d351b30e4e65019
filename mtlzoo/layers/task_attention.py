"""The MTAN task-specific attention module."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="mtlzoo")
class TaskAttention(keras.layers.Layer):
    """One task's soft-attention module at one stage of a shared trunk (MTAN).

    Called on `shared` (the first stage) or on `[shared, previous]`, where
    `previous` is the same task's attended feature from the stage before. It
    computes the mask
    `a = sigmoid(BN(h(ReLU(BN(g([shared, resize(previous)]))))))`
    with `g`, `h` 1×1 convolutions (dense layers for vectors), whose hidden and
    output widths are the channels of `shared`, so the mask is elementwise.
    The attended feature is the paper's block `f` (3×3 conv, BN, ReLU; dense
    for vectors) applied to `a ⊙ shared`; it keeps the shape of `shared`.
    `previous` is brought to the resolution of `shared` by max pooling with
    the integer stride ratio (as the paper's 2×2 max pool after `f`), or by
    bilinear resizing when the ratio is not an integer; its channels may
    differ from those of `shared` (they are concatenated).

    Args:
        return_mask: bool. Also return the mask `a` (same shape as `shared`),
            so that it can be read out. Defaults to False.
        block_kernel_size: int. Kernel size of the block `f` (image inputs).
            Defaults to 3, as in the paper.

    Example:
    ```python
    att = mtlzoo.layers.TaskAttention(name="seg__att_1")
    seg_1 = att([shared_1, seg_0])          # seg_0: TaskAttention output of stage 0
    ```

    Reference:
        Liu, Johns & Davison, "End-to-End Multi-Task Learning with
        Attention", CVPR 2019.
    """

    def __init__(self, return_mask=False, block_kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        if int(block_kernel_size) < 1:
            raise ValueError(f"TaskAttention block_kernel_size must be >= 1, got {block_kernel_size}.")
        self.return_mask = bool(return_mask)
        self.block_kernel_size = int(block_kernel_size)

    @staticmethod
    def _split(inputs):
        """(shared, previous or None) from a tensor/shape or a list of one or two."""
        if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], (list, tuple)):
            pass  # a list of shapes
        elif isinstance(inputs, (list, tuple)) and inputs and hasattr(inputs[0], "shape"):
            pass  # a list of tensors
        else:
            return inputs, None
        if len(inputs) not in (1, 2):
            raise ValueError(f"TaskAttention takes `shared` or `[shared, previous]`; got {len(inputs)} inputs.")
        return inputs[0], (inputs[1] if len(inputs) == 2 else None)

    def _projection(self, name, units, kernel_size):
        if self._vector:
            return keras.layers.Dense(units, use_bias=False, name=name, dtype=self.dtype_policy)
        return keras.layers.Conv2D(units, kernel_size, padding="same", use_bias=False, name=name,
                                   dtype=self.dtype_policy)

    def build(self, input_shape):
        shared, previous = self._split(input_shape)
        shared = tuple(shared)
        if len(shared) not in (2, 4):
            raise ValueError(f"TaskAttention takes feature maps (B, H, W, C) or vectors (B, C); got {shared}.")
        if previous is not None and len(previous) != len(shared):
            raise ValueError(
                f"TaskAttention: `previous` {tuple(previous)} and `shared` {shared} must both be feature maps or "
                "both vectors."
            )
        self._vector = len(shared) == 2
        channels = shared[-1]
        in_shape = shared[:-1] + (channels + (previous[-1] if previous is not None else 0),)

        self.mask_conv1 = self._projection("mask_conv1", channels, 1)
        self.mask_bn1 = keras.layers.BatchNormalization(name="mask_bn1", dtype=self.dtype_policy)
        self.mask_conv2 = self._projection("mask_conv2", channels, 1)
        self.mask_bn2 = keras.layers.BatchNormalization(name="mask_bn2", dtype=self.dtype_policy)
        self.block_conv = self._projection("block_conv", channels, self.block_kernel_size)
        self.block_bn = keras.layers.BatchNormalization(name="block_bn", dtype=self.dtype_policy)
        self.mask_conv1.build(in_shape)
        self.mask_conv2.build(shared)
        self.block_conv.build(shared)
        for bn in (self.mask_bn1, self.mask_bn2, self.block_bn):
            bn.build(shared)

    def _resize(self, previous, shared):
        if self._vector:
            return previous
        (h, w), (ph, pw) = shared.shape[1:3], previous.shape[1:3]
        if (ph, pw) == (h, w):
            return previous
        if ph % h == 0 and pw % w == 0:
            pool = (ph // h, pw // w)
            return ops.max_pool(previous, pool_size=pool, strides=pool, padding="valid")
        return ops.image.resize(previous, (h, w), interpolation="bilinear")

    def call(self, inputs, training=None):
        shared, previous = self._split(inputs)
        x = shared if previous is None else ops.concatenate([shared, self._resize(previous, shared)], axis=-1)
        x = ops.relu(self.mask_bn1(self.mask_conv1(x), training=training))
        mask = ops.sigmoid(self.mask_bn2(self.mask_conv2(x), training=training))
        attended = ops.relu(self.block_bn(self.block_conv(mask * shared), training=training))
        return [attended, mask] if self.return_mask else attended

    def compute_output_shape(self, input_shape):
        shared, _ = self._split(input_shape)
        shared = tuple(shared)
        return [shared, shared] if self.return_mask else shared

    def get_config(self):
        config = super().get_config()
        config.update({"return_mask": self.return_mask, "block_kernel_size": self.block_kernel_size})
        return config
