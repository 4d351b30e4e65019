import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from mtlzoo.testing import random_inputs, random_labels  # noqa: E402,F401  (re-exported for tests)


@pytest.fixture
def batch_factory():
    return lambda model, n=4, seed=0: (random_inputs(model, n, seed), random_labels(model, n, seed))
