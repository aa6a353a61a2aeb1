"""`transfer evaluate RUN --data OTHER`: the data's class names against the run's (refused when they
differ, mapped by name when only their order does, said in one line), results in their own folder
RUN/evaluation-<data name>/ that records the data scored, RUN/evaluation/ untouched.

Runs are built untrained (``tiny_run``: the task's own model, saved as best.keras, with the
run.json training writes): evaluation only needs a checkpoint, and a fixed one makes two
evaluations comparable figure for figure.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.imagefactory import image_array, write_image_folder
from tests.segmentfactory import CLASS_NAMES, write_mask_folder
from transfer.cli.main import app

SIZE = 32


# --- tiny runs -------------------------------------------------------------------------------------
def tiny_run(out: Path, task_name: str, data: Path, val: Path, **options) -> Path:
    """A finished run folder of ``task_name`` on ``data``/``val``: an untrained smallcnn model at 32 px."""
    import keras

    from transfer.core.atomic import atomic_write_json
    from transfer.backbones import get_backbone
    from transfer.engine.run import RunDir
    from transfer.engine.run_config import split_record
    from transfer.tasks import get_task

    keras.utils.set_random_seed(0)
    task = get_task(task_name).with_options(**options)
    split = task.load_data(str(data), val_source=str(val))
    recipe = task.default_recipe()
    task_config = task.run_config(split, recipe)
    model, _ = task.build_model(get_backbone("smallcnn"), task_config, SIZE, None, recipe)
    objective = task.objective({**task_config, "image_size": SIZE}, recipe)
    run = RunDir(out)
    (run.root / "checkpoints").mkdir(parents=True)
    model.save(run.best_checkpoint)
    config = {"task": task.name, "backbone": "smallcnn", "weights": "random", "image_size": SIZE, **task_config,
              "monitor": objective.monitor, "monitor_mode": objective.mode, "data_source": str(data),
              "val_data_source": str(val), "num_train": len(split.train), "num_val": len(split.val),
              "status": "done", "best_epoch": 1, "last_epoch": 1, "best_value": 0.5, "last_value": 0.5}
    atomic_write_json(run.config_file, config)
    recipe.save(run.recipe_file)
    atomic_write_json(run.split_file, split_record(split, task))
    return run.root


def write_box_csv(folder: Path, rows: list[tuple[str, str, tuple[int, int, int, int]]], name="boxes.csv") -> Path:
    """``folder/name`` with one line per ``(image file, class, box)``; each image drawn if missing."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax"])
        for i, (file, label, box) in enumerate(rows):
            if not (folder / file).exists():
                Image.fromarray(image_array(i % 3, i, 48)).save(folder / file)
            writer.writerow([file, 48, 48, label, *box])
    return folder / name


def box_rows(start: int, count: int, classes=("cat", "dog")):
    return [(f"img{start + i}.png", classes[i % len(classes)], (4 + i, 6, 30 + i, 40)) for i in range(count)]


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def evaluate(runner, run: Path, *args: str):
    result = runner.invoke(app, ["evaluate", str(run), *args])
    assert "Traceback" not in result.output, result.output
    return result


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


# --- segmentation: a mask folder's classes.txt decides which value is which class ---------------------
@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    write_mask_folder(root / "train", 4, size=(SIZE, SIZE))
    write_mask_folder(root / "val", 3, start=50, size=(SIZE, SIZE))
    write_mask_folder(root / "other", 3, start=100, size=(SIZE, SIZE))
    return root, tiny_run(root / "run", "segment", root / "train", root / "val")


def swapped_copy(source: Path, target: Path, order: tuple[str, ...]) -> Path:
    """``source``'s images with masks whose values follow ``order`` (and a classes.txt saying so)."""
    shutil.copytree(source, target)
    value = {name: order.index(name) for name in CLASS_NAMES}
    lookup = np.array([value[name] for name in CLASS_NAMES], np.uint8)
    for mask in (target / "masks").glob("*.png"):
        Image.fromarray(lookup[np.asarray(Image.open(mask))]).save(mask)
    (target / "classes.txt").write_text("\n".join(order) + "\n")
    return target


def test_segment_swapped_classes_txt_maps_mask_values_by_name(seg, tmp_path):
    from transfer.engine.evaluation_data import check_classes, in_run_order
    from transfer.engine.run import RunDir
    from transfer.tasks import get_task

    root, run = seg
    config = RunDir(run).config()
    swapped = swapped_copy(root / "other", tmp_path / "swapped", ("red", "background", "blue"))
    check = check_classes("segment", str(swapped), config)
    assert check.how == "by name" and "red, background, blue" in check.note and "mapped" in check.note
    samples = in_run_order(get_task("segment").evaluation_samples(str(swapped), config), check)
    assert samples.class_names == CLASS_NAMES
    # Value 0 is the data's red (the run's class 1), value 1 its background (the run's 0).
    assert {dict(t.values)[0] for t in samples.targets} == {1} and {dict(t.values)[1] for t in samples.targets} == {0}
    plain = check_classes("segment", str(root / "other"), config)
    assert plain.how == "same" and plain.note == ""


@pytest.mark.slow  # three evaluations of a segmentation model (~30 s on two shared cores)
def test_segment_swapped_classes_txt_is_mapped_by_name_to_the_same_figures(seg, runner, tmp_path):
    root, run = seg
    assert evaluate(runner, run).exit_code == 0  # the run's own evaluation/, to be left alone
    before = checksums(run / "evaluation")
    plain = evaluate(runner, run, "--data", str(root / "other"), "--json")
    assert plain.exit_code == 0, plain.output
    swapped = swapped_copy(root / "other", tmp_path / "swapped", ("red", "background", "blue"))
    result = evaluate(runner, run, "--data", str(swapped), "--json")
    assert result.exit_code == 0, result.output
    assert "mapped to the run's by name" in result.output and "red, background, blue" in result.output
    a = metrics_of(run / "evaluation-other")
    b = metrics_of(run / "evaluation-swapped")
    # The same pixels, named the other way round: the same figures (read with the run's order, the
    # swapped masks scored background as red and red as background).
    assert b["confusion_matrix"] == a["confusion_matrix"] and b["mean_iou"] == a["mean_iou"]
    assert b["data"]["classes"]["data"] == ["red", "background", "blue"]
    assert b["data"]["classes"]["data_to_run"] == {"red": 1, "background": 0, "blue": 2}
    assert checksums(run / "evaluation") == before  # the run's own evaluation is untouched


def test_segment_other_class_set_is_refused_naming_both_lists(seg, runner, tmp_path):
    root, run = seg
    other = shutil.copytree(root / "other", tmp_path / "cars")
    (other / "classes.txt").write_text("background\nred\ncar\n")
    before = checksums(run)
    result = evaluate(runner, run, "--data", str(other))
    assert result.exit_code == 2, result.output
    assert "background, red, car" in result.output and "background, red, blue" in result.output
    assert "car not in the run" in result.output and str(other / "classes.txt") in result.output
    (other / "classes.txt").write_text("background\nred\n")  # a class short: its values would mean others
    result = evaluate(runner, run, "--data", str(other))
    assert result.exit_code == 2 and "blue missing from the data" in result.output, result.output
    assert checksums(run) == before  # nothing written


@pytest.mark.slow  # one evaluation of a segmentation model
def test_segment_masks_without_classes_txt_are_read_in_the_run_order_and_said(seg, runner, tmp_path):
    root, run = seg
    bare = shutil.copytree(root / "other", tmp_path / "bare")
    (bare / "classes.txt").unlink()
    result = evaluate(runner, run, "--data", str(bare))
    assert result.exit_code == 0, result.output
    assert "without a classes.txt" in result.output and "background, red, blue" in result.output
    assert metrics_of(run / "evaluation-bare")["data"]["classes"]["data"] is None


# --- classification and boxes: names map by name; a class the run never learnt is refused -------------
@pytest.fixture(scope="module")
def classify(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls")
    write_image_folder(root / "data", {"cat": 3, "dog": 3, "fox": 3}, val_counts={"cat": 2, "dog": 2, "fox": 2},
                       size=SIZE, fmt="PNG")
    return root, tiny_run(root / "run", "classify", root / "data" / "train", root / "data" / "val")


def test_classify_evaluate_data_writes_its_own_folder_and_leaves_the_runs_alone(classify, runner, tmp_path):
    root, run = classify
    (run / "evaluation").mkdir()
    (run / "evaluation" / "metrics.json").write_text('{"accuracy": 0.5}')  # as training left it
    before = checksums(run)
    test = tmp_path / "test"
    write_image_folder(test, {"cat": 2, "dog": 1, "fox": 2}, size=SIZE, fmt="PNG")
    result = evaluate(runner, run, "--data", str(test))
    assert result.exit_code == 0, result.output
    folder = run / "evaluation-test"
    assert f"wrote {folder}" in result.output
    data = metrics_of(folder)["data"]
    assert data["path"] == str(test) and data["num_images"] == 5 and data["identity"] == str(test.resolve())
    assert data["classes"] == {"run": ["cat", "dog", "fox"], "data": ["cat", "dog", "fox"],
                               "mapping": "same names, same order"}
    assert {k: v for k, v in checksums(run).items() if not k.startswith("evaluation-test/")} == before


@pytest.mark.slow  # five evaluations
def test_classify_evaluate_data_folders_per_data_set(classify, runner, tmp_path):
    root, run = classify
    # The run is shared by the module: another test's evaluation-test/ would make this one -2.
    for earlier in run.glob("evaluation-*"):
        shutil.rmtree(earlier)
    assert evaluate(runner, run).exit_code == 0
    own = checksums(run / "evaluation")
    test = tmp_path / "test"
    write_image_folder(test, {"cat": 2, "dog": 1, "fox": 2}, size=SIZE, fmt="PNG")
    result = evaluate(runner, run, "--data", str(test))
    assert result.exit_code == 0, result.output
    folder = run / "evaluation-test"
    assert f"Wrote {folder / 'metrics.json'}" in result.output
    data = metrics_of(folder)["data"]
    assert data["path"] == str(test) and data["num_images"] == 5 and data["identity"] == str(test.resolve())
    assert data["classes"]["mapping"] == "same names, same order"
    assert metrics_of(folder)["num_images"] == 5
    assert checksums(run / "evaluation") == own  # RUN/evaluation/ untouched
    assert "data" in metrics_of(run / "evaluation")  # the run's own records its split too

    # The same data again replaces that folder's files only; another data set of the same name gets -2.
    (folder / "confusion_matrix.png").write_bytes(b"stale")
    assert evaluate(runner, run, "--data", str(test)).exit_code == 0
    assert (folder / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    elsewhere = tmp_path / "b" / "test"
    write_image_folder(elsewhere, {"cat": 1, "dog": 1}, size=SIZE, fmt="PNG")
    result = evaluate(runner, run, "--data", str(elsewhere), "--json")
    assert result.exit_code == 0, result.output
    assert metrics_of(run / "evaluation-test-2")["data"]["num_images"] == 2
    assert metrics_of(folder)["data"]["num_images"] == 5  # the first data set's results are kept
    assert checksums(run / "evaluation") == own


def test_classify_unknown_classes_are_refused_naming_both_lists(classify, runner, tmp_path):
    root, run = classify
    unknown = tmp_path / "unknown"
    write_image_folder(unknown, {"cat": 1, "wolf": 1}, size=SIZE, fmt="PNG")
    before = checksums(run)
    result = evaluate(runner, run, "--data", str(unknown))
    assert result.exit_code == 2, result.output
    assert "cat, wolf" in result.output and "cat, dog, fox" in result.output and "wolf not in the run" in result.output
    assert checksums(run) == before


@pytest.mark.slow  # one evaluation
def test_classify_subset_of_the_classes_is_said(classify, runner, tmp_path):
    root, run = classify
    subset = tmp_path / "subset"
    write_image_folder(subset, {"fox": 2, "cat": 1}, size=SIZE, fmt="PNG")
    result = evaluate(runner, run, "--data", str(subset))
    assert result.exit_code == 0, result.output
    assert "no examples of dog" in result.output
    assert metrics_of(run / "evaluation-subset")["data"]["classes"]["missing"] == ["dog"]


@pytest.mark.parametrize("task_name", ["localize", "detect"])
def test_boxes_of_a_class_the_run_never_learnt_are_refused_naming_both_lists(task_name, runner, tmp_path):
    train = write_box_csv(tmp_path / "train", box_rows(0, 4))
    val = write_box_csv(tmp_path / "val", box_rows(10, 2))
    run = tiny_run(tmp_path / "run", task_name, train, val)
    wolves = write_box_csv(tmp_path / "wolves", box_rows(40, 2, classes=("dog", "wolf")))
    before = checksums(run)
    result = evaluate(runner, run, "--data", str(wolves))
    assert result.exit_code == 2, result.output
    assert "dog, wolf" in result.output and "cat, dog" in result.output and "wolf not in the run" in result.output
    assert checksums(run) == before


@pytest.mark.slow  # two evaluations per task
@pytest.mark.parametrize("task_name", ["localize", "detect"])
def test_boxes_evaluated_in_their_own_folder_and_a_missing_class_said(task_name, runner, tmp_path):
    train = write_box_csv(tmp_path / "train", box_rows(0, 4))
    val = write_box_csv(tmp_path / "val", box_rows(10, 2))
    run = tiny_run(tmp_path / "run", task_name, train, val)
    # COCO would list categories in any order; a CSV's classes come sorted, so name them differently.
    plain = write_box_csv(tmp_path / "plain", box_rows(20, 3), name="test.csv")
    assert evaluate(runner, run, "--data", str(plain)).exit_code == 0
    data = metrics_of(run / "evaluation-plain-test")["data"]
    assert data["num_images"] == 3 and data["classes"]["data"] == ["cat", "dog"]
    only_dogs = write_box_csv(tmp_path / "dogs", box_rows(30, 2, classes=("dog",)))
    result = evaluate(runner, run, "--data", str(only_dogs))
    assert result.exit_code == 0 and "no examples of cat" in result.output, result.output


@pytest.mark.slow  # two evaluations
def test_coco_categories_in_another_order_give_the_same_figures(runner, tmp_path):
    train = write_box_csv(tmp_path / "train", box_rows(0, 4))
    val = write_box_csv(tmp_path / "val", box_rows(10, 2))
    run = tiny_run(tmp_path / "run", "detect", train, val)
    rows = box_rows(20, 3)
    write_box_csv(tmp_path / "coco", rows)

    def coco(order, name):
        ids = {label: i + 1 for i, label in enumerate(order)}
        images = [{"id": i, "file_name": f, "width": 48, "height": 48} for i, (f, _, _) in enumerate(rows)]
        boxes = [{"id": i, "image_id": i, "category_id": ids[c], "iscrowd": 0, "area": 1.0,
                  "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]} for i, (_, c, b) in enumerate(rows)]
        document = {"images": images, "categories": [{"id": ids[c], "name": c} for c in order], "annotations": boxes}
        (tmp_path / "coco" / name).write_text(json.dumps(document))
        return tmp_path / "coco" / name

    first = evaluate(runner, run, "--data", str(coco(("cat", "dog"), "a.json")))
    second = evaluate(runner, run, "--data", str(coco(("dog", "cat"), "b.json")))
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    a, b = metrics_of(run / "evaluation-coco-a"), metrics_of(run / "evaluation-coco-b")
    assert a["per_class_boxes"] == b["per_class_boxes"] == {"cat": 2, "dog": 1}
    assert a["map"] == b["map"] and a["data"]["num_images"] == b["data"]["num_images"] == 3


# --- where results go ------------------------------------------------------------------------------
def test_evaluation_folder_names_and_keeps_other_data_sets(tmp_path):
    from transfer.engine.evaluation_data import data_name, evaluation_folder
    from transfer.engine.run import RunDir

    (tmp_path / "raccoon").mkdir()
    (tmp_path / "raccoon" / "test.csv").write_text("x")
    (tmp_path / "flowers test").mkdir()
    assert data_name(str(tmp_path / "raccoon" / "test.csv")) == "raccoon-test"
    assert data_name(str(tmp_path / "flowers test") + "/") == "flowers-test"
    assert data_name("tfds:beans:test") == "tfds-beans-test"
    run = RunDir(tmp_path / "run")
    (run.root).mkdir()
    data = str(tmp_path / "raccoon")
    assert evaluation_folder(run, data) == run.root / "evaluation-raccoon"
    (run.root / "evaluation-raccoon").mkdir()  # a folder of ours for the same data: reused
    (run.root / "evaluation-raccoon" / "metrics.json").write_text(json.dumps({"data": {"identity": data}}))
    assert evaluation_folder(run, data) == run.root / "evaluation-raccoon"
    other = tmp_path / "b" / "raccoon"
    other.mkdir(parents=True)
    assert evaluation_folder(run, str(other)) == run.root / "evaluation-raccoon-2"
    (run.root / "evaluation-raccoon-2").mkdir()  # not ours (no metrics.json naming data): kept
    assert evaluation_folder(run, str(other)) == run.root / "evaluation-raccoon-3"
    assert evaluation_folder(run, data) != run.evaluation_dir


def test_a_tfds_source_is_not_read_twice_for_its_names(monkeypatch):
    import transfer.data

    from transfer.engine.evaluation_data import check_classes

    def refuse(*args, **kwargs):
        raise AssertionError("read twice")

    monkeypatch.setattr(transfer.data, "load_data", refuse)
    check = check_classes("classify", "tfds:beans", {"class_names": ["a", "b"]})
    assert check.how == "reader" and check.note == "" and check.record()["data"] is None
