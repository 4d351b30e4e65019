import pytest

from mtlzoo.registry import DuplicateNameError, Registry, UnknownNameError


def test_register_get_list_and_aliases():
    reg = Registry("widget")

    @reg.register("alpha", aliases=("a",))
    def alpha():
        return 1

    reg.register("beta", obj=lambda: 2)
    assert reg.get("alpha")() == 1
    assert reg.get("a") is alpha
    assert reg.list() == ["alpha", "beta"]
    assert reg.list("b*") == ["beta"]
    assert "a" in reg and "gamma" not in reg
    assert len(reg) == 2


def test_duplicate_name_is_an_error():
    reg = Registry("widget")
    reg.register("alpha", obj=object())
    with pytest.raises(DuplicateNameError, match="registered already"):
        reg.register("alpha", obj=object())


def test_unknown_name_lists_near_matches():
    reg = Registry("widget")
    reg.register("cross_stitch", obj=object())
    reg.register("hard", obj=object())
    with pytest.raises(UnknownNameError) as info:
        reg.get("cross_stich")
    message = str(info.value)
    assert "Did you mean 'cross_stitch'" in message and "Known widgets" in message
    # Catchable as KeyError and ValueError.
    with pytest.raises(KeyError):
        reg.get("nope")
    with pytest.raises(ValueError):
        reg.get("nope")


def test_unregister_then_register_again():
    reg = Registry("widget")
    reg.register("x", obj=1)
    reg.unregister("x")
    reg.register("x", obj=2)
    assert reg.get("x") == 2


@pytest.mark.parametrize("module,registry", [
    ("mtlzoo.backbones", "BACKBONES"), ("mtlzoo.heads", "HEADS"), ("mtlzoo.sharing", "SHARING"),
    ("mtlzoo.losses", "LOSSES"), ("mtlzoo.metrics", "METRICS"),
])
def test_components_register_on_import(module, registry):
    import importlib

    import mtlzoo.registry as r

    importlib.import_module(module)
    assert len(getattr(r, registry)) > 0


def test_create_validates_arguments_and_ignores_case():
    reg = Registry("gadget")

    @reg.register("pcgrad")
    class Gadget:
        def __init__(self, seed=None):
            self.seed = seed

    assert reg.create("PCGrad", seed=3).seed == 3
    with pytest.raises(TypeError, match="has no hyperparameter 'sed'. Did you mean 'seed'"):
        reg.create("pcgrad", sed=1)
