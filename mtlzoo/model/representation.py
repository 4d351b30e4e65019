"""The multi-task model split at its shared features (trunk, heads), for representation-level methods."""

from __future__ import annotations

import keras

def shared_representation_model(model):
    """`MultiTaskModel.shared_representation_model` (its docstring says what it does)."""
    if getattr(model, "_split_cache", None) is None:
        task_layer_names = {n for names in model.task_layers.values() for n in names}
        boundary, seen = [], set()
        for name in sorted(task_layer_names):
            layer = model.get_layer(name)
            for node in layer._inbound_nodes:
                for tensor in node.input_tensors:
                    producer = tensor._keras_history.operation
                    if producer.name not in task_layer_names and id(tensor) not in seen:
                        seen.add(id(tensor))
                        boundary.append(tensor)
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        trunk = keras.Model(inputs, boundary, name=f"{model.name}_trunk")
        heads = keras.Model(boundary, model._outputs_struct, name=f"{model.name}_heads")
        object.__setattr__(model, "_split_cache", (trunk, heads))
    return model._split_cache
