"""Nothing lost, nothing corrupted: atomic files, kill -9 at random moments, run folders that refuse to be replaced.

Run as a script, this file is the training process that the kill test kills: `tabular_demo` on 32 random rows,
many short epochs, so that checkpoints, history and backup are written several times a second.

- `python tests/test_reliability_runs.py OUT EPOCHS` trains (or resumes) the run in OUT.
- `python tests/test_reliability_runs.py --fork-server OUT EPOCHS` imports mtlzoo once (about 6 s here), then
  for each line `run` read from stdin forks a child that trains (or resumes) the run, and prints `exit STATUS`
  when the child has ended. The children are ordinary processes that the test kills with SIGKILL; forking
  from a process that has only imported TensorFlow (no op run, one thread) spares 20 imports.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
from mtlzoo.testing import predict_eager

HELPER_MARK = "MTLZOO-EPOCH-DONE"


def _tabular(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype("float32")
    return x, {"label": rng.integers(0, 3, n), "target": rng.normal(size=(n, 1)).astype("float32")}


def _helper_train(out_dir, epochs):
    import keras

    from mtlzoo.training import train

    class Mark(keras.callbacks.Callback):
        """Says when this process's first epoch ends (its files are written right after)."""

        def on_epoch_end(self, epoch, logs=None):
            if not getattr(self, "said", False):
                self.said = True
                print(HELPER_MARK, os.getpid(), flush=True)

    train("tabular_demo", data=_tabular(), validation_data=False, epochs=epochs, out_dir=out_dir, verbose=0,
          callbacks=[Mark()], **{"training.batch_size": 8})


def _fork_server(out_dir, epochs):
    import mtlzoo.training  # noqa: F401  (the slow import, done once)

    for line in sys.stdin:
        if line.strip() != "run":
            break
        pid = os.fork()
        if pid == 0:
            try:
                _helper_train(out_dir, epochs)
                code = 0
            except BaseException:  # noqa: BLE001
                import traceback

                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        print("exit", -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if sys.argv[1] == "--fork-server":
        _fork_server(sys.argv[2], int(sys.argv[3]))
    else:
        _helper_train(sys.argv[1], int(sys.argv[2]))
    sys.exit(0)


import pytest  # noqa: E402

import mtlzoo  # noqa: E402
from mtlzoo import fileio  # noqa: E402
from mtlzoo.training import RunFolderError, read_history_rows, train  # noqa: E402

BATCH = {"training.batch_size": 8}


def _train(out, epochs, **kwargs):
    return train("tabular_demo", data=_tabular(), validation_data=False, epochs=epochs, out_dir=str(out), verbose=0,
                 **{**BATCH, **kwargs})


def _epochs(out):
    with open(os.path.join(out, "history.csv"), newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


# ----------------------------------------------------------------------------- fileio
def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "a.txt"
    fileio.atomic_write_text(path, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with fileio.atomic_write(path) as f:
            f.write("half of the new")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]  # the temporary file is gone
    fileio.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"


def test_atomic_save_model_leaves_no_temporary_and_a_loadable_model(tmp_path):
    model = mtlzoo.build("tabular_demo")
    path = tmp_path / "m.keras"
    fileio.atomic_save_model(model, str(path))
    assert sorted(os.listdir(tmp_path)) == ["m.keras"]
    x = np.ones((2, 16), np.float32)
    np.testing.assert_allclose(predict_eager(mtlzoo.load(str(path)), x)["target"],
                               predict_eager(model, x)["target"], rtol=1e-5, atol=1e-5)

    class DiesWhileSaving:
        def save(self, filepath, **kwargs):
            with open(filepath, "wb") as f:
                f.write(b"PK\x03\x04 half a zip")
            raise KeyboardInterrupt

    before = path.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_save_model(DiesWhileSaving(), str(path))
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["m.keras"]


def test_remove_temporaries_only_removes_those_of_dead_processes(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".best.keras.tmp-{dead.pid}.keras").write_text("cut")
    (tmp_path / f".last.keras.tmp-{os.getpid()}.keras").write_text("being written")
    (tmp_path / "notes.tmp-1.txt").write_text("not ours")
    fileio.remove_temporaries(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted([f".last.keras.tmp-{os.getpid()}.keras", "notes.tmp-1.txt"])


class _Unprintable:
    def __str__(self):
        raise RuntimeError("a value that cannot be written")


def test_tuning_results_are_replaced_whole_or_not_at_all(tmp_path):
    from mtlzoo import tuning

    table, markdown, plot = tmp_path / "r.csv", tmp_path / "r.md", tmp_path / "p.png"
    rows = [{"trial": "0", "status": "COMPLETED", "val_loss": 1.0, "weight_a": 1.0},
            {"trial": "1", "status": "COMPLETED", "val_loss": 0.5, "weight_a": 2.0}]
    tuning.write_table(rows, str(table), str(markdown))
    tuning.write_plot(rows, "val_loss", ["a"], str(plot))
    before = table.read_text()
    assert before.count("\n") == 3 and plot.read_bytes()[:4] == b"\x89PNG"
    broken = rows + [{"trial": "2", "status": "COMPLETED", "val_loss": _Unprintable(), "weight_a": 1.0}]
    with pytest.raises(RuntimeError, match="cannot be written"):
        tuning.write_table(broken, str(table), str(markdown))  # dies after writing two of three rows
    assert table.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["p.png", "r.csv", "r.md"]


# ----------------------------------------------------------------------------- lock
def test_run_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    folder = str(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with open(os.path.join(folder, fileio.LOCK_NAME), "w") as f:
            json.dump({"pid": other.pid, "host": socket.gethostname()}, f)
        with pytest.raises(RunFolderError, match=rf"in use by another process \(pid {other.pid}.*\.mtlzoo\.lock"):
            _train(tmp_path, 1)
        assert not os.path.exists(os.path.join(folder, "history.csv"))  # refused before writing anything
    finally:
        other.kill()
        other.wait()
    # The owner is dead now (as after kill -9): its lock is stale and taken over.
    result = _train(tmp_path, 1)
    assert len(result.history["loss"]) == 1
    assert not os.path.exists(os.path.join(folder, fileio.LOCK_NAME))  # released at the end


def test_run_lock_in_use_and_released(tmp_path):
    with fileio.RunLock(str(tmp_path)) as lock:
        assert json.loads(open(lock.path).read())["pid"] == os.getpid()
        with pytest.raises(fileio.RunLockError, match=f"pid {os.getpid()}"):
            fileio.RunLock(str(tmp_path)).acquire()
    assert not os.path.exists(lock.path)
    # A lock from another host is never taken over: the message says how to clear it.
    with open(lock.path, "w") as f:
        json.dump({"pid": 1, "host": "elsewhere"}, f)
    with pytest.raises(fileio.RunLockError, match="pid 1 on elsewhere is no longer running, delete"):
        fileio.RunLock(str(tmp_path)).acquire()


# ----------------------------------------------------------------------------- finished runs
@pytest.mark.slow
def test_a_finished_run_is_refused_continued_or_overwritten(tmp_path):
    out = tmp_path / "run"
    first = _train(out, 2)
    assert _epochs(out) == [0, 1]
    (out / "notes.txt").write_text("the user's own file")

    # A different recipe: refused, naming the changed key, nothing touched.
    before = (out / "best.keras").read_bytes()
    with pytest.raises(RunFolderError, match=r"different recipe.*training\.batch_size: 8 -> 4.*overwrite=True"):
        _train(out, 2, **{"training.batch_size": 4})
    assert (out / "best.keras").read_bytes() == before and _epochs(out) == [0, 1]

    # Fewer epochs than the run has: refused too.
    with pytest.raises(RunFolderError, match="asked for 1 epochs, fewer than the 2"):
        _train(out, 1)

    # The same recipe with as many epochs: nothing to train, the stored run comes back.
    same = _train(out, 2)
    assert same.initial_epoch == 2 and same.history["loss"] == pytest.approx(first.history["loss"])

    # More epochs: continues from last.keras, history and optimizer go on, epochs counted from 2.
    more = _train(out, 4)
    assert more.initial_epoch == 2 and _epochs(out) == [0, 1, 2, 3]
    assert more.history["loss"][:2] == pytest.approx(first.history["loss"])
    assert int(mtlzoo.load(str(out / "last.keras")).optimizer.iterations) == 4 * 4  # 32 rows / batch 8
    with open(out / "train_summary.json") as f:
        summary = json.load(f)
    assert summary["initial_epoch"] == 2 and summary["epochs_run"] == 4

    # overwrite=True with data that fails the checks: the error comes first, the old run stays.
    x, y = _tabular()
    y["label"][0] = 7  # tabular_demo's label has 3 classes
    from mtlzoo.training import DataCheckError

    with pytest.raises(DataCheckError, match="out-of-range class ids: 7"):
        train("tabular_demo", data=(x, y), epochs=1, out_dir=str(out), verbose=0, overwrite=True, **BATCH)
    assert _epochs(out) == [0, 1, 2, 3] and (out / "last.keras").exists()

    # overwrite=True: a new run; the user's own file stays.
    new = _train(out, 1, overwrite=True, **{"training.batch_size": 4})
    assert new.initial_epoch == 0 and _epochs(out) == [0]
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert int(mtlzoo.load(str(out / "last.keras")).optimizer.iterations) == 8  # 32 rows / batch 4


@pytest.mark.slow
def test_cli_train_refuses_a_different_recipe_and_overwrite_replaces(tmp_path, capsys):
    import argparse

    from mtlzoo import cli_training

    out = str(tmp_path / "run")
    parser = argparse.ArgumentParser(prog="mtlzoo")
    cli_training.register(parser.add_subparsers(dest="command", required=True))
    base = ["train", "driving_perception_lite", "backbone=tiny", "backbone_args={width: 4}", "neck_channels=8",
            "input_shape=[32, 64, 3]", "tasks=[scene]", "data.num_examples=8", "data.validation_split=null",
            "training.batch_size=8", "--epochs", "1", "--out", out, "--verbose", "0"]
    args = parser.parse_args(base)
    assert args.func(args) == 0
    changed = parser.parse_args(base + ["neck_channels=16"])
    capsys.readouterr()
    assert changed.func(changed) == 2
    err = capsys.readouterr().err
    assert "neck_channels: 8 -> 16" in err and "--overwrite" in err
    forced = parser.parse_args(base + ["neck_channels=16", "--overwrite"])
    assert forced.func(forced) == 0
    assert "neck_channels: 16" in open(os.path.join(out, "recipe.yaml")).read()


# ----------------------------------------------------------------------------- broken backup
def test_a_truncated_backup_stops_with_one_clear_error(tmp_path):
    import keras

    out = tmp_path / "run"

    class Crash(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("simulated crash")

    with pytest.warns(UserWarning, match="resume"), pytest.raises(RuntimeError, match="simulated crash"):
        _train(out, 4, callbacks=[Crash()])
    weights = out / "backup" / "latest.weights.h5"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # a disk that lost half of it
    with pytest.raises(RunFolderError) as info:
        _train(out, 4)
    message = str(info.value)
    assert "latest.weights.h5 is broken" in message and f"delete the folder {out / 'backup'}" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # one error, not an h5py chain
    # The fix the message gives works: without the backup the run continues from last.keras (2 epochs done).
    import shutil

    shutil.rmtree(out / "backup")
    result = _train(out, 4)
    assert result.initial_epoch == 2 and _epochs(out) == [0, 1, 2, 3]
    # A cut epoch counter is named as well.
    (out / "backup").mkdir()
    (out / "backup" / "training_metadata.json").write_text('{"epoch": 1, "ba')
    with pytest.raises(RunFolderError, match="training_metadata.json is broken"):
        _train(out, 4)


def test_history_with_a_cut_last_line_is_read_up_to_it(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss,val_loss\n0,1.5,1.6\n1,1.2,1.3\n2,1.1")
    assert [r["epoch"] for r in read_history_rows(str(path))] == ["0", "1"]


# ----------------------------------------------------------------------------- kill -9
def _check_files(out):
    """Every file present after a kill is complete: checkpoints load and predict finite values, CSV/YAML/JSON parse."""
    import yaml

    x = _tabular(4)[0]
    for name in ("best.keras", "last.keras"):
        path = os.path.join(out, name)
        if os.path.exists(path):
            outputs = mtlzoo.load(path, compile=False)(x, training=False)  # eager: no retracing per file
            assert all(np.all(np.isfinite(np.asarray(v))) for v in outputs.values()), name
    history = os.path.join(out, "history.csv")
    if os.path.exists(history):
        with open(history, newline="") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["epoch"]) for r in rows] == list(range(len(rows)))
        assert all(None not in r and all(v not in (None, "") for v in r.values()) for r in rows)
    if os.path.exists(os.path.join(out, "recipe.yaml")):
        with open(os.path.join(out, "recipe.yaml")) as f:
            assert yaml.safe_load(f)["name"] == "tabular_demo"
    for name in ("train_summary.json", os.path.join("backup", "training_metadata.json")):
        if os.path.exists(os.path.join(out, name)):
            with open(os.path.join(out, name)) as f:
                json.load(f)
    return read_history_rows(history)


KILLS = 8  # each kill costs a child's start-up (about 3 s on 2 cores); 8 random moments hit writes too


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing(tmp_path):
    out = str(tmp_path / "run")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    script = os.path.abspath(__file__)
    server = subprocess.Popen([sys.executable, script, "--fork-server", out, "100000"], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(tmp_path / "stderr", "w"))
    rng = np.random.default_rng(10)
    progress, hit_a_write, seconds = [], 0, {"child": 0.0, "check": 0.0}
    try:
        for _ in range(KILLS):
            start = time.perf_counter()
            server.stdin.write("run\n")
            server.stdin.flush()
            line = server.stdout.readline()  # the child's first epoch ended: its files are being written now
            assert line.startswith(HELPER_MARK), f"the child failed: {(tmp_path / 'stderr').read_text()[-3000:]}"
            child = int(line.split()[1])
            time.sleep(rng.uniform(0.0, 0.8))
            os.kill(child, signal.SIGKILL)
            assert server.stdout.readline().split() == ["exit", str(-signal.SIGKILL)]
            hit_a_write += any(".tmp-" in n for n in os.listdir(out))
            seconds["child"] += time.perf_counter() - start
            start = time.perf_counter()
            progress.append(len(_check_files(out)))
            seconds["check"] += time.perf_counter() - start
    finally:
        server.stdin.close()
        server.wait(timeout=60)
    # Training went forward across the kills: each start resumed, losing at most the epoch whose history row was
    # written after its last backup (that epoch is trained again).
    assert progress[-1] >= 2 and all(b >= a - 1 for a, b in zip(progress, progress[1:])), progress
    # The interrupted run, resumed by a fresh process with a new total of epochs, finishes.
    with open(os.path.join(out, "backup", "training_metadata.json")) as f:
        done = json.load(f)["epoch"]
    total = done + 3
    finished = subprocess.run([sys.executable, script, out, str(total)], env=env, capture_output=True, text=True,
                              timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    rows = _check_files(out)
    assert [int(r["epoch"]) for r in rows] == list(range(total))
    assert not os.path.exists(os.path.join(out, "backup")) and not os.path.exists(os.path.join(out, fileio.LOCK_NAME))
    assert not [n for n in os.listdir(out) if ".tmp-" in n]  # temporaries of killed writes were cleaned up
    with open(os.path.join(out, "train_summary.json")) as f:
        summary = json.load(f)
    assert summary["epochs_run"] == total and summary["initial_epoch"] == done > 0
    print(f"kill -9 x{KILLS}: epochs after each kill {progress}; {hit_a_write} kills left a cut temporary file; "
          f"seconds in children {seconds['child']:.0f}, in checks {seconds['check']:.0f}")
