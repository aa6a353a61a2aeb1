"""Box annotation readers (Pascal VOC, box CSV, COCO JSON) and the checks on every box."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require_fixture
from tests.imagefactory import write_csv, write_image
from transfer.data.boxes import box_format, list_boxes, load_box_data, read_boxes, seeded_box_split
from transfer.data.boxes.check_source import list_box_source
from transfer.data.samples import Boxes
from transfer.core.errors import TransferError

CSV_HEADER = ["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"]


def voc_xml(filename: str, size: tuple[int, int] | None, objects: list[tuple], extra: str = "") -> str:
    """A Pascal VOC annotation; ``objects`` are ``(name, xmin, ymin, xmax, ymax[, difficult])``."""
    parts = [f"<annotation>{extra}<folder>images</folder><filename>{filename}</filename>"]
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for name, x0, y0, x1, y1, *rest in objects:
        difficult = rest[0] if rest else 0
        parts.append(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin>"
                     f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
    return "".join(parts) + "</annotation>"


def write_voc(folder: Path, stem: str, size: tuple[int, int], objects: list[tuple], *, xml_dir: Path | None = None,
              claimed: tuple[int, int] | None | str = "same", filename: str | None = None, index: int = 0) -> Path:
    """An image ``folder/stem.jpg`` of ``size`` and its XML (in ``xml_dir``, default the same folder)."""
    write_image(folder / f"{stem}.jpg", index % 3, index, size=size)
    xml_dir = xml_dir or folder
    xml_dir.mkdir(parents=True, exist_ok=True)
    stated = size if claimed == "same" else claimed
    path = xml_dir / f"{stem}.xml"
    path.write_text(voc_xml(filename or f"{stem}.jpg", stated, objects), encoding="utf-8")
    return path


def codes(findings) -> list[str]:
    return sorted(f.code for f in findings)


# ---------------------------------------------------------------- Pascal VOC


def test_voc_same_folder_reads_boxes_in_real_pixels_with_sorted_classes(tmp_path):
    write_voc(tmp_path, "a", (64, 48), [("zebra", 5, 6, 30, 40), ("cat", 10, 10, 20, 20, 1)])
    write_voc(tmp_path, "b", (40, 40), [("cat", 1, 2, 39, 38)], index=1)
    samples, findings = read_boxes(tmp_path)
    assert box_format(tmp_path) == "voc"
    assert samples.class_names == ("cat", "zebra")
    assert [Path(s).name for s in samples.sources] == ["a.jpg", "b.jpg"]
    # The difficult box is kept as an ignore region (VOC's evaluation scores it so), as the docstring says.
    assert samples.targets[0] == Boxes(((5.0, 6.0, 30.0, 40.0), (10.0, 10.0, 20.0, 20.0)), (1, 0), 64, 48,
                                       ignore=(False, True))
    assert samples.targets[1] == Boxes(((1.0, 2.0, 39.0, 38.0),), (0,), 40, 40)
    assert findings == []


def test_voc_images_and_annots_folders_match_by_stem_when_filename_is_stale(tmp_path):
    write_voc(tmp_path / "images", "a", (32, 32), [("dog", 1, 1, 20, 20)], xml_dir=tmp_path / "annots",
              filename="renamed_long_ago.jpg")
    write_voc(tmp_path / "images", "b", (32, 32), [("dog", 2, 2, 30, 30)], xml_dir=tmp_path / "annots",
              index=1)
    write_image(tmp_path / "images" / "unlabelled.png", size=16)
    samples, findings = read_boxes(tmp_path)
    assert [Path(s).name for s in samples.sources] == ["a.jpg", "b.jpg"]
    assert [f.code for f in findings] == ["box_unannotated"]
    assert findings[0].path.endswith("unlabelled.png") and findings[0].action == "ignore"
    # The annotations folder itself finds its images beside it.
    again, _ = read_boxes(tmp_path / "annots")
    assert again.sources == samples.sources and again.targets == samples.targets


def test_voc_filename_names_the_image_when_stems_differ(tmp_path):
    write_image(tmp_path / "JPEGImages" / "IMG_2001.jpg", size=(50, 40))
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "0001.xml").write_text(voc_xml("IMG_2001.jpg", (50, 40), [("x", 1, 1, 9, 9)]))
    samples, findings = read_boxes(tmp_path)
    assert [Path(s).name for s in samples.sources] == ["IMG_2001.jpg"] and findings == []


def make_voc_with_image_sets(root: Path) -> None:
    for i in range(10):
        write_voc(root / "JPEGImages", f"img{i}", (40, 30), [("cell" if i % 2 else "blob", 2, 2, 20, 20)],
                  xml_dir=root / "Annotations", index=i)
    sets = root / "ImageSets" / "Main"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("img0\nimg1\nimg2\nimg3\nimg4\nimg5\n")
    (sets / "val.txt").write_text("img6\nimg7\n\n")
    (sets / "test.txt").write_text("img8\nimg9\n")
    (sets / "cell_train.txt").write_text("img1  1\nimg0 -1\n")  # a class list, not a split


def test_voc_image_sets_give_the_official_split(tmp_path):
    make_voc_with_image_sets(tmp_path)
    test, _ = read_boxes(tmp_path, split="test")
    assert [Path(s).stem for s in test.sources] == ["img8", "img9"]
    data = load_box_data(tmp_path)
    assert data.split.origin == "ImageSets/Main train/val lists"
    assert [Path(s).stem for s in data.split.train.sources] == [f"img{i}" for i in range(6)]
    assert [Path(s).stem for s in data.split.val.sources] == ["img6", "img7"]
    with pytest.raises(TransferError, match=r"No split list .*cell_train\.txt.*test, train, val"):
        read_boxes(tmp_path, split="cell_train")


def test_voc_split_list_naming_a_missing_annotation_stops(tmp_path):
    make_voc_with_image_sets(tmp_path)
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("img6\nghost\n")
    listing = list_boxes(tmp_path, split="val")
    (bad,) = listing.stops
    assert bad.line == 2 and "ghost" in bad.detail and bad.path.endswith("val.txt")
    with pytest.raises(TransferError, match=r"val\.txt:2: id 'ghost' has no annotation file"):
        read_boxes(tmp_path, split="val")


def test_split_is_refused_for_a_csv(tmp_path):
    write_image(tmp_path / "a.jpg", size=20)
    csv_path = write_csv(tmp_path / "boxes.csv", CSV_HEADER, [["a.jpg", 20, 20, "x", 1, 1, 5, 5]])
    with pytest.raises(TransferError, match="ImageSets/Main list of a Pascal VOC folder"):
        read_boxes(csv_path, split="test")


def test_malformed_voc_is_reported_and_stops_training(tmp_path):
    write_voc(tmp_path, "good", (30, 30), [("x", 1, 1, 10, 10)])
    write_image(tmp_path / "broken.jpg", size=30)
    (tmp_path / "broken.xml").write_text("<annotation><object><name>x</name>")
    write_voc(tmp_path, "typo", (30, 30), [("x", 1, "one", 10, 10)])
    listing = list_boxes(tmp_path)
    stops = sorted((Path(f.path).name, f.detail) for f in listing.stops)
    assert stops[0][0] == "broken.xml" and "not well-formed XML" in stops[0][1]
    assert stops[1] == ("typo.xml", "object 1 ('x'): <ymin> is 'one' is not a number; the box is not used")
    with pytest.raises(TransferError) as error:
        read_boxes(tmp_path)
    assert "2 annotation problem(s)" in str(error.value) and "broken.xml" in str(error.value)


def test_billion_laughs_xml_is_refused_quickly(tmp_path):
    write_image(tmp_path / "a.jpg", size=20)
    entities = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    bomb = (f'<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY l0 "lol">{entities}]>'
            "<annotation><filename>a.jpg</filename><object><name>&l9;</name></object></annotation>")
    (tmp_path / "a.xml").write_text(bomb)
    started = time.perf_counter()
    with pytest.raises(TransferError, match=r"a\.xml: refused: the XML declares entities") as error:
        read_boxes(tmp_path)
    assert time.perf_counter() - started < 5
    assert "lollol" not in str(error.value)
    # The data doctor names it as a finding that stops training, and goes on to the other files.
    refused = [f for f in list_boxes(tmp_path).findings if "billion laughs" in f.detail]
    assert [(Path(f.path).name, f.action) for f in refused] == [("a.xml", "stop")]


@pytest.mark.parametrize("target", ["secret", "/etc/passwd"])
def test_external_entity_xml_is_refused_and_nothing_outside_is_read(tmp_path, target):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("TOP-SECRET-CONTENT")
    url = f"file://{secret}" if target == "secret" else f"file://{target}"
    data = tmp_path / "data"
    write_image(data / "a.jpg", size=20)
    (data / "a.xml").write_text(
        f'<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY x SYSTEM "{url}">]>'
        "<annotation><filename>a.jpg</filename><object><name>&x;</name><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>"
    )
    started = time.perf_counter()
    with pytest.raises(TransferError, match=r"a\.xml: refused: the XML declares entities") as error:
        read_boxes(data)
    assert time.perf_counter() - started < 5
    message = str(error.value)
    assert "TOP-SECRET" not in message and "root:" not in message and "name='x'" in message


# ---------------------------------------------------------------- the checks on every box


def test_degenerate_outside_and_clipped_boxes(tmp_path):
    xml = write_voc(tmp_path, "a", (100, 80), [
        ("x", 10, 10, 10, 50),      # zero width: dropped
        ("x", 50, 50, 40, 60),      # negative width: dropped
        ("x", 90, 10, 130, 40),     # a quarter inside: dropped
        ("x", -4, 70, 40, 82),      # slightly outside: clipped
        ("x", 20, 20, 60, 60),      # fine
    ])
    samples, findings = read_boxes(tmp_path)
    assert samples.targets[0].xyxy == ((0.0, 70.0, 40.0, 80.0), (20.0, 20.0, 60.0, 60.0))
    by_code = {}
    for f in findings:
        by_code.setdefault(f.code, []).append(f)
    assert sorted(by_code) == ["box_clipped", "box_degenerate", "box_outside"]
    zero, negative = by_code["box_degenerate"]
    assert "object 1 box 'x' (10, 10, 10, 50) has zero area" in zero.detail
    assert "negative area" in negative.detail and "dropped" in negative.detail
    (outside,) = by_code["box_outside"]
    assert "lies 25% inside the 100x80 image" in outside.detail and "dropped" in outside.detail
    (clipped,) = by_code["box_clipped"]
    assert clipped.detail.endswith("clipped to (0, 70, 40, 80).") and clipped.severity == "warning"
    for f in findings:  # each names the annotation file and the image
        assert f.path == str(xml) and f.related == str(tmp_path / "a.jpg") and f.detail.startswith("a.jpg: ")


@pytest.mark.parametrize(
    "claimed, expected_detail, expected_box",
    [
        ((0, 0), "annotation says 0x0, image is 60x40: the real size is used", (6.0, 4.0, 30.0, 20.0)),
        ((40, 60), "annotation says 40x60, image is 60x40 (width and height swapped", (6.0, 4.0, 30.0, 20.0)),
        ((120, 80), "the image was resized after annotating; its boxes are scaled by 0.5", (3.0, 2.0, 15.0, 10.0)),
        ((61, 33), "annotation says 61x33, image is 60x40; the boxes are kept as written", (6.0, 4.0, 30.0, 20.0)),
    ],
)
def test_annotation_size_is_checked_against_the_real_image(tmp_path, claimed, expected_detail, expected_box):
    write_voc(tmp_path, "a", (60, 40), [("x", 6, 4, 30, 20)], claimed=claimed)
    samples, findings = read_boxes(tmp_path)
    (f,) = findings
    assert f.code == "box_size_mismatch" and expected_detail in f.detail
    assert samples.targets[0].xyxy == (expected_box,)
    assert (samples.targets[0].width, samples.targets[0].height) == (60, 40)
    assert f.severity == ("info" if claimed == (0, 0) else "warning")


def test_missing_and_unreadable_images_are_left_out_and_named(tmp_path):
    write_voc(tmp_path, "ok", (30, 30), [("x", 1, 1, 10, 10)])
    (tmp_path / "gone.xml").write_text(voc_xml("gone.jpg", (30, 30), [("x", 1, 1, 10, 10)]))
    (tmp_path / "fake.jpg").write_text("this is not an image")
    (tmp_path / "fake.xml").write_text(voc_xml("fake.jpg", (30, 30), [("x", 1, 1, 10, 10)]))
    samples, findings = read_boxes(tmp_path)
    assert [Path(s).name for s in samples.sources] == ["ok.jpg"]
    named = {(Path(f.path).name, f.code, f.action) for f in findings}
    assert named == {("gone.jpg", "missing_file", "skip"), ("fake.jpg", "not_image", "skip")}
    assert all(f.related.endswith(".xml") and "box(es)" in f.detail for f in findings)


def test_two_annotations_of_one_image_use_the_first(tmp_path):
    write_voc(tmp_path, "a", (30, 30), [("x", 1, 1, 10, 10)])
    (tmp_path / "copy_of_a.xml").write_text(voc_xml("a.jpg", (30, 30), [("y", 2, 2, 12, 12)]))
    samples, findings = read_boxes(tmp_path)
    assert samples.class_names == ("x",) and len(samples) == 1
    (f,) = findings
    assert f.code == "box_annotation" and f.action == "review" and f.path.endswith("copy_of_a.xml")
    assert "is also annotated by" in f.detail and f.detail.startswith("a.jpg: ")


def test_unknown_class_of_a_validation_source_is_dropped_and_reported(tmp_path):
    write_voc(tmp_path, "a", (30, 30), [("cat", 1, 1, 10, 10), ("cta", 2, 2, 12, 12)])
    samples, findings = read_boxes(tmp_path, class_names=("cat", "dog"))
    assert samples.class_names == ("cat", "dog") and samples.targets[0].labels == (0,)
    (f,) = findings
    assert f.code == "box_unknown_class" and "'cta'" in f.detail and "dropped" in f.detail


def test_an_image_whose_boxes_are_all_dropped_stays_as_background(tmp_path):
    write_voc(tmp_path, "a", (30, 30), [("x", 5, 5, 5, 5)])
    write_voc(tmp_path, "b", (30, 30), [("x", 1, 1, 9, 9)], index=1)
    samples, findings = read_boxes(tmp_path)
    assert len(samples) == 2 and samples.targets[0] == Boxes((), (), 30, 30)
    assert codes(findings) == ["box_degenerate"]


# ---------------------------------------------------------------- box CSV


def test_csv_rows_group_by_file_and_images_folder_is_found(tmp_path):
    write_image(tmp_path / "images" / "a.jpg", size=(50, 40))
    write_image(tmp_path / "b.png", size=(20, 20), fmt="PNG")
    write_image(tmp_path / "images" / "empty.jpg", size=(10, 10))
    csv_path = write_csv(tmp_path / "boxes.csv", CSV_HEADER, [
        ["a.jpg", 50, 40, "dog", 1, 2, 30, 31],
        ["b.png", 20, 20, "cat", 0, 0, 20, 20],
        ["a.jpg", 50, 40, "cat", 5, 5, 9, 9],
        ["empty.jpg", 10, 10, "", "", "", "", ""],
    ])
    assert box_format(csv_path) == "csv"
    samples, findings = read_boxes(csv_path)
    assert findings == []
    assert [Path(s).name for s in samples.sources] == ["b.png", "a.jpg", "empty.jpg"]
    targets = dict(zip((Path(s).name for s in samples.sources), samples.targets))
    assert targets["a.jpg"] == Boxes(((1.0, 2.0, 30.0, 31.0), (5.0, 5.0, 9.0, 9.0)), (1, 0), 50, 40)
    assert targets["empty.jpg"] == Boxes((), (), 10, 10)


def test_csv_bad_lines_stop_with_their_line_numbers(tmp_path):
    write_image(tmp_path / "a.jpg", size=20)
    csv_path = write_csv(tmp_path / "boxes.csv", CSV_HEADER, [
        ["a.jpg", 20, 20, "x", 1, 1, 5, 5],
        ["a.jpg", 20, 20, "x", 1, "nan", 5, 5],
        ["a.jpg", 20, 20, "", 1, 1, 5, 5],
        ["a.jpg", 20],
    ])
    listing = list_boxes(csv_path)
    assert [(f.line, f.code) for f in listing.stops] == [(3, "box_annotation"), (4, "box_annotation"),
                                                          (5, "box_annotation")]
    assert "'nan' is not a finite number" in listing.stops[0].detail
    with pytest.raises(TransferError, match=r"boxes\.csv:3: a coordinate of 'a\.jpg'"):
        read_boxes(csv_path)


def test_csv_paths_outside_the_folder_are_refused_unless_allowed(tmp_path):
    write_image(tmp_path / "elsewhere" / "a.jpg", size=20)
    csv_path = write_csv(tmp_path / "data" / "boxes.csv", CSV_HEADER, [["../elsewhere/a.jpg", 20, 20, "x", 1, 1, 5, 5]])
    with pytest.raises(TransferError, match="points outside the CSV's folder") as error:
        read_boxes(csv_path)
    assert "--allow-outside-root" in str(error.value)
    samples, _ = read_boxes(csv_path, allow_outside_root=True)
    assert len(samples) == 1 and samples.targets[0].xyxy == ((1.0, 1.0, 5.0, 5.0),)


def test_a_stray_xml_beside_class_folders_is_not_a_voc_source(tmp_path):
    write_image(tmp_path / "cat" / "a.jpg", size=20)
    (tmp_path / "metadata.xml").write_text("<dataset/>")
    assert box_format(tmp_path) is None
    write_image(tmp_path / "b.jpg", size=20)  # images beside the XML: now it is a VOC folder
    assert box_format(tmp_path) == "voc"


def test_csv_without_box_columns_is_not_a_box_source(tmp_path):
    csv_path = write_csv(tmp_path / "labels.csv", ["path", "label"], [["a.jpg", "cat"]])
    assert box_format(csv_path) is None
    with pytest.raises(TransferError, match="not a box annotation source"):
        read_boxes(csv_path)


# ---------------------------------------------------------------- COCO JSON


def write_coco(path: Path, document) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document) if not isinstance(document, str) else document)
    return path


def test_coco_boxes_background_images_and_crowds(tmp_path):
    write_image(tmp_path / "images" / "a.jpg", size=(64, 48))
    write_image(tmp_path / "b.jpg", size=(32, 32))
    path = write_coco(tmp_path / "instances.json", {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
                   {"id": "two", "file_name": "b.jpg", "width": 32, "height": 32}],
        "categories": [{"id": 3, "name": "dog"}, {"id": 7, "name": "cat"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 3, "bbox": [10, 12, 20, 28]},
            {"id": 11, "image_id": 1, "category_id": 7, "bbox": [0, 0, 5.5, 5], "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 7, "bbox": [0, 0, 64, 48], "iscrowd": 1},
        ],
    })
    assert box_format(path) == "coco"
    samples, findings = read_boxes(path)
    assert samples.class_names == ("cat", "dog")
    targets = dict(zip((Path(s).name for s in samples.sources), samples.targets))
    # The crowd region is kept as an ignore region (COCO scores it so), not dropped.
    assert targets["a.jpg"] == Boxes(((10.0, 12.0, 30.0, 40.0), (0.0, 0.0, 5.5, 5.0), (0.0, 0.0, 64.0, 48.0)),
                                     (1, 0, 0), 64, 48, ignore=(False, False, True))
    assert targets["b.jpg"] == Boxes((), (), 32, 32)  # no annotation: a background image
    assert codes(findings) == ["box_crowd"] and "annotations[2] (id 12)" in findings[0].detail


def test_coco_bad_entries_stop_with_what_is_wrong(tmp_path):
    write_image(tmp_path / "a.jpg", size=20)
    path = write_coco(tmp_path / "c.json", {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": True, "file_name": "b.jpg"}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [
            {"image_id": 1, "category_id": 1, "bbox": [1, 1, "2", 3]},
            {"image_id": 9, "category_id": 1, "bbox": [1, 1, 2, 3]},
            {"image_id": 1, "category_id": 5, "bbox": [1, 1, 2, 3]},
            [1, 2],
        ],
    })
    details = [f.detail for f in list_boxes(path).stops]
    assert any("images[1] needs an 'id'" in d for d in details)
    assert any("annotations[0]: bbox must be 4 numbers" in d for d in details)
    assert any("image_id 9 is not the id of an entry of images" in d for d in details)
    assert any("category_id 5 is not the id of an entry of categories" in d for d in details)
    assert any("annotations[3] is a list" in d for d in details)
    with pytest.raises(TransferError, match=r"c\.json: 5 annotation problem\(s\)"):
        read_boxes(path)


@pytest.mark.parametrize(
    "document, message",
    [
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ([1, 2, 3], "the top level is a JSON list"),
        ({"images": {"id": 1}, "categories": []}, "'images' must be a list; it is a dict"),
        ({"images": []}, "'categories' must be a list; it is missing"),
        ("{not json", r"not valid JSON \(line 1, column 2"),
    ],
)
def test_hostile_or_wrong_json_is_refused_naming_the_file(tmp_path, document, message):
    path = write_coco(tmp_path / "hostile.json", document)
    with pytest.raises(TransferError, match=message) as error:
        read_boxes(path)
    assert str(path) in str(error.value)


# ---------------------------------------------------------------- splits


def test_load_box_data_with_a_validation_source_drops_unknown_classes(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"t{i}.jpg", size=20)
        write_image(tmp_path / f"v{i}.jpg", size=20)
    train = write_csv(tmp_path / "train.csv", CSV_HEADER,
                      [[f"t{i}.jpg", 20, 20, "ab"[i % 2], 1, 1, 9, 9] for i in range(3)])
    val = write_csv(tmp_path / "val.csv", CSV_HEADER,
                    [[f"v{i}.jpg", 20, 20, "abc"[i], 1, 1, 9, 9] for i in range(3)])
    data = load_box_data(train, val_source=val)
    assert data.split.class_names == ("a", "b") and len(data.split.val) == 3
    assert data.split.val.targets[2].labels == ()
    (f,) = data.findings
    assert f.code == "box_unknown_class" and f.path == str(val) and f.line == 4
    assert data.warnings() == [f"{val}:4: v2.jpg: box 'c' (1, 1, 9, 9) has a class training does not know; dropped."]


def test_seeded_split_is_stratified_by_the_rarest_class_and_repeatable(tmp_path):
    rows = [[f"i{i}.jpg", 20, 20, "common", 1, 1, 9, 9] for i in range(20)]
    rows += [[f"i{i}.jpg", 20, 20, "rare", 2, 2, 8, 8] for i in range(0, 20, 5)]  # 4 images hold a rare box
    for i in range(20):
        write_image(tmp_path / f"i{i}.jpg", size=20, sample_index=i)
    csv_path = write_csv(tmp_path / "boxes.csv", CSV_HEADER, rows)
    first = load_box_data(csv_path, val_fraction=0.25, seed=3)
    again = load_box_data(csv_path, val_fraction=0.25, seed=3)
    assert first.split == again.split and first.split.origin == "stratified 75/25, seed 3"
    assert len(first.split.train) == 15 and len(first.split.val) == 5
    rare = first.split.class_names.index("rare")
    assert sum(rare in t.labels for t in first.split.val.targets) == 1
    assert set(first.split.train.sources).isdisjoint(first.split.val.sources)
    other = seeded_box_split(read_boxes(csv_path)[0], val_fraction=0.25, seed=4)
    assert other.val.sources != first.split.val.sources


def test_no_usable_box_is_an_error(tmp_path):
    write_voc(tmp_path, "a", (30, 30), [("x", 5, 5, 5, 5)])
    with pytest.raises(TransferError, match="no usable box in 1 image"):
        load_box_data(tmp_path)


def test_check_data_view_of_a_box_source(tmp_path):
    make_voc_with_image_sets(tmp_path)
    write_voc(tmp_path / "JPEGImages", "img0", (40, 30), [("blob", 2, 2, 2, 20)], xml_dir=tmp_path / "Annotations")
    split, samples, extra, root, given = list_box_source(tmp_path, 0.2, 0, False)
    assert samples is None and given and root == str(tmp_path)
    assert len(split.train) == 6 and split.train.multi_label and split.train.targets[1] == (1,)
    # The zero-width box is dropped, which leaves img0 a background image (the detection checks say so).
    assert [f.code for f in extra] == ["box_degenerate", "box_background"]
    assert all("img0" in (f.related or "") + (f.path or "") + f.detail for f in extra)


def test_importing_the_box_readers_does_not_import_tensorflow():
    code = ("import sys, transfer.data.boxes; "
            "print([m for m in ('tensorflow', 'keras') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# ---------------------------------------------------------------- real fixtures


def _by_file(samples) -> dict[str, tuple]:
    return {Path(s).name: (t.width, t.height, tuple(zip(t.xyxy, (samples.class_names[i] for i in t.labels))))
            for s, t in zip(samples.sources, samples.targets)}


def test_raccoon_voc_folder_and_csvs_give_the_same_samples(fixtures_dir):
    root = require_fixture(fixtures_dir / "raccoon")
    voc, voc_findings = read_boxes(root)
    everything, csv_findings = read_boxes(root / "raccoon_labels.csv")
    assert voc_findings == [] and csv_findings == []
    assert len(voc) == 200 and sum(len(t) for t in voc.targets) == 217 and voc.class_names == ("raccoon",)
    assert everything.sources == voc.sources and everything.targets == voc.targets
    train, _ = read_boxes(root / "train_labels.csv")
    test, _ = read_boxes(root / "test_labels.csv")
    assert (len(train), len(test)) == (160, 40)
    assert sum(len(t) for t in train.targets) == 173 and sum(len(t) for t in test.targets) == 44
    assert {**_by_file(train), **_by_file(test)} == _by_file(voc)
    assert sorted(len(t) for t in voc.targets).count(2) == 15
    data = load_box_data(root / "train_labels.csv", val_source=root / "test_labels.csv")
    assert (len(data.split.train), len(data.split.val)) == (160, 40) and data.findings == ()


def test_bccd_official_split_classes_and_degenerate_boxes(fixtures_dir):
    root = require_fixture(fixtures_dir / "bccd")
    sizes = {name: len(read_boxes(root, split=name)[0]) for name in ("train", "val", "test")}
    assert sizes == {"train": 205, "val": 87, "test": 72}
    samples, findings = read_boxes(root)
    assert len(samples) == 364 and samples.class_names == ("Platelets", "RBC", "WBC")
    dropped = [f for f in findings if f.code in ("box_degenerate", "box_outside")]
    assert len(dropped) >= 1 and all(f.path.endswith(".xml") and f.related.endswith(".jpg") for f in dropped)
    assert sum(len(t) for t in samples.targets) == 4888 - len(dropped)
    counts = samples.class_counts()
    assert counts["WBC"] == 372 and counts["Platelets"] == 361 and counts["RBC"] == 4155 - len(dropped)
    data = load_box_data(root)
    assert (len(data.split.train), len(data.split.val)) == (205, 87)
    assert data.split.origin == "ImageSets/Main train/val lists"


def test_check_data_reports_box_problems_of_a_box_source(tmp_path):
    from transfer.data.doctor import check_data

    for i in range(4):
        write_voc(tmp_path / "images", f"ok{i}", (40, 40), [("x", 2, 2, 30, 30)], xml_dir=tmp_path / "annotations",
                  index=i)
    write_voc(tmp_path / "images", "flat", (40, 40), [("x", 5, 5, 5, 30)], xml_dir=tmp_path / "annotations",
              index=5)
    report = check_data(tmp_path, image_size=32)
    (flat,) = [f for f in report.findings if f.code == "box_degenerate"]
    assert flat.path.endswith("flat.xml") and "images/flat.jpg" in flat.detail
    assert report.num_images == 5 and report.exit_code == 0
    (tmp_path / "annotations" / "ok0.xml").write_text("<annotation><object>")
    broken = check_data(tmp_path, image_size=32)
    assert [f.path for f in broken.stops] == [str(tmp_path / "annotations" / "ok0.xml")]
    assert broken.exit_code == 1 and not [f for f in broken.findings if f.code == "box_unannotated"]
