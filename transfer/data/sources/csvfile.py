"""Training's view of a CSV label file: its samples split into train and val, or one error.

The format and its line checks are ``transfer.data.sources.csv_listing`` (the
data doctor reads the same listing); here the lines that stop training become
one ``TransferError`` naming the CSV file and every such line.

Example:
    >>> # labels.csv:  path,label \\n images/1.jpg,cat \\n images/2.jpg,dog ...
    >>> split = read_csv_dataset("data/labels.csv", val_fraction=0.2, seed=0)
    >>> split.class_names
    ('cat', 'dog')
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from transfer.data.findings import PROBLEMS, first_few
from transfer.data.samples import DataSplit
# list_csv and is_inside are imported from here by the doctor, the box readers and the tests.
from transfer.data.sources.csv_listing import CsvListing, csv_error, is_inside, list_csv  # noqa: F401
from transfer.data.split import check_val_fraction, stratified_split

logger = logging.getLogger(__name__)

_MAX_LISTED = 5


def read_csv_dataset(
    csv_path: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0, *, allow_outside_root: bool = False
) -> DataSplit:
    """Training and validation samples listed in a CSV file.

    Raises TransferError (naming the file and every bad line, up to 20) for a
    missing or empty file, missing columns, an empty path or label, an unknown
    split value, images that do not exist (the first 5 are listed), a path
    outside the CSV's folder (unless ``allow_outside_root``), and the same
    file listed with different labels. A line that repeats an earlier one
    (same file, same labels) is dropped with a warning.

    Example:
        >>> split = read_csv_dataset("data/labels.csv")  # path,labels,split
        >>> split.multi_label, split.origin
        (True, 'CSV split column')
    """
    csv_path = Path(csv_path)
    check_val_fraction(val_fraction)
    listing = list_csv(csv_path, allow_outside_root=allow_outside_root)
    _raise_for_stops(listing)
    for f in listing.findings:
        if f.code == "csv_duplicate_row":
            logger.warning("%s, line %s: %s", csv_path, f.line, f.detail)

    rows = listing.rows
    samples = listing.samples()
    class_names = samples.class_names
    if not listing.multi_label and len(class_names) < 2:
        raise csv_error(
            csv_path, f"only 1 class ('{class_names[0]}'); classification needs at least 2.",
            fix="Add lines for images of the other classes.",
        )
    logger.info("Read %d images in %d classes from %s", len(samples), len(class_names), csv_path)
    if not listing.has_split:
        return stratified_split(samples, val_fraction=val_fraction, seed=seed)

    train = [i for i, row in enumerate(rows) if row.split == "train"]
    val = [i for i, row in enumerate(rows) if row.split == "val"]
    for side, indices in (("train", train), ("val", val)):
        if not indices:
            raise csv_error(
                csv_path, f"the split column marks no image as {side}.",
                fix=f"Mark some lines {side}, or remove the split column to split automatically.",
            )
    return DataSplit(train=samples.subset(train), val=samples.subset(val), origin="CSV split column")


_ROW_FIXES = {
    "csv_empty_label": "Write the class name(s) in the {column} column, or remove the line.",
    "csv_outside_root": PROBLEMS["csv_outside_root"].fix,
    "csv_conflicting_labels": PROBLEMS["csv_conflicting_labels"].fix,
}
_MAX_LINES_LISTED = 20


def _raise_for_stops(listing: CsvListing) -> None:
    """One TransferError naming every line that stops training (the old one-problem messages kept)."""
    csv_path = listing.csv_path
    stops = [f for f in listing.findings if f.action == "stop"]
    if not stops:
        return
    base = csv_path.parent
    if all(f.code == "csv_missing_file" for f in stops):
        listed = first_few([f"line {f.line}: {f.related}" for f in stops], _MAX_LISTED)
        raise csv_error(
            csv_path,
            f"{len(stops)} of {listing.num_lines} image files not found: {listed}.",
            fix=f"Paths are read relative to the CSV's folder '{base}' (or are absolute); "
            "fix them or remove those lines.",
        )
    if len(stops) == 1:
        (f,) = stops
        if f.code == "csv_missing_file":
            message, fix = f"{f.detail}.", PROBLEMS["csv_missing_file"].fix
        else:
            message = f.detail
            fix = _ROW_FIXES.get(f.code, _row_fix(f.detail)).format(column=listing.label_column)
        raise csv_error(csv_path, message, fix=fix, line=f.line)
    listed = first_few([f"line {f.line}: {f.detail.rstrip('.')}" for f in stops], _MAX_LINES_LISTED)
    fix = (f"Fix or remove those lines (`transfer check-data {csv_path}` lists every problem). "
           f"Paths are read relative to the CSV's folder '{base}'.")
    if any(f.code == "csv_outside_root" for f in stops):
        fix += (" Paths outside that folder are allowed with --allow-outside-root (allow_outside_root=True "
                "in Python) if you trust this CSV.")
    raise csv_error(csv_path, f"{len(stops)} lines cannot be used: {listed}.", fix=fix)


def _row_fix(detail: str) -> str:
    if detail.startswith("the path is empty"):
        return "Write the image path in the path column."
    if detail.startswith("split is"):
        return "Write train or val in the split column (or remove the column to split automatically)."
    return "Give each line a value for every column, separated by commas."
