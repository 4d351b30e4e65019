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


def convert_layers(model, match, cls) -> int:
    """Gives every layer of `model` for which `match(layer)` is true the class `cls` (a subclass of its own, with
    the same variables and config), in place. Returns how many.

    Only layers a saved model records by class are converted (nested models included, not the layers a custom
    layer creates inside itself): those come back as the custom layer's constructor makes them, so converting them
    would make a reloaded model compute differently from the saved one. Call it before the train step is traced.

    Args:
        model: a Keras model.
        match: callable(layer) -> bool.
        cls: the layer class to give the matching layers.

    Example:
    ```python
    n = convert_layers(model, lambda l: type(l) is keras.layers.BatchNormalization, FusedBatchNormalization)
    ```
    """
    import inspect

    count = 0
    for layer in iter_layers(model, sublayers=False):
        if match(layer):
            layer.__class__ = cls
            # Keras reads `call`'s signature once, at construction; the new class's `training` argument must reach it.
            layer._call_signature = inspect.signature(layer.call)
            layer.call_signature_parameters = [p.name for p in layer._call_signature.parameters.values()]
            layer._call_has_training_arg = "training" in layer.call_signature_parameters
            layer._call_has_context_arg = {a: a in layer.call_signature_parameters for a in layer._call_context_args}
            count += 1
    return count
