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

from dataclasses import dataclass, field

from transfer.data.findings import Finding


@dataclass(frozen=True)
class RawBox:
    """One box as the annotation writes it: ``(xmin, ymin, xmax, ymax)`` in the annotation's pixels.

    ``line`` is the CSV line of the box (None for other formats); ``where``
    says which box it is in words for messages (e.g. ``"object 3"``).
    """

    xyxy: tuple[float, float, float, float]
    label: str
    line: int | None = None
    where: str = ""


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
