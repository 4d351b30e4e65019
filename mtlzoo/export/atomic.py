"""Atomic, crash-safe publication of an export folder.

An export is written into a staging folder next to its target (same parent,
so the same file system) and only moved into place once every file is written,
flushed and verified. The target path therefore holds either the previous
complete export or the new complete one, never a mixture:

- new target: one `os.replace(staging, target)`;
- existing target with `overwrite=True`: on Linux the two folders are swapped
  in one `renameat2(RENAME_EXCHANGE)` call; elsewhere the old folder is first
  renamed aside (`.{name}.old-*`), the new one renamed in, then the old one
  deleted (the gap between the two renames is a few microseconds, and a later
  export puts an aside folder back when it finds the target missing);
- an error (or Ctrl-C) inside the `with` block deletes the staging folder and
  leaves the target untouched; a process killed outright leaves a hidden
  `.{name}.tmp-{pid}-*` folder next to the target, removed by the next export
  to that target once its process is gone.

Example:
```python
from mtlzoo.export.atomic import atomic_directory
with atomic_directory("saved_models/driving_perception_lite", overwrite=True) as staging:
    (staging / "model_float32.tflite").write_bytes(flatbuffer)
```
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import uuid
from pathlib import Path

log = logging.getLogger("mtlzoo.export")

_TMP_TAG = "tmp"
_OLD_TAG = "old"


def _hidden_name(target: Path, tag: str, pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f".{target.name}.{tag}-{pid}-{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _owner_pid(path: Path, target: Path, tag: str):
    prefix = f".{target.name}.{tag}-"
    if not path.name.startswith(prefix):
        return None
    try:
        return int(path.name[len(prefix):].split("-", 1)[0])
    except ValueError:
        return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def cleanup_stale(target) -> list:
    """Removes what killed exports to `target` left behind; returns the paths it handled.

    Staging folders (`.{name}.tmp-{pid}-*`) of processes that no longer run
    are deleted. An aside folder (`.{name}.old-{pid}-*`) of a dead process is
    the previous export: it is moved back when the target is missing, deleted
    otherwise.

    Args:
        target: str or Path. The export folder.
    """
    target = Path(target).absolute()
    parent = target.parent
    handled = []
    if not parent.is_dir():
        return handled
    for path in sorted(parent.iterdir()):
        for tag in (_TMP_TAG, _OLD_TAG):
            pid = _owner_pid(path, target, tag)
            if pid is None or _pid_alive(pid):
                continue
            if tag == _OLD_TAG and not os.path.lexists(target):
                os.replace(path, target)
                log.warning("Restored the previous export %s from %s (an export was interrupted).", target, path)
            else:
                _remove(path)
                log.info("Removed %s left by an interrupted export (process %d).", path, pid)
            handled.append(str(path))
    return handled


def _fsync_tree(root: Path) -> None:
    """Flushes every file and folder under `root` to disk (best effort)."""
    for folder, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(folder, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two paths atomically with Linux `renameat2(RENAME_EXCHANGE)`; False when unavailable."""
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV):
        return False  # kernel or file system without RENAME_EXCHANGE
    raise OSError(err, f"renameat2(RENAME_EXCHANGE) of {a} and {b} failed: {os.strerror(err)}")


def check_target(target, overwrite: bool) -> Path:
    """Raises FileExistsError when `target` exists and `overwrite` is False; returns it as an absolute Path."""
    target = Path(target).absolute()
    if os.path.lexists(target) and not overwrite:
        raise FileExistsError(
            f"Export target {str(target)!r} already exists; pass overwrite=True "
            "(CLI: --overwrite) to replace it, or choose another folder."
        )
    return target


def publish(staging, target, overwrite: bool = False) -> Path:
    """Moves the finished `staging` folder to `target` (see the module docstring).

    Args:
        staging: Path. A complete folder on the same file system as `target`.
        target: Path. Where the export should appear.
        overwrite: bool. Replace an existing `target`. Defaults to False.

    Returns:
        The absolute target path.

    Raises:
        FileExistsError: `target` appeared meanwhile and `overwrite` is False.
    """
    staging, target = Path(staging), check_target(target, overwrite)
    _fsync_tree(staging)
    if not os.path.lexists(target):
        try:
            os.replace(staging, target)  # atomic; fails if target became a non-empty folder meanwhile
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if not overwrite:
                raise FileExistsError(
                    f"Export target {str(target)!r} appeared during the export; pass overwrite=True to replace it."
                ) from None
        else:
            _fsync_dir(target.parent)
            return target
    if _exchange(staging, target):
        # `staging` now holds the previous export.
        _fsync_dir(target.parent)
        _remove(staging)
        return target
    aside = target.parent / _hidden_name(target, _OLD_TAG)
    os.replace(target, aside)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(aside, target)  # put the previous export back
        raise
    _fsync_dir(target.parent)
    _remove(aside)
    return target


@contextlib.contextmanager
def atomic_directory(target, overwrite: bool = False):
    """Context manager yielding a staging folder that replaces `target` on success.

    Args:
        target: str or Path. The final folder.
        overwrite: bool. Replace an existing `target`; without it an existing
            target raises `FileExistsError` before anything is written.
            Defaults to False.

    Yields:
        Path of the empty staging folder (hidden, next to `target`).

    Raises:
        FileExistsError: `target` exists and `overwrite` is False.

    Example:
    ```python
    with atomic_directory("exports/m", overwrite=True) as staging:
        (staging / "model.tflite").write_bytes(data)
    ```
    """
    target = check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    cleanup_stale(target)
    check_target(target, overwrite)  # a restored aside folder counts as existing
    staging = target.parent / _hidden_name(target, _TMP_TAG)
    staging.mkdir()
    try:
        yield staging
        publish(staging, target, overwrite=overwrite)
    finally:
        if staging.exists():
            _remove(staging)
