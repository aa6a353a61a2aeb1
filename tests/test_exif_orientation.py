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


# --- boxes: read in the displayed frame, trained in the stored one -----------------------------
SHOWN = (48, 64)  # the photo as every viewer shows it: portrait
SHOWN_BOX = (8, 30, 28, 50)  # a bright rectangle there, annotated on the displayed image


def phone_photo(path: Path, orientation: int = 6, fmt: str = "JPEG") -> np.ndarray:
    """Write a photo whose DISPLAYED image has a bright rectangle at SHOWN_BOX, stored turned with its
    EXIF tag, as a phone writes it; returns the stored pixels."""
    shown = np.full((SHOWN[1], SHOWN[0], 3), 40, np.uint8)
    x0, y0, x1, y1 = SHOWN_BOX
    shown[y0:y1, x0:x1] = 250
    stored = mask_to_stored(shown, orientation)
    path.write_bytes(oriented_bytes(stored, orientation, fmt))
    assert bright_box(displayed_pixels(path.read_bytes())) == SHOWN_BOX  # what a viewer shows
    return stored


def bright_box(stored: np.ndarray) -> tuple[int, int, int, int]:
    """The rectangle's edges in the stored pixels (JPEG's blur stays on the right side of half)."""
    return bounding_box(stored[..., 0] > 145)


def box_csv(folder: Path, size: tuple[int, int] | None, box=SHOWN_BOX, name: str = "photo.jpg") -> Path:
    csv = folder / "boxes.csv"
    sized = f"{size[0]},{size[1]}," if size is not None else ",,"
    csv.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n"
                   f"{name},{sized}thing,{','.join(str(v) for v in box)}\n")
    return csv


@pytest.mark.parametrize("size", [SHOWN, None], ids=["displayed size stated", "no size stated"])
def test_box_of_a_rotated_photo_lands_on_its_stored_pixels(tmp_path, size):
    from transfer.data.boxes import read_boxes

    stored = phone_photo(tmp_path / "photo.jpg", 6)
    samples, findings = read_boxes(box_csv(tmp_path, size))
    target = samples.targets[0]
    assert (target.width, target.height) == SHOWN[::-1]  # the stored frame, as TensorFlow decodes it
    assert target.xyxy[0] == pytest.approx(bright_box(stored))  # the box frames the rectangle's stored pixels
    assert not [f for f in findings if f.code == "box_size_mismatch"]


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_every_orientation_maps_its_boxes(tmp_path, orientation):
    from transfer.data.boxes import read_boxes

    stored = phone_photo(tmp_path / "photo.png", orientation, "PNG")
    samples, _ = read_boxes(box_csv(tmp_path, displayed_size(stored.shape[1::-1], orientation), name="photo.png"))
    assert samples.targets[0].xyxy[0] == bright_box(stored)


def test_box_annotated_on_the_stored_pixels_is_used_as_written(tmp_path):
    from transfer.data.boxes import read_boxes

    stored = phone_photo(tmp_path / "photo.jpg", 6)
    written = bright_box(stored)
    samples, findings = read_boxes(box_csv(tmp_path, SHOWN[::-1], box=written))  # the stored size stated
    assert samples.targets[0].xyxy[0] == pytest.approx(written)
    noted = [f for f in findings if f.code == "exif_annotation_frame"]
    assert noted and "stored" in noted[0].detail


def test_box_whose_stated_size_fits_neither_frame_is_refused_with_the_reason(tmp_path):
    from transfer.data.boxes import list_boxes

    phone_photo(tmp_path / "photo.jpg", 6)
    Image.new("RGB", (48, 64), (9, 9, 9)).save(tmp_path / "plain.jpg")
    csv = box_csv(tmp_path, (100, 100))
    with csv.open("a") as f:
        f.write("plain.jpg,48,64,thing,1,1,20,20\n")
    listing = list_boxes(csv)
    assert listing.samples.sources == (str(tmp_path / "plain.jpg"),)  # the other image is still used
    refused = [f for f in listing.findings if f.code == "exif_unplaced"]
    assert len(refused) == 1 and refused[0].path == str(tmp_path / "photo.jpg") and refused[0].action == "skip"
    assert "100x100" in refused[0].detail and "orientation 6" in refused[0].detail
