"""The pieces localization and detection share: a box source renumbered to a run's classes,
``Boxes`` as JSON and back, and how ``describe_data`` names the classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from transfer.core.errors import TransferError
from transfer.data.boxes.run_classes import read_boxes_in_run_classes
from transfer.data.samples import Boxes
from transfer.tasks import get_task
from transfer.tasks.base import classes_phrase

HEADER = "filename,width,height,class,xmin,ymin,xmax,ymax\n"


def _box_csv(folder, rows: str):
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(folder / name)
    csv = folder / "boxes.csv"
    csv.write_text(HEADER + rows)
    return str(csv)


def test_labels_follow_the_run_order_not_the_source_order(tmp_path):
    # The source sorts its classes (cat 0, dog 1); the run numbers them dog 0, cat 1, fox 2.
    csv = _box_csv(tmp_path, "a.png,60,50,dog,5,5,40,40\na.png,60,50,cat,1,2,9,9\nb.png,60,50,cat,10,10,30,30\n")
    samples = read_boxes_in_run_classes(csv, ("dog", "cat", "fox"))
    assert samples.class_names == ("dog", "cat", "fox")
    by_file = {src.rsplit("/", 1)[-1]: target for src, target in zip(samples.sources, samples.targets)}
    assert sorted(zip(by_file["a.png"].labels, by_file["a.png"].xyxy)) == [
        (0, (5.0, 5.0, 40.0, 40.0)), (1, (1.0, 2.0, 9.0, 9.0))]
    assert by_file["b.png"].labels == (1,)


def test_a_class_the_run_never_learnt_is_refused_by_name(tmp_path):
    csv = _box_csv(tmp_path, "a.png,60,50,zebra,5,5,40,40\n")
    with pytest.raises(TransferError, match=r"\['zebra'\] are not among the run's classes \['cat'\]"):
        read_boxes_in_run_classes(csv, ("cat",))


@pytest.mark.parametrize("task_name", ["localize", "detect"])
def test_both_box_tasks_renumber_their_evaluation_source(tmp_path, task_name):
    csv = _box_csv(tmp_path, "a.png,60,50,dog,5,5,40,40\n")
    samples = get_task(task_name).evaluation_samples(csv, {"class_names": ["cat", "dog"]})
    assert samples.class_names == ("cat", "dog") and samples.targets[0].labels == (1,)


def test_boxes_round_trip_through_json_as_plain_numbers():
    target = Boxes(((1, 2.5, 30, 40), (0, 0, 5, 5)), (np.int64(2), 0), np.int32(60), 50)
    value = json.loads(json.dumps(target.to_json()))
    assert value == {"boxes": [[1.0, 2.5, 30.0, 40.0], [0.0, 0.0, 5.0, 5.0]], "labels": [2, 0],
                     "width": 60, "height": 50}
    assert Boxes.from_json(value) == Boxes(((1.0, 2.5, 30.0, 40.0), (0.0, 0.0, 5.0, 5.0)), (2, 0), 60, 50)


def test_classes_phrase_counts_and_names_the_first_five():
    assert classes_phrase(("raccoon",)) == "1 class (raccoon)"
    assert classes_phrase(tuple("abcdef")) == "6 classes (a, b, c, d, e, ...)"
