"""Damaged artifacts are user errors, not tracebacks: a truncated or garbled best.keras, epoch
checkpoint, export variables file, saved_model.pb or export model.keras gives exit 2 and one
message naming the file and what to do (transfer/artifact_loading.py), through evaluate, export,
train --resume and predict (each task's reader), and the Python readers.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.imagefactory import write_image, write_image_folder
from tests.test_honest_evaluate import SIZE, box_rows, checksums, tiny_run, write_box_csv
from tests.segmentfactory import write_mask_folder
from transfer.cli.main import app
from transfer.core.errors import TransferError


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def garble(path: Path) -> None:
    """64 bytes in the middle overwritten: the file keeps its size and (for a zip) its directory."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes((b + 101) % 256 for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


def empty(path: Path) -> None:
    path.write_bytes(b"")


DAMAGE = {"truncated": truncate, "garbled": garble, "empty": empty}


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def assert_damaged(result, path: Path, *needles: str) -> None:
    """Exit 2, no traceback, the file named, said damaged, with what to do."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert str(path) in result.output and "damaged" in result.output, result.output
    for needle in needles:
        assert needle in result.output, result.output


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls")
    write_image_folder(root / "data", {"cat": 3, "dog": 3}, val_counts={"cat": 2, "dog": 2}, size=SIZE, fmt="PNG")
    return tiny_run(root / "run", "classify", root / "data" / "train", root / "data" / "val")


def damaged_copy(run: Path, target: Path, relative: str, how: str) -> Path:
    shutil.copytree(run, target)
    DAMAGE[how](target / relative)
    return target


# --- best.keras: evaluate, export, the Python reader --------------------------------------------------
@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_damaged_best_checkpoint_evaluate_and_export(run, runner, tmp_path, how):
    bad = damaged_copy(run, tmp_path / "run", "checkpoints/best.keras", how)
    best = bad / "checkpoints" / "best.keras"
    before = checksums(bad)
    assert_damaged(runner.invoke(app, ["evaluate", str(bad)]), best, "train the run again")
    assert_damaged(runner.invoke(app, ["evaluate", str(bad), "--data", str(run.parent / "data" / "val")]), best)
    assert_damaged(runner.invoke(app, ["export", str(bad), "--out", str(tmp_path / "export")]), best)
    assert not (tmp_path / "export").exists()
    assert checksums(bad) == before  # nothing written into the run

    from transfer import evaluate_run
    from transfer.engine.run import RunDir

    for call in (lambda: evaluate_run(bad), lambda: RunDir(bad).load_model()):
        with pytest.raises(TransferError, match="damaged") as caught:
            call()
        assert str(best) in str(caught.value)


def test_missing_and_fifo_checkpoint_are_named(run, tmp_path):
    from transfer.engine.artifact_loading import load_keras_file

    with pytest.raises(TransferError, match="missing") as caught:
        load_keras_file(tmp_path / "none.keras", fix="Train again.")
    assert str(tmp_path / "none.keras") in str(caught.value)
    fifo = tmp_path / "pipe.keras"
    os.mkfifo(fifo)
    with pytest.raises(TransferError, match="named pipe"):  # never opened: it would block
        load_keras_file(fifo, fix="Train again.")


@pytest.mark.slow  # one run per task (the loader is shared; this checks each task's run reaches it)
@pytest.mark.parametrize("task_name", ["localize", "detect", "segment"])
def test_damaged_best_checkpoint_of_every_task(task_name, runner, tmp_path):
    if task_name == "segment":
        train, val = write_mask_folder(tmp_path / "train", 3, size=(SIZE, SIZE)), write_mask_folder(
            tmp_path / "val", 2, start=10, size=(SIZE, SIZE))
    else:
        train, val = write_box_csv(tmp_path / "train", box_rows(0, 4)), write_box_csv(tmp_path / "val", box_rows(9, 2))
    run = tiny_run(tmp_path / "run", task_name, train, val)
    best = run / "checkpoints" / "best.keras"
    truncate(best)
    assert_damaged(runner.invoke(app, ["evaluate", str(run)]), best)
    assert_damaged(runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "export")]), best)


# --- an epoch checkpoint: train --resume ---------------------------------------------------------
def unfinished(run: Path, target: Path) -> Path:
    """``run`` as a killed run would leave it: status training, state.json naming epoch-001.keras."""
    from transfer.engine.checkpoints import Progress

    shutil.copytree(run, target)
    config = json.loads((target / "run.json").read_text())
    (target / "run.json").write_text(json.dumps({**config, "status": "training"}))
    shutil.copy(target / "checkpoints" / "best.keras", target / "checkpoints" / "epoch-001.keras")
    Progress(epoch=1, stage_epochs_done=1, best_value=0.5, best_epoch=1, checkpoint="epoch-001.keras",
             history=[{"epoch": 1, "stage": "head", "val_accuracy": 0.5}]).save(target / "checkpoints" / "state.json")
    return target


@pytest.mark.parametrize("how", ["truncated", "garbled"])
def test_damaged_epoch_checkpoint_resume(run, runner, tmp_path, how):
    bad = unfinished(run, tmp_path / "run")
    epoch = bad / "checkpoints" / "epoch-001.keras"
    DAMAGE[how](epoch)
    before = checksums(bad)
    assert_damaged(runner.invoke(app, ["train", "--resume", str(bad)]), epoch, "no earlier one to resume from",
                   "best.keras")
    assert checksums(bad) == before


def test_missing_epoch_checkpoint_resume(run, runner, tmp_path):
    bad = unfinished(run, tmp_path / "run")
    (bad / "checkpoints" / "epoch-001.keras").unlink()
    result = runner.invoke(app, ["train", "--resume", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert str(bad / "checkpoints" / "epoch-001.keras") in result.output and "missing" in result.output


# --- an export: predict (every task's reader), the Python readers ----------------------------------
@pytest.fixture(scope="module")
def export(tmp_path_factory):
    from tests.test_export_predict import CLASSES, RECIPE, SIZE as EXPORT_SIZE, tiny_classifier
    from transfer.serving.export import export_model

    out = tmp_path_factory.mktemp("exports") / "tiny"
    image = write_image(out.parent / "photo.png", 0, 0, EXPORT_SIZE * 2)
    export_model(tiny_classifier(), out, class_names=CLASSES, image_size=EXPORT_SIZE, recipe_toml=RECIPE,
                 metadata={"backbone": "tiny", "run_dir": "runs/tiny"})
    return out, image


VARIABLES = "variables/variables.data-00000-of-00001"
PARTS = [(VARIABLES, "truncated"), (VARIABLES, "garbled"), (VARIABLES, "empty"),
         ("variables/variables.index", "garbled"), ("saved_model.pb", "truncated"), ("saved_model.pb", "garbled")]
TASKS = {"classification": "ExportedClassifier", "localization": "ExportedLocalizer",
         "detection": "ExportedDetector", "segmentation": "ExportedSegmenter"}


@pytest.mark.parametrize("part,how", PARTS)
def test_damaged_export_predict_names_the_file(export, runner, tmp_path, part, how):
    good, image = export
    bad = shutil.copytree(good, tmp_path / "export")
    DAMAGE[how](bad / part)
    before = checksums(bad)
    assert_damaged(runner.invoke(app, ["predict", str(bad), str(image)]), bad / part,
                   f"transfer export runs/tiny --out {bad} --overwrite")
    from transfer.tasks.classify.reader import ExportedClassifier

    with pytest.raises(TransferError, match="damaged"):
        ExportedClassifier.load(bad)
    assert checksums(bad) == before


@pytest.mark.parametrize("task", sorted(TASKS))
def test_damaged_export_of_every_task_reader(export, runner, tmp_path, task):
    """Each task's reader (chosen by the export's recorded task) loads through the same helper."""
    import transfer.tasks.classify.reader
    import transfer.tasks.localize.reader
    import transfer.tasks.detect.reader
    import transfer.tasks.segment.reader
    from transfer.serving.reader import METADATA_PATH

    good, image = export
    bad = shutil.copytree(good, tmp_path / "export")
    metadata = json.loads((bad / METADATA_PATH).read_text())
    (bad / METADATA_PATH).write_text(json.dumps({**metadata, "task": task}))
    truncate(bad / VARIABLES)
    assert_damaged(runner.invoke(app, ["predict", str(bad), str(image)]), bad / VARIABLES, "--overwrite")
    modules = (transfer.tasks.classify.reader, transfer.tasks.localize.reader, transfer.tasks.detect.reader, transfer.tasks.segment.reader)
    reader = next(getattr(m, TASKS[task]) for m in modules if hasattr(m, TASKS[task]))
    with pytest.raises(TransferError, match="damaged"):
        reader.load(bad)


def test_damaged_export_model_keras(export, runner, tmp_path):
    """model.keras is for Keras users (predict serves the SavedModel, which stays usable); reading it
    through transfer's loader names it and says to re-export."""
    from transfer.engine.artifact_loading import export_fix, load_keras_file

    good, image = export
    bad = shutil.copytree(good, tmp_path / "export")
    load_keras_file(good / "model.keras", fix="unused")  # the intact one loads
    for how in ("garbled", "truncated"):
        DAMAGE[how](bad / "model.keras")
        with pytest.raises(TransferError, match="damaged") as caught:
            load_keras_file(bad / "model.keras", fix=export_fix(bad, "runs/tiny"))
        assert str(bad / "model.keras") in str(caught.value) and "--overwrite" in str(caught.value)
    result = runner.invoke(app, ["predict", str(bad), str(image)])
    assert result.exit_code == 0, result.output


def test_export_metadata_that_is_a_fifo_is_refused_without_reading(export, runner, tmp_path):
    from transfer.serving.reader import METADATA_PATH

    good, image = export
    bad = shutil.copytree(good, tmp_path / "export")
    (bad / METADATA_PATH).unlink()
    os.mkfifo(bad / METADATA_PATH)  # opening it for reading would wait for a writer forever
    result = runner.invoke(app, ["predict", str(bad), str(image)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert str(bad / METADATA_PATH) in result.output and "named pipe" in result.output
