"""Where ``transfer predict`` writes each input's files (``--draw``, ``--out``), without ever
writing over an input, over a file already there (unless ``--overwrite``) or over another output.

- ``output_names``: one relative name per input, never two alike: the input's path relative to
  the inputs' common folder, ``.png`` for its suffix (``a/x.jpg`` -> ``a/x.png``); inputs that
  differ only by suffix keep it (``a.jpg.png``, ``a.png.png``); what still repeats (the same
  file named twice) gets ``-2``, ``-3``, ...
- ``OutputFolders``: checks the folders before anything runs (none may hold an input, symlinks
  resolved, nor be inside the export, nor overlap another output folder; files already
  there are refused without ``overwrite``) and writes each file atomically; without
  ``overwrite`` a file that appeared meanwhile is still never replaced.

Example:
    >>> output_names(["photos/a/x.jpg", "photos/b/x.jpg", "photos/c.jpg", "photos/c.png"])
    ['a/x.png', 'b/x.png', 'c.jpg.png', 'c.png.png']
    >>> folders = OutputFolders(files, {"drawn": Path("drawn")}, export_dir=Path("exports/raccoon"))
    >>> folders.write("drawn", 0, png_bytes)
    PosixPath('drawn/a/x.png')
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from pathlib import Path
from typing import Mapping, Optional, Sequence

from transfer.core.errors import TransferError

SUFFIX = ".png"
# The option each kind of output comes from, for messages.
OPTIONS = {"drawn": "--draw", "mask_file": "--out"}
_SHOWN = 5  # files listed in a message before "and N more"


def output_names(files: Sequence[str | os.PathLike], suffix: str = SUFFIX) -> list[str]:
    """One relative output name per input (``/``-separated), all distinct (case-insensitively,
    for case-insensitive file systems); see the module docstring.

    Example:
        >>> output_names(["a/x.jpg", "b/x.jpg"])
        ['a/x.png', 'b/x.png']
    """
    if not files:
        return []
    absolute = [os.path.abspath(os.fspath(f)) for f in files]
    root = os.path.commonpath([os.path.dirname(a) for a in absolute])
    relative = [Path(os.path.relpath(a, root)).as_posix() for a in absolute]
    names = [os.path.splitext(r)[0] + suffix for r in relative]
    # Inputs that differ only by their suffix (a.jpg, a.png) keep it in the name.
    counts = Counter(n.casefold() for n in names)
    names = [r + suffix if counts[n.casefold()] > 1 else n for r, n in zip(relative, names)]
    # What still repeats (one file named twice, a.jpg.png beside a.jpg + a.png): -2, -3, ...
    counts = Counter(n.casefold() for n in names)
    taken = {n.casefold() for n in names if counts[n.casefold()] == 1}
    unique = []
    for name in names:
        if counts[name.casefold()] > 1:
            stem, number = name[: -len(suffix)], 1
            while name.casefold() in taken:
                number += 1
                name = f"{stem}-{number}{suffix}"
        taken.add(name.casefold())
        unique.append(name)
    return unique


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


class OutputFolders:
    """The output folders of one ``transfer predict`` (``{"drawn": --draw, "mask_file": --out}``),
    checked when made (``TransferError``, before any prediction) and written file by file.

    Example:
        >>> folders = OutputFolders(["a/x.jpg", "b/x.jpg"], {"drawn": Path("drawn")}, export_dir=Path("exp"))
        >>> folders.target("drawn", 1)
        PosixPath('drawn/b/x.png')
    """

    def __init__(self, files: Sequence[str], folders: Mapping[str, Optional[Path]], *, export_dir: Path,
                 overwrite: bool = False):
        self.files = [str(f) for f in files]
        self.folders = {key: Path(folder) for key, folder in folders.items() if folder is not None}
        self.overwrite = overwrite
        self.names = output_names(self.files)
        self.written = Counter()  # files written per kind, for the summary lines
        self._check_folders(Path(export_dir))
        self._check_targets()

    def target(self, key: str, index: int) -> Path:
        """The file ``key``'s output of input ``index`` goes to."""
        return self.folders[key] / self.names[index]

    def write(self, key: str, index: int, data: bytes) -> Path:
        """Write ``data`` as input ``index``'s ``key`` output, atomically; returns its path.

        Raises ``TransferError`` (a file appeared there since the check, without
        ``overwrite``; a folder in the way) or ``OSError``: the caller makes it that
        input's error.
        """
        path = self.target(key, index)
        self._refuse_escape(key, path)
        if self.overwrite:
            from transfer.core.atomic import atomic_write_bytes

            if path.is_dir() and not path.is_symlink():
                raise TransferError(f"'{path}' is a folder; {OPTIONS[key]} writes a file there.",
                                    fix=f"Move the folder, or choose another {OPTIONS[key]} folder.")
            atomic_write_bytes(path, data)
        else:
            _write_new(path, data, OPTIONS[key])
        self.written[key] += 1
        return path

    # --- checks -----------------------------------------------------------------------------
    def _check_folders(self, export_dir: Path) -> None:
        export = export_dir.resolve()
        # Every input as named and as resolved, and every folder above them: a folder (or a
        # symlink inside it) that leads to one of these would let a write land on an input.
        self._inputs: dict[Path, str] = {}
        self._holders: dict[Path, str] = {}
        for file in self.files:
            for path in {Path(os.path.abspath(file)), Path(file).resolve()}:
                self._inputs.setdefault(path, file)
                for parent in path.parents:
                    self._holders.setdefault(parent, file)
        resolved = {}
        for key, folder in self.folders.items():
            option = OPTIONS[key]
            if folder.exists() and not folder.is_dir():
                raise TransferError(f"{option} {folder} is a file, not a folder.",
                                    fix=f"Pass a folder for {option} (it is created if missing).")
            real = folder.resolve()
            for candidate in (Path(os.path.abspath(folder)), real):
                if candidate in self._holders or candidate in self._inputs:
                    raise TransferError(
                        f"{option} {folder} holds the input '{self._holders.get(candidate, folder)}': predict "
                        "never writes where its inputs are (a drawing or mask would replace a photo).",
                        fix=f"Choose a folder that holds none of the inputs, e.g. {option} "
                            f"{folder.parent / (folder.name + '-predicted')}.")
            if _inside(real, export):
                raise TransferError(f"{option} {folder} is inside the export folder {export_dir}.",
                                    fix=f"Choose a {option} folder outside the export.")
            for other_key, other in resolved.items():
                if _inside(real, other) or _inside(other, real):
                    raise TransferError(
                        f"{OPTIONS[other_key]} {self.folders[other_key]} and {option} {folder} are the same "
                        "folder or one holds the other: a mask and a drawing would take the same file name.",
                        fix="Pass two separate folders, e.g. --out masks --draw drawn.")
            resolved[key] = real

    def _check_targets(self) -> None:
        if self.overwrite:
            return
        for key, folder in self.folders.items():
            if not folder.is_dir():
                continue
            there = [str(self.target(key, i)) for i in range(len(self.files))
                     if os.path.lexists(self.target(key, i))]
            if there:
                more = f" and {len(there) - _SHOWN} more" if len(there) > _SHOWN else ""
                raise TransferError(
                    f"{OPTIONS[key]} {folder} already holds {len(there)} of the files predict would write "
                    f"({', '.join(there[:_SHOWN])}{more}); they are kept.",
                    fix=f"Pass --overwrite to replace those files (nothing else in {folder} is touched), "
                        f"or choose an empty {OPTIONS[key]} folder.")

    def _refuse_escape(self, key: str, path: Path) -> None:
        # A subfolder of the output folder may be a symlink made since the check: resolve again.
        real = path.resolve()
        if real in self._inputs or real.parent in self._holders or real.parent in self._inputs:
            raise TransferError(f"'{path}' leads to '{real}', beside or over an input; it was not written.",
                                fix=f"Remove the link, or choose another {OPTIONS[key]} folder.")


def _write_new(path: Path, data: bytes, option: str) -> None:
    """Write ``data`` at ``path`` atomically, only if nothing is there: staged beside it, then
    hard-linked into place (``link`` fails on an existing name, where ``rename`` would replace it)."""
    from transfer.core.atomic import TMP_MARK, _fsync_dir, _sibling, remove_stale

    exists = TransferError(f"'{path}' already exists; it was kept.",
                           fix=f"Pass --overwrite to replace it, or choose another {option} folder.")
    if os.path.lexists(path):
        raise exists
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, path.name)
    tmp = _sibling(path, TMP_MARK)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise exists from None
        except OSError:
            # A file system without hard links (FAT, some network mounts): check, then rename.
            if os.path.lexists(path):
                raise exists from None
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _fsync_dir(path.parent)
