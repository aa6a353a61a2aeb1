"""The task seam: the registry, classification's --val-data, and the engine's task choice."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.imagefactory import write_image_folder
from transfer.data.samples import Boxes, DataSplit, Samples
from transfer.core.errors import TransferError
from transfer.tasks import TASKS, get_task
from transfer.tasks.base import Task


def test_every_registered_task_implements_the_seam():
    for name in TASKS:
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name and task.title
        # Every method the engine calls is the task's own, not the base's NotImplementedError.
        for method in ("load_data", "describe_data", "target_to_json", "target_from_json", "evaluation_samples",
                       "run_config", "build_model", "objective", "make_dataset", "evaluate",
                       "serving_outputs", "postprocess", "parity_error"):
            assert getattr(type(task), method) is not getattr(Task, method), (name, method)


def test_unknown_task_names_the_known_ones():
    with pytest.raises(TransferError) as caught:
        get_task("segmentation-ish")
    assert "classify" in caught.value.fix and "localize" in caught.value.fix
    assert get_task("classification").name == "classify"  # what older exports record


def test_importing_the_registry_stays_light():
    code = "import sys, transfer.tasks; print('keras' in sys.modules or 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_val_data_gives_a_separate_validation_source(tmp_path):
    write_image_folder(tmp_path / "train", {"cat": 4, "dog": 4, "fox": 3}, size=16)
    write_image_folder(tmp_path / "test", {"dog": 2, "cat": 3}, size=16)  # a subset of the classes
    split = get_task("classify").load_data(str(tmp_path / "train"), val_source=str(tmp_path / "test"))
    assert (len(split.train), len(split.val)) == (11, 5)
    assert split.val.class_names == split.train.class_names == ("cat", "dog", "fox")
    # Targets follow the training classes' order, not the test folder's own.
    assert sorted(split.val.class_counts().items()) == [("cat", 3), ("dog", 2), ("fox", 0)]
    assert "--val-data" in split.origin


def test_val_data_with_an_unknown_class_or_an_already_split_folder_is_refused(tmp_path):
    write_image_folder(tmp_path / "train", {"cat": 4, "dog": 4}, size=16)
    write_image_folder(tmp_path / "test", {"cat": 2, "owl": 2}, size=16)
    task = get_task("classify")
    with pytest.raises(TransferError, match="owl"):
        task.load_data(str(tmp_path / "train"), val_source=str(tmp_path / "test"))
    write_image_folder(tmp_path / "split", {"cat": 3, "dog": 3}, val_counts={"cat": 1, "dog": 1}, size=16)
    with pytest.raises(TransferError, match="split already") as caught:
        task.load_data(str(tmp_path / "split"), val_source=str(tmp_path / "test"))
    assert "train" in caught.value.fix


def test_the_engine_picks_the_task_from_the_targets():
    from transfer.engine.train import task_of

    labels = Samples(("a.png", "b.png"), (0, 1), ("x", "y"))
    boxes = Samples(("a.png",), (Boxes(((1.0, 2.0, 3.0, 4.0),), (0,), 8, 8),), ("x",))
    assert task_of(DataSplit(labels, labels)).name == "classify"
    with pytest.raises(TransferError, match="boxes") as caught:  # localize or detect: not guessed
        task_of(DataSplit(boxes, boxes))
    assert "task='localize'" in caught.value.fix and "task='detect'" in caught.value.fix
    assert task_of(DataSplit(boxes, boxes), "detect").name == "detect"
    assert task_of(DataSplit(labels, labels), "localize").name == "localize"


def test_split_json_targets_round_trip_through_the_task():
    task = get_task("classify")
    assert task.target_from_json(task.target_to_json((0, 2)), {"multi_label": True}) == (0, 2)
    assert task.target_from_json(task.target_to_json(3), {"multi_label": False}) == 3
