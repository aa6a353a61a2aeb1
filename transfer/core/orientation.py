"""EXIF orientation: the two frames of a phone photo, and exact maps between them.

A JPEG from a phone often stores its pixels sideways and says, with the EXIF
orientation tag (1-8), how to turn them for display. TensorFlow's decoders
(the tf.data pipelines, the exported SavedModel, TF Serving) ignore the tag;
viewers and annotation tools apply it (as ``PIL.ImageOps.exif_transpose``
does). So one file has two frames:

- the STORED frame: the pixels as decoded by TensorFlow. The model always
  sees these, in training, evaluation and serving alike;
- the DISPLAYED frame: what every viewer shows and what people annotate.

Boxes, polygons and masks read from annotation files are taken to be in the
displayed frame and are mapped into the stored frame when samples are built;
``transfer predict`` maps its answers back into the displayed frame. Each map
is exact (a flip, a quarter turn or a transpose: no resampling).

Coordinates are continuous pixel edges: a box ``(0, 0, W, H)`` covers a whole
``W x H`` image, and pixel ``i`` spans ``[i, i + 1)``. Sizes are ``(width, height)``.

Example:
    >>> exif_orientation("IMG_0001.jpg")          # stored sideways: turn 90 degrees clockwise to view
    6
    >>> displayed_size((400, 300), 6)
    (300, 400)
    >>> boxes_to_stored([(10, 20, 50, 60)], 6, (300, 400))
    [(20.0, 250.0, 60.0, 290.0)]
"""

from __future__ import annotations

import io
import os
from typing import Iterable, Sequence

import numpy as np

EXIF_ORIENTATION_TAG = 0x0112
# Per orientation, the stored -> displayed map as (flip x, flip y, then swap x and y), matching PIL's
# exif_transpose: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 cw, 7 transverse, 8 rotate 90 ccw.
_MAPS = {
    1: (False, False, False), 2: (True, False, False), 3: (True, True, False), 4: (False, True, False),
    5: (False, False, True), 6: (False, True, True), 7: (True, True, True), 8: (True, False, True),
}
DESCRIPTIONS = {
    1: "as stored", 2: "mirrored", 3: "rotated 180 degrees", 4: "flipped upside down",
    5: "mirrored and rotated 90 degrees", 6: "rotated 90 degrees", 7: "mirrored and rotated 270 degrees",
    8: "rotated 270 degrees",
}


def exif_orientation(source: str | os.PathLike | bytes) -> int:
    """The EXIF orientation (1-8) of an image file or encoded bytes; 1 when it has none or it cannot be read.

    Reads the header only (no decoding). A PNG's ``eXIf`` chunk counts only
    when it comes before the pixels (PIL would decode the whole image to look
    behind them). A FIFO, socket or device is never opened (1).

    Example:
        >>> exif_orientation("IMG_0001.jpg"), exif_orientation(open("IMG_0001.jpg", "rb").read())
        (6, 6)
    """
    from PIL import Image

    if not isinstance(source, (bytes, bytearray, memoryview)):
        from transfer.core.regular_files import not_regular

        if not_regular(source) is not None:
            return 1
    try:
        with Image.open(io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview))
                        else source) as image:
            if image.format == "PNG" and "exif" not in image.info:
                return 1
            value = image.getexif().get(EXIF_ORIENTATION_TAG)
    except Exception:  # noqa: BLE001 - any unreadable header or EXIF block means "no orientation" here
        return 1
    return value if isinstance(value, int) and not isinstance(value, bool) and value in _MAPS else 1


def _check(orientation: int) -> tuple[bool, bool, bool]:
    if orientation not in _MAPS:
        raise ValueError(f"orientation must be an EXIF orientation 1-8. Received: orientation={orientation!r}")
    return _MAPS[orientation]


def swaps_sides(orientation: int) -> bool:
    """Whether the displayed image's width is the stored height (orientations 5-8).

    Example:
        >>> swaps_sides(6), swaps_sides(3)
        (True, False)
    """
    return _check(orientation)[2]


def displayed_size(stored: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The displayed ``(width, height)`` of an image whose stored size is ``stored``.

    Example:
        >>> displayed_size((400, 300), 8), displayed_size((400, 300), 2)
        ((300, 400), (400, 300))
    """
    return (stored[1], stored[0]) if swaps_sides(orientation) else (stored[0], stored[1])


def stored_size(displayed: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The stored ``(width, height)`` of an image whose displayed size is ``displayed``."""
    return displayed_size(displayed, orientation)  # a swap is its own inverse


def annotation_frame(
    claimed: tuple[float, float] | None, stored: tuple[int, int], orientation: int, aspect_tolerance: float = 0.01,
) -> str | None:
    """Which frame an annotation of an EXIF-oriented image is in: ``"displayed"``, ``"stored"`` or None (neither).

    Judged by the ``(width, height)`` the annotation states: the displayed
    size (or no size, or 0) means the displayed frame, as people annotate it;
    the stored size (orientations 5-8, not square) means a tool that ignored
    the tag; the same shape as one of them at another scale means that frame,
    resized. Anything else cannot be placed. Orientations 2-4 keep the size,
    so their annotations are taken to be displayed.

    Example:
        >>> annotation_frame((300, 400), (400, 300), 6), annotation_frame((400, 300), (400, 300), 6)
        ('displayed', 'stored')
        >>> annotation_frame((500, 500), (400, 300), 6) is None
        True
    """
    shown = displayed_size(stored, orientation)
    if claimed is None or claimed[0] <= 0 or claimed[1] <= 0:
        return "displayed"
    frames = (("displayed", shown), ("stored", tuple(stored)))
    for frame, (width, height) in frames:
        if abs(claimed[0] - width) < 0.5 and abs(claimed[1] - height) < 0.5:
            return frame
    for frame, (width, height) in frames:
        if abs((claimed[0] / claimed[1]) / (width / height) - 1.0) <= aspect_tolerance:
            return frame
    return None


def points_to_displayed(coords: Sequence[float], orientation: int, stored: tuple[float, float]) -> tuple[float, ...]:
    """A flat ``(x0, y0, x1, y1, ...)`` in the stored frame (image ``stored`` = (width, height)) to the displayed.

    Example:
        >>> points_to_displayed((10, 20), 6, (400, 300))
        (280.0, 10.0)
    """
    flip_x, flip_y, swap = _check(orientation)
    width, height = stored
    out: list[float] = []
    for x, y in zip(coords[0::2], coords[1::2]):
        x = width - x if flip_x else float(x)
        y = height - y if flip_y else float(y)
        out += (y, x) if swap else (x, y)
    return tuple(float(v) for v in out)


def points_to_stored(coords: Sequence[float], orientation: int, displayed: tuple[float, float]) -> tuple[float, ...]:
    """A flat ``(x0, y0, x1, y1, ...)`` in the displayed frame (image ``displayed`` = (width, height)) to the stored.

    Example:
        >>> points_to_stored((280, 10), 6, (300, 400))
        (10.0, 20.0)
    """
    flip_x, flip_y, swap = _check(orientation)
    width, height = stored_size(displayed, orientation)
    out: list[float] = []
    for x, y in zip(coords[0::2], coords[1::2]):
        if swap:
            x, y = y, x
        out += (width - x if flip_x else float(x), height - y if flip_y else float(y))
    return tuple(float(v) for v in out)


def _boxes(boxes: Iterable[Sequence[float]], points) -> list[tuple[float, float, float, float]]:
    out = []
    for box in boxes:
        x0, y0, x1, y1 = points(tuple(box[:4]))
        out.append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    return out


def boxes_to_stored(
    boxes: Iterable[Sequence[float]], orientation: int, displayed: tuple[float, float]
) -> list[tuple[float, float, float, float]]:
    """``(xmin, ymin, xmax, ymax)`` boxes of the displayed frame (size ``displayed``) in the stored frame.

    Example:
        >>> boxes_to_stored([(10, 20, 50, 60)], 6, (300, 400))
        [(20.0, 250.0, 60.0, 290.0)]
    """
    return _boxes(boxes, lambda c: points_to_stored(c, orientation, displayed))


def boxes_to_displayed(
    boxes: Iterable[Sequence[float]], orientation: int, stored: tuple[float, float]
) -> list[tuple[float, float, float, float]]:
    """``(xmin, ymin, xmax, ymax)`` boxes of the stored frame (size ``stored``) in the displayed frame.

    Example:
        >>> boxes_to_displayed([(20, 250, 60, 290)], 6, (400, 300))
        [(10.0, 20.0, 50.0, 60.0)]
    """
    return _boxes(boxes, lambda c: points_to_displayed(c, orientation, stored))


def mask_to_displayed(mask: np.ndarray, orientation: int) -> np.ndarray:
    """A ``[height, width, ...]`` array of the stored frame turned as ``PIL.ImageOps.exif_transpose`` turns pixels.

    Example:
        >>> mask_to_displayed(np.array([[1, 2, 3]]), 6).tolist()
        [[1], [2], [3]]
    """
    flip_x, flip_y, swap = _check(orientation)
    out = np.asarray(mask)
    if flip_x:
        out = out[:, ::-1]
    if flip_y:
        out = out[::-1]
    if swap:
        out = np.swapaxes(out, 0, 1)
    return np.ascontiguousarray(out)


def mask_to_stored(mask: np.ndarray, orientation: int) -> np.ndarray:
    """A ``[height, width, ...]`` array of the displayed frame back in the stored frame
    (``mask_to_displayed``'s inverse).

    Example:
        >>> mask_to_stored(np.array([[1], [2], [3]]), 6).tolist()
        [[1, 2, 3]]
    """
    flip_x, flip_y, swap = _check(orientation)
    out = np.asarray(mask)
    if swap:
        out = np.swapaxes(out, 0, 1)
    if flip_y:
        out = out[::-1]
    if flip_x:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)
