"""The detection loss on known cases: hand-computed focal terms, perfect boxes, no ground truth."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from transfer.tasks.detect.loss import DetectionLoss, quality_focal_loss
from transfer.tasks.detect.model import anchor_points
from transfer.tasks.detect.targets import assign_atss, encode_boxes

SIZE = 64
POINTS, STRIDES = anchor_points(SIZE)
L = len(POINTS)
BOXES = tf.constant([[[0.25, 0.25, 0.75, 0.75], [0.05, 0.5, 0.3, 0.95], [0, 0, 0, 0]]])
LABELS = tf.constant([[1, 0, -1]])


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_quality_focal_loss_matches_a_hand_computation():
    logits = tf.constant([0.0, 2.0, -1.0, 0.5])
    targets = tf.constant([1.0, 0.0, 0.0, 0.6])
    expected = []
    for x, q in zip(logits.numpy(), targets.numpy()):
        p = _sigmoid(x)
        bce = -(q * math.log(p) + (1 - q) * math.log(1 - p))
        expected.append(bce * abs(q - p) ** 2)
    np.testing.assert_allclose(quality_focal_loss(logits, targets), expected, rtol=1e-5)
    assert abs(expected[0] - math.log(2) / 4) < 1e-6
    # A confident right answer costs almost nothing; a soft target is met at p == q.
    assert float(quality_focal_loss(tf.constant([8.0]), tf.constant([1.0]))[0]) < 1e-6
    q = 0.6
    at_target = float(quality_focal_loss(tf.constant([math.log(q / (1 - q))]), tf.constant([q]))[0])
    assert at_target < 1e-9


def _perfect_outputs(num_classes=2, confident=True):
    """Outputs whose boxes are the assigned boxes and whose scores are sure of the classes."""
    a = assign_atss(BOXES, LABELS, SIZE)
    pixel = a.boxes * SIZE
    distances = tf.where(a.positive[..., None], encode_boxes(POINTS, STRIDES, pixel), 1.0)
    sign = tf.where(tf.one_hot(a.labels, num_classes) > 0, 1.0, -1.0)
    return {"class_logits": sign * (12.0 if confident else 0.0), "box": distances}, a


def test_perfect_predictions_give_near_zero_loss():
    outputs, a = _perfect_outputs()
    parts = DetectionLoss(image_size=SIZE).components({"boxes": BOXES, "labels": LABELS}, outputs)
    assert float(parts["num_positive"]) == float(tf.reduce_sum(tf.cast(a.positive, tf.float32))) > 0
    assert float(parts["giou"]) < 1e-5 and float(parts["l1"]) < 1e-5
    assert float(parts["classification"]) < 1e-3


def test_loss_value_is_the_hand_normalized_sum():
    outputs, a = _perfect_outputs(confident=False)  # every logit 0: p = 0.5 everywhere
    loss = DetectionLoss(image_size=SIZE, iou_targets=False)
    parts = loss.components({"boxes": BOXES, "labels": LABELS}, outputs)
    positives = float(tf.reduce_sum(tf.cast(a.positive, tf.float32)))
    # Each of the L x 2 scores costs log(2) * 0.5**2, whether its target is 0 or 1.
    expected = L * 2 * math.log(2) * 0.25 / positives
    np.testing.assert_allclose(float(parts["classification"]), expected, rtol=1e-5)
    total = float(loss({"boxes": BOXES, "labels": LABELS}, outputs))
    np.testing.assert_allclose(total, float(parts["classification"] + parts["giou"] + parts["l1"]), rtol=1e-6)


def test_wrong_boxes_cost_more_than_right_ones():
    outputs, _ = _perfect_outputs()
    loss = DetectionLoss(image_size=SIZE)
    y = {"boxes": BOXES, "labels": LABELS}
    shifted = {**outputs, "box": outputs["box"] * 1.5}
    wrong = loss.components(y, shifted)
    assert float(wrong["giou"]) > 0.05 and float(wrong["l1"]) > 0.01
    # IoU targets: a worse box lowers its location's target, so the confident score now costs.
    assert float(wrong["classification"]) > float(loss.components(y, outputs)["classification"])


def test_no_ground_truth_gives_only_a_finite_background_loss():
    outputs = {"class_logits": tf.fill([2, L, 3], -4.6), "box": tf.ones([2, L, 4])}
    y = {"boxes": tf.zeros([2, 4, 4]), "labels": tf.fill([2, 4], -1)}
    loss = DetectionLoss(image_size=SIZE)
    parts = loss.components(y, outputs)
    assert float(parts["num_positive"]) == 0 and float(parts["giou"]) == 0 and float(parts["l1"]) == 0
    p = _sigmoid(-4.6)
    expected = 2 * L * 3 * (-math.log(1 - p)) * p**2  # normalized by max(positives, 1) = 1
    np.testing.assert_allclose(float(parts["classification"]), expected, rtol=1e-4)
    with tf.GradientTape() as tape:
        logits = tf.Variable(outputs["class_logits"])
        value = loss(y, {**outputs, "class_logits": logits})
    gradient = tape.gradient(value, logits)
    np.testing.assert_allclose(float(value), expected, rtol=1e-4)  # no box terms to add
    # d/dx [-log(1 - p) p^2] with p = sigmoid(x): p * p^2 + (-log(1 - p)) * 2 p^2 (1 - p), the same
    # for every logit (each one a background target, the sum normalized by 1).
    slope = p**3 + (-math.log(1 - p)) * 2 * p**2 * (1 - p)
    np.testing.assert_allclose(gradient.numpy(), np.full((2, L, 3), slope), rtol=1e-3)


def test_config_round_trip_keeps_the_settings():
    loss = DetectionLoss(image_size=96, giou_weight=3.0, iou_targets=False, top_k=5)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(again, DetectionLoss) and again.get_config() == loss.get_config()
    assert again.takes_all_outputs
