"""benchmarks/guides/retinanet.py: the RetinaNet example's pieces on known answers, its scorer, a tiny race run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from benchmarks.guides import retinanet
from benchmarks.guides import retinanet_parts as parts
from transfer.data.samples import Boxes, DataSplit, Samples


def test_anchor_generator_gives_nine_anchors_per_location_on_five_levels():
    anchors = parts.anchor_boxes(64)
    # P3..P7 grids of a 64 px input: 8x8, 4x4, 2x2, 1x1, 1x1 cells, 9 anchors each.
    assert parts.NUM_ANCHORS == 9 and anchors.shape == ((64 + 16 + 4 + 1 + 1) * 9, 4)
    assert len(parts.anchor_boxes(288)) == (36 * 36 + 18 * 18 + 9 * 9 + 5 * 5 + 3 * 3) * 9
    # The first location of P3: center (4, 4); ratio 0.5 then 1 then 2, each at scales 1, 2^(1/3), 2^(2/3).
    np.testing.assert_allclose(anchors[:9, :2], 4.0)
    np.testing.assert_allclose(anchors[0, 2:], [32 / math.sqrt(2), 32 * math.sqrt(2)], rtol=1e-6)
    np.testing.assert_allclose(anchors[3, 2:], [32, 32], rtol=1e-6)
    np.testing.assert_allclose(anchors[5, 2:], [32 * 2 ** (2 / 3)] * 2, rtol=1e-6)
    np.testing.assert_allclose(anchors[9, :2], [12, 4])  # the next P3 location is one stride to the right
    np.testing.assert_allclose(anchors[64 * 9 + 3], [8, 8, 64, 64], rtol=1e-6)  # P4's first, area 64²
    np.testing.assert_allclose(anchors[-6], [64, 64, 512, 512], rtol=1e-6)  # P7's, area 512²


def test_label_encoder_matches_at_iou_one_half_and_ignores_from_0_4():
    anchors = parts.anchor_boxes(64)
    gt = np.array([[36.0, 36.0, 32.0, 32.0]], np.float32)  # exactly P3's anchor at cell (4, 4), ratio 1, scale 1
    target = parts.encode_sample(tf.constant(anchors), tf.constant(gt), tf.constant([1])).numpy()
    same = (4 * 8 + 4) * 9 + 3
    np.testing.assert_allclose(target[same], [0, 0, 0, 0, 1], atol=1e-6)
    # Scale 2^(1/3): IoU 2^(-2/3) = 0.63, positive; its size target is log(2^(-1/3)) / 0.2.
    np.testing.assert_allclose(target[same + 1], [0, 0, -math.log(2) / 3 / 0.2, -math.log(2) / 3 / 0.2, 1], atol=1e-5)
    assert target[same + 2, 4] == -1.0  # scale 2^(2/3): IoU 2^(-4/3) = 0.397, under 0.4: background
    # Every anchor by an independent IoU: >= 0.5 class 1, < 0.4 background, between them ignored.
    a0, a1 = anchors[:, :2] - anchors[:, 2:] / 2, anchors[:, :2] + anchors[:, 2:] / 2
    inter = np.prod(np.clip(np.minimum(a1, 52) - np.maximum(a0, 20), 0, None), axis=1)
    iou = inter / (np.prod(anchors[:, 2:], axis=1) + 1024 - inter)
    expected = np.where(iou >= 0.5, 1.0, np.where(iou < 0.4, -1.0, -2.0))
    np.testing.assert_array_equal(target[:, 4], expected)
    assert (expected == -2.0).sum() > 0 and (expected == 1.0).sum() >= 4


def test_focal_and_smooth_l1_losses_on_hand_computed_cases():
    ln2 = math.log(2)
    # logit 0 (p = 0.5): a positive weighs alpha 0.25 * (1 - 0.5)² * ln 2, a negative 0.75 * 0.25 * ln 2.
    focal = parts.focal_loss(tf.constant([[1.0, 0.0]]), tf.constant([[0.0, 0.0]])).numpy()
    np.testing.assert_allclose(focal, [0.25 * 0.25 * ln2 + 0.75 * 0.25 * ln2], rtol=1e-6)
    np.testing.assert_allclose(parts.smooth_l1(tf.constant([[0.5, 2.0]]), tf.zeros((1, 2))).numpy(), [0.125 + 1.5])
    # One positive anchor (class 0, box off by 0.5), one background, one ignored; all logits 0.
    y_true = tf.constant([[[0.5, 0, 0, 0, 0.0], [0, 0, 0, 0, -1.0], [3.0, 0, 0, 0, -2.0]]])
    loss = parts.RetinaNetLoss(num_classes=1)(y_true, tf.zeros((1, 3, 5)))
    np.testing.assert_allclose(float(loss), 0.25 * 0.25 * ln2 + 0.75 * 0.25 * ln2 + 0.125, rtol=1e-5)


def test_decoder_returns_the_confident_anchor_as_corners_and_pads_to_100():
    anchors = parts.anchor_boxes(64)
    raw = np.zeros((1, len(anchors), 4 + 2), np.float32)
    raw[..., 4:] = -10.0  # every score sigmoid(-10) < 0.05: pruned
    raw[0, 3, 5] = 5.0  # P3's first anchor (32x32 at (4, 4)), class 1
    boxes, scores, classes, valid = (t.numpy() for t in parts.decode_predictions(raw, anchors))
    assert boxes.shape == (1, 100, 4) and scores.shape == (1, 100) and int(valid[0]) == 1
    np.testing.assert_allclose(boxes[0, 0], [-12, -12, 20, 20], atol=1e-4)
    assert classes[0, 0] == 1 and scores[0, 0] == pytest.approx(1 / (1 + math.exp(-5)))


def _perfect_predictions(samples, image_size):
    """Raw predictions that say each image's boxes: the encoder's targets, logits +-10 by its classes."""
    anchors = parts.anchor_boxes(image_size)
    raws = []
    for target in samples.targets:
        scale = np.array([target.width, target.height] * 2, np.float32) / image_size
        xywh = parts.corners_to_xywh(tf.constant(np.asarray(target.xyxy, np.float32) / scale))
        encoded = parts.encode_sample(tf.constant(anchors), xywh, tf.constant(target.labels)).numpy()
        logits = np.where(encoded[:, 4:5] == np.arange(samples.num_classes), 10.0, -10.0)
        raws.append(np.concatenate([encoded[:, :4], logits], axis=1))
    return np.stack(raws)


def test_scoring_maps_boxes_back_to_original_pixels_and_uses_transfer_evaluation():
    from transfer.tasks.detect.evaluation import evaluate_detections

    targets = (Boxes(((20.0, 10.0, 110.0, 80.0),), (0,), 160, 96),
               Boxes(((60.0, 30.0, 150.0, 90.0), (0.0, 0.0, 70.0, 50.0)), (1, 0), 160, 96))
    samples = Samples(("a.jpg", "b.jpg"), targets, ("cat", "dog"))
    raw = _perfect_predictions(samples, 64)
    found = retinanet.detections_in_original_pixels(raw, [(160, 96), (160, 96)], 64)
    np.testing.assert_allclose(found[1][0][np.argsort(found[1][2])], [[0, 0, 70, 50], [60, 30, 150, 90]], atol=1e-3)
    report = evaluate_detections(samples, found, samples.class_names)
    assert report.map == pytest.approx(1.0) and report.to_dict()["map50"] == pytest.approx(1.0)
    # The same predictions read as if the images were square (no stretch back) miss every box at IoU 0.5.
    square = retinanet.detections_in_original_pixels(raw, [(96, 96), (96, 96)], 64)
    assert evaluate_detections(samples, square, samples.class_names).map50 < 0.5


def test_an_epoch_is_the_full_batches_of_two():
    from transfer.core.errors import TransferError

    assert retinanet.steps_per_epoch(161) == 80 and retinanet.steps_per_epoch(2) == 1
    with pytest.raises(TransferError, match="batches of 2"):
        retinanet.steps_per_epoch(1)


def _rectangles(folder, count, size=(80, 64)):
    """Dark images with one or two bright squares of 30-40 px (large enough for P3's anchors)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    sources, targets = [], []
    for i in range(count):
        pixels = np.full((size[1], size[0], 3), 20, np.uint8)
        boxes, labels = [], []
        for k in range(1 + i % 2):
            side = int(rng.integers(30, 40))
            x, y = int(rng.integers(0, size[0] - side)), int(rng.integers(0, size[1] - side))
            pixels[y:y + side, x:x + side] = (230, 40, 40) if k == 0 else (40, 40, 230)
            boxes.append((float(x), float(y), float(x + side), float(y + side)))
            labels.append(k)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
        sources.append(str(folder / f"img{i}.png"))
        targets.append(Boxes(tuple(boxes), tuple(labels), size[0], size[1]))
    return Samples(tuple(sources), tuple(targets), ("red", "blue"))


@pytest.mark.slow  # about 60 s on two shared CPU cores (build, trace the train and eval steps, score)
def test_a_tiny_run_takes_exactly_the_steps_asked_and_scores_the_validation_split(tmp_path):
    samples = _rectangles(tmp_path / "data", 9)
    data = DataSplit(train=samples.subset(range(7)), val=samples.subset(range(7, 9)))
    lines = []
    result = retinanet.run_guide(data, backbone="smallcnn", weights=None, image_size=64, steps=5, echo=lines.append)
    # 7 images in batches of 2 (remainder dropped): 3 steps per epoch, so 2 epochs, the second one of 2 steps.
    assert result["steps"] == 5 and result["epochs"] == 2 and len(result["history"]) == 2
    assert [row["epoch"] for row in result["history"]] == [1, 2] and all("val_loss" in r for r in result["history"])
    assert len(lines) == 2 and lines[-1].startswith("epoch 2: loss")
    assert result["headline"] == result["score"]["map"]
    assert result["score"]["num_images"] == 2 and result["score"]["per_class_boxes"] == {"red": 2, "blue": 1}
    assert result["guide"] == "retinanet" and result["task"] == "detect" and "keras.io" in result["source"]
    assert 0 < result["train_seconds"] <= result["seconds"]
