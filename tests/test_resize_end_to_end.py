"""One resize policy from training to ``transfer predict``: a tiny run of each box and mask task
with each policy, and the same raw model output found in the same original pixels by the
evaluation, the export's SavedModel and ``transfer predict --json``.

The probe image is 64 wide x 32 high. Letterboxed into 32 x 32 its content is 32 x 16 at rows
8..23, so a model's normalized box ``(x0, y0, x1, y1)`` on the input is, in the probe's pixels,
``(x0 * 64, (y0 * 32 - 8) * 2, x1 * 64, (y1 * 32 - 8) * 2)`` (clipped to the image); stretched,
it is ``(x0 * 64, y0 * 32, x1 * 64, y1 * 32)``. A mask is the input's probabilities over rows
8..23 (letterbox) or over the whole input (stretch), resized to 32 x 64. These maps are written
out below (``by_hand``), independently of ``transfer.core.resize``; the run is trained with the
policy, the model's raw output is taken on the policy's input, and every consumer must agree
with the hand map of that output, and disagree with the other policy's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from typer.testing import CliRunner

from tests.segmentfactory import write_mask_folder
from transfer.core.recipe import Recipe, Stage
from transfer.core.resize import LETTERBOX_FILL, ResizePolicy

pytestmark = pytest.mark.slow

SIZE = 32
PROBE = (64, 32)  # (width, height)
SHAPES = [(64, 32), (32, 64), (64, 32), (48, 32), (32, 48)]  # training images; the probe is validation's
# Where the probe's pixels lie on the input, by hand (module docstring): (top, content height).
WINDOW = {"letterbox": (8, 16), "stretch": (0, 32)}


def by_hand_boxes(normalized: np.ndarray, mode: str) -> np.ndarray:
    """Normalized input boxes ``[K, 4]`` -> the probe's pixels, as the docstring works it out."""
    width, height = PROBE
    top, rows = WINDOW[mode]
    x = np.asarray(normalized, np.float64)[:, [0, 2]] * width
    y = (np.asarray(normalized, np.float64)[:, [1, 3]] * SIZE - top) * height / rows
    boxes = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=-1)
    return np.clip(boxes, 0, [width, height, width, height])


def by_hand_probabilities(logits: np.ndarray, mode: str) -> np.ndarray:
    """Input logits ``[S, S, C]`` -> softmax at the probe's ``[32, 64, C]`` (the content rows, bilinear)."""
    top, rows = WINDOW[mode]
    probs = tf.nn.softmax(tf.constant(logits, tf.float32), axis=-1)[top:top + rows]
    return tf.image.resize(probs, (PROBE[1], PROBE[0]), method="bilinear", antialias=False).numpy()


def recipe(mode: str) -> Recipe:
    return Recipe(stages=(Stage("all", "all", learning_rate=1e-3, epochs=1),), batch_size=2, augment=(),
                  head_cache_views=0, warmup_epochs=0.0, ema_epochs=0.0, ema_min_steps=0, resize=mode)


def box_image(path: Path, width: int, height: int, i: int) -> list[tuple[int, int, int, int]]:
    """A dark image with one or two bright rectangles; returns their pixel boxes."""
    pixels = np.full((height, width, 3), 30, np.uint8)
    boxes = [(width // 8, height // 8, width // 2, height // 2)]
    if i % 2:
        boxes.append((width // 2, height // 2, width - 2, height - 2))
    for x0, y0, x1, y1 in boxes:
        pixels[y0:y1, x0:x1] = (230, 200 - 40 * len(boxes), 60)
    Image.fromarray(pixels).save(path)
    return boxes


def box_data(root: Path, task: str) -> tuple[str, str, Path]:
    """``root/train.csv``, ``root/val.csv`` and the probe image (validation's first)."""
    root.mkdir(parents=True)
    header = "filename,width,height,class,xmin,ymin,xmax,ymax"
    for side, shapes in (("train", SHAPES), ("val", [PROBE, (32, 64)])):
        lines = [header]
        for i, (width, height) in enumerate(shapes):
            name = f"{side}{i}.png"
            boxes = box_image(root / name, width, height, i)
            for box in boxes[:1] if task == "localize" else boxes:
                lines.append(f"{name},{width},{height},thing," + ",".join(map(str, box)))
        (root / f"{side}.csv").write_text("\n".join(lines) + "\n")
    return str(root / "train.csv"), str(root / "val.csv"), root / "val0.png"


def mask_data(root: Path) -> tuple[str, str, Path]:
    write_mask_folder(root / "train", len(SHAPES), sizes=SHAPES)
    write_mask_folder(root / "val", 2, sizes=[PROBE, (32, 64)], start=10)
    return str(root / "train"), str(root / "val"), root / "val" / "images" / "img10.png"


def train_and_export(tmp: Path, task_name: str, mode: str):
    """``(run folder, export folder, probe image, run config)`` of a tiny run with ``mode``."""
    from transfer.engine.run import RunDir
    from transfer.engine.train import train
    from transfer.serving.export import export_run
    from transfer.tasks import get_task

    task = get_task(task_name)
    data, val, probe = mask_data(tmp / "data") if task_name == "segment" else box_data(tmp / "data", task_name)
    split = task.load_data(data, val_source=val)
    train(split, tmp / "run", backbone="smallcnn", weights=None, image_size=SIZE, recipe=recipe(mode), task=task,
          data_source=data, val_data_source=val, verbose=0, feature_cache=False)
    # Detection: every box served (one epoch leaves the scores near the head's 0.01 prior), top 100.
    options = {"score_threshold": 0.0, "max_detections": 100} if task_name == "detect" else {}
    export_run(tmp / "run", tmp / "export", serving_options=options)
    return tmp / "run", tmp / "export", probe, RunDir(tmp / "run").config()


def raw_output(run: Path, probe: Path, mode: str):
    """The run's model on the probe as the policy resizes it: the input checked by hand first."""
    from transfer.engine.run import RunDir

    pixels = np.asarray(Image.open(probe).convert("RGB"))
    image = ResizePolicy(mode).resize_image(tf.constant(pixels), SIZE).numpy()
    top, rows = WINDOW[mode]
    assert (image[:top] == LETTERBOX_FILL).all() and (image[top + rows:] == LETTERBOX_FILL).all()
    assert not (image[top:top + rows] == LETTERBOX_FILL).all()
    model = RunDir(run).load_model()
    return model, model(image[None], training=False)


def serve(export: Path, probe: Path, signature: str = "serving_default") -> dict[str, np.ndarray]:
    loaded = tf.saved_model.load(str(export))
    out = loaded.signatures[signature](image_bytes=tf.constant([probe.read_bytes()]))
    return {k: v.numpy() for k, v in out.items()}


def predict_json(export: Path, probe: Path, *extra: str) -> dict:
    from transfer.cli.main import app

    result = CliRunner().invoke(app, ["predict", str(export), str(probe), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def other(mode: str) -> str:
    return "stretch" if mode == "letterbox" else "letterbox"


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_localize_box_lands_on_the_same_pixels_everywhere(tmp_path, mode):
    from transfer.engine.evaluate import evaluate_run
    from transfer.tasks.localize.evaluation import pixel_iou, predict_boxes

    run, export, probe, config = train_and_export(tmp_path, "localize", mode)
    assert config["resize"] == mode
    assert json.loads((export / "assets" / "transfer.json").read_text())["resize"]["mode"] == mode
    model, raw = raw_output(run, probe, mode)
    expected = by_hand_boxes(np.clip(raw["box"].numpy(), 0, 1), mode)[0]
    assert np.abs(expected - by_hand_boxes(np.clip(raw["box"].numpy(), 0, 1), other(mode))[0]).max() > 1.0

    from transfer.tasks import get_task

    samples = get_task("localize").evaluation_samples(config["val_data_source"], config)
    assert Path(samples.sources[0]).resolve() == probe.resolve()
    evaluated, _ = predict_boxes(model, samples, SIZE, resize=ResizePolicy.from_config(config))
    np.testing.assert_allclose(evaluated[0], expected, atol=1e-3)
    np.testing.assert_allclose(serve(export, probe)["box"][0], expected, atol=1e-3)
    np.testing.assert_allclose(predict_json(export, probe)["results"][0]["box"], expected, atol=6e-3)
    # transfer evaluate scores that very box against the probe's truth.
    truth = np.array([[64 // 8, 32 // 8, 64 // 2, 32 // 2]], np.float64)
    assert evaluate_run(run).ious[0] == pytest.approx(float(pixel_iou(expected[None], truth)[0]), abs=1e-4)


def _matched(expected: np.ndarray, found: np.ndarray, atol: float) -> bool:
    """Every expected box has a found box within ``atol`` of it (the order of near-equal scores
    may differ between the Keras model and the SavedModel)."""
    return all(np.abs(found - box).max(axis=-1).min(initial=np.inf) <= atol for box in expected)


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_detect_boxes_land_on_the_same_pixels_everywhere(tmp_path, mode):
    from transfer.tasks import get_task
    from transfer.tasks.detect.decode import decode_detections
    from transfer.tasks.detect.task import detections_in_pixels

    run, export, probe, config = train_and_export(tmp_path, "detect", mode)
    assert config["resize"] == mode
    model, raw = raw_output(run, probe, mode)
    found = decode_detections(raw["class_logits"], raw["box"], SIZE, score_threshold=0.0,
                              iou_threshold=config["serving"]["iou_threshold"], max_detections=100)
    count = int(found["count"][0])
    assert count >= 1
    top = found["boxes"].numpy()[0, :min(count, 5)]  # best first
    expected = by_hand_boxes(top, mode)
    assert not _matched(expected, by_hand_boxes(top, other(mode)), 1.0)

    samples = get_task("detect").evaluation_samples(config["val_data_source"], config).subset([0])
    evaluated = detections_in_pixels(model, samples, SIZE, 1, config, score_threshold=0.0)[0][0]
    served = serve(export, probe)
    predicted = predict_json(export, probe)["results"][0]["detections"]
    assert abs(len(evaluated) - count) <= 1 and abs(int(served["count"][0]) - count) <= 1
    assert _matched(expected, evaluated, 1e-2)
    assert _matched(expected, served["boxes"][0, :int(served["count"][0])], 1e-2)
    assert _matched(expected, np.array([d["box"] for d in predicted]), 2e-2)


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_segment_mask_lands_on_the_same_pixels_everywhere(tmp_path, mode):
    from transfer.tasks import get_task
    from transfer.tasks.segment.evaluation import predicted_masks

    run, export, probe, config = train_and_export(tmp_path, "segment", mode)
    assert config["resize"] == mode
    model, raw = raw_output(run, probe, mode)
    logits = (raw["mask"] if isinstance(raw, dict) else raw).numpy()[0]
    expected = by_hand_probabilities(logits, mode)
    assert np.abs(expected - by_hand_probabilities(logits, other(mode))).max() > 1e-3
    # Pixels whose best class wins by a margin: float noise cannot flip them.
    ranked = np.sort(expected, axis=-1)
    decided = ranked[..., -1] - ranked[..., -2] > 1e-4
    assert decided.mean() > 0.9
    mask = np.argmax(expected, axis=-1)

    served = serve(export, probe, "serving_probabilities")
    np.testing.assert_allclose(served["probabilities"][0], expected, atol=1e-4)
    np.testing.assert_array_equal(serve(export, probe)["mask"][0][decided], mask[decided])
    samples = get_task("segment").for_run(config).evaluation_samples(config["val_data_source"], config)
    assert Path(samples.sources[0]).resolve() == probe.resolve()
    _, evaluated = next(predicted_masks(model, samples, SIZE, 1, ResizePolicy.from_config(config)))
    np.testing.assert_array_equal(evaluated[decided], mask[decided])
    out = tmp_path / "masks"
    answer = predict_json(export, probe, "--out", str(out))["results"][0]
    written = np.asarray(Image.open(answer["mask_file"]))
    assert written.shape == (PROBE[1], PROBE[0])
    np.testing.assert_array_equal(written[decided], mask[decided])
