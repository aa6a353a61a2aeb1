"""Localization, detection and segmentation on two worker processes (MultiWorkerMirroredStrategy
over localhost, CPU), as tests/test_distributed_train.py runs classification: one run folder
written by the chief, the workers agreeing epoch by epoch, a model that loads and evaluates to the
chief's numbers; a run whose worker is killed mid-training resumes on the chief's machine and
finishes; and the batch-level losses of detection and segmentation giving the single-process
loss and step of the same global batch."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO_ROOT
from tests.segmentfactory import VOID, write_mask_folder
from tests.test_distributed_train import start_workers, train_on_workers

RECIPE = ('batch_size = 4\naugment = []\nwarmup_epochs = 0.0\nema_epochs = 0.0\nhead_cache_views = 0\n'
          '[[stages]]\nname = "head"\ntrainable = "head"\nepochs = 1\n'
          '[[stages]]\nname = "all"\ntrainable = "all"\nlearning_rate = 0.0001\nepochs = 1\n')


def _box_images(folder: Path, count: int, *, boxes_per_image: int, size=(48, 40)) -> Path:
    """Images with bright rectangles on a dark ground (red, then blue) and their box CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for i in range(count):
        pixels = np.full((size[1], size[0], 3), 20, np.uint8)
        for k in range(1 + i % boxes_per_image):
            w, h = rng.integers(12, 24, 2)
            x, y = rng.integers(0, size[0] - w), rng.integers(0, size[1] - h)
            name, color = (("red", (230, 40, 40)), ("blue", (40, 40, 230)))[k]
            pixels[y:y + h, x:x + w] = color
            rows.append(f"img{i}.png,{size[0]},{size[1]},{name},{x},{y},{x + w},{y + h}")
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    (folder / "boxes.csv").write_text("\n".join(rows) + "\n")
    return folder / "boxes.csv"


def _localize(root: Path) -> list[str]:
    return ["--task", "localize", "--data", str(_box_images(root / "data", 16, boxes_per_image=1)),
            "--image-size", "32"]


def _detect(root: Path) -> list[str]:
    # 64 px: the detector's coarsest level (stride 32) keeps 2 x 2 locations.
    return ["--task", "detect", "--data", str(_box_images(root / "data", 16, boxes_per_image=2)),
            "--image-size", "64"]


def _segment(root: Path) -> list[str]:
    return ["--task", "segment", "--data", str(write_mask_folder(root / "data", 16, size=(48, 40), void=True)),
            "--ignore-index", str(VOID), "--image-size", "32"]


TASKS = {"localize": _localize, "detect": _detect, "segment": _segment}
COMMON = ["--backbone", "smallcnn", "--weights", "none"]


def _train_args(tmp_path: Path, task: str) -> list[str]:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    return [*TASKS[task](tmp_path), *COMMON, "--recipe", str(recipe)]


def _epoch_logs(stdout: str) -> list[dict[str, float]]:
    """Each epoch's logged metrics from a ``verbose=2`` log (Keras's ``name: value`` pairs after the times)."""
    rows = []
    for line in stdout.splitlines():
        if re.match(r"^\d+/\d+ - ", line) and "loss: " in line:
            rows.append({k: float(v) for k, v in re.findall(r"(\w+): (-?[\d.]+(?:e[-+]?\d+)?|nan)", line)})
    return rows


@pytest.mark.slow  # two TensorFlow processes per task: 3-7 min each on 2 CPU cores shared with other jobs
@pytest.mark.parametrize("task", sorted(TASKS))
def test_two_workers_train_one_run_folder(tmp_path, task):
    from transfer.engine.evaluate import evaluate_run

    run_dir = tmp_path / "run"
    outputs = train_on_workers(tmp_path, [*_train_args(tmp_path, task), "--out", str(run_dir)])
    (chief_out, _), (worker_out, _) = outputs
    assert "MultiWorkerMirroredStrategy: 2 workers x 1 replica, this is worker 0 (chief)" in chief_out
    assert "Worker 1 finished; the chief wrote the run folder." in worker_out
    # Metrics are averaged over the workers: both logs agree, epoch by epoch, and say what history.csv says.
    chief_logs, worker_logs = _epoch_logs(chief_out), _epoch_logs(worker_out)
    assert len(chief_logs) == 2 and chief_logs == worker_logs
    rows = list(csv.DictReader(open(run_dir / "history.csv")))
    assert [(r["epoch"], r["stage"]) for r in rows] == [("1", "head"), ("2", "all")]
    for row, logged in zip(rows, chief_logs):
        assert abs(float(row["val_loss"]) - logged["val_loss"]) <= 1e-4 * max(1.0, abs(logged["val_loss"]))
        assert np.isfinite(float(row["loss"]))

    config = json.loads((run_dir / "run.json").read_text())
    assert (config["task"], config["status"]) == (task, "done")
    assert (run_dir / "checkpoints" / "best.keras").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_images"] == config["num_val"] > 0
    # best.keras loads in this (undistributed) process and scores what the chief wrote.
    fresh = json.loads(json.dumps(evaluate_run(run_dir).summary()))
    assert {key: metrics[key] for key in fresh} == fresh
    # The worker's own files went to a temporary folder that it removed.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "recipe.toml", "run"]



def _history(run_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(run_dir / "history.csv")))


@pytest.mark.slow  # two TensorFlow processes killed mid-run, then a resume: 3-6 min per task (2 shared cores)
@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_run_whose_worker_is_killed_resumes_on_the_chief(tmp_path, task):
    """Worker 1 dies after the first epoch's checkpoint; the chief cannot go on without it and is
    stopped too; `transfer train --resume` on the chief's machine (no TF_CONFIG) finishes the run."""
    run_dir = tmp_path / "run"
    recipe = tmp_path / "recipe.toml"
    # Three epochs after the kill point, so the kill lands mid-run.
    recipe.write_text(RECIPE.replace("learning_rate = 0.0001\nepochs = 1", "learning_rate = 0.0001\nepochs = 3"))
    args = [*TASKS[task](tmp_path), *COMMON, "--recipe", str(recipe), "--checkpoint-every", "0"]
    processes = start_workers(tmp_path, [*args, "--out", str(run_dir)])
    chief, worker = processes
    state = run_dir / "checkpoints" / "state.json"
    try:
        deadline = time.time() + 400
        while time.time() < deadline and chief.poll() is None and worker.poll() is None:
            if state.is_file() and json.loads(state.read_text())["epoch"] >= 1:
                break
            time.sleep(0.05)
        running = chief.poll() is None and worker.poll() is None
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        try:  # the chief fails in its next collective, or waits in it for the dead worker
            chief.wait(timeout=5)
        except subprocess.TimeoutExpired:
            chief.kill()
            chief.wait()
        assert running, "training ended before the worker could be killed: " + chief.stderr.read()[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            for stream in (process.stdout, process.stderr):
                stream.close()

    before = _history(run_dir)
    done = json.loads(state.read_text())["epoch"]
    assert 1 <= done < 4 and len(before) in (done, done + 1)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "training"
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    result = subprocess.run([sys.executable, "-m", "transfer", "train", "--resume", str(run_dir)], text=True,
                            env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"}, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"Resuming {run_dir} after epoch {done}" in result.stdout

    after = _history(run_dir)
    assert [(r["epoch"], r["stage"]) for r in after] == [("1", "head"), ("2", "all"), ("3", "all"), ("4", "all")]
    assert after[:done] == before[:done]  # the epochs trained on two workers are kept as they were
    config = json.loads((run_dir / "run.json").read_text())
    assert (config["task"], config["status"]) == (task, "done")
    assert json.loads((run_dir / "metrics.json").read_text())["num_images"] == config["num_val"]
    assert not list((run_dir / "checkpoints").glob("epoch-*.keras")) and not state.exists()


# --- the batch-level losses under the strategy ---------------------------------------------------

LOSS_WORKER = textwrap.dedent(
    """
    import json, sys
    from transfer.engine.distribute import choose_distribution, distribute_dataset

    dist = choose_distribution()  # first: before any other TensorFlow op
    import keras
    import numpy as np
    import tensorflow as tf

    from transfer.tasks.detect.loss import DetectionLoss
    from transfer.tasks.detect.model import Detector, anchor_points
    from transfer.tasks.segment.loss import SegmentationLoss

    SIZE, BATCH, LR = 32, 4, 0.5
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (BATCH, SIZE, SIZE, 3)).astype("float32")
    # Segmentation: 3 classes; image 0 is scored on 6 pixels only (255: ignored), the others on all,
    # so each worker's half of the batch has its own pixel count.
    masks = rng.integers(0, 3, (BATCH, SIZE, SIZE)).astype("int32")
    masks[0] = 255
    masks[0, 3, :6] = 1
    # Detection: 2 classes; image 0 holds two objects, image 3 none (its positives: 0).
    boxes = np.zeros((BATCH, 2, 4), "float32")
    labels = np.full((BATCH, 2), -1, "int32")
    for i, row in enumerate([[(0.1, 0.1, 0.6, 0.5, 0), (0.4, 0.3, 0.95, 0.9, 1)], [(0.2, 0.2, 0.8, 0.8, 1)],
                             [(0.05, 0.5, 0.45, 0.95, 0)], []]):
        for k, (*box, label) in enumerate(row):
            boxes[i, k], labels[i, k] = box, label
    locations = len(anchor_points(SIZE)[0])

    def segmenter():
        inputs = keras.Input((SIZE, SIZE, 3))
        return keras.Model(inputs, keras.layers.Conv2D(3, 3, padding="same", name="logits")(inputs))

    def detector():
        inputs = keras.Input((SIZE, SIZE, 3))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, strides=4, activation="relu")(inputs))
        logits = keras.layers.Reshape((locations, 2), name="class_logits")(keras.layers.Dense(locations * 2)(x))
        box = keras.layers.Reshape((locations, 4), name="box")(
            keras.layers.Dense(locations * 4, activation="softplus")(x))
        return Detector(inputs, {"class_logits": logits, "box": box})

    cases = {"segment ce+dice": (segmenter, lambda: SegmentationLoss("ce+dice"), masks),
             "segment focal": (segmenter, lambda: SegmentationLoss("focal"), masks),
             "detect": (detector, lambda: DetectionLoss(image_size=SIZE), {"boxes": boxes, "labels": labels})}
    report = {}
    for name, (build, make_loss, targets) in cases.items():
        keras.utils.set_random_seed(0)
        reference = build()
        start = [w.numpy() for w in reference.trainable_weights]
        # The single-device answer: the loss of the whole batch and one plain SGD step on it.
        with tf.GradientTape() as tape:
            loss = make_loss()(targets, reference(images))
        step = [w - LR * g.numpy() for w, g in zip(start, tape.gradient(loss, reference.trainable_weights))]
        with dist.scope():
            model = build()
            model.compile(optimizer=keras.optimizers.SGD(LR), loss=make_loss())
        model.set_weights(start)
        dataset = distribute_dataset(tf.data.Dataset.from_tensor_slices((images, targets)).batch(BATCH), dist,
                                     batch_size=BATCH, num_examples=BATCH)
        evaluated = model.evaluate(dataset, verbose=0, return_dict=True)["loss"]
        trained = model.fit(dataset, epochs=1, verbose=0).history["loss"][0]
        worst = max(float(np.max(np.abs(a.numpy() - b))) for a, b in zip(model.trainable_weights, step))
        report[name] = {"single": float(loss), "evaluate": evaluated, "fit": trained, "weights_off_by": worst}
    print(json.dumps({"replicas": dist.num_replicas, "losses": report}))
    """
)


@pytest.mark.slow  # two TensorFlow processes, ~100 s on 2 CPU cores shared with other jobs
def test_batch_level_losses_match_a_single_device_step_on_two_workers(tmp_path):
    """Detection and segmentation divide by counts of the whole batch (positives, scored pixels, a
    Dice ratio): on two workers, each with half of the global batch, the logged loss and the SGD
    step are the single-device ones (not twice the gradient, nor each half normalized on its own)."""
    from tests.test_distribute import _free_ports, _tf_config

    script = tmp_path / "losses.py"
    script.write_text(LOSS_WORKER)
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    procs = [subprocess.Popen([sys.executable, str(script)], cwd=REPO_ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "TF_CONFIG": _tf_config(cluster, index=index),
                                   "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1",
                                   "PYTHONPATH": str(REPO_ROOT)})
             for index in range(2)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300))
    finally:
        for proc in procs:  # a worker stuck in a collective ignores SIGTERM: kill
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for proc, (stdout, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr[-3000:]
    reports = [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    assert reports[0] == reports[1] and reports[0]["replicas"] == 2
    for name, losses in reports[0]["losses"].items():
        assert losses["single"] > 0.05, name  # a loss worth comparing
        for logged in ("evaluate", "fit"):
            assert losses[logged] == pytest.approx(losses["single"], rel=1e-5), (name, logged, losses)
        assert losses["weights_off_by"] < 1e-5, (name, losses)
