"""Several training steps per compiled Keras call (transfer.engine.stage_runner.steps_per_call) train
exactly what one step per call trains, for every task."""

import csv
import json
import zipfile

import pytest

from tests.segmentfactory import VOID, write_mask_folder
from tests.test_detect_task import _rectangles
from transfer.engine import stage_runner
from transfer.data import load_data
from transfer.cli.demo import make_shapes_dataset
from transfer.core.recipe import Recipe, Stage
from transfer.engine.stage_runner import steps_per_call
from transfer.tasks import get_task
from transfer.engine.train import train


def test_steps_per_call_keeps_eight_calls_an_epoch_up_to_sixteen_steps():
    assert [steps_per_call(n) for n in (1, 7, 8, 20, 108, 128, 10_000)] == [1, 1, 1, 2, 13, 16, 16]


def _compiled_steps(run_dir) -> int:
    with zipfile.ZipFile(run_dir / "checkpoints" / "best.keras") as archive:
        return json.loads(archive.read("config.json"))["compile_config"]["steps_per_execution"]


def _losses(run_dir) -> list[float]:
    return [float(r["loss"]) for r in csv.DictReader(open(run_dir / "history.csv"))]


def _same_training_either_way(monkeypatch, tmp_path, data, **train_args):
    """Trains twice, with the computed steps per call (2 here) and with 1: same losses, epoch by epoch."""
    multi = train(data, tmp_path / "multi", weights=None, verbose=0, **train_args)
    monkeypatch.setattr(stage_runner, "steps_per_call", lambda steps: 1)
    single = train(data, tmp_path / "single", weights=None, verbose=0, **train_args)
    assert (_compiled_steps(multi.run_dir), _compiled_steps(single.run_dir)) == (2, 1)
    multi_losses, single_losses = _losses(multi.run_dir), _losses(single.run_dir)
    assert len(multi_losses) == 2 and multi_losses == pytest.approx(single_losses, rel=1e-5)


@pytest.mark.slow  # two trainings, ~65 s on two shared cores; the default suite keeps under 10 minutes
def test_classification_trains_the_same_with_several_steps_per_call(tmp_path, monkeypatch):
    # Batch 1 over 18 images: 18 steps an epoch, 2 per call.
    data = load_data(make_shapes_dataset(tmp_path / "shapes", train_per_class=6, val_per_class=3, size=32))
    assert steps_per_call(len(data.train)) == 2
    recipe = Recipe(stages=(Stage("tune", "top:1", 1e-4, 2),), batch_size=1, seed=3)
    _same_training_either_way(monkeypatch, tmp_path, data, image_size=32, recipe=recipe)


@pytest.mark.slow  # ~1 min: two small detection and two small segmentation trainings
@pytest.mark.parametrize("task_name", ["detect", "segment"])
def test_detection_and_segmentation_train_the_same_with_several_steps_per_call(tmp_path, monkeypatch, task_name):
    # Their losses and metrics (mAP's loss monitor, IoU with an ignored value) run inside the multi-step loop.
    if task_name == "detect":
        task = get_task("detect")
        data = task.load_data(str(_rectangles(tmp_path / "data", 20)), val_fraction=0.2)
    else:
        task = get_task("segment").with_options(ignore_index=VOID)
        data = task.load_data(str(write_mask_folder(tmp_path / "data", 20, size=(64, 64), void=True)),
                              val_fraction=0.2)
    assert steps_per_call(len(data.train)) == 2
    recipe = Recipe(stages=(Stage("all", "all", 1e-3, 2),), batch_size=1, head_cache_views=0, seed=3,
                    augment=("flip",), label_smoothing=0.0, dropout=0.0)
    _same_training_either_way(monkeypatch, tmp_path, data, backbone="smallcnn", image_size=64, recipe=recipe,
                              task=task)
