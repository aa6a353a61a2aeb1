"""Write artifacts atomically: readers see the old file (or folder) or the new one, never half of one.

Every writer stages its output next to the destination (same folder, hence
same filesystem, so ``os.replace``/``os.rename`` is atomic) and renames it
into place only once it is complete. A crash or an exception leaves the old
artifact untouched and removes the staging file.

Staging names start with ``.`` and contain ``.tmp-PID-`` (``.old-PID-`` for a
folder being replaced) so they are easy to recognise if a process is killed
mid-write: ``remove_stale`` deletes those whose process is gone (each writer
runs it for its own destination first), and a folder killed between the two
renames of a replacement is put back by the next write to it. On Linux a
folder replacement is one atomic exchange (``renameat2``), so the path never
disappears even for an instant.

Example:
    >>> atomic_write_json("runs/exp1/history.json", {"loss": [0.9, 0.5]})
    >>> with atomic_directory("exports/flowers", overwrite=True) as tmp:
    ...     (tmp / "model.txt").write_text("...")
    >>> atomic_save_keras(model, "runs/exp1/best.keras")
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

from transfer.errors import TransferError

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


@contextlib.contextmanager
def atomic_directory(final_dir: str | os.PathLike, overwrite: bool = False, *, kind: str | None = None,
                     protected: Iterable = (), marker: bool = True) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes ``final_dir``.

    - ``kind`` (``"export"``, ``"report"``, ...): the artifact written. Before
      anything is written, and again just before the move,
      ``transfer.artifacts.check_replaceable(final_dir, kind, protected)``
      refuses a ``final_dir`` that is, holds or lies inside a ``protected``
      path, that is not a ``kind`` artifact, or that holds anything else; the
      staged folder gets the ``kind`` marker listing what the block wrote
      (``marker=False``: an artifact that says what it is itself, as an
      export's ``assets/transfer.json`` does). Without ``kind`` there is no
      such check (internal folders only).
    - ``final_dir`` exists and not ``overwrite``: ``TransferError`` before
      anything is written.
    - ``final_dir`` exists and ``overwrite``: on Linux the new and old folders
      are exchanged in one atomic step, then the old one is deleted. Elsewhere
      the old folder is moved aside, the new one renamed into place, then the
      old one deleted (between the two renames the path briefly does not
      exist; it never holds a mix, and a write killed there is put back by
      the next ``atomic_directory`` call for the same folder).
    - An exception inside the block deletes the staging folder and leaves
      any old ``final_dir`` intact.

    Example:
        >>> with atomic_directory("exports/flowers", overwrite=True, kind="export", marker=False,
        ...                       protected=[("runs/flowers", "the run being exported")]) as tmp:
        ...     tf.saved_model.save(module, str(tmp))
    """
    final = Path(final_dir)
    protected = list(protected)
    remove_stale(final.parent, final.name)  # may put back a folder a killed replacement left aside
    _check_ours(final, kind, protected)
    _check_free(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(final, TMP_MARK)
    # os.mkdir honours the umask (tempfile.mkdtemp would force 0o700, and a
    # model server running as another user could not read the export).
    os.mkdir(staging)
    try:
        yield staging
        if kind is not None and marker:
            from transfer.artifacts import write_marker

            write_marker(staging, kind)
        _check_ours(final, kind, protected)  # it may have appeared, or changed, while we were working
        _check_free(final, overwrite)
        _move_into_place(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(final.parent)


def _check_ours(final: Path, kind: str | None, protected: list) -> None:
    if kind is not None:
        from transfer.artifacts import check_replaceable  # imports this module

        check_replaceable(final, kind, protected)


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
    if _exchange(staging, final):
        # One atomic step: `final` now holds the new folder and `staging` the old one.
        shutil.rmtree(staging, ignore_errors=True)
        logger.debug("Replaced %s", final)
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


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_renameat2 = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    global _renameat2
    if not sys.platform.startswith("linux"):
        return False
    if _renameat2 is None:
        import ctypes

        try:
            function = ctypes.CDLL(None, use_errno=True).renameat2
        except (OSError, AttributeError):  # glibc < 2.28, musl: no wrapper
            _renameat2 = False
            return False
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
        _renameat2 = function
    if _renameat2 is False:
        return False
    import ctypes

    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # the filesystem (or kernel) cannot exchange: use two renames
    raise OSError(code, os.strerror(code), str(b))


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
