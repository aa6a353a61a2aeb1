"""COCO JSON segmentation: each annotation's ``segmentation`` as polygons or RLE, classes from ``categories``.

The same file the box reader reads (``transfer.data.boxes.coco``), seen for
its pixels: ``segmentation`` is a list of polygons (``[x0, y0, x1, y1, ...]``,
each one region) or an RLE dict (``counts`` a list of run lengths, as crowd
regions write it, or COCO's compressed string). Crowd regions
(``iscrowd: 1``) are pixels of their class too: a semantic mask has no
instances to tell apart. Images without annotations are all background.
Classes are ``background`` then the category names in id order (two ids
with one name are one class).

The file must be an object with an ``images`` list, a ``categories`` list and
(optionally) an ``annotations`` list; anything else raises TransferError
naming the file. A bad entry is a ``mask_annotation`` finding (training
stops), a bad region a ``mask_region_dropped`` one.

Example:
    >>> parsed = read_coco_masks("shapes/annotations.json")
    >>> parsed.images[0].regions[0].label, parsed.class_order
    ('square', ('square', 'circle'))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transfer.data.boxes.image_paths import outside_root, resolve_image
from transfer.data.findings import Finding, finding
from transfer.data.masks.jsonfile import load_json
from transfer.data.masks.region_checks import Region, RegionFile, RegionImage
from transfer.data.masks.regions import MAX_COORDINATE, numbers, shown
from transfer.core.errors import TransferError

_FIX = "Write a COCO object {\"images\": [...], \"annotations\": [...], \"categories\": [...]} (e.g. export it again)."
_IDS = (int, str)


@dataclass(frozen=True)
class CocoRegions(RegionFile):
    """A COCO file's regions, its category names in id order (the class order) and how many
    annotations hold a ``segmentation`` (0: a box-only file)."""

    class_order: tuple[str, ...] = ()
    segmented: int = 0


def is_coco_document(document: Any) -> bool:
    """Whether a parsed JSON document looks like COCO (``images`` and ``categories`` lists)."""
    return isinstance(document, dict) and isinstance(document.get("images"), list) and isinstance(
        document.get("categories"), list)


def _id(value: Any) -> bool:
    return isinstance(value, _IDS) and not isinstance(value, bool)


def read_coco_masks(json_path: str | os.PathLike, *, allow_outside_root: bool = False) -> CocoRegions:
    """The images and raw regions of a COCO JSON file, with a finding for every bad entry or region."""
    json_path = Path(json_path)
    document = load_json(json_path, what="COCO JSON", fix=_FIX)
    if not is_coco_document(document) or not isinstance(document.get("annotations", []), list):
        found = type(document).__name__ if not isinstance(document, dict) else "an object without them"
        raise TransferError(f"{json_path}: expected an object with 'images' and 'categories' lists (and an "
                            f"'annotations' list); it is {found}.", fix=_FIX)
    base = json_path.parent
    findings: list[Finding] = []

    def bad(detail: str, code: str = "mask_annotation", **kw) -> None:
        findings.append(finding(str(json_path), code, detail, **kw))

    categories: dict[Any, str] = {}
    for i, entry in enumerate(document["categories"]):
        if not isinstance(entry, dict) or not _id(entry.get("id")) or not isinstance(entry.get("name"), str) \
                or not entry["name"].strip():
            bad(f"categories[{i}] needs an 'id' (a number or string) and a 'name' string; it is not used")
            continue
        categories[entry["id"]] = entry["name"].strip()
    order = tuple(dict.fromkeys(categories[k] for k in sorted(categories, key=lambda k: (isinstance(k, str), k))))

    images: dict[Any, dict | None] = {}
    for i, entry in enumerate(document["images"]):
        where = f"images[{i}]"
        if not isinstance(entry, dict) or not _id(entry.get("id")) or not isinstance(entry.get("file_name"), str) \
                or not entry["file_name"].strip():
            bad(f"{where} needs an 'id' (a number or string) and a 'file_name' string; it is not used")
            continue
        if entry["id"] in images:
            bad(f"{where}: id {entry['id']!r} is used twice; the second image is not used")
            continue
        if "\0" in entry["file_name"]:
            bad(f"{where} (id {entry['id']!r}): file_name {entry['file_name'][:200]!r} holds a NUL byte (\\0), "
                "which no file name can hold; it is not used")
            images[entry["id"]] = None  # known, so its annotations are not reported as orphans
            continue
        path = resolve_image(base, entry["file_name"].strip())
        if outside_root(base, path, allow_outside_root):
            bad(f"{where}: '{entry['file_name'][:200]}' points outside the JSON file's folder '{base}'; it is not "
                "read", code="mask_outside_root", related=path)
            images[entry["id"]] = None  # known, so its annotations are not reported as orphans
            continue
        images[entry["id"]] = {"path": path, "size": _claimed(entry), "regions": []}

    for i, entry in enumerate(document.get("annotations") or ()):
        where = f"annotations[{i}]"
        if not isinstance(entry, dict):
            bad(f"{where} is a {type(entry).__name__}, not an object; it is not used")
            continue
        image_id, category_id = entry.get("image_id"), entry.get("category_id")
        if not _id(image_id) or image_id not in images:
            bad(f"{where}: image_id {shown(image_id)} is not the id of an entry of images; not used")
            continue
        image = images[image_id]
        if image is None:
            continue  # its image was refused (outside the root): reported there
        if not _id(category_id) or category_id not in categories:
            bad(f"{where}: category_id {shown(category_id)} is not the id of an entry of categories; not used",
                related=image["path"])
            continue
        image["regions"] += _regions(entry.get("segmentation"), where, categories[category_id], image["path"], bad)

    records = tuple(RegionImage(image["path"], str(json_path), image["size"], tuple(image["regions"]))
                    for image in images.values() if image is not None)
    segmented = sum(isinstance(a, dict) and bool(a.get("segmentation")) for a in document.get("annotations") or ())
    return CocoRegions(records, tuple(findings), root=str(base), class_order=order, segmented=segmented)


def _claimed(entry: dict) -> tuple[float, float] | None:
    width, height = entry.get("width"), entry.get("height")
    # Up to MAX_COORDINATE: a 400-digit integer would overflow float() (the box reader reports it).
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= MAX_COORDINATE
           for v in (width, height)):
        return float(width), float(height)
    return None  # no (or no usable) size stated: the real one is used


def _regions(segmentation: Any, where: str, label: str, image: str, bad) -> list[Region]:
    if isinstance(segmentation, dict):
        return [Region(label, rle=segmentation, where=where)]
    if not isinstance(segmentation, list) or not segmentation:
        what = "has no segmentation (only a box?)" if not segmentation else \
            f"has a segmentation of type {type(segmentation).__name__}"
        bad(f"{where} ('{label}') of '{image}' {what}; not drawn", code="mask_region_dropped", related=image)
        return []
    out = []
    for k, polygon in enumerate(segmentation):
        try:
            out.append(Region(label, polygon=tuple(numbers(polygon, "a polygon")), where=f"{where} polygon {k}"))
        except ValueError as e:  # garbled numbers: the image's mask would miss the object (check_regions)
            bad(f"{where} polygon {k} ('{label}') of '{image}': {e}", code="mask_region_invalid", related=image)
    return out
