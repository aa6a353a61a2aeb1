"""Write artifacts atomically: readers see the old file (or folder) or the new one, never half of one.

Every writer stages its output next to the destination (same folder, hence
same filesystem, so ``os.replace``/``os.rename`` is atomic) and renames it
into place only once it is complete. A crash or an exception leaves the old
artifact untouched and removes the staging file.

Staging names start with ``.`` and contain ``.tmp-PID-`` (``.old-PID-`` for a
folder being replaced) so they are easy to recognise if a process is killed
mid-write: ``remove_stale`` deletes those whose process is gone (each writer
runs it for its own destination first). Folders are written by
``transfer.core.atomic_folder.atomic_directory``.

Example:
    >>> atomic_write_json("runs/exp1/history.json", {"loss": [0.9, 0.5]})
    >>> atomic_save_keras(model, "runs/exp1/best.keras")
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any


logger = logging.getLogger(__name__)

TMP_MARK = ".tmp-"
OLD_MARK = ".old-"


# .NAME.tmp-PID-HEX[.keras] and .NAME.old-PID-HEX
_STAGING = re.compile(r"^\.(?P<name>.+)(?P<mark>\.tmp-|\.old-)(?P<pid>\d+)-[0-9a-f]{12}(\.keras)?$")


def _sibling(path: Path, mark: str, suffix: str = "") -> Path:
    # A random name next to `path`, with the writer's PID so a dead writer's
    # leftovers can be told from a live one's; the leading dot keeps it out of
    # globs such as `*.keras` and out of the class folders a dataset lists.
    return path.parent / f".{path.name}{mark}{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's), or we cannot tell: leave it alone
    return True


def staging_entries(directory: str | os.PathLike) -> list[Path]:
    """The staging leftovers (``.NAME.tmp-PID-...``, ``.NAME.old-PID-...``) in ``directory``.

    Example:
        >>> staging_entries("runs/exp1/checkpoints")
        [PosixPath('runs/exp1/checkpoints/.best.keras.tmp-4242-1f2e3d4c5b6a.keras')]
    """
    directory = Path(directory)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(directory / n for n in names if _STAGING.match(n))


def remove_stale(directory: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete staging leftovers of writers that were killed; returns what was removed.

    Only entries whose process is gone are touched (a live writer's staging
    folder is left alone), and only for ``name`` when given. An ``.old-``
    folder whose destination is missing (killed between the two renames of a
    replacement) is renamed back into place instead of deleted.

    Example:
        >>> remove_stale("exports/")
        [PosixPath('exports/.flowers.tmp-4242-1f2e3d4c5b6a')]
    """
    removed = []
    for entry in staging_entries(directory):
        match = _STAGING.match(entry.name)
        if (name is not None and match["name"] != name) or _alive(int(match["pid"])):
            continue
        final = entry.parent / match["name"]
        if match["mark"] == OLD_MARK and not (final.exists() or final.is_symlink()):
            with contextlib.suppress(OSError):
                os.rename(entry, final)
                logger.warning("Restored %s from %s (a replacement was interrupted)", final, entry.name)
                continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
            logger.info("Removed %s, left by an interrupted write", entry)
    return removed


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
    def write(tmp: Path) -> None:
        # os.open with 0o666 (not tempfile.mkstemp, which forces 0o600) so the file
        # gets the same permissions as any normally written file under the umask.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return _write_then_replace(Path(path), write)


def _write_then_replace(path: Path, write, suffix: str = "") -> Path:
    """Run ``write(tmp)`` on a staging sibling of ``path``, then rename it over ``path``.

    On any failure the staging file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, path.name)
    tmp = _sibling(path, TMP_MARK, suffix=suffix)
    try:
        write(tmp)
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


def atomic_link_or_copy(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Make ``path`` an atomic replica of the finished file ``source``: a hard link, else a copy.

    A link costs nothing whatever the file's size, and ``path`` keeps the
    contents when ``source`` is deleted later.

    Example:
        >>> atomic_link_or_copy("runs/r/checkpoints/epoch-003.keras", "runs/r/checkpoints/best.keras")
    """
    source = Path(source)

    def write(tmp: Path) -> None:
        try:
            os.link(source, tmp)
        except OSError:  # another filesystem, or one without hard links
            shutil.copyfile(source, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())

    return _write_then_replace(Path(path), write)


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
    # Keras picks the format from the suffix, so the staging name ends in .keras too.
    return _write_then_replace(path, model.save, suffix=".keras")
