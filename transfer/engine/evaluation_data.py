"""What ``transfer evaluate --data`` scores: the data's own class names checked against the run's, the
folder its results go to, and the record of the data kept with them.

The data's class names are read the way its task reads it (class folders or
a CSV's labels, the boxes' classes, a mask folder's ``classes.txt``): a name
the run never learnt is refused, naming both lists; the same classes in
another order are mapped by name, and said so in one line. Mask files hold
values, not names, so a mask folder's ``classes.txt`` decides which value is
which class (read with the run's names it would score swapped classes
without a word); a mask folder with no ``classes.txt`` is read in the run's
value order, and said so. Results go to ``RUN/evaluation-<data name>/``
(never ``RUN/evaluation/``, the run's own validation): a folder already
holding another data set's results of the same name gets ``-2``, ``-3``...

Example:
    >>> check = check_classes("segment", "other-masks/", config)
    >>> check.how, check.data, check.run
    ('by name', ('red', 'background'), ('background', 'red'))
    >>> evaluation_folder(RunDir("runs/camvid"), "camvid/test")
    PosixPath('runs/camvid/evaluation-test')
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from transfer.core.errors import TransferError
from transfer.core.regular_files import read_regular
from transfer.engine.run import RunDir
from transfer.tasks import get_task

_MAX_FOLDERS = 1000  # evaluation-<name>-2 ... before giving up
_MAX_METRICS_BYTES = 64 << 20


@dataclass(frozen=True)
class ClassCheck:
    """How the data's classes meet the run's: ``data`` (None when the data names none), ``how``
    (``"same"``, ``"by name"``, ``"run order"`` or ``"reader"``: checked while the task reads it),
    the run's classes it has no example of, and the line to print (``note``, empty when there is
    nothing to say)."""

    run: tuple[str, ...]
    data: tuple[str, ...] | None
    how: str
    missing: tuple[str, ...] = ()
    note: str = ""

    def record(self) -> dict[str, Any]:
        """JSON for the evaluation's ``data.classes``."""
        out = {"run": list(self.run), "data": None if self.data is None else list(self.data),
               "mapping": {"same": "same names, same order", "by name": "mapped to the run's classes by name",
                           "run order": "the data names no classes: its values read as the run's classes",
                           "reader": "mapped to the run's classes by name as the data is read"}[self.how]}
        if self.how == "by name":
            out["data_to_run"] = {name: self.run.index(name) for name in self.data or ()}
        if self.missing:
            out["missing"] = list(self.missing)
        return out


def check_classes(task_name: str, data: str, config: Mapping[str, Any]) -> ClassCheck:
    """The data's class names (``Task.data_class_names`` of the task ``task_name``) against the run's
    (``config["class_names"]``); a ``TransferError`` listing both when the data has a class the run
    does not (or, for mask files, other classes)."""
    run = tuple(config["class_names"])
    # Read as the task reads the data (listing twice costs little next to running the model on every image).
    own, what, exact = get_task(task_name).data_class_names(data, config)
    if own is None and not exact:
        return ClassCheck(run, None, "reader")
    if own is None:
        return ClassCheck(run, None, "run order", note=f"{data}: {what}, so its mask values are read in the "
                          f"run's class order ({', '.join(run)}); write its classes.txt to have them checked.")
    unknown = [name for name in own if name not in run]
    missing = tuple(name for name in run if name not in own)
    if unknown or (exact and missing):
        raise TransferError(
            f"{data} has other classes than the run: {what} {', '.join(own)}; the run's are {', '.join(run)}"
            f" ({', '.join(unknown or missing)} {'not in the run' if unknown else 'missing from the data'}).",
            fix="Evaluate on data with the run's classes (rename or remove the others"
                f"{'; its classes.txt names the mask values in order' if exact else ''}).")
    how = "same" if tuple(name for name in run if name in own) == own else "by name"
    notes = []
    if how == "by name":
        notes.append(f"classes mapped to the run's by name ({what} {', '.join(own)}; the run's are "
                     f"{', '.join(run)})")
    if missing:
        notes.append(f"no examples of {', '.join(missing)} (nothing of theirs to score)")
    return ClassCheck(run, own, how, missing, f"{data}: {'; '.join(notes)}." if notes else "")


def in_run_order(samples, check: ClassCheck):
    """``samples`` read with the run's names, with mask-file values mapped by the data's ``classes.txt``
    (value ``i`` is the data's class ``i``, which is the run's class ``run.index(data[i])``)."""
    if check.how != "by name" or check.data is None or not samples.targets:
        return samples
    if not any(getattr(t, "values", None) for t in samples.targets):
        return samples  # targets already mapped by name (classes, boxes, polygons)
    from transfer.data.samples import IGNORE_VALUE

    index = {i: check.run.index(name) for i, name in enumerate(check.data)}

    def remap(target):
        if not getattr(target, "values", None):
            return target
        values = tuple((v, c if c == IGNORE_VALUE else index.get(c, c)) for v, c in target.values)
        return dataclasses.replace(target, values=values)

    return dataclasses.replace(samples, targets=tuple(remap(t) for t in samples.targets))


def data_identity(data: str) -> str:
    """What tells two ``--data`` apart: the real path, or a ``tfds:`` name as given."""
    text = os.fspath(data)
    return text if text.startswith("tfds:") else os.path.realpath(text)


def data_name(data: str) -> str:
    """A folder-name-safe name for ``data``: a folder's name, a file's folder and stem, a tfds name.

    Example:
        >>> data_name("raccoon/test.csv"), data_name("flowers-test/"), data_name("tfds:beans:test")
        ('raccoon-test', 'flowers-test', 'tfds-beans-test')
    """
    text = os.fspath(data)
    if not text.startswith("tfds:"):
        path = Path(os.path.realpath(text))
        text = f"{path.parent.name}-{path.stem}" if path.is_file() else path.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:80]
    return name or "data"


def evaluation_folder(run: RunDir, data: str) -> Path:
    """``RUN/evaluation-<data name>``: new, or holding an earlier evaluation of the same data (its
    files are replaced); another data set's folder of that name is kept (``-2``, ``-3``, ...)."""
    base, identity = f"evaluation-{data_name(data)}", data_identity(data)
    for i in range(1, _MAX_FOLDERS + 1):
        folder = run.root / (base if i == 1 else f"{base}-{i}")
        if not os.path.lexists(folder) or _scored(folder) == identity:
            return folder
    raise TransferError(f"{run.root} holds {_MAX_FOLDERS} folders named {base}-N already.",
                        fix="Remove the evaluation folders you no longer need.")


def _scored(folder: Path) -> str | None:
    """The data an evaluation folder's metrics.json records (None: not one of ours)."""
    if folder.is_symlink() or not folder.is_dir():
        return None
    try:
        record = json.loads(read_regular(folder / "metrics.json", max_bytes=_MAX_METRICS_BYTES)).get("data") or {}
    except (OSError, ValueError, AttributeError):  # NotRegularFileError is an OSError
        return None
    return record.get("identity") if isinstance(record, dict) else None
