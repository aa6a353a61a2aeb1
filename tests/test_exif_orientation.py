"""EXIF-oriented photos: annotations in the displayed frame, the model on the stored pixels (issue 21).

Unit tests of ``transfer.core.orientation`` against PIL's ``exif_transpose`` on
real encoded images, then the readers (boxes, polygons, mask PNGs) and
``predict`` end to end.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from transfer.core.orientation import (
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


@pytest.mark.slow  # TensorFlow and tf.data: covered fast by the read_boxes tests above
def test_the_training_batch_frames_the_rectangle_the_model_sees(tmp_path):
    from transfer.data.pipelines.boxes import make_box_dataset
    from transfer.data.boxes import read_boxes

    phone_photo(tmp_path / "photo.jpg", 6)
    samples, _ = read_boxes(box_csv(tmp_path, SHOWN))
    images, targets = next(iter(make_box_dataset(samples, image_size=32, batch_size=1, training=False,
                                                 cache="none")))
    image = images[0].numpy()  # TensorFlow's decode: the stored pixels, stretched to 32x32
    box = np.round(targets["box"][0].numpy() * 32).astype(int)
    inside = image[box[1]:box[3], box[0]:box[2], 0]
    assert inside.size and inside.mean() > 200  # the box lies on the bright rectangle ...
    assert bounding_box(image[..., 0] > 145) == pytest.approx(tuple(box), abs=1)  # ... and frames it


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


# --- masks: mask PNGs and polygons drawn on the displayed image --------------------------------
def shown_mask() -> np.ndarray:
    """The displayed frame's mask: class 1 over SHOWN_BOX, and a class-2 mark in its top-left corner."""
    mask = np.zeros((SHOWN[1], SHOWN[0]), np.uint8)
    x0, y0, x1, y1 = SHOWN_BOX
    mask[y0:y1, x0:x1] = 1
    mask[0:4, 0:6] = 2  # tells a mirror from a rotation
    return mask


@pytest.mark.parametrize("orientation", [6, 3, 8])
def test_mask_png_of_the_displayed_image_is_turned_into_the_stored_frame(tmp_path, orientation):
    from transfer.data.masks import load_mask, read_masks

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    stored = phone_photo(tmp_path / "images" / "photo.jpg", orientation)
    Image.fromarray(shown_mask()).save(tmp_path / "masks" / "photo.png")  # drawn on the displayed image
    samples, findings = read_masks(tmp_path, class_names=["background", "thing", "mark"])
    assert [f.code for f in findings if f.severity == "error"] == []
    pixels = load_mask(samples.targets[0])
    assert pixels.shape == stored.shape[:2]  # the stored frame, as TensorFlow decodes the photo
    assert bounding_box(pixels == 1) == bright_box(stored)  # class 1 over the rectangle's stored pixels
    assert np.array_equal(pixels, mask_to_stored(shown_mask(), orientation))


def test_mask_png_of_the_stored_pixels_is_used_as_is_and_a_third_size_is_refused(tmp_path):
    from transfer.data.masks import load_mask, read_masks

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    stored = phone_photo(tmp_path / "images" / "a.jpg", 6)
    phone_photo(tmp_path / "images" / "b.jpg", 6)
    as_stored = (stored[..., 0] > 145).astype(np.uint8)
    Image.fromarray(as_stored).save(tmp_path / "masks" / "a.png")  # a tool that ignored the tag
    Image.fromarray(np.zeros((50, 50), np.uint8)).save(tmp_path / "masks" / "b.png")
    samples, findings = read_masks(tmp_path, class_names=["background", "thing"])
    assert [Path(s).name for s in samples.sources] == ["a.jpg"]
    assert np.array_equal(load_mask(samples.targets[0]), as_stored)
    by_code = {f.code: f for f in findings}
    assert "stored" in by_code["exif_annotation_frame"].detail
    assert "50x50" in by_code["mask_size_mismatch"].detail and "64x48" in by_code["mask_size_mismatch"].detail


def via_file(folder: Path, size: tuple[int, int] | None = None) -> Path:
    """A VIA file whose one polygon (a rect) was drawn on photo.jpg as displayed."""
    import json

    x0, y0, x1, y1 = SHOWN_BOX
    region = {"shape_attributes": {"name": "polygon", "all_points_x": [x0, x1, x1, x0],
                                   "all_points_y": [y0, y0, y1, y1]}, "region_attributes": {}}
    entry = {"filename": "photo.jpg", "size": 1, "regions": [region]}
    path = folder / "via_region_data.json"
    path.write_text(json.dumps({"photo.jpg1": entry}))
    return path


def coco_file(folder: Path, size, rle: bool = False) -> Path:
    import json

    from pycocotools import mask as mask_utils

    x0, y0, x1, y1 = SHOWN_BOX
    if rle:
        drawn = (shown_mask() == 1).astype(np.uint8)
        segmentation = mask_utils.encode(np.asfortranarray(drawn))
        segmentation = {"size": [SHOWN[1], SHOWN[0]], "counts": segmentation["counts"].decode("ascii")}
    else:
        segmentation = [[x0, y0, x1, y0, x1, y1, x0, y1]]
    image = {"id": 1, "file_name": "photo.jpg", **({"width": size[0], "height": size[1]} if size else {})}
    document = {"images": [image], "categories": [{"id": 1, "name": "thing"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": segmentation}]}
    path = folder / "annotations.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize("kind", ["via", "coco polygon", "coco rle", "coco no size"])
def test_regions_drawn_on_the_displayed_image_cover_the_stored_pixels(tmp_path, kind):
    from transfer.data.masks import load_mask, read_masks

    stored = phone_photo(tmp_path / "photo.jpg", 6)
    source = (via_file(tmp_path) if kind == "via" else
              coco_file(tmp_path, None if kind == "coco no size" else SHOWN, rle=kind == "coco rle"))
    samples, findings = read_masks(source)
    assert [f.code for f in findings if f.severity != "info"] == []
    target = samples.targets[0]
    assert (target.width, target.height) == SHOWN[::-1]
    pixels = load_mask(target)
    assert pixels.shape == stored.shape[:2]
    covered, rectangle = bounding_box(pixels == 1), bright_box(stored)
    if kind == "coco rle":
        assert covered == rectangle  # pixels turned as PIL turns them
    else:  # PIL fills a polygon's max edge pixels too, in either frame: at most one pixel more, never less
        assert covered[:2] <= rectangle[:2] and covered[2:] >= rectangle[2:]
        assert np.abs(np.subtract(covered, rectangle)).max() <= 1


def test_regions_whose_stated_size_fits_neither_frame_are_refused(tmp_path):
    from transfer.data.masks import list_masks

    phone_photo(tmp_path / "photo.jpg", 6)
    listing = list_masks(coco_file(tmp_path, (100, 100)))
    assert len(listing.samples) == 0
    refused = [f for f in listing.findings if f.code == "exif_unplaced"]
    assert refused and refused[0].path == str(tmp_path / "photo.jpg") and "100x100" in refused[0].detail


def test_a_turned_mask_file_keeps_its_orientation_through_split_json():
    import json

    from transfer.data.samples import Mask
    from transfer.tasks import get_task

    task = get_task("segment")
    target = Mask(64, 48, path="masks/photo.png", values=((0, 0), (1, 1)), orientation=6)
    value = json.loads(json.dumps(task.target_to_json(target)))
    assert value["orientation"] == 6 and task.target_from_json(value, {}) == target  # resume/evaluate read it so
    assert "orientation" not in task.target_to_json(Mask(64, 48, path="masks/plain.png"))


# --- the data check says what happens to them ------------------------------------------------
def test_check_data_says_the_annotations_are_mapped_not_only_warns(tmp_path):
    from transfer.data.boxes import load_box_data
    from transfer.data.doctor.diagnose import check_data, check_split

    for i in range(4):
        phone_photo(tmp_path / f"p{i}.jpg", 6)
    csv = tmp_path / "boxes.csv"
    csv.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n"
                   + "".join(f"p{i}.jpg,48,64,thing,8,30,28,50\n" for i in range(4)))
    data = load_box_data(csv, val_fraction=0.25)
    for report in (check_data(csv, near_duplicates=False), check_split(data.split, near_duplicates=False)):
        codes = {f.code for f in report.findings}
        assert "exif_orientation" not in codes  # no "not applied" warning: it is applied to the boxes
        mapped = [f for f in report.findings if f.code == "exif_annotation_frame"]
        assert len(mapped) == 4 and all("mapped" in f.detail and f.severity == "info" for f in mapped)


def test_check_data_of_a_mask_folder_says_so_too_and_classification_still_warns(tmp_path):
    from transfer.data.doctor.diagnose import check_data

    (tmp_path / "seg" / "images").mkdir(parents=True)
    (tmp_path / "seg" / "masks").mkdir()
    for i in range(3):
        phone_photo(tmp_path / "seg" / "images" / f"p{i}.jpg", 6)
        Image.fromarray(shown_mask() % 2).save(tmp_path / "seg" / "masks" / f"p{i}.png")
    report = check_data(tmp_path / "seg", near_duplicates=False, class_names=["background", "thing"])
    assert [f.code for f in report.findings if f.severity == "error"] == []
    assert sum(f.code == "exif_annotation_frame" for f in report.findings) == 3
    for name in ("cat", "dog"):
        (tmp_path / "cls" / name).mkdir(parents=True)
        phone_photo(tmp_path / "cls" / name / "p.jpg", 6)
    codes = [f.code for f in check_data(tmp_path / "cls", near_duplicates=False).findings]
    assert codes.count("exif_orientation") == 2 and "exif_annotation_frame" not in codes


# --- predict answers in the displayed frame --------------------------------------------------
@pytest.fixture(scope="module")
def localizer_export(tmp_path_factory):
    """A tiny localization export whose box is (0.2, 0.4, 0.4, 0.8) of the STORED image, whatever it shows."""
    from tests.test_localize import known_box_localizer
    from transfer.serving.export import export_model

    model, config = known_box_localizer(("thing",))
    return export_model(model, tmp_path_factory.mktemp("exif-localize") / "export",
                        class_names=config["class_names"], image_size=32, task="localize", task_config=config)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_predict_answer_maps_turn_stored_answers_as_pil_turns_the_photo(orientation):
    from transfer.serving.frames import displayed_boxes, displayed_mask

    stored = stored_with_box()
    data = oriented_bytes(stored, orientation)
    shown = displayed_pixels(data)
    assert displayed_boxes(data, [BOX]) == [list(bounding_box(shown == 255))]  # the box over the same pixels
    assert np.array_equal(displayed_mask(data, stored), shown)


@pytest.mark.slow
def test_predict_answers_a_rotated_photos_box_in_the_displayed_frame(localizer_export, tmp_path):
    import json

    from typer.testing import CliRunner

    from transfer.cli.main import app
    from transfer.tasks.localize.reader import ExportedLocalizer

    phone_photo(tmp_path / "photo.jpg", 6)  # stored 64x48, displayed 48x64
    stored_box = (0.2 * 64, 0.4 * 48, 0.4 * 64, 0.8 * 48)  # what the model answers on the stored pixels
    expected = boxes_to_displayed([stored_box], 6, (64, 48))[0]
    localizer = ExportedLocalizer.load(localizer_export)
    assert localizer.predict_bytes([(tmp_path / "photo.jpg").read_bytes()])["box"][0] == pytest.approx(
        stored_box, abs=0.01)  # the raw serving answer: the stored frame
    result = CliRunner().invoke(app, ["predict", str(localizer_export), str(tmp_path / "photo.jpg"), "--json"])
    assert result.exit_code == 0, result.output
    box = json.loads(result.output[result.output.index("{"):])["results"][0]["box"]
    assert box == pytest.approx(expected, abs=0.01)
    assert box[2] <= SHOWN[0] and box[3] <= SHOWN[1]  # within the displayed 48x64, not the stored 64x48
    assert box != pytest.approx(stored_box, abs=1)  # turned, not the stored frame's numbers
    plain = tmp_path / "plain.png"
    plain.write_bytes(oriented_bytes(np.zeros((48, 64, 3), np.uint8), 1))
    assert localizer.predict_files([plain])[0]["box"] == pytest.approx(stored_box, abs=0.01)  # no tag: unchanged


@pytest.mark.slow
def test_predict_answers_a_rotated_photos_mask_in_the_displayed_frame(tmp_path):
    import json

    from typer.testing import CliRunner

    from tests.test_segment_task import _tiny_segmenter
    from transfer.cli.main import app
    from transfer.serving.export import export_model
    from transfer.tasks.segment.reader import ExportedSegmenter

    names = ["background", "thing", "mark"]
    config = {"task": "segment", "class_names": names, "num_classes": 3, "ignore_index": None, "decoder": "unet"}
    export = export_model(_tiny_segmenter(32, 3), tmp_path / "export", class_names=names, image_size=32,
                          task="segment", task_config=config)
    stored = phone_photo(tmp_path / "photo.png", 6, "PNG")
    plain = tmp_path / "plain.png"
    plain.write_bytes(oriented_bytes(stored, 1))  # the same stored pixels, no tag
    segmenter = ExportedSegmenter.load(export)
    turned, unturned = segmenter.predict_files([tmp_path / "photo.png", plain], probabilities=True)
    assert unturned["mask"].shape == (48, 64) and turned["mask"].shape == (64, 48)  # [height, width] as displayed
    assert len(np.unique(unturned["mask"])) > 1  # a mask whose turn shows
    assert np.array_equal(turned["mask"], mask_to_displayed(unturned["mask"], 6))
    assert np.array_equal(turned["probabilities"], mask_to_displayed(unturned["probabilities"], 6))
    result = CliRunner().invoke(app, ["predict", str(export), str(tmp_path / "photo.png"), "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output[result.output.index("{"):])["results"][0]
    assert (answer["width"], answer["height"]) == SHOWN
