"""The DSelect-k gate: a differentiable sparse choice of at most k of n experts."""

import math

import keras
import numpy as np
from keras import ops

from mtlzoo.layers.expert_gate import check_gate_inputs, mix_experts, mixture_output_shape

_EPSILON = 1e-6


def smooth_step(t, gamma):
    """The cubic smooth-step: 0 for t <= -γ/2, 1 for t >= γ/2, `-2t³/γ³ + 3t/(2γ) + 1/2` between.

    Written as the cubic of `clip(t, -γ/2, γ/2)` (the cubic is exactly 0 and 1
    at the clip bounds), which needs no select op in TFLite.
    """
    t = ops.clip(t, -gamma / 2.0, gamma / 2.0)
    return -2.0 / gamma**3 * t * t * t + 3.0 / (2.0 * gamma) * t + 0.5


def binary_codes(num_experts):
    """[n, m] float matrix whose row l is the m-bit binary code of l, m = ceil(log2 n)."""
    bits = max(1, math.ceil(math.log2(num_experts)))
    return np.array([[(l >> (bits - 1 - j)) & 1 for j in range(bits)] for l in range(num_experts)], "float32")


@keras.saving.register_keras_serializable(package="mtlzoo")
class DSelectKGate(keras.layers.Layer):
    """Mixes n expert outputs with per-example weights that select at most k experts once converged.

    Called on `[expert_0, ..., expert_{n-1}, gate_input]` like `ExpertGate`.
    With m = ceil(log2 n) binary variables, each of the k single-expert
    selectors maps the gate input x to `z_i(x) ∈ R^m` (a linear layer) and
    puts weight `r_i(x)_l = Π_j [c_lj S(z_ij) + (1 − c_lj)(1 − S(z_ij))]` on
    expert l, where `c_l` is the binary code of l and S the smooth-step of
    width `gamma`. When every S(z_ij) is 0 or 1, `r_i` is one-hot. The
    selectors are mixed by `softmax(x A)`, so the expert weights
    `q(x) = Σ_i softmax(x A)_i r_i(x)` sum to one and, once the smooth-steps
    are binary, have at most k non-zeros. The output is `Σ_l q_l(x) · expert_l`.

    In training it adds to `layer.losses` (hence to the model's loss):
    `entropy_reg · mean_batch Σ_i H(r_i(x))`, which pushes the selectors to
    binary choices, when `entropy_reg > 0`; and, when n is not a power of two,
    `mean_batch Σ_i (1 / Σ_l r_i(x)_l − 1)`, which keeps the selectors off the
    codes no expert has.

    Differences from the paper's code (google-research `dselect_k_moe`):
    regularisers are averaged over the batch (the code sums them), the
    unreachable-code term has its constant −1 removed (same gradient, zero at
    the optimum), the entropy weight is a constant (the code takes a schedule),
    and when n is not a power of two the weights are renormalised over the n
    reachable codes so that they always sum to one (the code leaves them
    short of one until the regulariser has acted).

    Args:
        num_nonzeros: int >= 1. k, the largest number of experts selected.
            Defaults to 2.
        gamma: float > 0. Width of the smooth-step's cubic region. Defaults to 1.0.
        entropy_reg: float >= 0. Weight of the entropy regulariser (0: off, the
            paper's default). Defaults to 0.0.
        return_weights: bool. Also return the `[B, n]` weights. Defaults to False.

    Example:
    ```python
    gate = mtlzoo.layers.DSelectKGate(num_nonzeros=2, name="ctr__gate")
    mixed = gate([e0, e1, e2, e3, features])
    ```

    Reference:
        Hazimeh et al., "DSelect-k: Differentiable Selection in the Mixture of
        Experts with Applications to Multi-Task Learning", NeurIPS 2021.
    """

    def __init__(self, num_nonzeros=2, gamma=1.0, entropy_reg=0.0, return_weights=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_nonzeros, bool) or int(num_nonzeros) != num_nonzeros or int(num_nonzeros) < 1:
            raise ValueError(f"DSelectKGate num_nonzeros (k) must be an int >= 1, got {num_nonzeros!r}.")
        if not float(gamma) > 0:
            raise ValueError(f"DSelectKGate gamma must be > 0, got {gamma!r}.")
        if not float(entropy_reg) >= 0:
            raise ValueError(f"DSelectKGate entropy_reg must be >= 0, got {entropy_reg!r}.")
        self.num_nonzeros = int(num_nonzeros)
        self.gamma = float(gamma)
        self.entropy_reg = float(entropy_reg)
        self.return_weights = bool(return_weights)

    def build(self, input_shape):
        experts, gate = check_gate_inputs(type(self).__name__, input_shape)
        self.num_experts = len(experts)
        codes = binary_codes(self.num_experts)
        self.num_binary = codes.shape[1]
        self.power_of_two = self.num_experts == 2**self.num_binary
        self._codes = codes
        k, m, d = self.num_nonzeros, self.num_binary, gate[-1]
        z_init = keras.initializers.RandomUniform(-self.gamma / 100, self.gamma / 100)
        self.z_kernel = self.add_weight(name="z_kernel", shape=(d, k * m), initializer=z_init)
        self.z_bias = self.add_weight(name="z_bias", shape=(k * m,), initializer=z_init)
        self.w_kernel = self.add_weight(name="w_kernel", shape=(d, k), initializer=keras.initializers.RandomUniform())
        self.w_bias = self.add_weight(name="w_bias", shape=(k,), initializer=keras.initializers.RandomUniform())

    def selector_outputs(self, gate_input):
        """`[B, k, n]`: each single-expert selector's weights over the experts (one-hot once binary)."""
        x = ops.convert_to_tensor(gate_input, dtype=self.compute_dtype)
        z = ops.matmul(x, self.z_kernel) + self.z_bias
        s = smooth_step(ops.reshape(z, (-1, self.num_nonzeros, 1, self.num_binary)), self.gamma)
        codes = ops.convert_to_tensor(self._codes[None, None], dtype=s.dtype)  # [1, 1, n, m]
        return ops.prod(codes * s + (1.0 - codes) * (1.0 - s), axis=-1)

    def _weights_and_selectors(self, gate_input):
        selectors = self.selector_outputs(gate_input)
        x = ops.convert_to_tensor(gate_input, dtype=self.compute_dtype)
        mix = ops.softmax(ops.matmul(x, self.w_kernel) + self.w_bias, axis=-1)  # [B, k]
        weights = ops.sum(ops.expand_dims(mix, -1) * selectors, axis=1)  # [B, n]
        if not self.power_of_two:
            weights = weights / ops.maximum(ops.sum(weights, axis=-1, keepdims=True), _EPSILON)
        return weights, selectors

    def gate_weights(self, gate_input):
        """The `[B, n]` expert weights for `gate_input` `[B, D]` (rows sum to one)."""
        return self._weights_and_selectors(gate_input)[0]

    def regularization(self, selectors):
        """The training loss terms for `selectors` [B, k, n] (see the class docstring)."""
        total = ops.convert_to_tensor(0.0, dtype=selectors.dtype)
        if self.entropy_reg > 0:
            entropy = -ops.sum(selectors * ops.log(selectors + _EPSILON), axis=(1, 2))
            total = total + self.entropy_reg * ops.mean(entropy)
        if not self.power_of_two:
            reach = ops.sum(selectors, axis=-1)  # [B, k]
            total = total + ops.mean(ops.sum(1.0 / ops.maximum(reach, _EPSILON) - 1.0, axis=-1))
        return total

    def call(self, inputs, training=None):
        weights, selectors = self._weights_and_selectors(inputs[-1])
        if training and (self.entropy_reg > 0 or not self.power_of_two):
            self.add_loss(self.regularization(selectors))
        mixture = mix_experts(list(inputs[:-1]), weights)
        return (mixture, weights) if self.return_weights else mixture

    def compute_output_shape(self, input_shape):
        return mixture_output_shape(input_shape, self.return_weights)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_nonzeros": self.num_nonzeros,
                "gamma": self.gamma,
                "entropy_reg": self.entropy_reg,
                "return_weights": self.return_weights,
            }
        )
        return config
