"""The plain values every box reader hands to the checks: what an annotation file says.

A reader (``voc``, ``csv_boxes``, ``coco``) only parses: it turns its file
format into ``AnnotatedImage`` records (the image path it found, the
annotation file, the size the annotation claims and the raw boxes with their
class names) plus findings about the files themselves. ``box_checks`` then
judges every box against the real image. Keeping the two apart means a new
format is one new reader and no new checks.

Example:
    >>> record = AnnotatedImage(image="data/images/a.jpg", annotation="data/annotations/a.xml",
    ...                         claimed_size=(650, 417), boxes=(RawBox((81, 88, 522, 408), "raccoon"),))
    >>> record.boxes[0].label
    'raccoon'
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from transfer.data.findings import Finding
from transfer.core.errors import TransferError
from transfer.core.regular_files import read_regular

# Caps on what annotations may hold, each raised by the environment variable of its name with a
# ``TRANSFER_`` prefix (``TRANSFER_MAX_BOXES_PER_IMAGE=50000 transfer check-data ...``). A detector here
# trains on at most 100 boxes per image and COCO's largest file has 860k annotations; far more is
# a broken export or a hostile file, refused in words before it costs minutes or gigabytes.
CAPS = {
    "MAX_BOXES_PER_IMAGE": 10_000,
    "MAX_ANNOTATIONS_PER_FILE": 2_000_000,
    "MAX_ANNOTATION_FILE_BYTES": 1 << 30,
}


def cap(name: str) -> int:
    """The cap ``name`` of ``CAPS``, or the positive integer in ``$TRANSFER_<name>`` when set.

    Example:
        >>> cap("MAX_BOXES_PER_IMAGE")
        10000
    """
    variable = f"TRANSFER_{name}"
    text = os.environ.get(variable, "").strip().replace("_", "")
    if not text:
        return CAPS[name]
    if not text.isdigit() or int(text) < 1:
        raise TransferError(f"{variable}={os.environ[variable]!r} is not a positive whole number.",
                            fix=f"Set it to a number such as {CAPS[name]} (the default), or unset it.")
    return int(text)


def read_annotation_file(path: str | os.PathLike, kind: str) -> bytes:
    """The bytes of an annotation file (``kind`` names it: "COCO JSON", "box CSV"), refused in words when it is
    not a regular file (a FIFO would block forever) or is over ``MAX_ANNOTATION_FILE_BYTES``.

    Example:
        >>> len(read_annotation_file("shapes/annotations.json", "COCO JSON")) > 0
        True
    """
    limit = cap("MAX_ANNOTATION_FILE_BYTES")
    data = read_regular(path, max_bytes=limit)
    if len(data) > limit:
        raise TransferError(
            f"{path}: over {limit:,} bytes, too large for a {kind} annotation file; it is not read.",
            fix="Split it into smaller files, or raise the cap with TRANSFER_MAX_ANNOTATION_FILE_BYTES=N if you "
                "trust it.",
        )
    return data


def over_cap(name: str, count: int, what: str) -> str | None:
    """A sentence saying ``count`` is over the cap ``name`` and how to raise it; None within it.

    Example:
        >>> over_cap("MAX_BOXES_PER_IMAGE", 172_000, "objects")
        '172,000 objects, over the cap of 10,000 per image (raise it with TRANSFER_MAX_BOXES_PER_IMAGE=N)'
    """
    limit = cap(name)
    if count <= limit:
        return None
    per = {"MAX_BOXES_PER_IMAGE": " per image", "MAX_ANNOTATIONS_PER_FILE": " per file"}.get(name, "")
    return f"{count:,} {what}, over the cap of {limit:,}{per} (raise it with TRANSFER_{name}=N)"


@dataclass(frozen=True)
class RawBox:
    """One box as the annotation writes it: ``(xmin, ymin, xmax, ymax)`` in the annotation's pixels.

    ``line`` is the CSV line of the box (None for other formats); ``where``
    says which box it is in words for messages (e.g. ``"object 3"``);
    ``ignore`` marks an ignore region (a COCO crowd, a VOC difficult object).
    """

    xyxy: tuple[float, float, float, float]
    label: str
    line: int | None = None
    where: str = ""
    ignore: bool = False


@dataclass(frozen=True)
class AnnotatedImage:
    """One image and its boxes as read from an annotation file (nothing judged yet).

    ``claimed_size`` is the ``(width, height)`` the annotation states, or None
    when it states none (a size of 0 counts as stated: the checks report it).
    ``line`` is the CSV line of the image's first box, when there is one.
    """

    image: str
    annotation: str
    claimed_size: tuple[float, float] | None
    boxes: tuple[RawBox, ...] = ()
    line: int | None = None


@dataclass(frozen=True)
class Annotations:
    """What a reader found: the annotated images and the problems of the files themselves."""

    images: tuple[AnnotatedImage, ...]
    findings: tuple[Finding, ...] = field(default=())
    root: str = ""  # the dataset folder, for relative names in reports


def parse_coordinate(value: object) -> float:
    """A box coordinate or image side as a finite float; ValueError naming the value otherwise.

    Accepts numbers and numeric strings (VOC writes ``<xmin>81</xmin>``,
    some tools ``81.5``); refuses booleans, NaN and infinities, which would
    otherwise slip through ``float()`` and poison the box loss.

    Example:
        >>> parse_coordinate(" 81 "), parse_coordinate(12.5)
        (81.0, 12.5)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{value!r} is not a number")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        raise ValueError(f"{value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} is not a finite number")
    return number
