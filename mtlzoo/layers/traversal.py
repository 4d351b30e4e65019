"""Walking every layer of a model, nested models and layers that hold layers included."""


def iter_layers(model, sublayers: bool = True):
    """Yields `model` and every layer inside it once (depth first): the layers of nested models and, with
    `sublayers`, the layers a custom layer creates and tracks (`_layers`).

    Args:
        model: a Keras model or layer.
        sublayers: bool. Also walk into custom layers' own sub-layers. Those are not saved by class: a reloaded
            model gets whatever the custom layer's constructor makes. Defaults to True.

    Example:
    ```python
    bns = [l for l in iter_layers(model) if isinstance(l, keras.layers.BatchNormalization)]
    ```
    """
    stack, seen = [model], set()
    while stack:
        layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        yield layer
        stack.extend(getattr(layer, "layers", None) or [])
        if sublayers:
            stack.extend(getattr(layer, "_layers", None) or [])
