"""Every sharing mode trains with a parameter-level and a representation-level gradient method.

The registry sweep: a sharing mode registered later is trained here by registering it. Tabular recipe (a small
MLP trunk, two tasks) so each case costs seconds. Loss weightings act on the loss weights only, whatever the
sharing mode; tests/test_weighting_fit.py sweeps every one of them.
"""

import numpy as np
import pytest

import mtlzoo
import mtlzoo.sharing  # noqa: F401  (registers every sharing mode before the sweep is collected)
from mtlzoo.registry import SHARING

METHODS = {
    "pcgrad": {"aggregator": "pcgrad"},  # per-task gradients of the shared parameters
    "mgda_ub": {"aggregator": "mgda", "aggregator_args": {"representation": True}},  # at the shared representation
}


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype("float32")
    y = {"label": (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32"),
         "target": (x[:, :4].sum(axis=1, keepdims=True) * 0.5).astype("float32")}
    return x, y


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("sharing", SHARING.list())
def test_every_sharing_mode_trains_with_gradient_methods(sharing, method):
    model = mtlzoo.build("tabular_demo", sharing=sharing, **METHODS[method])
    x, y = _data()
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, shuffle=False).history
    assert np.isfinite(history["loss"]).all()
    assert history["loss"][-1] < history["loss"][0], (sharing, method, history["loss"])
    for task in ("label", "target"):
        assert f"{task}_loss" in history
