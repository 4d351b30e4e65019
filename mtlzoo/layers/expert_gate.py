"""The softmax gate of a mixture of experts (MMoE, CGC, PLE)."""

import keras
from keras import ops


def mixture_output_shape(input_shape, return_weights):
    """Output shape of a gate layer called on [expert_1, ..., expert_n, gate_input]: the mixture's, plus [B, n]."""
    mixture = tuple(input_shape[0])
    return (mixture, (input_shape[-1][0], len(input_shape) - 1)) if return_weights else mixture


def mix_experts(experts, weights):
    """`Σ_i weights[:, i] · experts[i]` for expert tensors of one shape [B, ...] and weights [B, n]."""
    stacked = ops.stack(experts, axis=-1)  # [B, ..., n]
    for _ in range(len(experts[0].shape) - 1):
        weights = ops.expand_dims(weights, axis=1)  # [B, 1, ..., 1, n], no dynamic reshape
    return ops.sum(stacked * weights, axis=-1)


def check_gate_inputs(layer_name, input_shape):
    """Validates `[expert_0, ..., expert_{n-1}, gate_input]` shapes; returns (expert shapes, gate shape)."""
    if not isinstance(input_shape, (list, tuple)) or len(input_shape) < 3:
        raise ValueError(
            f"{layer_name} takes a list [expert_0, ..., expert_{{n-1}}, gate_input] with at least two "
            f"experts; got {input_shape!r}."
        )
    shapes = [tuple(s) for s in input_shape]
    experts, gate = shapes[:-1], shapes[-1]
    if any(s[1:] != experts[0][1:] for s in experts):
        raise ValueError(f"{layer_name}: the experts' outputs must have one shape, got {experts}.")
    if len(gate) != 2 or gate[-1] is None:
        raise ValueError(
            f"{layer_name}: the gate input must be a vector [batch, features] (pool feature maps "
            f"first, e.g. with GlobalAveragePooling2D); got shape {gate}."
        )
    return experts, gate


@keras.saving.register_keras_serializable(package="mtlzoo")
class ExpertGate(keras.layers.Layer):
    """Mixes n expert outputs with per-example softmax weights computed from a gate input.

    Called on the list `[expert_0, ..., expert_{n-1}, gate_input]`: the experts
    are tensors of one shape `[B, ...]` (vectors or feature maps) and
    `gate_input` is a vector `[B, D]`. The weights are
    `g(x) = softmax(x W (+ b))`, shape `[B, n]`, one per expert and example,
    summing to one; the output is `Σ_i g_i(x) · expert_i`, of the experts'
    shape. With `return_weights=True` the layer returns `(mixture, weights)`;
    `gate_weights(gate_input)` computes the weights alone (this is how
    `MultiTaskModel.gates` reads them out).

    Args:
        use_bias: bool. Add a bias to the gate logits; the paper's gate is
            `softmax(W x)` without one. Defaults to False.
        return_weights: bool. Also return the `[B, n]` weights. Defaults to False.
        kernel_initializer: str or initializer. Defaults to "glorot_uniform".

    Example:
    ```python
    gate = mtlzoo.layers.ExpertGate(name="ctr__gate")
    mixed = gate([expert0_out, expert1_out, expert2_out, features])
    ```

    Reference:
        Ma et al., "Modeling Task Relationships in Multi-task Learning with
        Multi-gate Mixture-of-Experts", KDD 2018.
    """

    def __init__(self, use_bias=False, return_weights=False, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.use_bias = bool(use_bias)
        self.return_weights = bool(return_weights)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        experts, gate = check_gate_inputs(type(self).__name__, input_shape)
        self.num_experts = len(experts)
        self.kernel = self.add_weight(
            name="kernel", shape=(gate[-1], self.num_experts), initializer=self.kernel_initializer
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.num_experts,), initializer="zeros") if self.use_bias else None
        )

    def gate_weights(self, gate_input):
        """The `[B, n]` softmax weights for `gate_input` `[B, D]` (rows sum to one)."""
        logits = ops.matmul(ops.convert_to_tensor(gate_input, dtype=self.compute_dtype), self.kernel)
        if self.bias is not None:
            logits = logits + self.bias
        return ops.softmax(logits, axis=-1)

    def call(self, inputs):
        weights = self.gate_weights(inputs[-1])
        mixture = mix_experts(list(inputs[:-1]), weights)
        return (mixture, weights) if self.return_weights else mixture

    def compute_output_shape(self, input_shape):
        return mixture_output_shape(input_shape, self.return_weights)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "use_bias": self.use_bias,
                "return_weights": self.return_weights,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
