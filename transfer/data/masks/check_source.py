"""What ``transfer check-data`` asks of a mask source: its images, split and mask findings.

The data doctor inspects images and counts classes on single- or multi-label
targets. For a mask source it gets a stand-in, as for boxes: each image's
target is the sorted tuple of the classes its mask holds (so class counts
count images per class), and the mask findings come along as extra findings:
those of reading (missing masks, size mismatches, JPEG masks, dropped or
clipped regions) and those of decoding up to ``CHECK_LIMIT`` masks, spread
evenly over the split (unknown values, undecodable masks, the pixel share of
each class and classes that (almost) never show). The split is the one
training would make (``loading``).

Example:
    >>> split, samples, extra, root, given = list_mask_source(Path("camvid"), 0.2, 0, False, ignore_index=11)
    >>> len(split.train), len(split.val), given
    (367, 101, True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from transfer.data.findings import Finding, finding
from transfer.data.masks.coco import read_coco_masks
from transfer.data.masks.decode import load_mask, map_values, mask_name, read_pixels
from transfer.data.masks.loading import seeded_mask_split, shared_values
from transfer.data.masks.reading import list_masks, mask_format, split_folders
from transfer.data.masks.region_checks import check_regions
from transfer.data.masks.values import check_ignore_index, evenly_spread
from transfer.data.samples import IGNORE_VALUE, DataSplit, Samples, class_indices
from transfer.core.errors import TransferError

CHECK_LIMIT = 500  # masks decoded for values and pixel shares (a few seconds of PNG decoding)
RARE_SHARE = 1e-4  # a class covering less than this share of the scanned pixels is reported
# What only a COCO file's masks show (its images, entries and ids are the box checks' findings).
_REGION_CODES = ("mask_region_dropped", "mask_region_clipped", "mask_region_invalid")


def is_mask_source(path: str | os.PathLike) -> bool:
    """Whether ``transfer check-data`` reads ``path`` as masks: a mask folder, a VIA file, or train/ val/ of them.

    COCO files stay with the box checks (their boxes are judged there) and
    ``tfds:`` names with classification's.
    """
    return mask_format(path) in ("folder", "via") or split_folders(path) is not None


def coco_mask_findings(path: str | os.PathLike, allow_outside_root: bool = False) -> list[Finding]:
    """Every bad ``segmentation`` of a COCO file (polygons and RLE judged against the real image); [] for
    a file without segmentation or that is no COCO file.

    ``transfer check-data`` reads a COCO file as boxes (their findings name its
    images and entries); this adds what only its masks show: each dropped or
    clipped region (a NUL or a 400-digit number among its points, fewer than
    3 points, no area, outside the image, an RLE that does not cover it),
    named by its annotation.

    Example:
        >>> [f.detail[:40] for f in coco_mask_findings("shapes/annotations.json")]
        ["annotations[3] polygon 0 ('square') of 'sh"]
    """
    if mask_format(path) != "coco":
        return []
    try:
        parsed = read_coco_masks(path, allow_outside_root=allow_outside_root)
    except TransferError:
        return []  # not a COCO file the box reader accepts either: it says why
    if not parsed.segmented:
        return []
    _, findings = check_regions(parsed, parsed.class_order)
    return [f for f in findings if f.code in _REGION_CODES]


def list_mask_source(
    path: Path, val_fraction: float, seed: int, allow_outside_root: bool, *,
    class_names: Sequence[str] | None = None, ignore_index: int | None = None,
) -> tuple[DataSplit | None, Samples | None, list[Finding], str, bool]:
    """``(split, samples, extra findings, root, split given)`` of a mask source, nothing raised for bad masks.

    ``split`` is None when the images are too few to split (then ``samples``
    holds them all). Raises TransferError only for a source that cannot be
    read at all or is hostile (see ``list_masks``).
    """
    options = dict(ignore_index=check_ignore_index(ignore_index), allow_outside_root=allow_outside_root)
    folders = split_folders(path)
    train = list_masks(folders[0] if folders else path, class_names=class_names, **options)
    extra = list(train.findings) + _nothing_to_score(train, folders[0] if folders else path, "training")
    root = os.fspath(path) if folders else train.root
    if folders and folders[1] is not None:
        val = list_masks(folders[1], class_names=train.samples.class_names, values=shared_values(train), **options)
        extra += list(val.findings) + _nothing_to_score(val, folders[1], "validation")
        split = DataSplit(train.samples, val.samples, f"folders {folders[0].name}/ {folders[1].name}/")
        given = True
    else:
        given = False
        try:
            split = seeded_mask_split(train.samples, val_fraction=val_fraction, seed=seed)
        except TransferError:  # too few images to split: checked as one set
            split = None
    parts = [split.train, split.val] if split is not None else [train.samples]
    stand_ins, found = _scan(parts, root, {(f.path, f.code) for f in extra})
    extra += found
    if split is None:
        return None, stand_ins[0], extra, root, given
    return DataSplit(stand_ins[0], stand_ins[1], split.origin), None, extra, root, given


def _nothing_to_score(listing, where, role: str) -> list[Finding]:
    """A ``mask_nothing_to_score`` stop when ``listing`` has no usable image (its masks all ignored, or none)."""
    if len(listing.samples):
        return []
    ignored = sum(f.code == "mask_all_ignored" for f in listing.findings)
    verb = "learn" if role == "training" else "score"
    why = (f"every mask left ({ignored}) is entirely the ignored value (it would train with loss 0 and IoU 0)"
           if ignored else "no usable image with a mask" + (f" ({len(listing.findings)} problem(s) listed)"
                                                                if listing.findings else ""))
    return [finding(os.fspath(where), "mask_nothing_to_score", f"{role} has nothing to {verb}: {why}")]


def _scan(parts: list[Samples], root: str, known: set) -> tuple[list[Samples], list[Finding]]:
    """Stand-in samples (class sets) of ``parts`` and the findings of decoding up to ``CHECK_LIMIT`` masks."""
    names = parts[0].class_names
    everything = [(p, i) for p, part in enumerate(parts) for i in range(len(part))]
    chosen = {everything[k] for k in evenly_spread(len(everything), CHECK_LIMIT)}
    pixels = np.zeros(IGNORE_VALUE + 1, np.int64)
    findings: list[Finding] = []
    stand_ins = []
    for p, part in enumerate(parts):
        keep, targets = [], []
        for i, (source, target) in enumerate(zip(part.sources, part.targets)):
            classes = tuple(class_indices(target))
            if (p, i) in chosen:
                counts, problem = _decode(source, target)
                if problem is not None:
                    if (problem.path, problem.code) not in known:
                        findings.append(problem)
                    continue  # not usable: left out of the stand-in, as training leaves it out
                pixels += counts
                classes = tuple(int(c) for c in np.flatnonzero(counts[:len(names)]))
            keep.append(i)
            targets.append(classes)
        stand_ins.append(Samples(tuple(part.sources[i] for i in keep), tuple(targets), names, multi_label=True,
                                 encoded=None if part.encoded is None else tuple(part.encoded[i] for i in keep)))
    findings += _share_findings(pixels, names, root, len(chosen), len(everything))
    return stand_ins, findings


def _decode(source: str, target) -> tuple[np.ndarray | None, Finding | None]:
    """Pixels per class index of one mask, or the finding that says why it cannot be used."""
    name = mask_name(target) if target.kind in ("file", "encoded") else source
    try:
        if target.kind in ("file", "encoded"):
            raw = read_pixels(target, source=source)
        else:
            return np.bincount(load_mask(target, source=source).ravel(), minlength=IGNORE_VALUE + 1), None
    except TransferError as e:
        return None, finding(name, "mask_unreadable", e.message.removeprefix(f"{name}: ").rstrip("."),
                             related=source)
    try:
        mask = map_values(raw, target.values, threshold=target.threshold, name=name, source=source)
    except TransferError as e:
        return None, finding(name, "mask_unknown_values", e.message.removeprefix(f"{name}: ").rstrip("."),
                             related=source)
    return np.bincount(mask.ravel(), minlength=IGNORE_VALUE + 1), None


def _share_findings(pixels: np.ndarray, names: Sequence[str], root: str, scanned: int, total: int) -> list[Finding]:
    """The pixel share of every class over the scanned masks, and the classes (almost) absent."""
    all_pixels = int(pixels.sum())
    if not all_pixels or not names:
        return []
    of = f"all {total} masks" if scanned >= total else f"{scanned} of {total} masks (spread evenly)"
    shares = [(name, pixels[i] / all_pixels) for i, name in enumerate(names)]
    listed = ", ".join(f"{name} {100 * share:.2f}%" for name, share in shares)
    ignored = pixels[IGNORE_VALUE] / all_pixels
    listed += f", ignored {100 * ignored:.2f}%" if ignored else ""
    out = [finding(root, "mask_pixel_share", f"pixel share per class over {of}: {listed}")]
    for name, share in shares:
        if share < RARE_SHARE:
            what = "covers no pixel" if share == 0 else f"covers only {100 * share:.4f}% of the pixels"
            out.append(finding(root, "mask_rare_class", f"class '{name}' {what} of {of}"))
    return out
