"""Which folders are ours: a marker in every artifact folder, and the one check before replacing one.

``--overwrite`` must only ever replace something ``transfer`` wrote, never a
run, a dataset or a folder of the user's. Each artifact folder ``transfer``
creates (a run, a demo folder, and whatever else a writer marks) carries a
small hidden file, ``.transfer-artifact.json``::

    {"kind": "run", "transfer_version": "0.9.0", "entries": ["run.json", "checkpoints", ...]}

``entries`` are the top-level names the artifact owns; anything else found
there later is someone else's and stops a replacement. An export needs no
such file: its ``assets/transfer.json`` (``"format": "transfer.export"``)
has always said what it is, and its layout is fixed (``EXPORT_ENTRIES``).
Folders written before markers existed are recognised by their layout
(``artifact_kind``'s fallback), so older runs, exports and demos still count.

``check_replaceable`` is the one gate: it refuses (a ``TransferError`` that
names the folder and says why) a folder that is, holds or lies inside a
protected path (the run being exported, the training data, an input), one
that is not an artifact of the expected kind, and one holding entries its
marker does not list. ``check_outside`` is its first half, for writers that
create a new folder and never replace one. Paths are resolved (symlinks
followed) before they are compared.

Example:
    >>> check_replaceable("exports/flowers", "export",
    ...                   protected=[("runs/flowers", "the run being exported"), ("flowers/", "the run's data")])
    >>> with atomic_directory("reports/x", overwrite=True, kind="report", protected=["flowers/"]) as tmp:
    ...     (tmp / "report.html").write_text("...")       # the marker is added before it moves into place
    >>> artifact_kind("runs/flowers")
    'run'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence, Tuple, Union

from transfer.core.atomic import atomic_write_json, staging_entries
from transfer.core.errors import TransferError

MARKER = ".transfer-artifact.json"
# An export's own metadata file (transfer.serving.reader.METADATA_PATH; not imported: that module loads TensorFlow).
EXPORT_METADATA = os.path.join("assets", "transfer.json")
EXPORT_ENTRIES = ("saved_model.pb", "variables", "assets", "fingerprint.pb", "model.keras")
# A run folder's layout (transfer.engine.run).
RUN_ENTRIES = ("run.json", "recipe.toml", "split.json", "checkpoints", "history.csv", "metrics.json",
               "evaluation", "logs")
# What a file browser drops into any folder it shows: never a reason to refuse.
_HARMLESS = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
_MAX_MARKER_BYTES = 1 << 16

PathLike = Union[str, os.PathLike]
Protected = Union[PathLike, Tuple[PathLike, str]]


def write_marker(folder: PathLike, kind: str, entries: Iterable[str] | None = None) -> Path:
    """Mark ``folder`` as a ``kind`` artifact owning ``entries`` (default: what it holds now).

    Example:
        >>> write_marker("runs/flowers", "run", RUN_ENTRIES)
        PosixPath('runs/flowers/.transfer-artifact.json')
    """

    folder = Path(folder)
    names = _listing(folder) if entries is None else list(entries)
    record = {"kind": kind, "transfer_version": _version(), "entries": sorted({n for n in names if n != MARKER})}
    return atomic_write_json(folder / MARKER, record)


def read_marker(folder: PathLike) -> dict | None:
    """The marker of ``folder`` as a dict, or None (absent, not a regular file, not a marker)."""
    from transfer.core.regular_files import read_regular

    try:
        data = read_regular(Path(folder) / MARKER, max_bytes=_MAX_MARKER_BYTES)
        record = json.loads(data.decode("utf-8"))
    except (OSError, TransferError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("kind"), str):
        return None
    entries = record.get("entries")
    record["entries"] = [e for e in entries if isinstance(e, str)] if isinstance(entries, list) else []
    return record


def artifact_kind(folder: PathLike, legacy_kinds: Mapping[str, Callable[[Path], object]] | None = None) -> str | None:
    """``"export"``, ``"run"``, ``"demo"``, ... for an artifact folder ``transfer`` wrote; None otherwise.

    The marker says; without one, the layout of what earlier versions wrote:
    an export (``saved_model.pb`` and ``assets/transfer.json``), a run
    (``run.json``), or a kind of ``legacy_kinds`` whose recogniser answers
    something other than None for the folder (the demo passes
    ``{"demo": legacy_demo_entries}``: only the demo knows its old layout).

    Example:
        >>> artifact_kind("exports/flowers"), artifact_kind("flowers/")
        ('export', None)
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    marker = read_marker(folder)
    if marker is not None:
        return marker["kind"]
    if _is_export(folder):
        return "export"
    if (folder / "run.json").is_file():
        return "run"
    for kind, entries_of in (legacy_kinds or {}).items():
        if entries_of(folder) is not None:
            return kind
    return None


def owned_entries(folder: PathLike, kind: str, legacy_entries: Sequence[str] | None = None) -> set[str]:
    """The top-level names a ``kind`` artifact at ``folder`` may hold (its marker's, else its kind's layout)."""
    marker = read_marker(folder)
    if marker is not None and marker["kind"] == kind:
        names = set(marker["entries"])
    elif kind == "export":
        names = set(EXPORT_ENTRIES)
    elif kind == "run":
        names = set(RUN_ENTRIES)
    else:
        names = set(legacy_entries or ())
    return names | {MARKER}


def strangers(folder: PathLike, kind: str, legacy_entries: Sequence[str] | None = None) -> list[str]:
    """The top-level names in ``folder`` that a ``kind`` artifact does not own, sorted."""

    owned = owned_entries(folder, kind, legacy_entries)
    leftovers = {p.name for p in staging_entries(folder)}  # an interrupted write's, cleaned up by the next
    return sorted(n for n in _listing(folder) if n not in owned and n not in leftovers and n not in _HARMLESS)


def check_outside(folder: PathLike, protected: Iterable[Protected] = (), *, what: str = "--out") -> None:
    """A ``TransferError`` when ``folder`` is, holds, or lies inside a protected path.

    ``protected``: paths, or ``(path, label)`` pairs whose label says what the
    path is ("the run being exported"). A protected file (a CSV) cannot be
    written into, so only "is" and "holds" apply to it. None entries are skipped.

    Example:
        >>> check_outside("flowers/runs/a", [("flowers", "the training data (--data)")])
        TransferError: --out flowers/runs/a is inside the training data (--data) flowers ...
    """
    target = _resolved(folder)
    for path, label in _pairs(protected):
        guarded = _resolved(path)
        if target == guarded:
            problem = f"is {label}" + ("" if os.fspath(path) == os.fspath(folder) else f" ({path})")
        elif guarded in target.parents and not guarded.is_file():
            problem = f"is inside {label} ({path})"
        elif target in guarded.parents:
            problem = f"holds {label} ({path})"
        else:
            continue
        raise TransferError(
            f"{what} {folder} {problem}; transfer never writes into, replaces or deletes it.",
            fix=f"Choose a {what} folder outside it, e.g. a new folder next to it.",
        )


def check_replaceable(folder: PathLike, kind: str, protected: Iterable[Protected] = (), *,
                      legacy_entries: Sequence[str] | None = None, what: str = "--out") -> None:
    """A ``TransferError`` unless writing a ``kind`` artifact at ``folder`` can lose nothing but an old one.

    Passes for a missing or empty folder, or an artifact of ``kind`` (marker,
    or the layout earlier versions wrote: ``legacy_entries`` for kinds this
    module does not know) holding only its own entries. Refuses, naming the
    folder and why: a folder that is, holds or lies inside a ``protected``
    path (``check_outside``), a file, a folder of another kind or none, and one
    holding entries that are not the artifact's (a few are named). Whether an
    existing artifact may be replaced at all (``--overwrite``) is the caller's
    question (``atomic_directory`` asks it).

    Example:
        >>> check_replaceable("exports/flowers", "export", protected=[("runs/flowers", "the run being exported")])
    """
    check_outside(folder, protected, what=what)
    path = Path(folder)
    if not path.exists():
        return  # missing, or a dangling link: nothing to lose
    if not path.is_dir():
        raise TransferError(f"{what} {folder} is a file, not a folder; transfer does not replace it.",
                            fix=f"Choose a {what} folder path.")
    names = [n for n in _listing(path) if n not in _HARMLESS]
    if not names:
        return
    found = artifact_kind(path)
    legacy = found is None and legacy_entries and set(names) <= set(legacy_entries) | {MARKER}
    if found != kind and not legacy:
        what_it_is = f"a {found} folder" if found else f"not {_article(kind)} {kind} transfer wrote"
        raise TransferError(
            f"{what} {folder} is {what_it_is} (it holds {_few(names)}); --overwrite replaces only "
            f"{_article(kind)} {kind} that transfer wrote ({_sign(kind)}).",
            fix=f"Choose a new or empty {what} folder.",
        )
    extra = strangers(path, kind, legacy_entries)
    if extra:
        raise TransferError(
            f"{what} {folder} holds the {kind} and also {_few(extra)}, which {_isare(extra)} not part of it; "
            "replacing the folder would delete them.",
            fix=f"Move {'it' if len(extra) == 1 else 'them'} out of {folder}, or choose another {what} folder.",
        )


def data_paths(source: str | None) -> list[Path]:
    """The paths a ``--data`` string names, to protect: a folder, or an annotation file (CSV,
    COCO JSON, VOC list); nothing for ``tfds:NAME``.

    Example:
        >>> data_paths("flowers/"), data_paths("tfds:beans")
        ([PosixPath('flowers')], [])
    """
    if not source or str(source).startswith("tfds:"):
        return []
    return [Path(str(source))]


def run_inputs(run_dir: PathLike, config: dict, run_label: str = "the run being exported") -> list:
    """What writing from a run must leave alone: the run folder and the data its run.json records.

    Example:
        >>> check_replaceable("exports/x", "export", protected=run_inputs("runs/x", RunDir("runs/x").config()))
    """
    sources = (config.get("data_source"), config.get("val_data_source"))
    return [(run_dir, run_label), *((p, "the run's training data") for s in sources for p in data_paths(s))]


def _is_export(folder: Path) -> bool:
    metadata = folder / EXPORT_METADATA
    return (folder / "saved_model.pb").is_file() and metadata.is_file()


def _pairs(protected: Iterable[Protected]) -> list[tuple[PathLike, str]]:
    pairs = []
    for item in protected:
        path, label = item if isinstance(item, tuple) else (item, "an input")
        if path is not None and str(path) != "":
            pairs.append((path, label))
    return pairs


def _resolved(path: PathLike) -> Path:
    try:
        return Path(os.path.expanduser(os.fspath(path))).resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare what we can
        return Path(os.path.abspath(os.fspath(path)))


def _listing(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


def _sign(kind: str) -> str:
    if kind == "export":
        return f"saved_model.pb and {EXPORT_METADATA}"
    return f"marked by its {MARKER}"


def _few(names: Sequence[str], shown: int = 3) -> str:
    text = ", ".join(f"'{n}'" for n in list(names)[:shown])
    return text + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _isare(names: Sequence[str]) -> str:
    return "is" if len(names) == 1 else "are"


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _version() -> str:
    from transfer import __version__

    return __version__
