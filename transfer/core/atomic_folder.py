"""Write a folder atomically, and replace only a folder ``transfer`` wrote.

``atomic_directory`` stages the folder next to its destination and moves it
into place only once it is complete. A folder killed between the two renames
of a replacement is put back by the next write to it (``remove_stale``). On
Linux a replacement is one atomic exchange (``renameat2``), so the path never
disappears even for an instant.

Example:
    >>> with atomic_directory("exports/flowers", overwrite=True) as tmp:
    ...     (tmp / "model.txt").write_text("...")
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Iterable, Iterator

from transfer.core.artifacts import check_replaceable, write_marker
from transfer.core.atomic import OLD_MARK, TMP_MARK, _fsync_dir, _sibling, remove_stale
from transfer.core.errors import TransferError

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_directory(final_dir: str | os.PathLike, overwrite: bool = False, *, kind: str | None = None,
                     protected: Iterable = (), marker: bool = True) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes ``final_dir``.

    - ``kind`` (``"export"``, ``"report"``, ...): the artifact written. Before
      anything is written, and again just before the move,
      ``transfer.core.artifacts.check_replaceable(final_dir, kind, protected)``
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
