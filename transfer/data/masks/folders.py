"""Mask files beside their images: ``images/`` + ``masks/`` (or the classic ``image/`` + ``label/``).

An image pairs with the mask of the same file stem (``images/a.jpg`` with
``masks/a.png``); any image extension, masks ``.png`` (preferred), ``.bmp``,
``.gif``, or ``.jpg``/``.jpeg`` (read with ``threshold=True``: each pixel snaps
to the nearest class value, and a ``mask_jpeg`` warning says so). Both folders
are read flat (no subfolders). Sizes come from the file headers; then every
mask is decoded once (``values.scan_masks``) to learn the classes, find
values no class has and masks with nothing but the ignored value.

Every problem names its file: an image without a mask and a mask whose size
is not its image's leave the pair out (``mask_missing``,
``mask_size_mismatch``), as does a FIFO, socket or device in either folder
(``not_regular_file``: never opened) and a mask that is all ignored
(``mask_all_ignored``); a mask without an image is listed (``mask_orphan``).

Example:
    >>> samples, findings = read_mask_folder("membrane/train")
    >>> len(samples), samples.class_names, samples.targets[0].values
    (30, ('background', 'foreground'), ((0, 0), (255, 1)))
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from transfer.data.findings import Finding, finding
from transfer.data.sources.folder import _ignored, is_image_file
from transfer.data.masks.decode import LOSSY_EXTENSIONS
from transfer.data.masks.sizes import header_size
from transfer.data.masks.values import (
    choose_values, find_classes_file, judge_scanned, scan_error_findings, scan_masks,
)
from transfer.data.samples import Mask, Samples
from transfer.core.errors import TransferError
from transfer.core.orientation import DESCRIPTIONS, displayed_size, exif_orientation

# (images folder, masks folder) names, in order of preference; matched case-insensitively.
LAYOUTS = (("images", "masks"), ("image", "label"))
MASK_EXTENSIONS = (".png", ".bmp", ".gif", ".jpg", ".jpeg")  # preference order: lossless first
_LISTED = 5


@dataclass(frozen=True)
class MaskFolder:
    """Where a folder source keeps its images and masks."""

    root: Path
    images: Path
    masks: Path


def find_mask_folder(folder: str | os.PathLike) -> MaskFolder | None:
    """The images and masks subfolders of ``folder`` (see ``LAYOUTS``), or None.

    Example:
        >>> find_mask_folder("membrane/train").masks.name
        'label'
    """
    root = Path(folder)
    try:
        children = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    except OSError:
        return None
    for images, masks in LAYOUTS:
        if images in children and masks in children:
            return MaskFolder(root, children[images], children[masks])
    return None


def _files(folder: Path, findings: list[Finding], accept) -> list[Path]:
    """The files of ``folder`` that ``accept`` takes, sorted; an ``ignored_file`` finding for the others."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise TransferError(f"{folder}: cannot be listed ({e.strerror or e}).",
                            fix="Check the folder's permissions.") from None
    kept = []
    for path in entries:
        if _ignored(path.name) or path.is_dir():
            continue
        if accept(path.name):
            kept.append(path)
        else:
            findings.append(finding(str(path), "ignored_file", f"not an image file in '{folder.name}/'; not read"))
    return kept


def read_mask_folder(
    folder: str | os.PathLike, *, class_names: Sequence[str] | None = None, ignore_index: int | None = None,
    values: tuple[tuple[int, int], ...] | None = None,
) -> tuple[Samples, list[Finding]]:
    """The image/mask pairs of a folder source, sorted by image path, and every problem.

    ``values`` (with ``class_names``) fixes the value table (a validation
    folder read with training's); otherwise ``transfer.data.masks.values``
    chooses it. Raises TransferError when ``folder`` has no such layout or its
    classes cannot be read.
    """
    layout = find_mask_folder(folder)
    if layout is None:
        raise TransferError(f"{folder}: no images/ + masks/ (or image/ + label/) subfolders.",
                            fix="Put the images in FOLDER/images/ and their masks (same names, .png) in "
                                "FOLDER/masks/.")
    findings: list[Finding] = []
    images = _files(layout.images, findings, is_image_file)
    mask_files = _files(layout.masks, findings, lambda n: n.lower().endswith(MASK_EXTENSIONS))
    masks = _masks_by_stem(mask_files, findings)

    pairs: list[tuple[str, Mask]] = []
    seen: dict[str, Path] = {}
    lossy: list[str] = []
    for image in images:
        if image.stem in seen:
            findings.append(finding(str(image), "mask_missing", f"'{seen[image.stem].name}' has the same name stem "
                                    "and takes the mask; rename one of the two images"))
            continue
        seen[image.stem] = image
        mask = masks.get(image.stem)
        if mask is None:
            findings.append(finding(str(image), "mask_missing",
                                    f"no mask '{image.stem}.png' (or .jpg) in '{layout.masks}'"))
            continue
        target = _pair(image, mask, findings)
        if target is not None:
            pairs.append((str(image), target))
            if target.threshold:
                lossy.append(str(mask))
    for stem, mask in sorted(masks.items()):
        if stem not in seen:
            findings.append(finding(str(mask), "mask_orphan", f"no image '{stem}.*' in '{layout.images}'"))
    if lossy:
        shown = ", ".join(Path(p).name for p in lossy[:_LISTED]) + (", ..." if len(lossy) > _LISTED else "")
        findings.append(finding(str(layout.masks), "mask_jpeg", f"{len(lossy)} JPEG mask(s) ({shown}) are "
                                "thresholded: each pixel snaps to the nearest class value"))
    return _with_values(pairs, layout, findings, class_names, ignore_index, values)


def _masks_by_stem(mask_files: list[Path], findings: list[Finding]) -> dict[str, Path]:
    """One mask per stem: a lossless one before a JPEG (the others are listed as not used)."""
    masks: dict[str, Path] = {}
    rank = {ext: i for i, ext in enumerate(MASK_EXTENSIONS)}
    for path in sorted(mask_files, key=lambda p: (p.stem, rank[p.suffix.lower()], p.name)):
        if path.stem in masks:
            findings.append(finding(str(path), "mask_orphan", f"'{masks[path.stem].name}' of the same name is the "
                                    "mask used"))
            continue
        masks[path.stem] = path
    return masks


def _pair(image: Path, mask: Path, findings: list[Finding]) -> Mask | None:
    """The image's ``Mask`` (values still unset), or None with a finding when the pair is unusable."""
    size, problem = header_size(str(image))
    if size is None:
        code, what = problem
        findings.append(finding(str(image), code, f"{what}; its mask '{mask.name}' is not used", related=str(mask)))
        return None
    mask_size, problem = header_size(str(mask))
    if mask_size is None:
        code = "not_regular_file" if problem[0] == "not_regular_file" else "mask_unreadable"
        findings.append(finding(str(mask), code, f"{problem[1]}; its image '{image.name}' is not used",
                                related=str(image)))
        return None
    # A mask drawn on an EXIF-rotated photo as displayed has the displayed size (for orientations 2-4 and
    # square photos the stored one too: taken as displayed) and is turned to the stored pixels when read.
    orientation = exif_orientation(str(image))
    shown = displayed_size(size, orientation)
    if mask_size != shown and mask_size == size:  # a tool that ignored the EXIF tag: used as it is
        findings.append(finding(str(mask), "exif_annotation_frame", f"its image '{image.name}' has EXIF "
                                f"orientation {orientation} ({DESCRIPTIONS[orientation]} for display), but the mask "
                                "has the size as stored: it is taken as pixels as stored and used as it is",
                                related=str(image)))
        orientation, shown = 1, size
    if mask_size != shown:
        frames = f" as displayed ({size[0]}x{size[1]} as stored)" if orientation != 1 else ""
        findings.append(finding(str(mask), "mask_size_mismatch", f"the mask is {mask_size[0]}x{mask_size[1]} but "
                                f"its image '{image}' is {shown[0]}x{shown[1]}{frames}; the pair is not used",
                                related=str(image)))
        return None
    return Mask(width=size[0], height=size[1], path=str(mask), threshold=mask.suffix.lower() in LOSSY_EXTENSIONS,
                orientation=orientation)


def _with_values(pairs, layout: MaskFolder, findings: list[Finding], class_names, ignore_index, values):
    """Samples whose masks carry the chosen value table; masks that fail or hold nothing labelled are left out.

    Every mask is scanned (not a sample of them): a value no class has, in
    any mask, is found here rather than in training's first epoch.
    """
    scan = scan_masks([(mask, source) for source, mask in pairs])
    if values is None:
        names_file = None if class_names is not None else find_classes_file(
            [layout.masks, layout.root, layout.root.parent])
        class_names, values, found = choose_values(scan, class_names=class_names, names_file=names_file,
                                                   ignore_index=ignore_index, where=str(layout.masks))
        findings += found
    sources = {mask.path: source for source, mask in pairs}
    findings += scan_error_findings(scan, sources)
    judged, dropped = judge_scanned(scan, values, sources)
    findings += judged
    kept = [(source, replace(mask, values=values)) for source, mask in pairs
            if mask.path not in scan.errors and mask.path not in dropped]
    return Samples(tuple(s for s, _ in kept), tuple(m for _, m in kept), tuple(class_names)), findings
