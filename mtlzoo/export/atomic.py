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
- `overwrite=True` only ever replaces an earlier mtlzoo export: a folder
  holding the marker file (`mtlzoo_export.json`, written by every export and
  zoo folder). A regular file, a symbolic link or a folder of other files at
  the target is refused with `FileExistsError` and left untouched;
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

from mtlzoo.fileio import pid_alive

log = logging.getLogger("mtlzoo.export")

_TMP_TAG = "tmp"
_OLD_TAG = "old"


def _hidden_name(target: Path, tag: str, pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f".{target.name}.{tag}-{pid}-{uuid.uuid4().hex[:8]}"


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
            if pid is None or pid_alive(pid):
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


#: The file every mtlzoo export (and zoo folder) holds; `overwrite=True` replaces only folders that hold it.
MARKER_FILE = "mtlzoo_export.json"


def _first_existing_ancestor(path: Path):
    for parent in path.parents:
        if os.path.lexists(parent):
            return parent
    return None


def check_target(target, overwrite: bool, marker: str = MARKER_FILE) -> Path:
    """Checks that `target` may be written (or replaced) by an export; returns it as an absolute Path.

    Args:
        target: str or Path. The export folder.
        overwrite: bool. Whether an earlier export at `target` may be replaced.
        marker: str. The file that makes a folder an earlier mtlzoo export.
            Defaults to `mtlzoo_export.json`.

    Raises:
        FileExistsError: `target` exists and `overwrite` is False; or it
            exists and is not an earlier mtlzoo export (a file, a symbolic
            link, a non-empty folder without `marker`), which is never replaced.
        NotADirectoryError: a parent of `target` is a file.
    """
    target = Path(target).absolute()
    ancestor = _first_existing_ancestor(target)
    if ancestor is not None and not ancestor.is_dir():
        raise NotADirectoryError(
            f"Cannot create the export folder {str(target)!r}: {str(ancestor)!r} is a file, not a folder. "
            "Choose an output path under a folder."
        )
    if not os.path.lexists(target):
        return target
    if target.is_symlink():
        kind = f"a symbolic link (to {os.readlink(target)!r})"
    elif not target.is_dir():
        kind = "a file"
    elif not (target / marker).is_file() and any(target.iterdir()):
        kind = f"a folder that is not an mtlzoo export (it holds no {marker})"
    else:
        kind = None
    if kind is not None:
        raise FileExistsError(
            f"Export target {str(target)!r} is {kind}; it was left untouched. mtlzoo only replaces a folder "
            "that holds an earlier export: choose another output folder or remove it yourself."
        )
    if not overwrite:
        raise FileExistsError(
            f"Export target {str(target)!r} already exists; pass overwrite=True "
            "(CLI: --overwrite) to replace it, or choose another folder."
        )
    return target


def _writable_error(error: OSError, target: Path) -> OSError:
    """`error` (raised creating a folder for `target`) as an OSError whose message names the target and the fix."""
    where = error.filename or target
    return OSError(
        error.errno,
        f"Cannot write the export folder {str(target)!r}: {error.strerror or error} ({where}). "
        "Choose a writable output folder.",
    )


def publish(staging, target, overwrite: bool = False, marker: str = MARKER_FILE) -> Path:
    """Moves the finished `staging` folder to `target` (see the module docstring).

    Args:
        staging: Path. A complete folder on the same file system as `target`.
        target: Path. Where the export should appear.
        overwrite: bool. Replace an earlier export at `target`. Defaults to False.
        marker: str. The file that makes a folder an earlier export (see `check_target`).

    Returns:
        The absolute target path.

    Raises:
        FileExistsError: `target` appeared meanwhile and `overwrite` is False,
            or it is not an earlier export (see `check_target`).
    """
    staging, target = Path(staging), check_target(target, overwrite, marker)
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
def atomic_directory(target, overwrite: bool = False, marker: str = MARKER_FILE):
    """Context manager yielding a staging folder that replaces `target` on success.

    Args:
        target: str or Path. The final folder.
        overwrite: bool. Replace an earlier export at `target`; without it an
            existing target raises `FileExistsError` before anything is written.
            Defaults to False.
        marker: str. The file (written into the staging folder by the caller)
            that makes a folder an earlier export: only a folder holding it is
            ever replaced. Defaults to `mtlzoo_export.json`.

    Yields:
        Path of the empty staging folder (hidden, next to `target`).

    Raises:
        FileExistsError: `target` exists and `overwrite` is False, or it is
            not an earlier export (a file, a link, a folder without `marker`).
        NotADirectoryError: a parent of `target` is a file.
        OSError: the folder cannot be written (read-only file system, no
            permission); the message names the folder.

    Example:
    ```python
    with atomic_directory("exports/m", overwrite=True) as staging:
        (staging / "model.tflite").write_bytes(data)
        (staging / "mtlzoo_export.json").write_text("{}")
    ```
    """
    target = check_target(target, overwrite, marker)
    staging = target.parent / _hidden_name(target, _TMP_TAG)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        cleanup_stale(target)
        check_target(target, overwrite, marker)  # a restored aside folder counts as existing
        staging.mkdir()
    except (FileExistsError, NotADirectoryError):
        raise
    except OSError as e:
        raise _writable_error(e, target) from e
    try:
        yield staging
        publish(staging, target, overwrite=overwrite, marker=marker)
    finally:
        if staging.exists():
            _remove(staging)
