"""detection_findings: background images, tiny and duplicate boxes, classes only in validation."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.conftest import require_fixture
from transfer.data.boxes import load_box_data, read_boxes
from transfer.data.boxes.detection_checks import (
    DUPLICATE_IOU, MIN_BOX_AREA_FRACTION, MIN_BOX_SIDE, detection_findings, pairwise_iou,
)
from transfer.data.findings import PROBLEMS
from transfer.data.samples import Boxes, DataSplit, Samples

NAMES = ("cell", "dot", "rare")


def image(*boxes, size=(640, 480)):
    """A ``Boxes`` target from ``(label, x0, y0, x1, y1)`` tuples."""
    return Boxes(tuple(tuple(float(v) for v in b[1:]) for b in boxes), tuple(b[0] for b in boxes), *size)


def split(train, val=(image((0, 10, 10, 100, 100)),)):
    return DataSplit(
        Samples(tuple(f"train/{i}.jpg" for i in range(len(train))), tuple(train), NAMES),
        Samples(tuple(f"val/{i}.jpg" for i in range(len(val))), tuple(val), NAMES),
    )


def codes(findings):
    return Counter(f.code for f in findings)


def test_the_new_codes_are_known_problems_with_their_defaults():
    assert {code: (PROBLEMS[code].severity, PROBLEMS[code].action) for code in
            ("box_background", "box_tiny", "box_duplicate", "box_val_only_class")} == {
        "box_background": ("info", "use"), "box_tiny": ("warning", "review"),
        "box_duplicate": ("warning", "review"), "box_val_only_class": ("warning", "review"),
    }


def test_clean_boxes_give_no_findings():
    clean = split([image((0, 10, 10, 100, 100), (1, 200, 200, 260, 260)), image((1, 50, 50, 90, 95))])
    assert detection_findings(clean) == []


def test_background_images_are_kept_and_counted_on_each_side():
    found = detection_findings(split([image(), image((0, 1, 1, 50, 50)), image()],
                                     val=[image((0, 1, 1, 50, 50)), image()]))
    background = [f for f in found if f.code == "box_background"]
    assert [f.path for f in background] == ["train/0.jpg", "train/2.jpg", "val/1.jpg"]
    assert "(2 of 3 training images have none)" in background[0].detail
    assert "(1 of 2 validation images have none)" in background[2].detail
    assert all(f.severity == "info" and f.action == "use" for f in background)


@pytest.mark.parametrize("box, tiny, why", [
    ((0, 100, 100, 103, 200), True, "under 4 px a side"),       # 3 px wide
    ((0, 100, 100, 200, 103.5), True, "under 4 px a side"),     # 3.5 px high
    ((0, 100, 100, 104, 200), False, ""),                       # 4 px wide: the rule's edge
    ((0, 100, 100, 105, 105), True, "of the image's area"),     # 25 px^2 < 30.72 (1e-4 of 640x480)
    ((0, 100, 100, 106, 106), False, ""),                       # 36 px^2
])
def test_tiny_boxes_by_side_or_by_share_of_the_image(box, tiny, why):
    assert MIN_BOX_SIDE == 4 and MIN_BOX_AREA_FRACTION * 640 * 480 == pytest.approx(30.72)
    found = [f for f in detection_findings(split([image(box)])) if f.code == "box_tiny"]
    assert len(found) == int(tiny)
    if tiny:
        assert found[0].path == "train/0.jpg" and why in found[0].detail and "box 1 'cell'" in found[0].detail


def test_a_small_box_in_a_small_image_is_not_tiny_by_share():
    # 8x8 in a 64x64 image is 1.6% of the area: fine, although 8x8 in a 4000x3000 photo would not be.
    assert detection_findings(split([image((0, 0, 0, 8, 8), size=(64, 64))])) == []
    assert codes(detection_findings(split([image((0, 0, 0, 8, 8), size=(4000, 3000))]))) == {"box_tiny": 1}


def test_duplicate_boxes_of_one_class_and_not_of_two():
    nudged = (0, 102, 102, 202, 202)  # BCCD's kind of copy: the same box 2 px away, IoU 0.924
    assert pairwise_iou([[100, 100, 200, 200], nudged[1:]])[0, 1] > DUPLICATE_IOU
    found = detection_findings(split([
        image((0, 100, 100, 200, 200), (0, 300, 300, 350, 350), nudged),
        image((0, 100, 100, 200, 200), (1, 100, 100, 200, 200)),      # same place, two classes: fine
        image((0, 100, 100, 200, 200), (0, 110, 100, 210, 200)),      # IoU 0.818: two objects
    ]))
    (dup,) = [f for f in found if f.code == "box_duplicate"]
    assert dup.path == "train/0.jpg"
    assert "box 3 'cell' (102, 102, 202, 202) repeats box 1 'cell' (100, 100, 200, 200) (IoU 0.924" in dup.detail


def test_three_copies_give_two_duplicates_of_the_first():
    found = detection_findings(split([], val=[image(*[(1, 5, 5, 50, 50)] * 3)]))
    dups = [f for f in found if f.code == "box_duplicate"]
    assert [f.detail.split(" repeats ")[1][:5] for f in dups] == ["box 1", "box 1"]
    assert all(f.detail.startswith("validation image: box") for f in dups)


def test_a_class_only_in_validation_is_reported_once_at_its_first_image():
    found = detection_findings(split(
        [image((0, 10, 10, 100, 100)), image((1, 10, 10, 100, 100))],
        val=[image((0, 10, 10, 100, 100)), image((2, 1, 1, 60, 60), (2, 100, 100, 160, 160)),
             image((2, 5, 5, 70, 70))],
    ))
    (rare,) = [f for f in found if f.code == "box_val_only_class"]
    assert rare.path == "val/1.jpg"
    assert "class 'rare' has 3 validation box(es) in 2 image(s)" in rare.detail


def test_a_class_only_in_training_is_no_finding():
    assert detection_findings(split([image((0, 10, 10, 100, 100), (2, 200, 200, 300, 300))])) == []


def test_bccd_has_no_tiny_boxes_and_seven_nudged_duplicates(fixtures_dir):
    """BCCD's official split: 4 duplicates in train, 2 in val, 1 in test, all RBC copies 2 px away."""
    root = require_fixture(fixtures_dir / "bccd")
    data = load_box_data(root)
    found = detection_findings(data.split)
    assert codes(found) == {"box_duplicate": 6}
    assert Counter(f.detail.split(" ")[0] for f in found) == {"training": 4, "validation": 2}
    assert all("'RBC'" in f.detail and f.path.endswith(".jpg") for f in found)
    test, _ = read_boxes(root, split="test", class_names=data.split.class_names)
    on_test = detection_findings(DataSplit(data.split.train, test))
    assert [f.path.rsplit("/", 1)[-1] for f in on_test if f.detail.startswith("validation")] == [
        "BloodImage_00284.jpg"]


def test_raccoon_is_clean(fixtures_dir):
    root = require_fixture(fixtures_dir / "raccoon")
    data = load_box_data(root / "train_labels.csv", val_source=root / "test_labels.csv")
    assert detection_findings(data.split) == []


def test_a_side_without_any_box_is_a_stop_for_check_data_and_training(tmp_path):
    """All-background validation (or training) trained "fine" with an undefined mAP; now a stop in words."""
    from typer.testing import CliRunner

    from transfer.cli.main import app
    from transfer.core.errors import TransferError
    from transfer.tasks import get_task

    empty_val = split([image((0, 1, 1, 50, 50))], val=[image(), image()])
    found = [f for f in detection_findings(empty_val) if f.code == "box_nothing_to_score"]
    assert len(found) == 1 and found[0].action == "stop" and found[0].path == "val/0.jpg"
    assert "none of the 2 validation images has a box" in found[0].detail
    boxed = split([image((0, 1, 1, 50, 50))])
    assert not [f for f in detection_findings(boxed) if f.code == "box_nothing_to_score"]
    # Through check-data and training: a VOC folder whose val/ images hold no object.
    from tests.imagefactory import write_image

    for side, count, boxed in (("train", 3, True), ("val", 2, False)):
        for i in range(count):
            write_image(tmp_path / side / f"{side}{i}.png", i % 3, i, 48)
            obj = ("<object><name>cat</name><bndbox><xmin>4</xmin><ymin>4</ymin><xmax>30</xmax><ymax>30</ymax>"
                   "</bndbox></object>") if boxed else ""
            (tmp_path / side / f"{side}{i}.xml").write_text(
                f"<annotation><filename>{side}{i}.png</filename><size><width>48</width><height>48</height>"
                f"<depth>3</depth></size>{obj}</annotation>")
    result = CliRunner().invoke(app, ["check-data", str(tmp_path), "--image-size", "48"])
    assert result.exit_code == 1 and "box_nothing_to_score" in result.output, result.output
    with pytest.raises(TransferError, match="None of the 2 validation images has a box: nothing to score"):
        get_task("detect").load_data(str(tmp_path))
