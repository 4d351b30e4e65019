"""The run folder of `train`: history CSV, backup, resumption checks and clearing."""

from __future__ import annotations

import csv
import json
import os
import shutil

import keras
import numpy as np

from mtlzoo import fileio
from mtlzoo.data.splits import DataCheckError

__all__ = [
    "backup_state",
    "clear_run",
    "HistoryCSV",
    "load_run_weights",
    "plan_run",
    "read_csv_history",
    "read_history_rows",
    "RUN_FILES",
    "RUN_FOLDERS",
    "RunBackup",
    "RunFolderError",
    "write_history_rows",
]


class RunFolderError(DataCheckError):
    """The output folder cannot take this run; the message names the problem and the fix.

    Raised when `out_dir` holds a finished run of a different recipe (or more
    epochs than asked for), an interrupted run of a different recipe, a
    corrupt resume backup, or is locked by another live process. A subclass of
    `DataCheckError`, so code catching that keeps working.
    """


def _csv_value(value):
    if isinstance(value, str):
        return value
    array = np.asarray(value)
    if array.ndim == 0:
        return repr(float(array)) if array.dtype.kind in "fiub" else str(value)
    return '"[' + ", ".join(map(str, array.ravel().tolist())) + ']"'


def read_history_rows(path):
    """The rows of a `history.csv` as dicts of strings, one per epoch, epochs 0, 1, ... in order.

    Rows that cannot be read (a truncated last line of a file written by an
    older version, a non-integer epoch) and everything after them are left
    out; a repeated epoch keeps its last row.

    Example:
    ```python
    from mtlzoo.training import read_history_rows
    [row["val_loss"] for row in read_history_rows("runs/lite/history.csv")]
    ```
    """
    if not path or not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        by_epoch = {}
        for row in reader:
            if None in row or any(v is None for v in row.values()):
                break  # short or long row: a line cut by a crash
            try:
                epoch = int(row.get("epoch", ""))
            except ValueError:
                break
            by_epoch[epoch] = row
    rows = []
    while len(rows) in by_epoch:
        rows.append(by_epoch[len(rows)])
    return rows


def write_history_rows(path, rows):
    """Writes history rows (dicts) as CSV atomically: `epoch` first, then every key seen, sorted; "NA" if absent.

    Example:
    ```python
    from mtlzoo.training import read_history_rows, write_history_rows
    rows = read_history_rows("runs/lite/history.csv")
    write_history_rows("runs/lite/history.csv", rows[:3])   # keep the first three epochs
    ```
    """
    keys = sorted({k for row in rows for k in row if k != "epoch"})
    with fileio.atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch"] + keys, restval="NA")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)


class HistoryCSV(keras.callbacks.Callback):
    """Writes the epoch logs to a CSV file, one row per epoch, rewritten atomically after every epoch.

    Like `keras.callbacks.CSVLogger` (same columns: `epoch`, then the log keys
    sorted), but the whole file is written to a temporary name and renamed
    over the old one at each epoch end, so a process killed at any moment
    leaves a complete file, never a cut last line.

    Args:
        filename: str. The CSV file.
        previous_rows: list of dicts or None. Rows of earlier epochs kept at
            the top (a resumed or continued run); None starts empty.
            Defaults to None.

    Example:
    ```python
    from mtlzoo.training import HistoryCSV
    model.fit(dataset, epochs=5, callbacks=[HistoryCSV("runs/a/history.csv")])
    ```
    """

    def __init__(self, filename, previous_rows=None):
        super().__init__()
        self.filename = os.fspath(filename)
        self.previous_rows = [dict(r) for r in previous_rows or ()]
        self.rows = list(self.previous_rows)

    def on_train_begin(self, logs=None):
        self.rows = list(self.previous_rows)

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": int(epoch)}
        row.update((k, _csv_value(v)) for k, v in (logs or {}).items())
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch] + [row]
        write_history_rows(self.filename, self.rows)


def _broken_backup(path, backup_dir, error, run_dir=None):
    run_dir = run_dir or os.path.dirname(os.path.abspath(backup_dir))
    detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return RunFolderError(
        f"The resume backup file {path} is broken ({type(error).__name__}{': ' + detail if detail else ''}), "
        f"so the interrupted run in {run_dir} cannot resume from it. Fix: delete the folder {backup_dir} and run "
        f"the same command again: training then continues from {os.path.join(run_dir, 'last.keras')} when it "
        "exists, or starts over at epoch 1 (to discard the run entirely, pass overwrite=True / "
        "mtlzoo train --overwrite)."
    )


class RunBackup(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` with atomic writes and one clear error for a broken backup.

    The weights (`latest.weights.h5`) and the epoch counter
    (`training_metadata.json`) are each written to a temporary file, fsynced
    and renamed into place, weights first, so a killed process leaves the
    previous backup readable. A backup that cannot be read (a damaged disk,
    a file copied halfway) stops training with a `RunFolderError` naming the
    file and the fix, instead of an h5py traceback.

    Args:
        backup_dir: str. The backup folder (used by nothing else).
        run_dir: str or None. The run folder, for the message. Defaults to
            the backup folder's parent.

    Example:
    ```python
    from mtlzoo.training import RunBackup
    model.fit(dataset, epochs=5, callbacks=[RunBackup("runs/a/backup")])
    ```
    """

    def __init__(self, backup_dir, run_dir=None, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.run_dir = run_dir or os.path.dirname(os.path.abspath(backup_dir))

    def _broken(self, path, error):
        return _broken_backup(path, self.backup_dir, error, self.run_dir)

    def on_train_begin(self, logs=None):
        if os.path.exists(self._training_metadata_path):
            try:
                with open(self._training_metadata_path) as f:
                    epoch = int(json.load(f)["epoch"])
            except (ValueError, KeyError, TypeError, OSError) as error:
                raise self._broken(self._training_metadata_path, error) from None
        else:
            epoch = None
        if os.path.exists(self._weights_path):
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            try:
                self.model.load_weights(self._weights_path)
            except Exception as error:  # h5py raises OSError, KeyError, ValueError... for a damaged file
                raise self._broken(self._weights_path, error) from None
        if epoch is not None:
            self.model._initial_epoch = epoch

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        fileio.atomic_save_weights(self.model, self._weights_path, overwrite=True)
        fileio.atomic_write_json(self._training_metadata_path,
                                 {"epoch": self._current_epoch, "batch": self._last_batch_seen})


# ---------------------------------------------------------------------------- files
#: Files and folders `train` writes into `out_dir`; `overwrite=True` deletes these and nothing else.
RUN_FILES = ("best.keras", "last.keras", "history.csv", "recipe.yaml", "train_summary.json")


RUN_FOLDERS = ("backup", "logs")


def read_csv_history(path):
    out = {}
    for row in read_history_rows(path):
        for key, value in row.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                number = float("nan")
            out.setdefault(key, []).append(number)
    if "epoch" in out:
        out["epoch"] = [int(e) for e in out["epoch"]]
    return out


def backup_state(backup_dir):
    meta = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(meta):
        return None
    try:
        with open(meta) as f:
            state = json.load(f)
        int(state["epoch"])
    except (ValueError, KeyError, TypeError) as error:
        raise _broken_backup(meta, backup_dir, error) from None
    return state


def _flatten(value, prefix=""):
    if isinstance(value, dict) and value:
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def _recipe_changes(stored, current):
    """'key: old -> new' for each dotted recipe key that differs, `training.epochs` left out."""
    old, new = _flatten(stored or {}), _flatten(current or {})
    changes = []
    for key in sorted(set(old) | set(new)):
        if key == "training.epochs" or old.get(key, "<unset>") == new.get(key, "<unset>"):
            continue
        show = [repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..." for v in
                (old.get(key, "<unset>"), new.get(key, "<unset>"))]
        changes.append(f"{key}: {show[0]} -> {show[1]}")
    return changes


def _stored_recipe(out_dir):
    path = os.path.join(out_dir, "recipe.yaml")
    if not os.path.exists(path):
        return None
    import yaml

    try:
        with open(path) as f:
            stored = yaml.safe_load(f)
    except yaml.YAMLError as error:
        raise RunFolderError(
            f"{path} cannot be read ({type(error).__name__}), so the run in {out_dir} cannot be compared with this "
            "recipe. Fix: pass overwrite=True (mtlzoo train --overwrite) to replace the run, or use another out_dir."
        ) from None
    return stored if isinstance(stored, dict) else None


def _check_resume(out_dir, recipe):
    """Refuses to resume a backup written by a different recipe."""
    stored = _stored_recipe(out_dir)
    if stored is None:
        return
    import yaml

    changed = _recipe_changes(stored, yaml.safe_load(recipe.to_yaml()))
    if changed:
        raise RunFolderError(
            f"{out_dir} holds an interrupted run of a different recipe (changed keys: {'; '.join(changed)}). "
            f"Fix: rerun with the same settings to resume, use another out_dir (--out), pass overwrite=True "
            f"(mtlzoo train --overwrite) to replace it, or delete {os.path.join(out_dir, 'backup')} to start over."
        )


def clear_run(out_dir):
    """Deletes the files `train` writes in `out_dir` (`RUN_FILES`, `RUN_FOLDERS`, leftover temporaries), nothing else.

    Example:
    ```python
    from mtlzoo.training import clear_run
    clear_run("runs/lite")   # best.keras, last.keras, history.csv, recipe.yaml, ... are gone
    ```
    """
    for name in RUN_FILES:
        path = os.path.join(out_dir, name)
        if os.path.lexists(path):
            os.remove(path)
    for name in RUN_FOLDERS:
        path = os.path.join(out_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
    fileio.remove_temporaries(out_dir)
    fileio.fsync_dir(out_dir)


def plan_run(out_dir, recipe, epochs, overwrite):
    """What to do with `out_dir`: dict(mode=fresh|resume|continue|done, initial_epoch, rows, backup).

    - `resume`: an interrupted run with a backup (BackupAndRestore restores it);
    - `continue`: a run without backup (finished, or stopped before its first
      backup) whose `last.keras` and `history.csv` let it go on to `epochs`;
    - `done`: such a run that already has `epochs` epochs;
    - `fresh`: nothing trained here yet, or only part of a first epoch; with
      `clear`, our files there are deleted once the data checks have passed
      (so a data error never costs the old run).
    """
    import yaml

    if overwrite:
        return {"mode": "fresh", "initial_epoch": 0, "rows": [], "backup": None, "clear": True}
    fileio.remove_temporaries(out_dir)
    backup_dir = os.path.join(out_dir, "backup")
    state = backup_state(backup_dir)
    if state is None and os.path.isdir(backup_dir):
        # Weights without the epoch counter: the very first backup was cut short; it holds nothing usable.
        shutil.rmtree(backup_dir)
    rows = read_history_rows(os.path.join(out_dir, "history.csv"))
    if state is not None:
        _check_resume(out_dir, recipe)
        done = int(state.get("epoch", 0))
        return {"mode": "resume", "initial_epoch": done, "rows": rows[:done], "backup": state}
    last = os.path.join(out_dir, "last.keras")
    finished = os.path.exists(os.path.join(out_dir, "train_summary.json"))
    if not finished and not (rows and os.path.exists(last)):
        # Nothing to continue from: at most the files of a run killed during its first epoch (recipe.yaml, logs,
        # the first history row or best.keras, written just before last.keras). That epoch is trained again.
        return {"mode": "fresh", "initial_epoch": 0, "rows": [], "backup": None, "clear": True}
    holds = [n for n in ("train_summary.json", "best.keras", "last.keras") if os.path.exists(os.path.join(out_dir, n))]
    if rows:
        holds = sorted(set(holds) | {"history.csv"})
    stored = _stored_recipe(out_dir)
    changed = _recipe_changes(stored, yaml.safe_load(recipe.to_yaml())) if stored is not None else []
    how = ("Fix: pass overwrite=True (mtlzoo train --overwrite) to replace that run, or train into another "
           "out_dir (--out).")
    epochs_text = f"{len(rows)} epoch{'s' if len(rows) != 1 else ''}"
    what = f"{out_dir} holds a run ({', '.join(holds)}; {epochs_text} in history.csv)"
    if stored is None:
        raise RunFolderError(f"{what} without its recipe.yaml, so it cannot be checked against this recipe. {how}")
    if changed:
        raise RunFolderError(
            f"{what} of a different recipe (changed keys: {'; '.join(changed)}). Training here would replace its "
            f"checkpoints and history. {how}"
        )
    if not rows or not os.path.exists(last):
        missing = "history.csv" if not rows else "last.keras"
        raise RunFolderError(f"{what} but its {missing} is missing, so it cannot be continued. {how}")
    if epochs < len(rows):
        raise RunFolderError(
            f"{what}; asked for {epochs} epochs, fewer than the {len(rows)} it has. Fix: ask for {len(rows)} epochs "
            f"(or more, to continue it), pass overwrite=True (mtlzoo train --overwrite) to retrain it, or train into "
            "another out_dir (--out)."
        )
    mode = "done" if epochs == len(rows) else "continue"
    return {"mode": mode, "initial_epoch": len(rows), "rows": rows, "backup": None}


def load_run_weights(model, path):
    """Loads weights and optimizer state of `last.keras` into a freshly built `model`."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(path)
    except Exception as error:
        raise RunFolderError(
            f"{path} cannot be loaded ({type(error).__name__}: {str(error)[:200]}), so the run cannot be continued "
            "from it. Fix: pass overwrite=True (mtlzoo train --overwrite) to start over, or use another out_dir."
        ) from None
