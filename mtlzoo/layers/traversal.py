"""Walking every layer of a model, nested models and layers that hold layers included."""


def iter_layers(model):
    """Yields `model` and every layer inside it once (depth first): the layers of nested models and the
    sub-layers a custom layer tracks (`_layers`).

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
        stack.extend(getattr(layer, "_layers", None) or [])
