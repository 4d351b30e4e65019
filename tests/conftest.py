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
#: Seconds per file measured with `--durations=0` (2026-12-03; rounded; a file grouped by SAME_WORKER counts with its
#: group). Files are handed to the workers longest first, so the run does not end with one worker busy on a long file
#: while the other idles. A file missing here goes after these, by its number of tests; the order changes only the
#: wall time, never a result.
FILE_SECONDS = {
    "test_models": 159, "test_export": 126, "test_distribute": 102, "test_tuning": 89, "test_reliability_state": 59,
    "test_zoo": 54, "test_reliability_runs": 44, "test_mtan": 42, "test_training": 35, "test_gradient_hook": 34,
    "test_evaluation": 29, "test_sharing_methods": 27, "test_train_step_ops": 27, "test_claim_intruder": 27,
    "test_grouping": 26, "test_weighting": 26, "test_data_readers": 26, "test_weighting_fit": 21,
    "test_bench_methods": 19, "test_aggregators": 18, "test_bench_claims": 16, "test_precision": 15,
    "test_packaging": 14, "test_reliability_files": 14, "test_diagnostics": 13, "test_moe": 13,
    "test_cross_stitch_init": 12, "test_qp_exact": 10,
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
