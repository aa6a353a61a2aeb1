"""Which mask pixel value is which class: class names, ``classes.txt``, binary masks, bounded scans.

For mask files the classes come from, in order:

1. ``class_names`` (the command line's ``--class-names a,b,c``): value ``i``
   is class ``i``;
2. a ``classes.txt`` (one name per line, in value order; blank lines and
   ``#`` comments skipped) in the masks' folder, the source folder or its
   parent (CamVid keeps it at ``camvid/classes.txt`` above ``train/`` and ``val/``);
3. otherwise the masks say: at most ``SCAN_LIMIT`` of them, spread evenly
   over the sorted list, are decoded. Only 0 and 255 means a binary mask
   (``background``, ``foreground``); anything else names each value found
   by itself (``"0"``, ``"1"``, ...), mapped to 0, 1, ... in value order, with
   a ``mask_classes`` finding saying how many masks were scanned.

Two class names over masks holding only 0 and 255 also read 255 as class 1.
``ignore_index`` (CamVid's 11) maps to ``IGNORE_VALUE`` and is not a class.
Nothing here decides about one file: the scan's per-mask values also serve
``mask_unknown_values`` findings and the pixel shares of ``transfer check-data``.

Example:
    >>> choose_values(scan, class_names=None, names_file=None, ignore_index=None)[:2]
    (('background', 'foreground'), ((0, 0), (255, 1)))
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from transfer.data.findings import Finding, finding
from transfer.data.masks.decode import mask_name, read_pixels
from transfer.data.samples import IGNORE_VALUE, Mask
from transfer.errors import TransferError

CLASSES_FILE = "classes.txt"
BINARY_NAMES = ("background", "foreground")
SCAN_LIMIT = 64  # masks decoded to learn the classes (and spot unknown values) while reading
_MAX_CLASSES_BYTES = 1 << 20
_NEAR = 40  # a JPEG-compressed binary mask keeps its pixels this close to 0 or 255
_NEAR_SHARE = 0.99


@dataclass
class ValueScan:
    """The pixel values of the masks decoded: ``counts[mask name] = {value: pixels}``, failures by name."""

    counts: dict[str, Counter] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    lossy: set[str] = field(default_factory=set)
    total: int = 0

    @property
    def scanned(self) -> int:
        return len(self.counts) + len(self.errors)

    def values(self, *, lossy: bool) -> Counter:
        """Pixels per value over the scanned masks that are (not) lossy."""
        out: Counter = Counter()
        for name, counts in self.counts.items():
            if (name in self.lossy) == lossy:
                out.update(counts)
        return out


def evenly_spread(count: int, limit: int) -> list[int]:
    """Up to ``limit`` indices of ``range(count)``, spread evenly, first and last included.

    Example:
        >>> evenly_spread(10, 3)
        [0, 4, 9]
    """
    if count <= limit:
        return list(range(count))
    return sorted({round(i * (count - 1) / (limit - 1)) for i in range(limit)}) if limit > 1 else [0]


def scan_masks(targets: Sequence[tuple[Mask, str]], limit: int = SCAN_LIMIT) -> ValueScan:
    """Decode up to ``limit`` of the ``(mask, image)`` pairs (evenly spread) and count their pixel values.

    Example:
        >>> scan_masks([(Mask(2, 2, path="m.png"), "m.jpg")]).values(lossy=False)
        Counter({0: 3, 255: 1})
    """
    scan = ValueScan(total=len(targets))
    for i in evenly_spread(len(targets), limit):
        target, source = targets[i]
        name = mask_name(target)
        try:
            raw = read_pixels(target, source=source)
        except TransferError as e:
            scan.errors[name] = e.message
            continue
        values, pixels = np.unique(raw, return_counts=True)
        scan.counts[name] = Counter({int(v): int(n) for v, n in zip(values, pixels)})
        if target.threshold:
            scan.lossy.add(name)
    return scan


def find_classes_file(folders: Sequence[str | os.PathLike]) -> Path | None:
    """The first ``classes.txt`` in ``folders`` (in order), or None."""
    for folder in folders:
        path = Path(folder) / CLASSES_FILE
        if path.is_file():
            return path
    return None


def read_classes_file(path: str | os.PathLike) -> tuple[str, ...]:
    """The class names of a ``classes.txt``, one per line in value order.

    Example:
        >>> read_classes_file("camvid/classes.txt")[:3]
        ('Sky', 'Building', 'Pole')
    """
    path = Path(path)
    fix = "Write one class name per line, in pixel value order (the first line is value 0)."
    try:
        if path.stat().st_size > _MAX_CLASSES_BYTES:
            raise TransferError(f"{path}: {path.stat().st_size} bytes is too large for a list of class names.",
                                fix=fix)
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise TransferError(f"{path}: not UTF-8 text ({e.reason}).", fix=fix) from None
    except OSError as e:
        raise TransferError(f"{path}: cannot be read ({e.strerror or e}).", fix=fix) from None
    names = [line.strip() for line in text.splitlines()]
    return check_class_names([n for n in names if n and not n.startswith("#")], str(path))


def check_class_names(names: Sequence[str], where: str) -> tuple[str, ...]:
    """``names`` stripped, or a TransferError naming ``where`` when empty, repeated or too many."""
    if isinstance(names, str):
        names = names.split(",")
    cleaned = tuple(str(n).strip() for n in names)
    fix = "Give each class one unique, non-empty name, in pixel value order (at most 255)."
    if not cleaned or any(not n for n in cleaned):
        raise TransferError(f"{where}: class names {list(cleaned)} are empty or hold an empty name.", fix=fix)
    repeated = sorted(n for n, c in Counter(cleaned).items() if c > 1)
    if repeated:
        raise TransferError(f"{where}: class names repeat: {', '.join(repeated)}.", fix=fix)
    if len(cleaned) > IGNORE_VALUE:
        raise TransferError(f"{where}: {len(cleaned)} class names; masks hold at most {IGNORE_VALUE} classes "
                            f"(value {IGNORE_VALUE} marks ignored pixels).", fix=fix)
    return cleaned


def check_ignore_index(ignore_index: int | None) -> int | None:
    """``ignore_index`` as an int (None stays None); TransferError when it is not a pixel value."""
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)) or not (
            0 <= int(ignore_index) < 1 << 16):
        raise TransferError(f"ignore_index must be a pixel value 0..65535. Received: {ignore_index!r}.",
                            fix="Pass the value that marks unlabelled pixels, e.g. --ignore-index 255.")
    return int(ignore_index)


def choose_values(
    scan: ValueScan, *, class_names: Sequence[str] | None, names_file: Path | None, ignore_index: int | None,
    where: str = "",
) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...], list[Finding]]:
    """``(class names, values table, findings)`` for file masks (see the module docstring for the rules)."""
    ignore = check_ignore_index(ignore_index)
    findings: list[Finding] = []
    exact, lossy = scan.values(lossy=False), scan.values(lossy=True)
    found = set(exact) - {ignore}
    binary = _looks_binary(exact, lossy, ignore)
    if class_names is not None or names_file is not None:
        names = (check_class_names(class_names, "class_names") if class_names is not None
                 else read_classes_file(names_file))
        if len(names) == 2 and binary:
            return names, _with_ignore(((0, 0), (255, 1)), ignore, names), findings
        return names, _with_ignore(tuple((v, v) for v in range(len(names))), ignore, names), findings
    if binary:
        return BINARY_NAMES, _with_ignore(((0, 0), (255, 1)), ignore, BINARY_NAMES), findings
    of = f"{scan.scanned} of {scan.total} masks" if scan.scanned < scan.total else f"all {scan.total} masks"
    if not exact and lossy:
        findings.append(finding(where, "mask_unknown_values", "only JPEG masks, which are not 0/255 masks: their "
                                "values blur, so the classes cannot be read from them; give the class names "
                                "(--class-names or classes.txt)"))
        return (), (), findings
    ordered = sorted(found)
    if len(ordered) > IGNORE_VALUE:
        raise TransferError(f"{where}: {len(ordered)} different values in {of}; masks hold at most "
                            f"{IGNORE_VALUE} classes.", fix="Pass the class names, or check that these are masks.")
    hint = " (255 often marks unlabelled pixels: pass --ignore-index 255)" if 255 in found and ignore is None else ""
    findings.append(finding(where, "mask_classes", f"no class names given and no {CLASSES_FILE} found: the "
                            f"classes are the values found in {of}: {', '.join(map(str, ordered)) or 'none'}"
                            f"{hint}; masks holding other values will stop training"))
    names = tuple(str(v) for v in ordered)
    return names, _with_ignore(tuple((v, i) for i, v in enumerate(ordered)), ignore, names), findings


def _looks_binary(exact: Counter, lossy: Counter, ignore: int | None) -> bool:
    """Only 0 and 255 (255 present), or JPEG masks whose pixels all sit near 0 and 255."""
    exact_values = set(exact) - {ignore}
    if exact_values:
        return 255 in exact_values and exact_values <= {0, 255} and ignore != 255
    total = sum(lossy.values())
    near = sum(n for v, n in lossy.items() if v <= _NEAR or v >= 255 - _NEAR)
    high = sum(n for v, n in lossy.items() if v >= 255 - _NEAR)
    return bool(total) and high > 0 and near >= _NEAR_SHARE * total and ignore is None


def _with_ignore(values: tuple[tuple[int, int], ...], ignore: int | None, names: Sequence[str]):
    if ignore is None:
        return values
    taken = {v: names[i] for v, i in values}
    if ignore in taken:
        raise TransferError(f"ignore_index {ignore} is the pixel value of class '{taken[ignore]}'.",
                            fix="Pass the value that marks unlabelled pixels, which is no class's value.")
    return values + ((ignore, IGNORE_VALUE),)


def unknown_value_findings(
    scan: ValueScan, values: Sequence[tuple[int, int]], sources: dict[str, str]
) -> list[Finding]:
    """A ``mask_unknown_values`` finding per scanned (lossless) mask holding values the table lacks."""
    known = {v for v, _ in values}
    out = []
    for name, counts in sorted(scan.counts.items()):
        if name in scan.lossy:
            continue  # thresholded to the nearest value: none is unknown
        unknown = sorted(set(counts) - known)
        if unknown:
            pixels = sum(counts[v] for v in unknown)
            listed = ", ".join(map(str, unknown[:10])) + (", ..." if len(unknown) > 10 else "")
            out.append(finding(name, "mask_unknown_values", f"pixel value(s) {listed} ({pixels} pixels) are not "
                               f"class values ({', '.join(map(str, sorted(known)))})", related=sources.get(name)))
    return out


def scan_error_findings(scan: ValueScan, sources: dict[str, str]) -> list[Finding]:
    """A ``mask_unreadable`` finding per scanned mask that could not be decoded."""
    return [finding(name, "mask_unreadable", message.removeprefix(f"{name}: ").rstrip("."), related=sources.get(name))
            for name, message in sorted(scan.errors.items())]


def with_background(names: Sequence[str], where: str = "class_names") -> tuple[str, ...]:
    """Class names of a polygon source: ``"background"`` (index 0, unpainted pixels) first, then ``names``.

    Names that already start with ``background`` (any case) are kept as they are.

    Example:
        >>> with_background(["balloon"]), with_background(("background", "cat"))
        (('background', 'balloon'), ('background', 'cat'))
    """
    names = check_class_names(names, where)
    return names if names[0].lower() == "background" else check_class_names(("background", *names), where)
