"""Crash-safe file writes and a run-folder lock (standard library only).

A file written in place is lost if the process dies mid-write: a kill -9
during `model.save("best.keras")` leaves a truncated zip and the previous best
model is gone. Every writer here writes a temporary file in the target's own
folder (so that the rename stays on one file system), flushes and fsyncs it,
renames it over the target with `os.replace` (atomic on POSIX and Windows) and
fsyncs the folder, so that at any moment the target is either the complete old
file or the complete new one.

`RunLock` keeps two processes from writing one run folder at once: a lock file
created with `O_CREAT | O_EXCL` holding the owner's pid and host. A lock whose
owner died (kill -9, power loss) on this host is stale and is taken over.

This module imports nothing from mtlzoo: every layer may use it.

Example:
```python
from mtlzoo import fileio
fileio.atomic_write_text("runs/a/recipe.yaml", recipe.to_yaml())
fileio.atomic_save_model(model, "runs/a/best.keras")
with fileio.RunLock("runs/a"):
    ...  # only this process writes runs/a
```
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time


# ---------------------------------------------------------------- errors
class UntrustedModelError(ValueError):
    """A SavedModel that is not an mtlzoo export: running it would run its code; pass `trusted=True` to accept it."""


class ModelFileError(ValueError):
    """A model file that cannot be read: truncated, corrupt or of another format; the message names the file.

    Raised by `mtlzoo.edge.load` (`.tflite`, export metadata) and by `mtlzoo.load` (`.keras`).
    """

__all__ = ["pid_alive", 
    "LOCK_NAME",
    "ModelFileError",
    "RunLock",
    "RunLockError",
    "UntrustedModelError",
    "atomic_save_model",
    "atomic_savefig",
    "atomic_save_weights",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_dir",
    "remove_temporaries",
    "temporary_path",
]

#: Name of the lock file `RunLock` creates in a run folder.
LOCK_NAME = ".mtlzoo.lock"
_TEMP_MARK = ".tmp-"


def fsync_dir(folder):
    """Flushes a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder or ".", os.O_RDONLY)
    except OSError:  # Windows: folders cannot be opened; the rename is durable there anyway
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_path(path, suffix=None):
    """A hidden temporary name next to `path`: `folder/.<name>.tmp-<pid><suffix>`.

    Args:
        path: str. The final file name.
        suffix: str or None. Ending of the temporary name; defaults to the
            final name's extension (Keras picks the format by the ending, so
            `best.keras` gets `.best.keras.tmp-123.keras`).

    Example:
    ```python
    temporary_path("runs/a/best.keras")   # 'runs/a/.best.keras.tmp-4242.keras'
    ```
    """
    folder, name = os.path.split(os.fspath(path))
    if suffix is None:
        suffix = ".weights.h5" if name.endswith(".weights.h5") else os.path.splitext(name)[1]
    return os.path.join(folder, f".{name}{_TEMP_MARK}{os.getpid()}{suffix}")


def _replace(tmp, path):
    _fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def _discard(tmp):
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)


@contextlib.contextmanager
def atomic_write(path, mode="w", **open_kwargs):
    """Context manager: a file object whose content replaces `path` only if the block completes.

    Args:
        path: str. The final file.
        mode: str. "w" (text) or "wb" (bytes). Defaults to "w".
        **open_kwargs: passed to `open` (e.g. `newline=""` for `csv`).

    Example:
    ```python
    with atomic_write("runs/a/history.csv", newline="") as f:
        csv.writer(f).writerows(rows)
    ```
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}.")
    path = os.fspath(path)
    tmp = temporary_path(path)
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
        _replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def atomic_write_text(path, text, encoding="utf-8"):
    """Writes `text` to `path` atomically (temporary file, fsync, `os.replace`, folder fsync).

    Example:
    ```python
    atomic_write_text("runs/a/recipe.yaml", recipe.to_yaml())
    ```
    """
    with atomic_write(path, "w", encoding=encoding) as f:
        f.write(text)


def atomic_write_bytes(path, data):
    """Writes `data` (bytes) to `path` atomically.

    Example:
    ```python
    atomic_write_bytes("runs/a/plot.png", png_bytes)
    ```
    """
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_json(path, value, **dump_kwargs):
    """Writes `json.dumps(value, **dump_kwargs)` to `path` atomically.

    Example:
    ```python
    atomic_write_json("runs/a/train_summary.json", summary, indent=2)
    ```
    """
    atomic_write_text(path, json.dumps(value, **dump_kwargs))


def _atomic_call(path, write):
    path = os.fspath(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        _replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def atomic_save_model(model, path, **kwargs):
    """`model.save(path, **kwargs)` through a temporary `.keras` file in the same folder.

    Example:
    ```python
    atomic_save_model(model, "runs/a/best.keras")
    ```
    """
    _atomic_call(path, lambda tmp: model.save(tmp, **kwargs))


def atomic_save_weights(model, path, **kwargs):
    """`model.save_weights(path, **kwargs)` through a temporary `.weights.h5` file in the same folder.

    Example:
    ```python
    atomic_save_weights(model, "runs/a/backup/latest.weights.h5")
    ```
    """
    _atomic_call(path, lambda tmp: model.save_weights(tmp, **kwargs))


def atomic_savefig(figure, path, **kwargs):
    """`figure.savefig(path, **kwargs)` through a temporary file in the same folder.

    Example:
    ```python
    atomic_savefig(fig, "tuning/tuning_plot.png", dpi=100)
    ```
    """
    kwargs.setdefault("format", os.path.splitext(os.fspath(path))[1].lstrip(".") or None)
    _atomic_call(path, lambda tmp: figure.savefig(tmp, **kwargs))


def remove_temporaries(folder):
    """Deletes the temporary files this module leaves in `folder` when a process dies mid-write.

    Only names made by `temporary_path` (`.<name>.tmp-<pid>...`) whose pid is
    not a live process are removed. Returns the removed paths.
    """
    removed = []
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return removed
    for name in names:
        if not name.startswith(".") or _TEMP_MARK not in name:
            continue
        rest = name.split(_TEMP_MARK, 1)[1]
        pid = rest[: len(rest) - len(rest.lstrip("0123456789"))]
        if not pid or pid_alive(int(pid)):
            continue
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError):
            os.remove(path)
            removed.append(path)
    return removed


# ---------------------------------------------------------------------------- lock
class RunLockError(RuntimeError):
    """Another process holds a run folder's lock; the message names it and the fix."""


def pid_alive(pid) -> bool:
    """True while a process with this id exists on this host (another user's included)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except OSError:
        return False
    return True


def _process_start(pid):
    """The process's start time in clock ticks (Linux), to tell a reused pid from the owner; None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


class RunLock:
    """An exclusive lock on a folder: the file `.mtlzoo.lock` with the owner's pid and host.

    Created with `O_CREAT | O_EXCL`, so of two processes only one gets it. A
    lock left by a process that died (kill -9) is stale when its host is this
    host and its pid is no longer alive (or now belongs to a process started
    later): it is taken over. A lock from another host is never taken over.
    The lock is released (the file deleted) on `release()` or when the `with`
    block ends.

    Args:
        folder: str. The folder to lock (created if missing).
        what: str. What the folder is, for the error message. Defaults to
            "run folder".

    Raises:
        RunLockError: on `acquire()`, when another live process holds it.

    Example:
    ```python
    from mtlzoo.fileio import RunLock
    with RunLock("runs/a"):
        ...  # a second process gets RunLockError naming this one's pid
    ```
    """

    def __init__(self, folder, what="run folder"):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_NAME)
        self.what = what
        self.held = False
        self.took_over = None

    def _record(self):
        return {"pid": os.getpid(), "host": socket.gethostname(), "start": _process_start(os.getpid()),
                "time": time.time()}

    def _create(self):
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(fd, json.dumps(self._record()).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self.folder)

    def owner(self):
        """The lock file's content (dict with `pid`, `host`, ...), {} if unreadable, None if absent."""
        try:
            with open(self.path) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        try:
            value = json.loads(text)
            return value if isinstance(value, dict) else {}
        except ValueError:
            return {}

    def _stale(self, owner):
        if owner is None:
            return True
        if not owner:  # empty or partial: the owner died while writing it
            try:
                return time.time() - os.path.getmtime(self.path) > 10.0
            except FileNotFoundError:
                return True
        if owner.get("host") != socket.gethostname():
            return False
        pid = owner.get("pid")
        if not isinstance(pid, int):
            return True
        if not pid_alive(pid):
            return True
        start = owner.get("start")
        now = _process_start(pid)
        return start is not None and now is not None and now != start  # the pid was reused

    def acquire(self):
        """Takes the lock (or a stale one); raises `RunLockError` when a live process holds it."""
        os.makedirs(self.folder, exist_ok=True)
        for _ in range(5):
            try:
                self._create()
                self.held = True
                return self
            except FileExistsError:
                pass
            owner = self.owner()
            if not self._stale(owner):
                raise RunLockError(self._message(owner))
            self._take_over(owner)
        raise RunLockError(f"Could not take the lock {self.path}: it keeps changing hands. Try again.")

    def _take_over(self, owner):
        # A short-lived guard so that two processes never both remove and recreate the stale lock.
        guard = self.path + ".takeover"
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - os.path.getmtime(guard) > 10.0:
                    os.remove(guard)
            time.sleep(0.05)
            return
        os.close(fd)
        try:
            if self.owner() == owner:  # still the same stale lock
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
                self.took_over = owner
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(guard)

    def _message(self, owner):
        owner = owner or {}
        pid, host = owner.get("pid", "?"), owner.get("host", "?")
        since = owner.get("time")
        started = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
        here = host == socket.gethostname()
        return (
            f"The {self.what} {self.folder} is in use by another process (pid {pid} on host {host}{started}): "
            f"its lock file {self.path} exists. Two processes writing one folder would corrupt its files. "
            f"Fix: wait for that process to finish, use another folder"
            + ("" if here else f", or, if pid {pid} on {host} is no longer running, delete {self.path}")
            + "."
        )

    def release(self):
        """Deletes the lock file if this object holds it."""
        if not self.held:
            return
        self.held = False
        owner = self.owner()
        if owner and owner.get("pid") == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
