"""CSV lists of images and their labels.

The header names the columns (any order, any case):

- ``path,label``: one class per image (single-label);
- ``path,labels``: ``;``-separated classes per image (multi-label), e.g. ``cat;outdoor``;
- an optional ``split`` column with ``train`` or ``val`` (also ``validation``)
  gives the split; without it the images are split with ``stratified_split``.

Paths are relative to the CSV file's folder, or absolute; either way they
must lie inside the CSV's folder (the dataset root) unless the caller passes
``allow_outside_root=True``, so a downloaded CSV cannot make training read
``../../`` anything. A line repeating an earlier one (same file, same labels)
is dropped with a warning; the same file with different labels is an error.
Class names are sorted. Every error names the CSV file and, where it has one,
the line; ``list_csv`` reports every problem line at once (the data doctor).

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
from dataclasses import dataclass
from pathlib import Path

from transfer.data.findings import PROBLEMS, Finding, finding
from transfer.data.samples import DataSplit, Samples
from transfer.data.split import check_val_fraction, stratified_split
from transfer.core.errors import TransferError

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


@dataclass(frozen=True)
class CsvRow:
    """One usable CSV line: the image path (as it will be read), its class names and split."""

    line: int
    path: str
    labels: tuple[str, ...]
    split: str | None = None
    written: str = ""  # the path as the CSV writes it, for messages


@dataclass(frozen=True)
class CsvListing:
    """A parsed CSV file, problems included (nothing raised for a bad line).

    ``rows`` are the usable lines (bad lines and repeated lines left out);
    ``findings`` names every problem with its line; ``num_lines`` counts every
    non-blank line after the header.
    """

    csv_path: Path
    label_column: str
    has_split: bool
    rows: tuple[CsvRow, ...]
    findings: tuple[Finding, ...]
    num_lines: int

    @property
    def multi_label(self) -> bool:
        return self.label_column == "labels"

    def samples(self, rows: tuple[CsvRow, ...] | None = None) -> Samples:
        """``rows`` (default: all usable rows) as ``Samples`` over the class names of all usable rows."""
        rows = self.rows if rows is None else rows
        class_names = tuple(sorted({name for row in self.rows for name in row.labels}))
        index = {name: i for i, name in enumerate(class_names)}
        targets = tuple(
            tuple(index[n] for n in row.labels) if self.multi_label else index[row.labels[0]] for row in rows
        )
        return Samples(tuple(r.path for r in rows), targets, class_names, multi_label=self.multi_label)


def is_inside(root: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Whether ``path`` lies inside the folder ``root`` once ``..`` and ``.`` are resolved.

    The test is on the path as written (symbolic links are not followed), so a
    dataset may link to images stored elsewhere, while ``../../etc/passwd`` in
    a downloaded CSV is refused.

    Example:
        >>> is_inside("data", "data/cat/1.jpg"), is_inside("data", "data/../secret.txt")
        (True, False)
    """
    root_abs = os.path.abspath(root)
    try:
        return os.path.commonpath([root_abs, os.path.abspath(path)]) == root_abs
    except ValueError:  # different drives on Windows
        return False


def list_csv(csv_path: str | os.PathLike, *, allow_outside_root: bool = False) -> CsvListing:
    """Parse a CSV label file and name every problem line (the data doctor's view).

    Raises TransferError only for problems with the whole file: it is missing
    or empty, or its header lacks the columns. Every line-level problem (empty
    path or label, bad split, short line, image not found, path outside the
    CSV's folder, the same file twice) becomes a ``Finding``.

    Example:
        >>> listing = list_csv("data/labels.csv")
        >>> len(listing.rows), [f.code for f in listing.findings]
        (120, ['csv_missing_file'])
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        what = "is a folder, not a CSV file" if csv_path.is_dir() else "not found"
        raise _error(
            csv_path, f"CSV file {what}.", fix="Pass the path of an existing .csv file with a path,label header."
        )
    try:
        columns, raw_rows = _read_rows(csv_path)
    except UnicodeDecodeError as e:
        raise _error(
            csv_path, f"the file is not UTF-8 text (byte {e.start}: {e.reason}).",
            fix="Save the CSV as UTF-8 (spreadsheets offer 'CSV UTF-8').",
        ) from None
    except csv.Error as e:
        raise _error(
            csv_path, f"the file is not a valid CSV file ({e}).", fix="Check its quotes and line endings."
        ) from None
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
    if not raw_rows:
        raise _error(csv_path, "the CSV file has a header but no images.", fix="Add one line per image: path,label.")

    multi_label = label_column == "labels"
    path_at, label_at, split_at = columns["path"], columns[label_column], columns.get("split")
    base = csv_path.parent
    needed = max(i for i in (path_at, label_at, split_at) if i is not None) + 1
    findings: list[Finding] = []
    parsed: list[CsvRow] = []

    def bad(code: str, line: int, detail: str, related: str | None = None) -> None:
        findings.append(finding(str(csv_path), code, detail, line=line, related=related))

    for line, row in raw_rows:
        if len(row) < needed:
            bad("csv_row", line, f"{len(row)} field(s), expected {len(columns)} ({found}).")
            continue
        rel = row[path_at].strip()
        if not rel:
            bad("csv_row", line, "the path is empty.")
            continue
        raw = row[label_at]
        names = [n.strip() for n in raw.split(LABEL_SEPARATOR)] if multi_label else [raw.strip()]
        names = sorted({n for n in names if n})
        if not names:
            bad("csv_empty_label", line, f"the {label_column} of '{rel}' is empty.", related=rel)
            continue
        split = None
        if split_at is not None:
            value = row[split_at].strip().lower()
            if value not in _SPLIT_VALUES:
                bad("csv_row", line, f"split is '{row[split_at].strip()}'; expected train or val.", related=rel)
                continue
            split = _SPLIT_VALUES[value]
        # Relative paths are relative to the CSV, not to where the command runs.
        full = rel if os.path.isabs(rel) else os.path.join(base, rel)
        if not allow_outside_root and not is_inside(base, full):
            bad("csv_outside_root", line, f"'{rel}' points outside the CSV's folder '{base}'; it is not read.",
                related=full)
            continue
        if not os.path.isfile(full):
            bad("csv_missing_file", line, f"image file not found: {full}", related=full)
            continue
        parsed.append(CsvRow(line, full, tuple(names), split, rel))

    rows = _drop_repeats(parsed, csv_path, findings)
    findings += _label_warnings(rows, csv_path)
    for f in findings:
        if f.action in ("stop", "skip"):
            logger.debug("%s", f)
    return CsvListing(csv_path, label_column, split_at is not None, tuple(rows), tuple(findings), len(raw_rows))


def _drop_repeats(rows: list[CsvRow], csv_path: Path, findings: list[Finding]) -> list[CsvRow]:
    """Keep the first line of each file; a repeat with other labels makes the file unusable."""
    first: dict[str, CsvRow] = {}
    conflicted: set[str] = set()
    for row in rows:
        key = os.path.normcase(os.path.normpath(row.path))
        seen = first.get(key)
        if seen is None:
            first[key] = row
        elif seen.labels == row.labels:
            findings.append(finding(
                str(csv_path), "csv_duplicate_row",
                f"'{row.written}' repeats line {seen.line}; only the first line is used.", line=row.line,
                related=row.path,
            ))
        else:
            conflicted.add(key)
            findings.append(finding(
                str(csv_path), "csv_conflicting_labels",
                f"'{row.written}' is labelled {';'.join(row.labels)!r} here but {';'.join(seen.labels)!r} "
                f"on line {seen.line}.", line=row.line, related=row.path,
            ))
    return [row for key, row in first.items() if key not in conflicted]


def _label_warnings(rows: list[CsvRow], csv_path: Path) -> list[Finding]:
    """Labels that look like mistakes: only in val (never trained), or the same name spelled differently."""
    out: list[Finding] = []
    first_line: dict[str, int] = {}
    for row in rows:
        for name in row.labels:
            first_line.setdefault(name, row.line)
    if any(row.split is not None for row in rows):
        trained = {name for row in rows if row.split == "train" for name in row.labels}
        for name in sorted(set(first_line) - trained):
            out.append(finding(
                str(csv_path), "csv_unknown_label",
                f"label '{name}' appears only in val lines: the model never trains on it.", line=first_line[name],
            ))
    spellings: dict[str, list[str]] = {}
    for name in first_line:
        spellings.setdefault(" ".join(name.casefold().split()), []).append(name)
    for variants in spellings.values():
        if len(variants) > 1:
            variants.sort(key=lambda n: first_line[n])
            for name in variants[1:]:
                out.append(finding(
                    str(csv_path), "csv_unknown_label",
                    f"label '{name}' differs from '{variants[0]}' (line {first_line[variants[0]]}) only in case or "
                    "spaces: they become two classes.", line=first_line[name],
                ))
    return out


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
        raise _error(
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
            raise _error(
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
        more = len(stops) - _MAX_LISTED
        listed = "; ".join(f"line {f.line}: {f.related}" for f in stops[:_MAX_LISTED])
        listed += f"; and {more} more" if more > 0 else ""
        raise _error(
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
        raise _error(csv_path, message, fix=fix, line=f.line)
    more = len(stops) - _MAX_LINES_LISTED
    listed = "; ".join(
        f"line {f.line}: {f.detail.rstrip('.')}"
        for f in stops[:_MAX_LINES_LISTED]
    )
    listed += f"; and {more} more" if more > 0 else ""
    fix = (f"Fix or remove those lines (`transfer check-data {csv_path}` lists every problem). "
           f"Paths are read relative to the CSV's folder '{base}'.")
    if any(f.code == "csv_outside_root" for f in stops):
        fix += (" Paths outside that folder are allowed with --allow-outside-root (allow_outside_root=True "
                "in Python) if you trust this CSV.")
    raise _error(csv_path, f"{len(stops)} lines cannot be used: {listed}.", fix=fix)


def _row_fix(detail: str) -> str:
    if detail.startswith("the path is empty"):
        return "Write the image path in the path column."
    if detail.startswith("split is"):
        return "Write train or val in the split column (or remove the column to split automatically)."
    return "Give each line a value for every column, separated by commas."
