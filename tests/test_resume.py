"""A training process killed mid-run resumes with `transfer train --resume` and loses no
finished epoch."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import pytest

from tests.segmentfactory import VOID, write_mask_folder
from transfer.cli.demo import make_shapes_dataset


def history(run_dir):
    return list(csv.DictReader(open(run_dir / "history.csv")))


def kill_and_resume(tmp_path, train_args, stages):
    """Trains with ``train_args`` in a fresh process, SIGKILLs it after at least five finished
    epochs, resumes it with ``transfer train --resume`` and checks no finished epoch was lost.
    ``stages``: ``(name, epochs)`` of the recipe, in order."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # A checkpoint after every epoch (by default one per 30 s of training), so every finished epoch must survive.
    command = [sys.executable, "-m", "transfer", "train", *train_args, "--checkpoint-every", "0", "--out", str(run_dir)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = run_dir / "checkpoints" / "state.json"
    deadline = time.time() + 300
    # Kill in the second stage, after at least five finished epochs.
    while time.time() < deadline and process.poll() is None:
        if state.is_file() and json.loads(state.read_text())["epoch"] >= 5:
            break
        time.sleep(0.05)
    assert process.poll() is None, "training ended before it could be killed: " + process.stderr.read().decode()
    process.send_signal(signal.SIGKILL)
    process.wait()

    before = history(run_dir)
    done = json.loads(state.read_text())["epoch"]
    # history.csv is written just before state.json, so a kill between the two
    # leaves it one row ahead; the state is what the resume trusts.
    assert done >= 5 and len(before) in (done, done + 1)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "training"

    result = subprocess.run([sys.executable, "-m", "transfer", "train", "--resume", str(run_dir)], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming {run_dir} after epoch {done}" in result.stdout

    after = history(run_dir)
    total = sum(epochs for _, epochs in stages)
    assert [int(r["epoch"]) for r in after] == list(range(1, total + 1))
    assert [r["stage"] for r in after] == [name for name, epochs in stages for _ in range(epochs)]
    assert after[:done] == before[:done]  # the finished epochs are kept as they were
    config = json.loads((run_dir / "run.json").read_text())
    assert config["status"] == "done"
    assert (run_dir / "checkpoints" / "best.keras").is_file()
    assert not list((run_dir / "checkpoints").glob("epoch-*.keras")) and not state.exists()
    return run_dir


RECIPE = ('batch_size = 4\n[[stages]]\nname = "head"\ntrainable = "head"\nepochs = 4\n'
          '[[stages]]\nname = "all"\ntrainable = "all"\nlearning_rate = 0.0001\nepochs = 6\n')


@pytest.mark.slow  # ~140 s: kills a real training and resumes it
def test_killed_run_resumes_without_losing_epochs(tmp_path):
    data = make_shapes_dataset(tmp_path / "shapes", train_per_class=6, val_per_class=3, size=32)
    recipe = tmp_path / "recipe.toml"
    # Batch 1: 18 steps an epoch, so 2 steps per compiled call, which the resumed stage keeps.
    recipe.write_text(RECIPE.replace("batch_size = 4", "batch_size = 1"))
    run_dir = kill_and_resume(tmp_path, ["--data", str(data), "--weights", "none", "--image-size", "32",
                                         "--recipe", str(recipe)], [("head", 4), ("all", 6)])
    with zipfile.ZipFile(run_dir / "checkpoints" / "best.keras") as archive:
        assert json.loads(archive.read("config.json"))["compile_config"]["steps_per_execution"] == 2


@pytest.mark.slow  # ~90 s: the same for a segmentation run (a U-Net, mask data, the IoU monitor)
def test_killed_segmentation_run_resumes(tmp_path):
    data = write_mask_folder(tmp_path / "masks", 12, size=(48, 40), void=True)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    run_dir = kill_and_resume(tmp_path, ["--task", "segment", "--data", str(data), "--ignore-index", str(VOID),
                                         "--backbone", "smallcnn", "--weights", "none", "--image-size", "32",
                                         "--recipe", str(recipe)], [("head", 4), ("all", 6)])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["per_class_iou"]) == {"background", "red", "blue"}


def test_resume_refuses_finished_or_missing_runs(tmp_path):
    from transfer.core.errors import TransferError
    from transfer.engine.train import resume

    with pytest.raises(TransferError, match="no training run"):
        resume(tmp_path / "nothing")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "run.json").write_text('{"status": "done"}')
    with pytest.raises(TransferError, match="finished training"):
        resume(tmp_path / "done")
    (tmp_path / "early").mkdir()  # killed before its first checkpoint (every 30 s and after each stage)
    (tmp_path / "early" / "run.json").write_text('{"status": "training", "checkpoint_every": 30.0}')
    with pytest.raises(TransferError, match="before its first checkpoint .* every 30 s"):
        resume(tmp_path / "early")


@pytest.mark.slow  # ~90 s: the same for a localization run (its compiled BoxLoss must load in a fresh process)
def test_killed_localization_run_resumes(tmp_path):
    from tests.imagefactory import write_image

    rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for i in range(12):
        box = (4 + i % 5, 6 + i % 4, 24 + i % 6, 28 + i % 3)
        write_image(tmp_path / "boxes" / f"b{i}.png", i % 3, i, 40)
        rows.append(f"b{i}.png,40,40,thing,{box[0]},{box[1]},{box[2]},{box[3]}")
    (tmp_path / "boxes" / "boxes.csv").write_text("\n".join(rows) + "\n")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    run_dir = kill_and_resume(tmp_path, ["--task", "localize", "--data", str(tmp_path / "boxes" / "boxes.csv"),
                                         "--backbone", "smallcnn", "--weights", "none", "--image-size", "32",
                                         "--recipe", str(recipe)], [("head", 4), ("all", 6)])
    assert "mean_iou" in json.loads((run_dir / "metrics.json").read_text())
