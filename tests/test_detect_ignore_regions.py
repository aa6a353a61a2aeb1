"""Ignore regions (COCO ``iscrowd``, VOC ``difficult``) are read, not trained on, and scored as the
reference tools score them; validation images keep every box.

Each scoring test has a known answer worked out by hand and checked against pycocotools run on
files the way a COCO user runs it (``COCO(gt.json)``, ``loadRes(detections)``), so the in-memory
evaluation cannot drift from the reference tool.
"""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest

from tests.imagefactory import write_image
from tests.test_box_readers import voc_xml, write_coco
from transfer.data.boxes import read_boxes
from transfer.data.samples import Boxes, Samples
from transfer.tasks.detect.evaluation import evaluate_detections

# One real object (cat) and, in the same image, a crowd of cats in its own corner.
CAT = (10.0, 10.0, 30.0, 30.0)
CROWD = (60.0, 40.0, 100.0, 80.0)


def reference_map(gt_path, detections) -> float:
    """pycocotools on files, as a COCO user runs it: AP@[.5:.95] of ``detections`` (COCO result dicts)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(gt_path))
        found = truth.loadRes(detections)
        evaluator = COCOeval(truth, found, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def crowd_dataset(tmp_path):
    write_image(tmp_path / "a.jpg", size=(120, 100))
    return write_coco(tmp_path / "instances.json", {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 120, "height": 100}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [60, 40, 40, 40], "area": 1600, "iscrowd": 1},
        ],
    })


def test_a_detection_on_a_coco_crowd_is_not_a_false_positive(tmp_path):
    gt = crowd_dataset(tmp_path)
    samples, _ = read_boxes(gt)
    assert samples.targets[0].ignore == (False, True)
    # The most confident detection lies inside the crowd; the next one is the cat, exactly.
    on_crowd = (70.0, 50.0, 90.0, 70.0)
    prediction = (np.array([on_crowd, CAT]), np.array([0.95, 0.9]), np.array([0, 0]))
    report = evaluate_detections(samples, [prediction], ("cat",))
    # By hand: the crowd detection is ignored, the cat is found at every IoU threshold: AP 1.
    # Had the crowd been dropped (the old reading), the first detection would be a false positive
    # ahead of the hit: precision 1/2 at recall 1, AP 0.5.
    assert report.map == pytest.approx(1.0, abs=1e-9)
    assert report.per_class_boxes == (1,)  # the crowd is not a box to find
    as_results = [{"image_id": 1, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": s}
                  for (x0, y0, x1, y1), s in zip(prediction[0].tolist(), prediction[1].tolist())]
    assert report.map == pytest.approx(reference_map(gt, as_results), abs=1e-9)


def test_an_undetected_crowd_is_not_a_miss(tmp_path):
    gt = crowd_dataset(tmp_path)
    samples, _ = read_boxes(gt)
    report = evaluate_detections(samples, [(np.array([CAT]), np.array([0.9]), np.array([0]))], ("cat",))
    assert report.map == pytest.approx(1.0, abs=1e-9)  # recall 1 of the one real object
    assert report.map == pytest.approx(reference_map(gt, [{"image_id": 1, "category_id": 1,
                                                           "bbox": [10, 10, 20, 20], "score": 0.9}]), abs=1e-9)


def test_a_voc_difficult_object_is_neither_found_nor_missed(tmp_path):
    write_image(tmp_path / "a.jpg", size=(120, 100))
    (tmp_path / "a.xml").write_text(voc_xml("a.jpg", (120, 100), [("cat", *CAT), ("cat", *CROWD, 1)]))
    samples, _ = read_boxes(tmp_path)
    assert samples.targets[0].ignore == (False, True)
    missed = evaluate_detections(samples, [(np.array([CAT]), np.array([0.9]), np.array([0]))], ("cat",))
    on_it = evaluate_detections(samples, [(np.array([CROWD, CAT]), np.array([0.95, 0.9]), np.array([0, 0]))],
                                ("cat",))
    # By hand: the difficult object counts neither as a miss (recall 1/1) nor, found first, as a
    # false positive: AP 1 both times. Scored as an ordinary box, missing it would give recall 1/2
    # (AP 0.5) and finding it AP 1: the ignore flag is what makes the first answer 1.
    assert missed.map == pytest.approx(1.0, abs=1e-9)
    assert on_it.map == pytest.approx(1.0, abs=1e-9)
    ordinary = Samples(samples.sources, (Boxes(samples.targets[0].xyxy, samples.targets[0].labels, 120, 100),),
                       samples.class_names)
    assert evaluate_detections(ordinary, [(np.array([CAT]), np.array([0.9]), np.array([0]))],
                               ("cat",)).map == pytest.approx(0.5, abs=0.01)


def test_ignore_flags_survive_split_json_and_old_files_read_as_none():
    boxes = Boxes((CAT, CROWD), (0, 0), 120, 100, ignore=(False, True))
    assert Boxes.from_json(json.loads(json.dumps(boxes.to_json()))) == boxes
    old = {"boxes": [list(CAT)], "labels": [0], "width": 120, "height": 100}  # written before the flag existed
    assert Boxes.from_json(old).ignore == () and "ignore" not in Boxes(( CAT,), (0,), 120, 100).to_json()
    assert Boxes((CAT,), (0,), 1, 1, ignore=(False,)) == Boxes((CAT,), (0,), 1, 1)
    with pytest.raises(ValueError, match="one ignore flag per box"):
        Boxes((CAT, CROWD), (0, 0), 120, 100, ignore=(True,))


def test_training_leaves_ignore_regions_out_and_localization_prefers_real_objects():
    from transfer.data.pipelines.boxes import box_arrays, largest_box
    from transfer.tasks.detect.data import all_box_arrays, max_boxes_for

    target = Boxes((CAT, CROWD, (0.0, 0.0, 5.0, 5.0)), (0, 1, 1), 120, 100, ignore=(False, True, False))
    samples = Samples(("a.jpg",), (target,), ("cat", "dog"))
    boxes, labels = all_box_arrays(samples)
    assert labels.tolist() == [[0, 1]] and boxes[0, 1].tolist() == [0.0, 0.0, 5.0, 5.0]
    assert max_boxes_for(samples) == 2
    # The crowd is the largest box, but an image is localized by its largest real object.
    assert largest_box(target) == (CAT, 0)
    assert box_arrays(samples, max_boxes=2)[1].tolist() == [[0, 1]]
    only_crowd = Boxes((CROWD,), (1,), 120, 100, ignore=(True,))
    assert largest_box(only_crowd) == (CROWD, 1)  # nothing else: the region itself


def test_validation_keeps_every_box_beyond_the_training_cap(tmp_path):
    from transfer.core.recipe import Recipe
    from transfer.tasks.detect.task import DetectTask

    sources = []
    for i in range(2):
        write_image(tmp_path / f"{i}.jpg", i, size=(64, 64))
        sources.append(str(tmp_path / f"{i}.jpg"))
    crowded = Boxes(tuple((4.0 * k, 4.0 * k, 4.0 * k + 10, 4.0 * k + 10) for k in range(5)), (0,) * 5, 64, 64)
    val = Samples(tuple(sources), (crowded, Boxes(((1.0, 1.0, 9.0, 9.0),), (0,), 64, 64)), ("cat",))
    config = {"max_boxes": 2, "image_size": 32}  # the most boxes a training image held
    task = DetectTask()
    _, train_targets = next(iter(task.make_dataset(val, 32, 2, training=True, recipe=Recipe(augment=()),
                                                   cache="none", config=config)))
    _, val_targets = next(iter(task.make_dataset(val, 32, 2, training=False, recipe=Recipe(augment=()),
                                                 cache="none", config=config)))
    assert train_targets["labels"].shape == (2, 2)
    assert val_targets["labels"].shape == (2, 5)
    assert sorted(np.sum(val_targets["labels"].numpy() >= 0, axis=1).tolist()) == [1, 5]
