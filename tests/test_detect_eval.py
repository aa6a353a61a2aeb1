"""evaluate_detections: pycocotools' numbers on hand-made boxes whose answers are worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from transfer.data.samples import Boxes, Samples
from transfer.core.errors import TransferError
from transfer.tasks.detect.evaluation import MAX_DETECTIONS, evaluate_detections

SIZE = (640, 480)
# COCO's 101 recall points: a detector that reaches recall r at precision 1 and no further
# scores (number of points <= r) / 101.
RECALL_POINTS = 101


def approx(expected):
    """Equal up to float rounding (COCO divides by tp + fp + eps, so a perfect AP is 1 - 2e-16)."""
    return pytest.approx(expected, abs=1e-9)


def image(*boxes):
    """A ``Boxes`` target from ``(label, x0, y0, x1, y1)`` tuples on a 640x480 image."""
    return Boxes(tuple(tuple(float(v) for v in b[1:]) for b in boxes), tuple(b[0] for b in boxes), *SIZE)


def samples(*targets, names=("cat", "dog")):
    return Samples(tuple(f"img{i}.jpg" for i in range(len(targets))), tuple(targets), names)


def predict(*detections):
    """One image's prediction from ``(label, score, x0, y0, x1, y1)`` tuples."""
    if not detections:
        return np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
    rows = np.array(detections, np.float64)
    return rows[:, 2:], rows[:, 1], rows[:, 0].astype(np.int64)


def perfect(target, score=0.9):
    return predict(*[(label, score, *xyxy) for xyxy, label in zip(target.xyxy, target.labels)])


def box_iou(a, b):
    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    area = lambda x: (x[2] - x[0]) * (x[3] - x[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def test_a_perfect_detector_scores_one_everywhere():
    data = samples(image((0, 10, 20, 110, 120), (1, 300, 200, 380, 300)), image((1, 50, 50, 90, 70)))
    report = evaluate_detections(data, [perfect(t) for t in data.targets], data.class_names)
    assert (report.map, report.map50, report.map75, report.mar100) == approx((1.0, 1.0, 1.0, 1.0))
    assert report.per_class_ap == approx((1.0, 1.0)) and report.per_class_ap50 == approx((1.0, 1.0))
    assert (report.num_images, report.num_boxes, report.num_detections) == (2, 3, 3)
    assert report.headline() == ("mAP@0.5", approx(1.0))
    assert report.summary()["map"] == 1.0  # rounded: COCO's precision is tp / (tp + fp + eps)


@pytest.mark.parametrize("shift, passed_thresholds, map75", [
    (10, 7, 1.0),   # IoU 9000/11000 = 0.818: matches at 0.50 .. 0.80 (7 of the 10 thresholds)
    (20, 4, 0.0),   # IoU 8000/12000 = 0.667: matches at 0.50 .. 0.65 (4 of 10), not at 0.75
])
def test_shifted_boxes_match_at_the_thresholds_below_their_iou(shift, passed_thresholds, map75):
    truth = (0.0, 0.0, 100.0, 100.0)
    shifted = (shift, 0.0, 100.0 + shift, 100.0)
    iou = box_iou(truth, shifted)
    assert sum(t <= iou for t in np.linspace(0.5, 0.95, 10)) == passed_thresholds
    report = evaluate_detections(samples(image((0, *truth))), [predict((0, 0.9, *shifted))], ("cat", "dog"))
    assert report.map50 == approx(1.0) and report.map75 == approx(map75)
    assert report.map == approx(passed_thresholds / 10)
    assert report.mar100 == approx(passed_thresholds / 10)  # recall 1 at those thresholds, 0 above


def test_a_missed_object_lowers_recall_and_ap():
    data = samples(image((0, 10, 10, 60, 60)), image((0, 200, 200, 300, 300)))
    report = evaluate_detections(data, [perfect(data.targets[0]), predict()], data.class_names)
    assert report.mar100 == approx(0.5)
    # Precision 1 up to recall 0.5 (recall points 0.00 .. 0.50), nothing beyond.
    assert report.map == approx(51 / RECALL_POINTS) and report.map50 == approx(51 / RECALL_POINTS)
    assert report.per_class_ap[1] is None  # no dog anywhere


def test_a_false_positive_scored_below_every_true_one_keeps_ap_at_one():
    data = samples(image((0, 10, 10, 60, 60), (0, 200, 200, 300, 300)))
    below = predict((0, 0.9, 10, 10, 60, 60), (0, 0.8, 200, 200, 300, 300), (0, 0.1, 400, 300, 450, 350))
    assert evaluate_detections(data, [below], data.class_names).map == approx(1.0)


def test_a_false_positive_scored_above_the_true_ones_lowers_ap():
    data = samples(image((0, 10, 10, 60, 60), (0, 200, 200, 300, 300)))
    above = predict((0, 0.95, 400, 300, 450, 350), (0, 0.9, 10, 10, 60, 60), (0, 0.8, 200, 200, 300, 300))
    report = evaluate_detections(data, [above], data.class_names)
    # Precision 0, 1/2, 2/3 at recall 0, 1/2, 1; COCO's envelope makes it 2/3 at every recall point.
    assert report.map == approx(2 / 3) and report.map50 == approx(2 / 3)
    assert report.mar100 == 1.0


def test_a_false_positive_on_a_background_image_counts_against_its_class():
    data = samples(image((0, 10, 10, 60, 60)), image())
    clean = evaluate_detections(data, [perfect(data.targets[0], 0.5), predict()], data.class_names)
    noisy = evaluate_detections(data, [perfect(data.targets[0], 0.5), predict((0, 0.9, 5, 5, 50, 50))],
                                data.class_names)
    assert clean.map == approx(1.0) and noisy.map == approx(0.5)  # precision 1/2 at recall 1


def test_two_classes_one_perfect_one_missed():
    data = samples(image((0, 10, 10, 60, 60), (1, 200, 200, 300, 300)))
    report = evaluate_detections(data, [predict((0, 0.9, 10, 10, 60, 60))], data.class_names)
    assert report.per_class_ap == approx((1.0, 0.0)) and report.per_class_ap50 == approx((1.0, 0.0))
    assert report.map == approx(0.5) and report.mar100 == approx(0.5)
    assert report.summary()["per_class_ap"] == {"cat": 1.0, "dog": 0.0}


def test_an_image_without_boxes_or_predictions_changes_nothing():
    one = samples(image((0, 10, 10, 60, 60)))
    more = samples(image((0, 10, 10, 60, 60)), image())
    alone = evaluate_detections(one, [perfect(one.targets[0])], one.class_names)
    with_empty = evaluate_detections(more, [perfect(more.targets[0]), predict()], more.class_names)
    assert with_empty.summary() | {"num_images": 1} == alone.summary()
    assert with_empty.num_images == 2 and with_empty.map == approx(1.0)


def test_predictions_of_a_class_without_ground_truth_get_no_ap_and_leave_map_alone():
    data = samples(image((0, 10, 10, 60, 60)))
    report = evaluate_detections(data, [predict((0, 0.5, 10, 10, 60, 60), (1, 0.9, 300, 300, 350, 350))],
                                 data.class_names)
    assert report.per_class_ap == approx((1.0, None)) and report.map == approx(1.0)
    assert report.detections_of_absent_classes == 1
    summary = json.loads(json.dumps(report.summary()))
    assert summary["per_class_ap"] == {"cat": 1.0, "dog": None} and summary["per_class_ap50"]["dog"] is None
    assert "no AP" in report.table()


def test_only_the_top_100_detections_of_an_image_are_scored():
    data = samples(image((0, 10, 10, 60, 60)))
    decoys = [(1, 0.9, 300, 300, 310, 310)] * MAX_DETECTIONS  # another class: COCOeval alone would keep the cat
    late = evaluate_detections(data, [predict(*decoys, (0, 0.1, 10, 10, 60, 60))], data.class_names)
    early = evaluate_detections(data, [predict(*decoys, (0, 0.95, 10, 10, 60, 60))], data.class_names)
    assert late.detections_dropped == 1 and late.map == 0.0 and late.mar100 == 0.0
    assert early.detections_dropped == 1 and early.map == approx(1.0) and early.num_detections == MAX_DETECTIONS


def test_ground_truth_classes_are_matched_by_name():
    data = samples(image((0, 10, 10, 60, 60)), names=("dog",))
    report = evaluate_detections(data, [predict((1, 0.9, 10, 10, 60, 60))], ("cat", "dog"))
    assert report.per_class_ap == approx((None, 1.0))
    with pytest.raises(TransferError, match="img0.jpg.*'dog'.*does not know"):
        evaluate_detections(data, [predict()], ("cat",))


def test_pycocotools_prints_nothing(capsys):
    data = samples(image((0, 10, 10, 60, 60)))
    evaluate_detections(data, [perfect(data.targets[0])], data.class_names)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("predictions, message", [
    ([], "one prediction per image"),
    ([(np.zeros((2, 4)), np.zeros(1), np.zeros(2))], "img0.jpg: the prediction has 2 boxes, 1 scores"),
    ([(np.zeros((1, 4)), np.zeros(1), np.array([2]))], "img0.jpg: predicted labels \\[2\\]"),
    ([(np.full((1, 4), np.nan), np.zeros(1), np.zeros(1))], "img0.jpg: .*NaN"),
    ([np.zeros((1, 4))], "img0.jpg: its prediction is not a"),
])
def test_bad_predictions_name_the_image(predictions, message):
    with pytest.raises(TransferError, match=message):
        evaluate_detections(samples(image((0, 1, 1, 9, 9))), predictions, ("cat", "dog"))


def test_write_gives_metrics_json_with_nulls_and_a_png(tmp_path):
    data = samples(image((0, 10, 10, 60, 60)))
    report = evaluate_detections(data, [perfect(data.targets[0])], data.class_names)
    written = report.write(tmp_path / "eval")
    metrics = json.loads(written["metrics"].read_text())
    # One box found exactly: every AP and the recall are 1; the class without boxes has none.
    assert [metrics[k] for k in ("map", "map50", "map75", "mar100", "num_images", "num_boxes")] == [1.0] * 4 + [1, 1]
    assert metrics["per_class_ap"] == {"cat": 1.0, "dog": None}
    assert written["per_class_ap"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = report.table()
    assert "mAP@0.5       1.000" in table and "dog" in table
