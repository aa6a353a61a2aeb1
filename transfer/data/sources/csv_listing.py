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
Class names are sorted. ``list_csv`` reports every problem line at once as
``Finding``s (the data doctor's view); ``transfer.data.sources.csvfile`` turns
them into training's samples or one error naming the lines.

Example:
    >>> listing = list_csv("data/labels.csv")  # path,label \\n images/1.jpg,cat ...
    >>> listing.samples().class_names
    ('cat', 'dog')
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from transfer.core.errors import TransferError
from transfer.data.findings import Finding, finding
from transfer.data.samples import Samples

logger = logging.getLogger(__name__)

LABEL_SEPARATOR = ";"
_SPLIT_VALUES = {"train": "train", "val": "val", "validation": "val"}
_EXPECTED = "path,label (one class per image) or path,labels (';'-separated classes), optionally split"


def csv_error(csv_path: Path, message: str, fix: str, line: int | None = None) -> TransferError:
    """A ``TransferError`` whose message starts with the CSV file and, where known, the line."""
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
            raise csv_error(
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
    columns, raw_rows = _open_csv(csv_path)
    layout = _layout(csv_path, columns, allow_outside_root)
    if not raw_rows:
        raise csv_error(csv_path, "the CSV file has a header but no images.", fix="Add one line per image: path,label.")
    findings: list[Finding] = []
    parsed: list[CsvRow] = []
    for line, row in raw_rows:
        outcome = _parse_row(layout, line, row)
        (parsed if isinstance(outcome, CsvRow) else findings).append(outcome)
    rows = _drop_repeats(parsed, csv_path, findings)
    findings += _label_warnings(rows, csv_path)
    for f in findings:
        if f.action in ("stop", "skip"):
            logger.debug("%s", f)
    return CsvListing(csv_path, layout.label_column, layout.split_at is not None, tuple(rows), tuple(findings),
                      len(raw_rows))


def _open_csv(csv_path: Path) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """``_read_rows`` of an existing CSV file, its failures as ``TransferError``s naming the file."""
    if not csv_path.is_file():
        what = "is a folder, not a CSV file" if csv_path.is_dir() else "not found"
        raise csv_error(
            csv_path, f"CSV file {what}.", fix="Pass the path of an existing .csv file with a path,label header."
        )
    try:
        return _read_rows(csv_path)
    except UnicodeDecodeError as e:
        raise csv_error(
            csv_path, f"the file is not UTF-8 text (byte {e.start}: {e.reason}).",
            fix="Save the CSV as UTF-8 (spreadsheets offer 'CSV UTF-8').",
        ) from None
    except csv.Error as e:
        raise csv_error(
            csv_path, f"the file is not a valid CSV file ({e}).", fix="Check its quotes and line endings."
        ) from None


@dataclass(frozen=True)
class _Layout:
    """Where a CSV file's columns are, and what its rows are checked against."""

    csv_path: Path
    found: str  # the header's column names, for messages
    width: int  # how many columns the header names
    label_column: str
    path_at: int
    label_at: int
    split_at: int | None
    allow_outside_root: bool

    @property
    def needed(self) -> int:
        """The fields a row needs to reach every column that is read."""
        return max(i for i in (self.path_at, self.label_at, self.split_at) if i is not None) + 1


def _layout(csv_path: Path, columns: dict[str, int], allow_outside_root: bool) -> _Layout:
    """The header's columns as a ``_Layout``; a header without path and label(s) is a ``TransferError``."""
    found = ",".join(columns) or "(none)"
    if "label" in columns and "labels" in columns:
        raise csv_error(
            csv_path,
            f"the header has both 'label' and 'labels' columns (found: {found}); expected one of them.",
            fix="Keep 'label' for one class per image or 'labels' for ';'-separated classes.",
            line=1,
        )
    label_column = "labels" if "labels" in columns else "label"
    missing = [name for name in ("path", label_column) if name not in columns]
    if missing:
        raise csv_error(
            csv_path,
            f"missing column(s) {', '.join(missing)}. Found columns: {found}. Expected: {_EXPECTED}.",
            fix="Rename the header's columns (the first line) to path and label (or labels).",
            line=1,
        )
    return _Layout(csv_path, found, len(columns), label_column, columns["path"], columns[label_column],
                   columns.get("split"), allow_outside_root)


def _parse_row(layout: _Layout, line: int, row: list[str]) -> CsvRow | Finding:
    """One CSV line as a usable ``CsvRow``, or the ``Finding`` that says why it cannot be used."""

    def bad(code: str, detail: str, related: str | None = None) -> Finding:
        return finding(str(layout.csv_path), code, detail, line=line, related=related)

    if len(row) < layout.needed:
        return bad("csv_row", f"{len(row)} field(s), expected {layout.width} ({layout.found}).")
    rel = row[layout.path_at].strip()
    if not rel:
        return bad("csv_row", "the path is empty.")
    raw = row[layout.label_at]
    names = [n.strip() for n in raw.split(LABEL_SEPARATOR)] if layout.label_column == "labels" else [raw.strip()]
    names = sorted({n for n in names if n})
    if not names:
        return bad("csv_empty_label", f"the {layout.label_column} of '{rel}' is empty.", related=rel)
    split = None
    if layout.split_at is not None:
        value = row[layout.split_at].strip().lower()
        if value not in _SPLIT_VALUES:
            return bad("csv_row", f"split is '{row[layout.split_at].strip()}'; expected train or val.", related=rel)
        split = _SPLIT_VALUES[value]
    # Relative paths are relative to the CSV, not to where the command runs.
    base = layout.csv_path.parent
    full = rel if os.path.isabs(rel) else os.path.join(base, rel)
    if not layout.allow_outside_root and not is_inside(base, full):
        return bad("csv_outside_root", f"'{rel}' points outside the CSV's folder '{base}'; it is not read.",
                   related=full)
    if not os.path.isfile(full):
        return bad("csv_missing_file", f"image file not found: {full}", related=full)
    return CsvRow(line, full, tuple(names), split, rel)


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
