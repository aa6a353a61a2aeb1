"""The data doctor: find what would break or silently spoil a training run, before it starts.

``check_data(source)`` (the ``transfer check-data`` command) lists a folder of
class folders or a CSV file without judging it, inspects every image and runs
the registered checks; ``check_split(split)`` does the same for data already
loaded (the quick check ``transfer train`` runs first). ``run_checks`` runs
every check registered in ``transfer.data.doctor.checks`` over inspected items.

Every image is read once, in parallel (``transfer.data.doctor.inspection``); what
TensorFlow decodes is used, what it cannot is skipped.

Example:
    >>> report = check_data("flowers/")
    >>> print(report.table())
    >>> report.exit_code   # 0: nothing skipped; 1: some files would be skipped or training would not start
    0
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from transfer.data.doctor.checks import CHECKS, DEFAULT_IMAGE_SIZE, CheckContext, Item
from transfer.data.findings import Finding, finding
from transfer.data.doctor.inspection import DEFAULT_MAX_PIXELS, ImageInfo, inspect_images
from transfer.data.doctor.report import DataReport, _sort_findings
from transfer.data.samples import Boxes, DataSplit, Mask, Samples, class_indices
from transfer.core.errors import TransferError
from transfer.core.regular_files import not_regular


def run_checks(
    items: list[Item], ctx: CheckContext, *, extra: Sequence[Finding] = (), source: str = "", root: str | None = None,
    started: float | None = None,
) -> DataReport:
    """Run every registered check over inspected ``items``; ``extra`` adds findings from listing the source."""
    findings: list[Finding] = list(extra)
    for item in items:
        for check in CHECKS["image"]:
            findings.extend(check(item.info, ctx))
        for check in CHECKS["target"]:
            findings.extend(check(item, ctx))
    skip = {f.path for f in findings if f.action == "skip" and f.line is None}
    # Dataset-level checks see the final verdict of each file (error set when any check skips it).
    judged = [
        item if item.source not in skip or item.info.error else
        Item(item.source, item.target, item.split, _with_error(item.info, "skipped"))
        for item in items
    ]
    for check in CHECKS["dataset"]:
        findings.extend(check(judged, ctx))
    usable_items = [i for i in judged if i.info.error is None]
    counts = Counter()
    for item in usable_items:
        for t in class_indices(item.target):
            counts[ctx.class_names[t]] += 1
    seconds = time.perf_counter() - started if started is not None else 0.0
    sides = sorted(min(i.info.width, i.info.height) for i in usable_items if i.info.width and i.info.height)
    return DataReport(
        source=source, root=root, num_images=len(items), usable=len(usable_items),
        class_counts={name: counts.get(name, 0) for name in ctx.class_names},
        findings=_sort_findings(findings), seconds=seconds,
        median_side=sides[len(sides) // 2] if sides else None,
    )


def _with_error(info: ImageInfo, code: str) -> ImageInfo:
    return replace(info, error=(code, "skipped"))


def _items(split: DataSplit | None, samples: Samples | None, max_pixels: int) -> list[Item]:
    """Inspect the samples of ``split`` (train and val tagged) or of ``samples`` (no split known)."""
    parts = [("train", split.train), ("val", split.val)] if split is not None else [(None, samples)]
    out: list[Item] = []
    for name, part in parts:
        infos = inspect_images(part.sources, part.encoded, max_pixels=max_pixels)
        out.extend(Item(s, t, name, info) for s, t, info in zip(part.sources, part.targets, infos))
    return out


def check_split(
    split: DataSplit, *, image_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
    near_duplicates: bool = True, source: str = "", root: str | None = None, split_given: bool | None = None,
) -> DataReport:
    """Check data already loaded (what ``transfer train`` runs before training).

    Example:
        >>> report = check_split(load_data("flowers/"), image_size=128)
        >>> print(report.summary())
        Data check: 4317 images in 3.1s, all usable.
    """
    started = time.perf_counter()
    ctx = CheckContext(
        split.class_names, split.multi_label, int(image_size or DEFAULT_IMAGE_SIZE), max_pixels, near_duplicates,
        split_given=bool(split_given if split_given is not None else not split.origin.startswith("stratified")),
        annotated=any(isinstance(t, (Boxes, Mask)) for t in split.train.targets[:1]),
    )
    items = _items(split, None, max_pixels)
    return run_checks(items, ctx, source=source, root=root, started=started)


def check_data(
    source: str | os.PathLike, *, image_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
    near_duplicates: bool = True, val_fraction: float = 0.2, seed: int = 0, allow_outside_root: bool = False,
    class_names: Sequence[str] | None = None, ignore_index: int | None = None,
) -> DataReport:
    """Check a data source (folder of class folders, CSV file or ``tfds:NAME``) without stopping at the first problem.

    Mask sources (``images/`` + ``masks/``, VIA JSON, or ``train/`` ``val/`` of
    them) are detected and their masks checked too (``transfer.data.masks``);
    ``class_names`` and ``ignore_index`` are theirs (see ``read_masks``).

    Layout problems (an empty class folder, a bad CSV line) become findings
    instead of errors, so one run lists everything. Raises TransferError only
    when ``source`` does not exist or cannot be read at all.

    Example:
        >>> report = check_data("flowers/", image_size=128)
        >>> [f.path for f in report.findings if f.action == "skip"]
        ['flowers/rose/broken.jpg']
    """
    from transfer.data import TFDS_PREFIX, load_data

    started = time.perf_counter()
    text = os.fspath(source)
    size = int(image_size or DEFAULT_IMAGE_SIZE)
    if text.startswith(TFDS_PREFIX):
        split = load_data(text, val_fraction=val_fraction, seed=seed)
        report = check_split(split, image_size=size, max_pixels=max_pixels, near_duplicates=near_duplicates,
                             source=text, split_given=not split.origin.startswith("stratified"))
        report.seconds = time.perf_counter() - started
        return report
    path = Path(text)
    from transfer.data.boxes import box_format
    from transfer.data.boxes.check_source import list_box_source
    from transfer.data.masks.check_source import coco_mask_findings, is_mask_source, list_mask_source

    annotated = True  # box and mask targets reach the checks as class sets: the context says what they are
    if is_mask_source(path):  # mask files or VIA polygons (before class folders: camvid/train/ has two folders)
        split, samples, extra, root, given = list_mask_source(
            path, val_fraction, seed, allow_outside_root, class_names=class_names, ignore_index=ignore_index)
    elif box_format(path) is not None:  # a VOC folder, box CSV or COCO JSON: every box is judged too
        split, samples, extra, root, given = list_box_source(path, val_fraction, seed, allow_outside_root)
        extra = list(extra) + coco_mask_findings(path, allow_outside_root)  # a COCO file's segmentation too
    elif text.lower().endswith(".csv") and path.is_file():
        annotated = False
        split, samples, extra, root, given = _list_csv_source(path, val_fraction, seed, allow_outside_root)
    elif path.is_dir():
        annotated = False
        split, samples, extra, root, given = _list_folder_source(path, val_fraction, seed)
    elif not_regular(path) is not None:  # a FIFO, socket or device: never opened (a FIFO would block forever)
        raise TransferError(f"Data source '{text}' is {not_regular(path)}, not a regular file; it was not read.",
                            fix="Pass the data folder or annotation file itself.")
    elif path.exists():
        raise TransferError(f"Data source '{text}' is a file but not a .csv file.",
                            fix="Pass a folder with one subfolder per class, or a .csv file with path,label columns.")
    else:
        raise TransferError(f"Data source not found: '{text}'.",
                            fix="Pass a folder with one subfolder per class, or a .csv file with path,label columns.")
    names = (split.train if split is not None else samples).class_names
    multi = (split.train if split is not None else samples).multi_label
    ctx = CheckContext(names, multi, size, max_pixels, near_duplicates, split_given=given, annotated=annotated)
    items = _items(split, samples, max_pixels)
    return run_checks(items, ctx, extra=extra, source=text, root=root, started=started)


def _seeded_split(samples: Samples, val_fraction: float, seed: int) -> DataSplit | None:
    from transfer.data.split import stratified_split

    try:
        return stratified_split(samples, val_fraction=val_fraction, seed=seed)
    except TransferError:
        return None  # too few images to split: checked as one set


def _list_csv_source(path: Path, val_fraction: float, seed: int, allow_outside_root: bool):
    from transfer.data.sources.csvfile import list_csv

    listing = list_csv(path, allow_outside_root=allow_outside_root)
    samples = listing.samples()
    split = None
    if listing.has_split:
        train = tuple(r for r in listing.rows if r.split == "train")
        val = tuple(r for r in listing.rows if r.split == "val")
        split = DataSplit(listing.samples(train), listing.samples(val), origin="CSV split column")
    elif samples.num_classes:
        split = _seeded_split(samples, val_fraction, seed)
    extra = list(listing.findings)
    if not listing.multi_label and 0 < samples.num_classes < 2:
        extra.append(finding(str(path), "csv_format", f"only 1 class ('{samples.class_names[0]}'); "
                                                       "classification needs at least 2", action="stop"))
    return split, (None if split is not None else samples), extra, str(path.parent), listing.has_split


def _list_folder_source(root: Path, val_fraction: float, seed: int):
    from transfer.data.sources.folder import _split_dirs, list_class_folders

    extra: list[Finding] = []
    try:
        dirs = _split_dirs(root)
    except TransferError as e:
        extra.append(finding(str(root), "layout", e.message))
        dirs = None
    if dirs is not None:
        train_listing, val_listing = list_class_folders(dirs[0]), list_class_folders(dirs[1])
        extra += train_listing.findings + val_listing.findings
        train_names = [n for n, _ in train_listing.classes]
        val_names = [n for n, _ in val_listing.classes]
        if train_names != val_names:
            extra.append(finding(
                str(root), "layout", f"the class folders of '{dirs[0].name}/' and '{dirs[1].name}/' differ: only in "
                f"train: {sorted(set(train_names) - set(val_names)) or 'none'}; only in val: "
                f"{sorted(set(val_names) - set(train_names)) or 'none'}",
            ))
        names = tuple(sorted(set(train_names) | set(val_names)))

        def samples_of(listing) -> Samples:
            pairs = [(p, names.index(n)) for n, paths in listing.classes for p in paths]
            return Samples(tuple(p for p, _ in pairs), tuple(t for _, t in pairs), names)

        split = DataSplit(samples_of(train_listing), samples_of(val_listing), origin="folders")
        _class_count_findings(root, names, extra)
        return split, None, extra, str(root), True
    base = root / "train" if (root / "train").is_dir() else root
    listing = list_class_folders(base)
    extra += listing.findings
    if not listing.classes:
        extra.append(finding(str(base), "layout", f"no class subfolders in '{base}'; put each class's images in "
                                                  "its own subfolder"))
    _class_count_findings(base, tuple(n for n, _ in listing.classes), extra)
    samples = listing.samples()
    split = _seeded_split(samples, val_fraction, seed) if samples.num_classes else None
    return split, (None if split is not None else samples), extra, str(root), False


def _class_count_findings(root: Path, names: Sequence[str], extra: list[Finding]) -> None:
    if len(names) == 1:
        extra.append(finding(str(root), "layout", f"only 1 class folder ('{names[0]}'); classification needs "
                                                  "at least 2"))
