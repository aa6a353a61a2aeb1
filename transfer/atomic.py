"""Write artifacts atomically: readers see the old file (or folder) or the new one, never half of one.

Every writer stages its output next to the destination (same folder, hence
same filesystem, so ``os.replace``/``os.rename`` is atomic) and renames it
into place only once it is complete. A crash or an exception leaves the old
artifact untouched and removes the staging file.

Staging names start with ``.`` and contain ``.tmp-`` so they are easy to
recognise (and to clean up) if a process is killed mid-write.

Example:
    >>> atomic_write_json("runs/exp1/history.json", {"loss": [0.9, 0.5]})
    >>> with atomic_directory("exports/flowers", overwrite=True) as tmp:
    ...     (tmp / "model.txt").write_text("...")
    >>> atomic_save_keras(model, "runs/exp1/best.keras")
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator

from transfer.errors import TransferError

logger = logging.getLogger(__name__)

TMP_MARK = ".tmp-"
OLD_MARK = ".old-"


def _sibling(path: Path, mark: str, suffix: str = "") -> Path:
    # A random name next to `path`; the leading dot keeps it out of globs such as `*.keras`.
    return path.parent / f".{path.name}{mark}{uuid.uuid4().hex[:12]}{suffix}"


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable on POSIX; directories cannot be opened on Windows.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parent folders are created).

    Example:
        >>> atomic_write_bytes("out/cat.png", png_bytes)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, TMP_MARK)
    try:
        # os.open with 0o666 (not tempfile.mkstemp, which forces 0o600) so the file
        # gets the same permissions as any normally written file under the umask.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically.

    Example:
        >>> atomic_write_text("runs/exp1/recipe.toml", recipe.to_toml())
    """
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as JSON (UTF-8, trailing newline) atomically.

    The object is serialized before anything touches the disk, so a value that
    is not JSON-serializable raises ``TypeError`` and leaves no file behind.

    Example:
        >>> atomic_write_json("runs/exp1/metrics.json", {"accuracy": 0.93})
    """
    text = json.dumps(obj, indent=indent, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text)


@contextlib.contextmanager
def atomic_directory(final_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes ``final_dir``.

    - ``final_dir`` exists and not ``overwrite``: ``TransferError`` before
      anything is written.
    - ``final_dir`` exists and ``overwrite``: the old folder is moved aside,
      the new one renamed into place, then the old one deleted. (Between the
      two renames the path briefly does not exist; it never holds a mix.)
    - An exception inside the block deletes the staging folder and leaves
      any old ``final_dir`` intact.

    Example:
        >>> with atomic_directory("exports/flowers", overwrite=True) as tmp:
        ...     tf.saved_model.save(module, str(tmp))
    """
    final = Path(final_dir)
    _check_free(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(final, TMP_MARK)
    # os.mkdir honours the umask (tempfile.mkdtemp would force 0o700, and a
    # model server running as another user could not read the export).
    os.mkdir(staging)
    try:
        yield staging
        _check_free(final, overwrite)  # it may have appeared while we were working
        _move_into_place(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(final.parent)


def _check_free(final: Path, overwrite: bool) -> None:
    if (final.exists() or final.is_symlink()) and not overwrite:
        raise TransferError(
            f"Output folder already exists: '{final}'.",
            fix="Pass --overwrite (overwrite=True in Python) to replace it, or choose another folder.",
        )


def _move_into_place(staging: Path, final: Path) -> None:
    if not (final.exists() or final.is_symlink()):
        os.rename(staging, final)
        return
    old = _sibling(final, OLD_MARK)
    os.rename(final, old)
    try:
        os.rename(staging, final)
    except BaseException:
        os.rename(old, final)  # put the previous artifact back before reporting
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()
    logger.debug("Replaced %s", final)


def atomic_save_keras(model, path: str | os.PathLike) -> Path:
    """Save a Keras model to a ``.keras`` file atomically.

    Keras writes a temporary ``.keras`` file in the same folder (Keras insists
    on the suffix), which then replaces ``path``.

    Example:
        >>> atomic_save_keras(model, "runs/exp1/best.keras")
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"A Keras model file must end in '.keras'. Received: path='{path}'")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, TMP_MARK, suffix=".keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)
    return path
