"""Which mask pixel value is which class: class names, ``classes.txt``, binary masks, bounded scans.

For mask files the classes come from, in order:

1. ``class_names`` (the command line's ``--class-names a,b,c``): value ``i``
   is class ``i``;
2. a ``classes.txt`` (one name per line, in value order; blank lines and
   ``#`` comments skipped) in the masks' folder, the source folder or its
   parent (CamVid keeps it at ``camvid/classes.txt`` above ``train/`` and ``val/``);
3. otherwise the masks say: all of them are decoded (``scan_masks``, which
   also finds values no class has and masks with nothing but the ignored
   value, whatever their number). Only 0 and 255 means a binary mask
   (``background``, ``foreground``); anything else names each value found
   by itself (``"0"``, ``"1"``, ...), mapped to 0, 1, ... in value order, with
   a ``mask_classes`` finding saying so.

Two class names over masks holding only 0 and 255 also read 255 as class 1.
``ignore_index`` (CamVid's 11) maps to ``IGNORE_VALUE`` and is not a class.
``ignore_index`` is a raw mask value: 0..65535, as 16-bit PNG masks hold
(``check_ignore_index``, one rule for ``train`` and ``check-data``).
The scan's per-mask values also serve the per-file findings
(``judge_scanned``): ``mask_unknown_values`` (training stops) and
``mask_all_ignored`` (a mask with no labelled pixel: left out).

Example:
    >>> choose_values(scan, class_names=None, names_file=None, ignore_index=None)[:2]
    (('background', 'foreground'), ((0, 0), (255, 1)))
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from transfer.data.findings import Finding, finding
from transfer.data.masks.decode import mask_name, read_pixels
from transfer.data.samples import IGNORE_VALUE, Mask
from transfer.core.errors import TransferError
from transfer.core.regular_files import read_regular

CLASSES_FILE = "classes.txt"
BINARY_NAMES = ("background", "foreground")
_SCAN_THREADS = 8  # masks decoded at once by scan_masks
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


def scan_masks(targets: Sequence[tuple[Mask, str]], limit: int | None = None) -> ValueScan:
    """Decode the ``(mask, image)`` pairs (``limit``: only that many, evenly spread) and count their pixel values.

    Every mask by default: a value no class has, in any mask, must stop the data
    check and training before the first epoch, not kill training in it. A few
    threads decode (PIL releases the GIL while it decodes); counting is one
    ``bincount`` a mask.

    Example:
        >>> scan_masks([(Mask(2, 2, path="m.png"), "m.jpg")]).values(lossy=False)
        Counter({0: 3, 255: 1})
    """
    scan = ValueScan(total=len(targets))
    chosen = [targets[i] for i in (range(len(targets)) if limit is None else evenly_spread(len(targets), limit))]
    workers = max(1, min(_SCAN_THREADS, os.cpu_count() or 1, len(chosen)))
    with ThreadPoolExecutor(workers) as pool:  # map keeps the order: the same scan on every machine
        for target, (counts, error) in zip((t for t, _ in chosen), pool.map(_count_values, chosen)):
            name = mask_name(target)
            if error is not None:
                scan.errors[name] = error
                continue
            scan.counts[name] = counts
            if target.threshold:
                scan.lossy.add(name)
    return scan


def _count_values(pair: tuple[Mask, str]) -> tuple[Counter | None, str | None]:
    """``(pixels per raw value, None)`` of one mask, or ``(None, why it cannot be read)``."""
    target, source = pair
    try:
        raw = np.asarray(read_pixels(target, source=source))
    except TransferError as e:
        return None, e.message
    flat = raw.ravel()
    if flat.dtype.kind in "ub" and flat.dtype.itemsize <= 2:  # 8/16-bit masks: a bincount, no sort
        counts = np.bincount(flat, minlength=1)
        return Counter({int(v): int(counts[v]) for v in np.flatnonzero(counts)}), None
    values, pixels = np.unique(flat, return_counts=True)
    return Counter({int(v): int(n) for v, n in zip(values, pixels)}), None


def find_classes_file(folders: Sequence[str | os.PathLike]) -> Path | None:
    """The first ``classes.txt`` in ``folders`` (in order), or None."""
    for folder in folders:
        path = Path(folder) / CLASSES_FILE
        if path.exists() and not path.is_dir():  # a FIFO there is found, then refused by read_classes_file
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
        data = read_regular(path, max_bytes=_MAX_CLASSES_BYTES)  # a FIFO or device is refused, never read
        if len(data) > _MAX_CLASSES_BYTES:
            raise TransferError(f"{path}: more than {_MAX_CLASSES_BYTES} bytes is too large for a list of class "
                                "names.", fix=fix)
        text = data.decode("utf-8-sig")
    except TransferError:
        raise
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


MAX_IGNORE_INDEX = (1 << 16) - 1  # masks are decoded as 8- or 16-bit values (decode._pixels): 0..65535


def check_ignore_index(ignore_index: int | None, where: str = "--ignore-index") -> int | None:
    """``ignore_index`` as an int (None stays None); TransferError when it is not a mask pixel value.

    The one rule of ``transfer train``, ``check-data`` and the Python API: a
    raw value 0..65535 (16-bit PNG masks hold up to 65535, 8-bit ones 255).

    Example:
        >>> check_ignore_index(11), check_ignore_index(None)
        (11, None)
    """
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)) or not (
            0 <= int(ignore_index) <= MAX_IGNORE_INDEX):
        raise TransferError(
            f"{where} {ignore_index!r} is not a mask pixel value: masks hold whole numbers 0..{MAX_IGNORE_INDEX} "
            "(8-bit masks 0..255, 16-bit PNG masks up to 65535).",
            fix="Pass the mask value that marks unlabelled pixels, e.g. --ignore-index 255 (CamVid: 11).")
    return int(ignore_index)


def choose_values(
    scan: ValueScan, *, class_names: Sequence[str] | None, names_file: Path | None, ignore_index: int | None,
    where: str = "",
) -> tuple[tuple[str, ...], tuple[tuple[int, int], ...], list[Finding]]:
    """``(class names, values table, findings)`` for file masks (see the module docstring for the rules)."""
    ignore = check_ignore_index(ignore_index, "ignore_index")
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
    if not scan.total:  # no mask at all: the listing says so, there are no classes to guess
        return (), _with_ignore((), ignore, ()), findings
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


def judge_scanned(
    scan: ValueScan, values: Sequence[tuple[int, int]], sources: dict[str, str]
) -> tuple[list[Finding], set[str]]:
    """Findings for the scanned masks against the value table, and the masks to leave out.

    A (lossless) mask holding values the table lacks: ``mask_unknown_values``
    (training stops: the class list is wrong). A mask whose every pixel is
    ignored: ``mask_all_ignored`` (left out: it has nothing to learn or score,
    and training on it reports loss 0).
    """
    known = {v for v, _ in values}
    keys = np.array(sorted(known), dtype=np.int64)
    ignored = {v for v, i in values if i == IGNORE_VALUE}
    out, drop = [], set()
    for name, counts in sorted(scan.counts.items()):
        lossy = name in scan.lossy
        unknown = [] if lossy else sorted(set(counts) - known)  # a JPEG mask snaps to the nearest value
        if unknown:
            pixels = sum(counts[v] for v in unknown)
            listed = ", ".join(map(str, unknown[:10])) + (", ..." if len(unknown) > 10 else "")
            classes = ", ".join(str(v) for v in sorted(known - ignored))
            also = f" nor the ignored value {', '.join(map(str, sorted(ignored)))}" if ignored else ""
            out.append(finding(name, "mask_unknown_values", f"pixel value(s) {listed} ({pixels} pixels) are not "
                               f"class values ({classes}){also}", related=sources.get(name)))
            continue
        seen = {_nearest(keys, v) for v in counts} if lossy and len(keys) else set(counts)
        if ignored and seen <= ignored:
            value = ", ".join(map(str, sorted(ignored)))
            drop.add(name)
            out.append(finding(name, "mask_all_ignored", f"every pixel is the ignored value {value}: nothing to "
                               "learn or score; not used", related=sources.get(name)))
    return out, drop


def _nearest(keys: np.ndarray, value: int) -> int:
    """The listed value a JPEG mask's ``value`` snaps to (ties to the lower, as ``decode.map_values``)."""
    return int(keys[np.argmin(np.abs(keys - value))])


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
