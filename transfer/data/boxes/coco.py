"""COCO JSON box annotations: ``images``, ``annotations`` (``bbox`` = ``[x, y, width, height]``) and ``categories``.

Each entry of ``images`` is one image (``file_name`` relative to the JSON
file's folder or to an ``images/`` folder beside it; ``width``/``height`` are
what the file claims, checked against the real image). Images without
annotations are kept as background images (no boxes). Boxes become
``(x, y, x + width, y + height)``; crowd regions (``iscrowd: 1``) are not
single objects: they are kept as ignore regions (``RawBox.ignore``), not
trained on, and passed to COCOeval as crowds, as COCO's own evaluation does. Categories are matched by ``id`` and named by ``name`` (two ids with
one name are one class).

The file must be an object with an ``images`` list, a ``categories`` list and
(optionally) an ``annotations`` list: anything else, JSON nested too deeply
for the parser, or a file that is not JSON raises TransferError naming the
file. A bad entry (a wrong type, an unknown image or category id) is a
``box_annotation`` finding naming the entry, which stops training.

Example:
    >>> annotations = read_coco_json("shapes/annotations.json")
    >>> annotations.images[0].boxes[0].xyxy
    (10.0, 12.0, 30.0, 40.0)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from transfer.data.boxes.image_paths import outside_root, resolve_image
from transfer.data.boxes.records import (
    AnnotatedImage, Annotations, RawBox, over_cap, read_annotation_file,
)
from transfer.data.findings import Finding, finding
from transfer.core.errors import TransferError

_FIX = "Write a COCO object {\"images\": [...], \"annotations\": [...], \"categories\": [...]} (e.g. export it again)."
_IDS = (int, str)  # JSON ids are numbers or strings; floats and booleans are not ids


def read_coco_json(json_path: str | os.PathLike, *, allow_outside_root: bool = False) -> Annotations:
    """The annotated images of a COCO JSON file, with a finding for every bad entry.

    Example:
        >>> read_coco_json("data/annotations.json").root
        'data'
    """
    json_path = Path(json_path)
    document = _load(json_path)
    base = json_path.parent
    findings: list[Finding] = []

    def bad(detail: str, related: str | None = None, code: str = "box_annotation", **kw) -> None:
        findings.append(finding(str(json_path), code, detail, related=related, **kw))

    categories = _categories(document["categories"], bad)
    images: dict[Any, dict] = {}
    for i, entry in enumerate(document["images"]):
        where = f"images[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), _IDS) or isinstance(entry["id"], bool):
            bad(f"{where} needs an 'id' (a number or string); it is not used")
            continue
        name = entry.get("file_name")
        if not isinstance(name, str) or not name.strip():
            bad(f"{where} (id {entry['id']!r}) needs a 'file_name' string; it is not used")
            continue
        if "\0" in name:  # no file can have that name (and os calls raise on it)
            shown = name.replace("\0", "\\0")
            bad(f"{where} (id {entry['id']!r}): file_name '{shown}' holds a NUL byte (\\0); it is not used")
            images.setdefault(entry["id"], None)  # known, so its annotations are not reported as orphans
            continue
        if entry["id"] in images:
            bad(f"{where}: id {entry['id']!r} is used twice; the second image ('{name}') is not used")
            continue
        path = resolve_image(base, name.strip())
        if outside_root(base, path, allow_outside_root):
            bad(f"{where}: '{name}' points outside the JSON file's folder '{base}'; it is not read",
                related=path, code="box_outside_root")
            images[entry["id"]] = None  # known, so its annotations are not reported as orphans
            continue
        images[entry["id"]] = {"path": path, "size": _claimed_size(entry, where, bad), "boxes": []}

    for i, entry in enumerate(document.get("annotations") or ()):
        box = _annotation(entry, i, images, categories, bad)
        if box is not None:
            image_id, raw = box
            images[image_id]["boxes"].append(raw)

    records = []
    for image_id, image in images.items():
        if image is None:
            continue
        too_many = over_cap("MAX_BOXES_PER_IMAGE", len(image["boxes"]), "boxes")
        if too_many:
            bad(f"image id {image_id!r} ('{image['path']}') has {too_many}; the image is not used",
                related=image["path"])
            continue
        records.append(AnnotatedImage(image["path"], str(json_path), image["size"], tuple(image["boxes"])))
    return Annotations(tuple(records), tuple(findings), root=str(base))


def _load(json_path: Path) -> dict:
    def error(message: str) -> TransferError:
        return TransferError(f"{json_path}: {message}", fix=_FIX)

    try:
        document = json.loads(read_annotation_file(json_path, "COCO JSON"))
    except FileNotFoundError:
        raise TransferError(f"{json_path}: COCO JSON file not found.",
                            fix="Pass the path of an existing COCO .json annotation file.") from None
    except IsADirectoryError:
        raise TransferError(f"{json_path}: is a folder, not a COCO JSON file.",
                            fix="Pass the .json annotation file inside it.") from None
    except RecursionError:
        raise error("the JSON is nested too deeply to be an annotation file; it is not read.") from None
    except UnicodeDecodeError as e:
        raise error(f"the file is not UTF-8 JSON (byte {e.start}: {e.reason}).") from None
    except json.JSONDecodeError as e:
        raise error(f"not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}).") from None
    except ValueError as e:  # a number of thousands of digits, which Python refuses to convert
        raise error(f"a value cannot be read ({str(e).split(';')[0]}).") from None
    if not isinstance(document, dict):
        raise error(f"the top level is a JSON {type(document).__name__}, expected an object with images, "
                    "annotations and categories.")
    for key in ("images", "categories", "annotations"):
        value = document.get(key)
        if key != "annotations" or value is not None:
            if not isinstance(value, list):
                found = "missing" if key not in document else f"a {type(value).__name__}"
                raise error(f"'{key}' must be a list; it is {found}.")
    for key in ("images", "annotations"):
        too_many = over_cap("MAX_ANNOTATIONS_PER_FILE", len(document.get(key) or ()), f"entries in '{key}'")
        if too_many:
            raise TransferError(f"{json_path}: {too_many}; it is not read.",
                                fix="Split the file (e.g. one per split or per image folder), or raise the cap.")
    return document


def _categories(entries: list, bad) -> dict[Any, str]:
    names = {}
    for i, entry in enumerate(entries):
        if (not isinstance(entry, dict) or not isinstance(entry.get("id"), _IDS) or isinstance(entry["id"], bool)
                or not isinstance(entry.get("name"), str) or not entry["name"].strip()):
            bad(f"categories[{i}] needs an 'id' (a number or string) and a 'name' string; it is not used")
            continue
        names[entry["id"]] = entry["name"].strip()
    return names


def _number(value: Any) -> float | None:
    """A JSON number as a finite float; None for anything else (strings, booleans, NaN, an integer of
    hundreds of digits that no float holds)."""
    if type(value) not in (int, float):  # not bool (an int subclass), str, list, None, ...
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _shown(value: Any) -> str:
    """A JSON value for a message, cut short (a 400-digit number is named by its first digits)."""
    text = json.dumps(value) if isinstance(value, (list, dict, str, bool, type(None))) else repr(value)[:200]
    return text if len(text) <= 80 else text[:77] + "..."


def _claimed_size(entry: dict, where: str, bad) -> tuple[float, float] | None:
    width, height = entry.get("width"), entry.get("height")
    if width is None and height is None:
        return None
    size = _number(width), _number(height)
    if None in size:
        bad(f"{where}: width and height must be finite numbers (got {_shown(width)}, {_shown(height)}); the real "
            "image size is used")
        return None
    return size


def _annotation(entry: Any, i: int, images: dict, categories: dict, bad) -> tuple[Any, RawBox] | None:
    """``(image id, box)`` of ``annotations[i]``, or None (with a finding when it is bad)."""
    where = f"annotations[{i}]"
    if not isinstance(entry, dict):
        bad(f"{where} is a {type(entry).__name__}, not an object; it is not used")
        return None
    if "id" in entry and isinstance(entry["id"], _IDS):
        where += f" (id {entry['id']!r})"
    image_id, category_id = entry.get("image_id"), entry.get("category_id")
    if not isinstance(image_id, _IDS) or isinstance(image_id, bool) or image_id not in images:
        bad(f"{where}: image_id {image_id!r} is not the id of an entry of images; the box is not used")
        return None
    image = images[image_id]
    if image is None:
        return None  # its image was refused (outside the root): reported there
    if not isinstance(category_id, _IDS) or isinstance(category_id, bool) or category_id not in categories:
        bad(f"{where}: category_id {category_id!r} is not the id of an entry of categories; the box is not used",
            related=image["path"])
        return None
    bbox = entry.get("bbox")
    values = [_number(v) for v in bbox] if isinstance(bbox, list) and len(bbox) == 4 else [None]
    if None in values:
        bad(f"{where}: bbox must be 4 numbers [x, y, width, height], each finite; it is {_shown(bbox)}; "
            "the box is not used", related=image["path"])
        return None
    label = categories[category_id]
    if entry.get("iscrowd"):
        bad(f"{where}: a crowd region of '{label}' in '{image['path']}' is not a single object; kept as an ignore "
            "region (not trained on; a detection on it is not a false positive)", related=image["path"],
            code="box_crowd")
    x, y, w, h = values
    corners = (x, y, x + w, y + h)
    if not (math.isfinite(corners[2]) and math.isfinite(corners[3])):  # 1e308 + 1e308: each finite, the sum not
        bad(f"{where}: bbox {_shown(bbox)} reaches past the largest number; the box is not used",
            related=image["path"])
        return None
    # A crowd region is not one object: kept as an ignore region, as COCO's own evaluation scores it.
    return image_id, RawBox(corners, label, where=where, ignore=bool(entry.get("iscrowd")))
