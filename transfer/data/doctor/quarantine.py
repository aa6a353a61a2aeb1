"""Acting on the data doctor's verdict: leave unreadable images out of training, or move them aside.

``drop_unreadable`` removes from a split what training cannot read, naming
each file; ``quarantine`` moves the files a report marks ``skip`` out of the
dataset (never deleting anything) and records each move.

Example:
    >>> split = drop_unreadable(load_data("flowers/"), echo=print)
    >>> moved = quarantine(check_data("flowers/"), "flowers-quarantine/")
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

from transfer.data.doctor.checks import CHECKS, DEFAULT_IMAGE_SIZE, CheckContext
from transfer.data.doctor.inspection import DEFAULT_MAX_PIXELS, inspect_images
from transfer.data.doctor.report import DataReport
from transfer.data.samples import DataSplit
from transfer.core.errors import TransferError

# The data doctor's warnings keep the logger name they have always had, so
# logging settings (and filters) that name it still apply.
logger = logging.getLogger("transfer.data.doctor")


def drop_unreadable(
    data: DataSplit, *, echo: Callable[[str], None] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DataSplit:
    """``data`` without the images training cannot read, each named in a warning.

    Unreadable means: missing, empty, not an image, unsupported, truncated or
    corrupt (TensorFlow's decoder refuses it), over ``max_pixels``, or under
    8x8 pixels. Each dropped file is reported through ``echo`` (e.g. ``print``)
    or, without it, ``logging`` warnings. Raises TransferError when a class
    loses all its training images or validation loses all its images.

    Example:
        >>> split = drop_unreadable(load_data("flowers/"), echo=print)
        Skipping flowers/rose/broken.jpg: truncated (cut short): JPEG data ends early ...
    """
    ctx = CheckContext(data.class_names, data.multi_label, DEFAULT_IMAGE_SIZE, max_pixels, near_duplicates=False)
    say = echo or (lambda message: logger.warning("%s", message))
    parts = {}
    dropped_total = 0
    for name, part in (("train", data.train), ("val", data.val)):
        infos = inspect_images(part.sources, part.encoded, max_pixels=max_pixels)
        keep = []
        for index, info in enumerate(infos):
            bad = [f for check in CHECKS["image"] for f in check(info, ctx) if f.action in ("skip", "stop")]
            if bad:
                say(f"Skipping {info.source} ({bad[0].code}): {bad[0].detail}")
            else:
                keep.append(index)
        dropped_total += len(part) - len(keep)
        parts[name] = part if len(keep) == len(part) else part.subset(keep)
    if not dropped_total:
        return data
    lost = [c for c, n in data.train.class_counts().items() if n and not parts["train"].class_counts()[c]]
    if lost:
        raise TransferError(
            f"No readable training images left for class(es) {lost}: every one of them was skipped (listed above).",
            fix="Replace the unreadable images (see `transfer check-data DATA`), or remove the class.",
        )
    if len(parts["val"]) == 0:
        raise TransferError(
            "No readable validation images left: every one was skipped (listed above).",
            fix="Replace the unreadable images (see `transfer check-data DATA`).",
        )
    say(f"Skipped {dropped_total} unreadable image(s); training on {len(parts['train'])}, "
        f"validating on {len(parts['val'])}.")
    return DataSplit(parts["train"], parts["val"], data.origin)


def quarantine(report: DataReport, dest: str | os.PathLike) -> list[tuple[str, str]]:
    """Move the files ``report`` marks ``skip`` into ``dest`` (never deletes anything).

    Files keep their path relative to the dataset root under ``dest``; a name
    already taken there gets a ``-1``, ``-2`` ... suffix. ``dest/quarantine.json``
    records every move (original path, new path, problem, detail) and grows on
    each run. Returns ``(from, to)`` pairs.

    Example:
        >>> moved = quarantine(check_data("flowers/"), "flowers-quarantine/")
        >>> moved[0]
        ('flowers/rose/broken.jpg', 'flowers-quarantine/rose/broken.jpg')
    """
    from transfer.core.atomic import atomic_write_json
    from transfer.data.sources.csvfile import is_inside

    dest = Path(dest)
    root = Path(report.root) if report.root else None
    if root is None or report.source.startswith("tfds:"):
        raise TransferError("--quarantine works on image files in a folder.", fix="Drop --quarantine for this source.")
    if report.source.lower().endswith(".csv"):
        raise TransferError(
            f"--quarantine cannot be used with a CSV file ('{report.source}'): moving files it lists would leave "
            "lines pointing at missing files.",
            fix="Remove the lines of the listed files from the CSV instead (`--json` gives the list).",
        )
    if is_inside(root, dest):
        raise TransferError(
            f"The quarantine folder '{dest}' is inside the dataset '{root}', so it would be read as data.",
            fix="Pass a folder outside the dataset, e.g. --quarantine ../quarantine.",
        )
    reasons = {}
    for f in report.findings:
        if f.action == "skip" and f.line is None:
            reasons.setdefault(f.path, f)
    moved: list[tuple[str, str]] = []
    records = []
    for path, f in sorted(reasons.items()):
        if not os.path.isfile(path):
            continue
        rel = os.path.relpath(path, root) if is_inside(root, path) else os.path.basename(path)
        target = dest / rel
        stem, suffix = os.path.splitext(str(target))
        n = 0
        while target.exists():
            n += 1
            target = Path(f"{stem}-{n}{suffix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
        moved.append((path, str(target)))
        records.append({"from": path, "to": str(target), "problem": f.code, "detail": f.detail})
    if records:
        log_file = dest / "quarantine.json"
        previous = []
        if log_file.is_file():
            try:
                previous = json.loads(log_file.read_text(encoding="utf-8")).get("moved", [])
            except (OSError, ValueError, AttributeError):
                previous = []
        atomic_write_json(log_file, {"moved": previous + records})
    return moved
