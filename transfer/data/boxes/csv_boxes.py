"""Box CSV files: one line per box, ``filename,width,height,class,xmin,ymin,xmax,ymax``.

The header names the columns (any order, any case; ``width`` and ``height``
are optional and, when given, are what the annotation claims about the image,
checked against the real one). Lines of the same file group into one image,
boxes in line order. A line with a file name and an empty class and empty
coordinates lists a background image (no boxes).

File names are relative to the CSV's folder or to an ``images/`` folder beside
the CSV, or absolute; they must lie inside the CSV's folder unless
``allow_outside_root`` (``box_outside_root``, which stops training). A line
with too few fields, an empty class or a coordinate that is not a number is
reported with its line (``box_annotation``, which stops training too, as a
bad line of a classification CSV does).

Example:
    >>> annotations = read_box_csv("raccoon/train_labels.csv")
    >>> len(annotations.images), sum(len(r.boxes) for r in annotations.images)
    (160, 173)
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from transfer.data.boxes.image_paths import outside_root, resolve_image
from transfer.data.boxes.records import (
    AnnotatedImage, Annotations, RawBox, cap, over_cap, parse_coordinate, read_annotation_file,
)
from transfer.data.findings import Finding, finding
from transfer.core.errors import TransferError

REQUIRED = ("filename", "class", "xmin", "ymin", "xmax", "ymax")
COORDINATES = ("xmin", "ymin", "xmax", "ymax")
EXPECTED = "filename,width,height,class,xmin,ymin,xmax,ymax (one line per box; width and height optional)"


def csv_header(csv_path: str | os.PathLike) -> set[str]:
    """The lower-cased column names of a CSV file's first non-blank line (empty when unreadable).

    Example:
        >>> "xmin" in csv_header("raccoon/train_labels.csv")
        True
    """
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            for row in csv.reader(f):
                if any(cell.strip() for cell in row):
                    return {cell.strip().lower() for cell in row}
    except (OSError, UnicodeDecodeError, csv.Error):
        pass
    return set()


def is_box_csv(csv_path: str | os.PathLike) -> bool:
    """Whether the CSV file's header names a box coordinate (xmin, ymin, xmax or ymax): a box CSV, read
    as one (a missing column is then named in box words, not as a classification CSV's path,label).

    Example:
        >>> is_box_csv("raccoon/train_labels.csv"), is_box_csv("flowers/labels.csv")
        (True, False)
    """
    return bool(set(COORDINATES) & csv_header(csv_path))


def read_box_csv(csv_path: str | os.PathLike, *, allow_outside_root: bool = False) -> Annotations:
    """The annotated images of a box CSV file, with a finding for every bad line.

    Raises TransferError when the file is missing, empty, not UTF-8 CSV or
    lacks the box columns.

    Example:
        >>> read_box_csv("raccoon/test_labels.csv").images[0].claimed_size
        (275.0, 183.0)
    """
    csv_path = Path(csv_path)
    columns, rows = _rows(csv_path)
    base = csv_path.parent
    findings: list[Finding] = []
    grouped: dict[str, dict] = {}  # one entry per image, in first-line order

    def bad(line: int, detail: str, code: str = "box_annotation", related: str | None = None) -> None:
        findings.append(finding(str(csv_path), code, detail, line=line, related=related))

    width_at, height_at = columns.get("width"), columns.get("height")
    needed = max(columns[name] for name in REQUIRED) + 1
    for line, row in rows:
        if len(row) < needed:
            bad(line, f"{len(row)} field(s), expected the {len(columns)} of the header; the line is not used")
            continue
        written = row[columns["filename"]].strip()
        if not written:
            bad(line, "the filename is empty; the line is not used")
            continue
        if "\0" in written:  # no file can have that name (and os calls raise on it)
            shown = written.replace("\0", "\\0")
            bad(line, f"the filename '{shown}' holds a NUL byte (\\0); the line is not used")
            continue
        path = resolve_image(base, written)
        if outside_root(base, path, allow_outside_root):
            bad(line, f"'{written}' points outside the CSV's folder '{base}'; it is not read", "box_outside_root",
                related=path)
            continue
        label = row[columns["class"]].strip()
        raw = [row[columns[name]].strip() for name in COORDINATES]
        image = grouped.setdefault(os.path.normcase(os.path.abspath(path)),
                                   {"path": path, "line": line, "size": None, "boxes": []})
        if image["line"] == line:
            image["size"] = _claimed_size(row, width_at, height_at, line, bad)
        if not label and not any(raw):
            continue  # a background image: listed, no box
        if not label:
            bad(line, f"the class of a box of '{written}' is empty; the box is not used", related=path)
            continue
        try:
            xyxy = tuple(parse_coordinate(value) for value in raw)
        except ValueError as e:
            bad(line, f"a coordinate of '{written}' is {e}; the box is not used", related=path)
            continue
        image["boxes"].append(RawBox(xyxy, label, line=line))

    records = []
    for image in grouped.values():
        too_many = over_cap("MAX_BOXES_PER_IMAGE", len(image["boxes"]), "boxes")
        if too_many:
            bad(image["line"], f"'{image['path']}' has {too_many}; the image is not used", related=image["path"])
            continue
        records.append(AnnotatedImage(image["path"], str(csv_path), image["size"], tuple(image["boxes"]),
                                      line=image["line"]))
    return Annotations(tuple(records), tuple(findings), root=str(base))


def _read_rows(csv_path: Path) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """The header's column positions (lower-cased) and the non-blank lines with their numbers, read from the
    file's bytes (a FIFO is refused, never waited on) and at most ``MAX_ANNOTATIONS_PER_FILE`` lines."""
    # utf-8-sig: spreadsheets often save a byte-order mark that would stick to "filename".
    text = read_annotation_file(csv_path, "box CSV").decode("utf-8-sig")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    while header is not None and not any(cell.strip() for cell in header):
        header = next(reader, None)  # blank lines before the header
    if header is None:
        raise TransferError(f"{csv_path}: the CSV file is empty.",
                            fix=f"Write a header line ({EXPECTED}) and one line per box.")
    limit = cap("MAX_ANNOTATIONS_PER_FILE")
    rows = []
    for row in reader:
        if any(cell.strip() for cell in row):
            if len(rows) == limit:
                too_many = over_cap("MAX_ANNOTATIONS_PER_FILE", limit + 1, "lines or more")
                raise TransferError(f"{csv_path}: {too_many}; it is not read.",
                                    fix="Split the file (e.g. one per split), or raise the cap.")
            rows.append((reader.line_num, row))
    return {name.strip().lower(): i for i, name in enumerate(header)}, rows


def _rows(csv_path: Path) -> tuple[dict[str, int], list[tuple[int, list[str]]]]:
    """The header's columns and the non-blank lines; TransferError for a file that cannot be a box CSV."""
    def error(message: str, fix: str) -> TransferError:
        return TransferError(f"{csv_path}: {message}", fix=fix)

    if csv_path.is_dir() or not csv_path.exists():  # a FIFO or device: refused by name when read
        what = "is a folder, not a CSV file" if csv_path.is_dir() else "not found"
        raise error(f"box CSV file {what}.", fix=f"Pass an existing .csv file with the columns {EXPECTED}.")
    try:
        columns, rows = _read_rows(csv_path)
    except UnicodeDecodeError as e:
        raise error(f"the file is not UTF-8 text (byte {e.start}: {e.reason}).",
                    fix="Save the CSV as UTF-8 (spreadsheets offer 'CSV UTF-8').") from None
    except csv.Error as e:
        raise error(f"the file is not a valid CSV file ({e}).", fix="Check its quotes and line endings.") from None
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise error(
            f"line 1: missing column(s) {', '.join(missing)}. Found columns: {','.join(columns) or '(none)'}. "
            f"Expected: {EXPECTED}.",
            fix="Rename the header's columns (the first line) to those names.",
        )
    if not rows:
        raise error("the CSV file has a header but no boxes.", fix="Add one line per box.")
    return columns, rows


def _claimed_size(row: list[str], width_at: int | None, height_at: int | None, line: int, bad):
    """The ``(width, height)`` a line states, None when it states none (or the columns are absent)."""
    if width_at is None or height_at is None or width_at >= len(row) or height_at >= len(row):
        return None
    texts = row[width_at].strip(), row[height_at].strip()
    if not any(texts):
        return None
    try:
        return parse_coordinate(texts[0] or "0"), parse_coordinate(texts[1] or "0")
    except ValueError as e:
        bad(line, f"the image size has {e}; the real image size is used")
        return None
