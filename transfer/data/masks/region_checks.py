"""Every region of a VIA or COCO file judged against the real image: drawn, clipped or dropped, and why.

The readers (``via``, ``coco``) only parse: each image becomes a
``RegionImage`` (its path, the annotation file, the size the file claims and
its raw ``Region``s with class names). ``check_regions`` then reads each
image's real size from its header, drops images that cannot be read or
whose claimed size differs (``mask_size_mismatch``: their polygons would be
pixels of another image), and judges every region: an unknown class, fewer
than 3 points, no area or no part inside the image drops it
(``mask_region_dropped``), reaching outside clips it (``mask_region_clipped``),
an RLE must cover exactly the image. An image keeps its place when all its
regions are dropped (all background), so dropping a region never changes
which images exist.

Classes: index 0 is ``background`` (pixels no region covers), then the object
classes: ``class_names`` when given (a validation file read with training's
names), else the sorted names of the regions.

Example:
    >>> samples, findings = check_regions(read_via_json("balloon/train/via_region_data.json"))
    >>> samples.class_names
    ('background', 'balloon')
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from transfer.data.findings import Finding, finding
from transfer.data.masks.decode import check_rle, decode_rle
from transfer.data.masks.regions import judge_polygon
from transfer.data.masks.sizes import header_size
from transfer.data.masks.values import with_background
from transfer.data.samples import Mask, Samples
from transfer.core.errors import TransferError
from transfer.core.orientation import (
    DESCRIPTIONS, annotation_frame, displayed_size, exif_orientation, mask_to_stored, points_to_stored,
)


@dataclass(frozen=True)
class Region:
    """One region as the file writes it: a flat polygon or a COCO RLE dict, its class name and where it is."""

    label: str
    polygon: tuple[float, ...] | None = None
    rle: Any = None
    where: str = ""


@dataclass(frozen=True)
class RegionImage:
    """One image and its regions as read from an annotation file (nothing judged yet)."""

    image: str
    annotation: str
    claimed_size: tuple[float, float] | None = None
    regions: tuple[Region, ...] = ()


@dataclass(frozen=True)
class RegionFile:
    """What a reader found: the annotated images and the problems of the file itself."""

    images: tuple[RegionImage, ...]
    findings: tuple[Finding, ...] = field(default=())
    root: str = ""


INVALID = "mask_region_invalid"  # an unreadable region: its image is left out


def check_regions(parsed: RegionFile, class_names: Sequence[str] | None = None) -> tuple[Samples, list[Finding]]:
    """Judge every region of ``parsed``; the usable images (sorted by path) with their masks, and every problem."""
    # An unreadable region (garbled numbers, too few of them, a broken RLE) leaves its image out: its
    # mask would call the object background. The finding names the image (what is skipped).
    findings = [_image_finding(f) if f.code == INVALID else f for f in parsed.findings]
    invalid = {_key(f.path) for f in findings if f.code == INVALID}
    names = (with_background(class_names) if class_names is not None else
             with_background(sorted({r.label for i in parsed.images for r in i.regions}) or ["object"]))
    index = {name: i for i, name in enumerate(names)}
    judged: dict[str, Mask] = {}
    seen: set[str] = set()
    for record in parsed.images:
        key = _key(record.image)
        if key in seen:
            findings.append(finding(record.annotation, "mask_annotation", f"'{record.image}' is annotated twice; "
                                    "only its first entry is used", related=record.image, severity="warning",
                                    action="review"))
            continue
        seen.add(key)
        placed = _real_size(record, findings)
        mask = _mask(record, placed, index, findings) if placed is not None else None
        if mask is not None and key not in invalid:  # every region judged, so each problem is named
            judged[record.image] = mask
    sources = tuple(sorted(judged))
    return Samples(sources, tuple(judged[s] for s in sources), names), findings


def _real_size(
    record: RegionImage, findings: list[Finding]
) -> tuple[int, tuple[int, int], tuple[int, int]] | None:
    """``(orientation to map from, (width, height) of the frame the regions are in, stored size)``, or None
    (with a finding). Regions of an EXIF-rotated photo are drawn on it as displayed (``transfer.core.orientation``)."""
    size, problem = header_size(record.image)
    regions = f"its {len(record.regions)} region(s) in '{record.annotation}' are not used"
    if size is None:
        findings.append(finding(record.image, problem[0], f"{problem[1]}; {regions}", related=record.annotation))
        return None
    orientation, frame = exif_orientation(record.image), size
    if orientation != 1:
        turned = f"EXIF orientation {orientation} ({DESCRIPTIONS[orientation]} for display)"
        which = annotation_frame(record.claimed_size, size, orientation)
        if which is None:
            claimed = record.claimed_size
            findings.append(finding(record.image, "exif_unplaced", f"{turned}: '{record.annotation}' states "
                                    f"{claimed[0]:g}x{claimed[1]:g}, neither the displayed "
                                    f"{displayed_size(size, orientation)[0]}x{displayed_size(size, orientation)[1]} "
                                    f"nor the stored {size[0]}x{size[1]} image; {regions}", related=record.annotation))
            return None
        if which == "stored":
            findings.append(finding(record.annotation, "exif_annotation_frame", f"'{record.image}': {turned}, but the "
                                    "annotation states the size as stored: its regions are taken as pixels as "
                                    "stored and used as written", related=record.image))
            orientation = 1
        else:
            frame = displayed_size(size, orientation)
    if record.claimed_size is not None and all(v > 0 for v in record.claimed_size):
        claimed = record.claimed_size
        if abs(claimed[0] - frame[0]) >= 0.5 or abs(claimed[1] - frame[1]) >= 0.5:
            findings.append(finding(record.image, "mask_size_mismatch", f"'{record.annotation}' says "
                                    f"{claimed[0]:g}x{claimed[1]:g} but the image is {frame[0]}x{frame[1]}; {regions}",
                                    related=record.annotation))
            return None
    return orientation, frame, size


def _key(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


def _image_finding(found: Finding) -> Finding:
    """A parse-time ``mask_region_invalid`` of the annotation file, as the finding of the image it leaves out."""
    image = found.related or found.path
    return finding(image, INVALID, f"{os.path.basename(found.path)}: {found.detail}; the image is left out",
                   related=found.path)


def _invalid(record: RegionImage, region: Region, what: str) -> Finding:
    detail = f"{os.path.basename(record.annotation)}: {region.where} ('{region.label}') of '{record.image}' {what}"
    return finding(record.image, INVALID, f"{detail}; the image is left out", related=record.annotation)


def _mask(record: RegionImage, placed, index: dict[str, int], findings: list[Finding]) -> Mask | None:
    """The image's mask from its kept regions; None (its image left out) when a region is unreadable."""
    orientation, (width, height), stored = placed
    unreadable = False
    polygons: list[tuple[int, tuple[float, ...]]] = []
    rles: list[tuple[int, Any]] = []
    order: list[str] = []  # "p"/"r" per kept region: a mix is drawn in file order as RLE

    def note(code: str, region: Region, what: str) -> None:
        action = "not drawn" if code == "mask_region_dropped" else ""
        detail = f"{region.where} ('{region.label}') of '{record.image}' {what}" + (f"; {action}" if action else "")
        findings.append(finding(record.annotation, code, detail, related=record.image))

    for region in record.regions:
        if region.label not in index:
            note("mask_region_dropped", region, "has a class training does not know")
            continue
        if region.rle is not None:
            try:
                check_rle(region.rle, width, height)
            except TransferError as e:
                findings.append(_invalid(record, region, e.message.rstrip(".")))
                unreadable = True
                continue
            rles.append((index[region.label], region.rle))
            order.append("r")
            continue
        if len(region.polygon) % 2:  # an x without its y: a broken annotation, not a small region
            findings.append(_invalid(record, region, f"has {len(region.polygon)} numbers, not x,y pairs"))
            unreadable = True
            continue
        polygon, what = judge_polygon(region.polygon, width, height)
        if polygon is None:
            note("mask_region_dropped", region, what)
            continue
        if what:
            note("mask_region_clipped", region, what)
        polygons.append((index[region.label], polygon))
        order.append("p")
    if unreadable:
        return None
    if orientation != 1:  # judged where they were drawn (as displayed), used where the model looks (as stored)
        polygons = [(label, points_to_stored(coords, orientation, (width, height))) for label, coords in polygons]
        rles = [(label, _rle_to_stored(rle, orientation, width, height)) for label, rle in rles]
        width, height = stored
    if rles and polygons:
        return Mask(width, height, rle=_as_rle(order, polygons, rles, width, height))
    return Mask(width, height, polygons=tuple(polygons), rle=tuple(rles))


def _rle_to_stored(rle: Any, orientation: int, width: int, height: int) -> dict[str, Any]:
    """A checked RLE region of the displayed ``width`` x ``height`` frame, re-encoded in the stored frame."""
    from pycocotools import mask as mask_utils

    turned = mask_to_stored(decode_rle(rle, width, height), orientation)
    encoded = mask_utils.encode(np.asfortranarray(turned))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def _as_rle(order, polygons, rles, width, height) -> tuple[tuple[int, Any], ...]:
    """Polygons and RLE regions of one image as RLE regions, in file order (pycocotools rasterizes the polygons)."""
    from pycocotools import mask as mask_utils

    polygon_iter, rle_iter, out = iter(polygons), iter(rles), []
    for kind in order:
        if kind == "r":
            out.append(next(rle_iter))
            continue
        label, coords = next(polygon_iter)
        encoded = mask_utils.frPyObjects([list(coords)], height, width)[0]
        out.append((label, {"size": [height, width], "counts": encoded["counts"].decode("ascii")}))
    return tuple(out)
