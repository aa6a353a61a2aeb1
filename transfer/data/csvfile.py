"""CSV lists of images and their labels.

The header names the columns (any order, any case):

- ``path,label``: one class per image (single-label);
- ``path,labels``: ``;``-separated classes per image (multi-label), e.g. ``cat;outdoor``;
- an optional ``split`` column with ``train`` or ``val`` (also ``validation``)
  gives the split; without it the images are split with ``stratified_split``.

Paths are relative to the CSV file's folder, or absolute. Class names are
sorted. Every error names the CSV file and, where it has one, the line.

Example:
    >>> # labels.csv:  path,label \\n images/1.jpg,cat \\n images/2.jpg,dog ...
    >>> split = read_csv_dataset("data/labels.csv", val_fraction=0.2, seed=0)
    >>> split.class_names
    ('cat', 'dog')
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from transfer.data.samples import DataSplit, Samples
from transfer.data.split import check_val_fraction, stratified_split
from transfer.errors import TransferError

logger = logging.getLogger(__name__)

LABEL_SEPARATOR = ";"
_SPLIT_VALUES = {"train": "train", "val": "val", "validation": "val"}
_EXPECTED = "path,label (one class per image) or path,labels (';'-separated classes), optionally split"
_MAX_LISTED = 5


def _error(csv_path: Path, message: str, fix: str, line: int | None = None) -> TransferError:
    where = f"{csv_path}, line {line}" if line is not None else f"{csv_path}"
    return TransferError(f"{where}: {message}", fix=fix)


def _read_rows(csv_path: Path) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """The header's column positions (lower-cased names) and the non-blank rows with their line numbers."""
    # utf-8-sig: spreadsheets often save a byte-order mark that would stick to "path".
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)  # skip blank lines before the header
        if header is None:
            raise _error(
                csv_path, "the CSV file is empty.", fix=f"Write a header line ({_EXPECTED}) and one line per image."
            )
        columns = {name.strip().lower(): i for i, name in enumerate(header)}
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    return columns, rows


def read_csv_dataset(csv_path: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> DataSplit:
    """Training and validation samples listed in a CSV file.

    Raises TransferError (naming the file and line) for a missing or empty
    file, missing columns, an empty path or label, an unknown split value, and
    images that do not exist (the first 5 are listed).

    Example:
        >>> split = read_csv_dataset("data/labels.csv")  # path,labels,split
        >>> split.multi_label, split.origin
        (True, 'CSV split column')
    """
    csv_path = Path(csv_path)
    check_val_fraction(val_fraction)
    if not csv_path.is_file():
        what = "is a folder, not a CSV file" if csv_path.is_dir() else "not found"
        raise _error(
            csv_path, f"CSV file {what}.", fix="Pass the path of an existing .csv file with a path,label header."
        )

    columns, rows = _read_rows(csv_path)
    found = ",".join(columns) or "(none)"
    if "label" in columns and "labels" in columns:
        raise _error(
            csv_path,
            f"the header has both 'label' and 'labels' columns (found: {found}); expected one of them.",
            fix="Keep 'label' for one class per image or 'labels' for ';'-separated classes.",
            line=1,
        )
    label_column = "labels" if "labels" in columns else "label"
    missing = [name for name in ("path", label_column) if name not in columns]
    if missing:
        raise _error(
            csv_path,
            f"missing column(s) {', '.join(missing)}. Found columns: {found}. Expected: {_EXPECTED}.",
            fix="Rename the header's columns (the first line) to path and label (or labels).",
            line=1,
        )
    if not rows:
        raise _error(csv_path, "the CSV file has a header but no images.", fix="Add one line per image: path,label.")

    multi_label = label_column == "labels"
    path_at, label_at, split_at = columns["path"], columns[label_column], columns.get("split")
    base = csv_path.parent
    paths: list[str] = []
    labels: list[tuple[str, ...]] = []
    splits: list[str] = []
    missing_files: list[str] = []
    needed = max(i for i in (path_at, label_at, split_at) if i is not None) + 1
    for line, row in rows:
        if len(row) < needed:
            raise _error(
                csv_path, f"{len(row)} field(s), expected {len(columns)} ({found}).",
                fix="Give each line a value for every column, separated by commas.", line=line,
            )
        rel = row[path_at].strip()
        if not rel:
            raise _error(csv_path, "the path is empty.", fix="Write the image path in the path column.", line=line)
        raw = row[label_at]
        names = [n.strip() for n in raw.split(LABEL_SEPARATOR)] if multi_label else [raw.strip()]
        names = sorted({n for n in names if n})
        if not names:
            raise _error(
                csv_path, f"the {label_column} of '{rel}' is empty.",
                fix=f"Write the class name(s) in the {label_column} column, or remove the line.", line=line,
            )
        if split_at is not None:
            value = row[split_at].strip().lower()
            if value not in _SPLIT_VALUES:
                raise _error(
                    csv_path, f"split is '{row[split_at].strip()}'; expected train or val.",
                    fix="Write train or val in the split column (or remove the column to split automatically).",
                    line=line,
                )
            splits.append(_SPLIT_VALUES[value])
        # Relative paths are relative to the CSV, not to where the command runs.
        full = rel if os.path.isabs(rel) else os.path.join(base, rel)
        if not os.path.isfile(full):
            missing_files.append(f"line {line}: {full}")
        paths.append(full)
        labels.append(tuple(names))

    if missing_files:
        more = len(missing_files) - _MAX_LISTED
        listed = "; ".join(missing_files[:_MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")
        raise _error(
            csv_path,
            f"{len(missing_files)} of {len(paths)} image files not found: {listed}.",
            fix=f"Paths are read relative to the CSV's folder '{base}' (or are absolute); "
            "fix them or remove those lines.",
        )

    class_names = tuple(sorted({name for names in labels for name in names}))
    index = {name: i for i, name in enumerate(class_names)}
    targets = tuple(tuple(index[n] for n in names) if multi_label else index[names[0]] for names in labels)
    if not multi_label and len(class_names) < 2:
        raise _error(
            csv_path, f"only 1 class ('{class_names[0]}'); classification needs at least 2.",
            fix="Add lines for images of the other classes.",
        )
    samples = Samples(sources=tuple(paths), targets=targets, class_names=class_names, multi_label=multi_label)
    logger.info("Read %d images in %d classes from %s", len(samples), len(class_names), csv_path)
    if split_at is None:
        return stratified_split(samples, val_fraction=val_fraction, seed=seed)

    train = [i for i, s in enumerate(splits) if s == "train"]
    val = [i for i, s in enumerate(splits) if s == "val"]
    for side, indices in (("train", train), ("val", val)):
        if not indices:
            raise _error(
                csv_path, f"the split column marks no image as {side}.",
                fix=f"Mark some lines {side}, or remove the split column to split automatically.",
            )
    return DataSplit(train=samples.subset(train), val=samples.subset(val), origin="CSV split column")
