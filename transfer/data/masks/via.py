"""VGG Image Annotator (VIA 1.x/2.x) JSON: polygons per image, e.g. ``via_region_data.json``.

The file is an object of entries (VIA 1.x and 2.x "export annotations"), or a
2.x project whose entries sit under ``_via_img_metadata``; each entry names
its image (``filename``, relative to the JSON file's folder or an
``images/`` folder beside it) and its ``regions`` (an object of regions in
1.x, a list in 2.x). A region's ``shape_attributes`` is a polygon (or
polyline: ``all_points_x``/``all_points_y``), a rect, a circle or an ellipse;
other shapes (points) are dropped with a finding.

The class of a region is the value of its class attribute in
``region_attributes``: the first of ``class``, ``label``, ``name``, ``type``,
``category``, ``object`` that the regions use, or the only attribute they
use (a checkbox attribute counts when exactly one box is ticked). Without
any (the balloon set), every region has one class: the one name of
``class_names`` when given, else the name of the JSON file's folder (its
parent's when that folder is a split such as ``train/``: ``balloon``).

Anything that is not such a file raises TransferError naming the file; a bad
entry is a ``mask_annotation`` finding (which stops training), an image path
outside the file's folder ``mask_outside_root`` (unless allowed).

Example:
    >>> parsed = read_via_json("balloon/train/via_region_data.json")
    >>> len(parsed.images), parsed.images[0].regions[0].label
    (61, 'balloon')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from transfer.data.boxes.image_paths import outside_root, resolve_image
from transfer.data.findings import Finding, finding
from transfer.data.sources.folder import is_image_file
from transfer.data.masks.jsonfile import load_json
from transfer.data.masks.region_checks import Region, RegionFile, RegionImage
from transfer.data.masks.regions import GarbledNumbers, shape_polygon
from transfer.core.errors import TransferError

DEFAULT_NAME = "via_region_data.json"
CLASS_ATTRIBUTES = ("class", "label", "name", "type", "category", "object")
SPLIT_FOLDERS = ("train", "training", "val", "valid", "validation", "test", "testing")
_FIX = ("Export the annotations from VGG Image Annotator 1.x or 2.x as JSON (an object of entries with "
        "'filename' and 'regions'), or save the VIA 2 project.")


def is_via_document(document: Any) -> bool:
    """Whether a parsed JSON document looks like VIA 1.x/2.x annotations."""
    if not isinstance(document, dict):
        return False
    if "_via_img_metadata" in document:
        return True
    entries = [v for v in document.values() if isinstance(v, dict)]
    return bool(entries) and all("filename" in v and "regions" in v for v in entries[:20])


def read_via_json(
    json_path: str | os.PathLike, *, class_names: Sequence[str] | None = None, allow_outside_root: bool = False
) -> RegionFile:
    """The images and raw regions of a VIA JSON file, with a finding for every bad entry or region."""
    json_path = Path(json_path)
    document = load_json(json_path, what="VIA annotation", fix=_FIX)
    entries = _entries(json_path, document)
    base = json_path.parent
    findings: list[Finding] = []

    def bad(detail: str, code: str = "mask_annotation", **kw) -> None:
        findings.append(finding(str(json_path), code, detail, **kw))

    attribute = _class_attribute(entries)
    single = _single_class(json_path, class_names) if attribute is None else None
    records, listed = [], set()
    for key, entry in entries:
        where = f"entry {str(key)[:60]!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str) or not entry["filename"].strip():
            bad(f"{where} needs a 'filename' string; it is not used")
            continue
        regions = entry.get("regions", [])
        if isinstance(regions, dict):
            regions = list(regions.values())
        if not isinstance(regions, list):
            bad(f"{where}: 'regions' must be an object or a list, not a {type(regions).__name__}; not used")
            continue
        if "\0" in entry["filename"]:
            bad(f"{where}: filename {entry['filename'][:200]!r} holds a NUL byte (\\0), which no file name can "
                "hold; it is not used")
            continue
        path = resolve_image(base, entry["filename"].strip())
        if outside_root(base, path, allow_outside_root):
            bad(f"{where}: '{entry['filename'][:200]}' points outside the JSON file's folder '{base}'; it is not "
                "read", code="mask_outside_root", related=path)
            continue
        listed.add(os.path.normcase(os.path.abspath(path)))
        kept = [r for r in (_region(r, i, attribute, single, where, bad, path) for i, r in enumerate(regions)) if r]
        records.append(RegionImage(path, str(json_path), None, tuple(kept)))
    for folder in (base, base / "images"):
        for name in sorted(os.listdir(folder)) if folder.is_dir() else ():
            path = folder / name
            if is_image_file(name) and os.path.normcase(os.path.abspath(path)) not in listed:
                findings.append(finding(str(path), "mask_unannotated", f"'{json_path.name}' has no entry for it"))
    return RegionFile(tuple(records), tuple(findings), root=str(base))


def _entries(json_path: Path, document: Any) -> list[tuple[Any, Any]]:
    if isinstance(document, dict) and "_via_img_metadata" in document:
        document = document["_via_img_metadata"]
        if not isinstance(document, dict):
            raise TransferError(f"{json_path}: '_via_img_metadata' must be an object of image entries; it is a "
                                f"{type(document).__name__}.", fix=_FIX)
    if isinstance(document, list):
        return list(enumerate(document))
    if not isinstance(document, dict):
        raise TransferError(f"{json_path}: the top level is a JSON {type(document).__name__}, expected an object "
                            "of image entries.", fix=_FIX)
    if {"project", "file", "metadata"} <= set(document):
        raise TransferError(f"{json_path}: a VIA 3 project, which is not read.",
                            fix="Export it from VIA 3 as COCO JSON, or annotate with VIA 2.")
    return list(document.items())


def _regions_of(entries) -> list[dict]:
    out = []
    for _, entry in entries:
        regions = entry.get("regions") if isinstance(entry, dict) else None
        if isinstance(regions, dict):
            regions = list(regions.values())
        if isinstance(regions, list):
            out += [r for r in regions if isinstance(r, dict)]
    return out


def _class_attribute(entries) -> str | None:
    """The region attribute that names classes (see the module docstring), or None."""
    used = set()
    for region in _regions_of(entries):
        attributes = region.get("region_attributes")
        if isinstance(attributes, dict):
            used |= {k for k, v in attributes.items() if isinstance(k, str) and _label(v) is not None}
    for key in CLASS_ATTRIBUTES:
        match = [k for k in sorted(used) if k.lower() == key]
        if match:
            return match[0]
    return next(iter(used)) if len(used) == 1 else None


def _label(value: Any) -> str | None:
    """A class name from an attribute value: a non-empty string, or the one ticked key of a checkbox dict."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, dict):
        ticked = [k for k, v in value.items() if v is True and isinstance(k, str) and k.strip()]
        return ticked[0].strip() if len(ticked) == 1 else None
    return None


def _single_class(json_path: Path, class_names: Sequence[str] | None) -> str:
    """The one class of regions without a class attribute."""
    if class_names is not None:
        objects = [n for n in class_names if str(n).strip().lower() != "background"]
        if len(objects) != 1:
            raise TransferError(f"{json_path}: its regions name no class (no class attribute in region_attributes), "
                                f"so they can only be one class; class_names gives {len(objects)}: {list(objects)}.",
                                fix="Give one class name, or add a 'class' region attribute in VIA.")
        return str(objects[0]).strip()
    folder = json_path.resolve().parent
    if folder.name.lower() in SPLIT_FOLDERS:
        folder = folder.parent
    return folder.name or "object"


def _region(region: Any, i: int, attribute: str | None, single: str | None, where: str, bad, image: str):
    """The ``Region`` of ``regions[i]``, or None with a finding."""
    here = f"region {i}"
    if not isinstance(region, dict) or not isinstance(region.get("shape_attributes"), dict):
        bad(f"{where}: {here} needs a 'shape_attributes' object; it is not used", related=image)
        return None
    if attribute is None:
        label = single
    else:
        attributes = region.get("region_attributes")
        label = _label(attributes.get(attribute)) if isinstance(attributes, dict) else None
        if label is None:
            bad(f"{where}: {here} of '{image}' has no class in its '{attribute}' attribute; not drawn",
                code="mask_region_dropped", related=image)
            return None
    try:
        polygon = shape_polygon(region["shape_attributes"])
    except GarbledNumbers as e:  # the image's mask would miss the object: left out (check_regions)
        bad(f"{where}: {here} ('{label}') of '{image}': {e}", code="mask_region_invalid", related=image)
        return None
    except ValueError as e:  # a shape that is no region (a point): that region alone is not drawn
        bad(f"{where}: {here} ('{label}') of '{image}': {e}; not drawn", code="mask_region_dropped", related=image)
        return None
    return Region(label, polygon=polygon, where=f"{where} {here}")
