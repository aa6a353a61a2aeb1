"""Open only regular files: a FIFO, socket or device where an image or an
annotation should be is reported, never read (reading a FIFO with no writer
blocks forever; a device may never end).

The check and the read use the same open file descriptor (``fstat`` after a
non-blocking ``open``), so a path swapped for a FIFO between a check and a
read cannot hang us either.

Example:
    >>> problem = not_regular("data/images/cat.jpg")   # None for a plain file
    >>> data = read_regular("data/images/cat.jpg")      # bytes, or NotRegularFileError
"""

from __future__ import annotations

import errno
import os
import stat

from transfer.core.errors import TransferError

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


class NotRegularFileError(TransferError, OSError):
    """``path`` is a FIFO, socket, device or folder, not a file with contents."""

    def __init__(self, path: str | os.PathLike, kind: str):
        self.path, self.kind = str(path), kind
        TransferError.__init__(
            self, f"'{path}' is {kind}, not a regular file; it was not read (reading it could wait forever).",
            fix="Replace it with the image or annotation file itself, or remove it from the data.",
        )


def kind_of(mode: int) -> str | None:
    """What a ``st_mode`` is when it is not a regular file ("a named pipe (FIFO)", ...); None for a file."""
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def not_regular(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it exists and is not a regular file (symlinks followed); None otherwise."""
    try:
        return kind_of(os.stat(path).st_mode)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return None  # a missing or unnamable file is reported by whoever reads it, in its own words


def read_regular(path: str | os.PathLike, max_bytes: int | None = None) -> bytes:
    """The bytes of ``path`` (at most ``max_bytes + 1`` when given, so a caller can tell "too large").

    Raises ``NotRegularFileError`` for a FIFO, socket, device or folder without
    blocking on it, and ``OSError`` (``FileNotFoundError``, ...) as ``open`` does, also for a
    name holding a NUL byte (``open`` would raise ``ValueError``).
    """
    if "\0" in os.fspath(path):  # os.open would raise ValueError("embedded null byte"), a traceback
        raise OSError(errno.EINVAL, "the file name holds a NUL byte (no file can have such a name)", str(path))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        kind = kind_of(os.fstat(fd).st_mode)
        if kind is not None:
            raise NotRegularFileError(path, kind)
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = -1  # closed by the file object from here on
            return f.read() if max_bytes is None else f.read(max_bytes + 1)
    finally:
        if fd >= 0:
            os.close(fd)
