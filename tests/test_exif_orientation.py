"""EXIF-oriented photos: annotations in the displayed frame, the model on the stored pixels (issue 21).

Unit tests of ``transfer.orientation`` against PIL's ``exif_transpose`` on
real encoded images, then the readers (boxes, polygons, mask PNGs) and
``predict`` end to end.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from transfer.orientation import (
    boxes_to_displayed, boxes_to_stored, displayed_size, exif_orientation, mask_to_displayed, mask_to_stored,
    points_to_displayed, points_to_stored,
)

ORIENTATIONS = range(1, 9)
STORED = (40, 24)  # (width, height): not square, so a swap shows
BOX = (5, 3, 17, 11)  # stored pixels [3:11, 5:17]


def oriented_bytes(pixels: np.ndarray, orientation: int, fmt: str = "PNG") -> bytes:
    """``pixels`` encoded as stored, with the EXIF orientation tag (none for 1)."""
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    extra = {}
    if orientation != 1:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif.tobytes()
    image.save(buffer, format=fmt, **extra, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def displayed_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(ImageOps.exif_transpose(image))


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(xmin, ymin, xmax, ymax)`` edges of the nonzero pixels."""
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def stored_with_box() -> np.ndarray:
    pixels = np.zeros(STORED[::-1], np.uint8)
    pixels[BOX[1]:BOX[3], BOX[0]:BOX[2]] = 255
    pixels[0, 0] = 128  # a corner mark: a mirror and a rotation of the box alone could look alike
    return pixels


# --- the geometry, every orientation, against PIL ---------------------------------------------
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_orientation_is_read_from_jpeg_and_png_files_and_bytes(tmp_path, orientation):
    for fmt in ("JPEG", "PNG"):
        data = oriented_bytes(stored_with_box(), orientation, fmt)
        path = tmp_path / f"a.{fmt.lower()}"
        path.write_bytes(data)
        assert exif_orientation(path) == orientation
        assert exif_orientation(data) == orientation


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_maps_round_trip_against_pil_exif_transpose(orientation):
    stored = stored_with_box()
    shown = displayed_pixels(oriented_bytes(stored, orientation))
    assert shown.shape[::-1] == displayed_size(STORED, orientation)
    # The box's pixels, turned by PIL, lie exactly where boxes_to_displayed puts the box ...
    shown_box = boxes_to_displayed([BOX], orientation, STORED)[0]
    assert shown_box == bounding_box(shown == 255)
    # ... and back.
    assert boxes_to_stored([shown_box], orientation, shown.shape[::-1])[0] == BOX
    # Masks: the same turn as PIL's, pixel for pixel (the corner mark included), and its inverse.
    assert np.array_equal(mask_to_displayed(stored, orientation), shown)
    assert np.array_equal(mask_to_stored(shown, orientation), stored)
    probabilities = np.stack([stored, 255 - stored], axis=-1)  # [h, w, C] turns like its channels
    assert np.array_equal(mask_to_displayed(probabilities, orientation)[..., 0], shown)
    # Points: the corner mark's pixel centre.
    mark = points_to_displayed((0.5, 0.5), orientation, STORED)
    assert shown[int(mark[1]), int(mark[0])] == 128
    assert points_to_stored(mark, orientation, shown.shape[::-1]) == (0.5, 0.5)


def test_orientation_of_unreadable_or_special_files_is_one(tmp_path):
    assert exif_orientation(b"not an image") == 1
    assert exif_orientation(tmp_path / "missing.jpg") == 1
    import os
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    assert exif_orientation(fifo) == 1  # never opened: a FIFO would block
    exif = Image.Exif()
    exif[0x0112] = 9  # not an orientation
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", exif=exif.tobytes())
    assert exif_orientation(buffer.getvalue()) == 1
    with pytest.raises(ValueError, match="1-8"):
        mask_to_stored(np.zeros((2, 2)), 0)
