import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from mtlzoo.testing import random_inputs, random_labels  # noqa: E402,F401  (re-exported for tests)


@pytest.fixture
def batch_factory():
    return lambda model, n=4, seed=0: (random_inputs(model, n, seed), random_labels(model, n, seed))


def pytest_ignore_collect(collection_path, config):
    """Skips collecting on-demand benchmark files whose optional extra is missing when benchmarks are deselected.

    tests/test_torch_reference.py needs the `[compare]` extra (PyTorch) and holds only `benchmark` tests: under
    `-m "not benchmark"` (make test) it would be deselected anyway, but its module-level `importorskip` runs at
    collection and shows a skip that stands for nothing. `pytest -m benchmark` without PyTorch still reports it.
    """
    import importlib.util

    if collection_path.name == "test_torch_reference.py" and "not benchmark" in (config.option.markexpr or "") \
            and importlib.util.find_spec("torch") is None:
        return True
    return None


# ---------------------------------------------------------------- scheduling on 2 workers (make test: -n 2 --dist loadfile)
#: Files that share a session fixture with another file run on the same worker, so the fixture is built once.
SAME_WORKER = {"tests/test_edge_static.py": "tests/test_export.py", "tests/test_edge.py": "tests/test_export.py"}
#: Seconds per file measured with `--durations=0` (2026-12-02; rounded). Files are handed to the workers longest
#: first, so the run does not end with one worker busy on a long file while the other idles. A file missing here
#: goes after these, by its number of tests; the order changes only the wall time, never a result.
FILE_SECONDS = {
    "test_models": 120, "test_export": 265, "test_distribute": 145, "test_tuning": 110, "test_reliability_state": 105,
    "test_gradient_hook": 90, "test_zoo": 73, "test_reliability_runs": 70, "test_mtan": 60, "test_grouping": 56,
    "test_evaluation": 55, "test_weighting": 47, "test_training": 44, "test_data_readers": 44,
    "test_bench_methods": 44, "test_sharing_methods": 33, "test_weighting_fit": 32, "test_aggregators": 27,
}


def _file_key(item):
    path = item.nodeid.split("::")[0]
    path = SAME_WORKER.get(path, path)
    stem = path.rsplit("/", 1)[-1].removesuffix(".py")
    return -FILE_SECONDS.get(stem, 0), path


def pytest_collection_modifyitems(config, items):
    if getattr(config.option, "dist", "no") == "loadfile":
        items.sort(key=_file_key)  # stable: the tests of a file keep their order


def pytest_xdist_make_scheduler(config, log):
    if getattr(config.option, "dist", "no") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class _Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid):
            scope = super()._split_scope(nodeid)
            return SAME_WORKER.get(scope, scope)

    config.option.loadscopereorder = False  # keep the longest-first order of pytest_collection_modifyitems
    return _Scheduling(config, log)
