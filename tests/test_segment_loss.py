"""SegmentationLoss on hand-made masks and logits with known answers."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer.data.samples import IGNORE_VALUE
from transfer.tasks.segment.loss import SegmentationLoss, parse_kind

KINDS = ["ce", "dice", "focal", "ce+dice", "focal+dice"]


def _masks(seed=0, shape=(2, 6, 5), num_classes=3, ignored=0.2):
    rng = np.random.default_rng(seed)
    masks = rng.integers(0, num_classes, shape).astype("int32")
    masks[rng.random(shape) < ignored] = IGNORE_VALUE
    return masks


def _perfect_logits(masks, num_classes, margin=30.0):
    return margin * np.eye(num_classes, dtype="float32")[np.where(masks == IGNORE_VALUE, 0, masks)]


def _value(loss, masks, logits) -> float:
    return float(loss(masks, logits))


@pytest.mark.parametrize("kind", KINDS)
def test_perfect_logits_cost_nothing(kind):
    masks = _masks()
    assert _value(SegmentationLoss(kind), masks, _perfect_logits(masks, 3)) == pytest.approx(0.0, abs=1e-5)


def test_uniform_logits_cost_log_c_in_cross_entropy_and_the_focal_factor_in_focal():
    masks = _masks(num_classes=4)
    uniform = np.zeros(masks.shape + (4,), "float32")
    assert _value(SegmentationLoss("ce"), masks, uniform) == pytest.approx(math.log(4), rel=1e-6)
    focal = (1 - 1 / 4) ** 2 * math.log(4)
    assert _value(SegmentationLoss("focal"), masks, uniform) == pytest.approx(focal, rel=1e-6)
    assert _value(SegmentationLoss("focal", focal_gamma=0.0), masks, uniform) == pytest.approx(math.log(4), rel=1e-6)


def test_dice_by_hand():
    # Two pixels, classes 0 and 1, p = 0.5 everywhere: per class I = 0.5, sum p = 1, sum g = 1,
    # dice = (2 * 0.5 + 1) / (1 + 1 + 1) = 2/3 for both classes; the loss is 1 - 2/3.
    masks = np.array([[[0, 1]]])
    assert _value(SegmentationLoss("dice"), masks, np.zeros((1, 1, 2, 2))) == pytest.approx(1 / 3, rel=1e-6)
    # A third class nobody has nor predicts (very low logit) is left out of the mean.
    third = np.concatenate([np.zeros((1, 1, 2, 2)), np.full((1, 1, 2, 1), -50.0)], axis=-1)
    assert _value(SegmentationLoss("dice"), masks, third) == pytest.approx(1 / 3, rel=1e-5)
    # ... but predicted (argmax) and absent, it counts: dice = 1 / (mass + 1).
    predicted = np.array([[[[0.0, 0.0, 50.0], [0.0, 9.0, 0.0]]]])
    p = tf.nn.softmax(predicted).numpy()[0, 0]
    dice0 = (2 * 0 + 1) / (p[:, 0].sum() + 1 + 1)
    dice1 = (2 * p[1, 1] + 1) / (p[:, 1].sum() + 1 + 1)
    dice2 = 1 / (p[:, 2].sum() + 1)
    expected = ((1 - dice0) + (1 - dice1) + (1 - dice2)) / 3
    assert _value(SegmentationLoss("dice"), masks, predicted) == pytest.approx(expected, rel=1e-5)


def test_sums_are_the_sums_of_their_terms():
    masks = _masks(1)
    logits = np.random.default_rng(1).normal(size=masks.shape + (3,)).astype("float32")
    ce, dice, focal = (_value(SegmentationLoss(k), masks, logits) for k in ("ce", "dice", "focal"))
    assert _value(SegmentationLoss("ce+dice"), masks, logits) == pytest.approx(ce + dice, rel=1e-6)
    assert _value(SegmentationLoss("focal+dice"), masks, logits) == pytest.approx(focal + dice, rel=1e-6)
    parts = SegmentationLoss("focal+dice").components(masks, logits)
    assert list(parts) == ["focal", "dice"] and float(parts["dice"]) == pytest.approx(dice, rel=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_ignored_pixels_change_nothing(kind):
    masks = _masks(2, ignored=0.3)
    rng = np.random.default_rng(2)
    logits = rng.normal(size=masks.shape + (3,)).astype("float32")
    other = logits.copy()
    ignored = masks == IGNORE_VALUE
    other[ignored] = rng.normal(scale=40.0, size=(ignored.sum(), 3))  # wild logits where nothing is scored
    loss = SegmentationLoss(kind)
    assert _value(loss, masks, other) == pytest.approx(_value(loss, masks, logits), rel=1e-6)
    # Dropping the ignored pixels altogether (the scored ones laid out as one row) gives the same value.
    kept = ~ignored
    row_masks, row_logits = masks[kept][None, None, :], logits[kept][None, None, :]
    assert _value(loss, row_masks, row_logits) == pytest.approx(_value(loss, masks, logits), rel=1e-5)


def test_masks_as_float_or_with_a_channel_axis_are_read_as_ints():
    masks = _masks(3)
    logits = np.random.default_rng(3).normal(size=masks.shape + (3,)).astype("float32")
    loss = SegmentationLoss()
    expected = _value(loss, masks, logits)
    assert _value(loss, masks.astype("float32"), logits) == pytest.approx(expected, rel=1e-6)
    assert _value(loss, masks[..., None].astype("uint8"), logits) == pytest.approx(expected, rel=1e-6)


def test_class_weights_scale_each_class():
    # Pixel 1 is class 0, pixel 2 class 1; CE = (w0 * ce1 + w1 * ce2) / 2 (Keras's class_weight rule).
    masks = np.array([[[0, 1, IGNORE_VALUE]]])
    logits = np.array([[[[2.0, 0.0], [1.0, 0.5], [0.0, 9.0]]]], "float32")
    log_p = tf.nn.log_softmax(logits).numpy()[0, 0]
    ce = _value(SegmentationLoss("ce", class_weights=[0.5, 3.0]), masks, logits)
    assert ce == pytest.approx(-(0.5 * log_p[0, 0] + 3.0 * log_p[1, 1]) / 2, rel=1e-6)

    masks = _masks(4)
    logits = np.random.default_rng(4).normal(size=masks.shape + (3,)).astype("float32")
    for kind in KINDS:
        plain = _value(SegmentationLoss(kind), masks, logits)
        assert _value(SegmentationLoss(kind, class_weights=[1, 1, 1]), masks, logits) == pytest.approx(plain, rel=1e-6)
        assert _value(SegmentationLoss(kind, class_weights=[2.5] * 3), masks, logits) == pytest.approx(2.5 * plain,
                                                                                                      rel=1e-6)
    # Dice weighs classes: a zero weight drops that class's term from the (unchanged) mean.
    dice = SegmentationLoss("dice")
    per_class = [_value(SegmentationLoss("dice", class_weights=np.eye(3)[c]), masks, logits) for c in range(3)]
    assert sum(per_class) == pytest.approx(_value(dice, masks, logits), rel=1e-6)
    with pytest.raises(ValueError, match="2 weights for 3 classes"):
        SegmentationLoss(class_weights=[1, 2])(masks, logits)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_are_finite_even_for_saturated_logits_and_all_ignored_batches(kind):
    masks = _masks(5)
    logits = tf.Variable(np.random.default_rng(5).normal(scale=1e3, size=masks.shape + (3,)).astype("float32"))
    with tf.GradientTape() as tape:
        value = SegmentationLoss(kind, focal_gamma=0.5)(masks, logits)
    gradient = tape.gradient(value, logits).numpy()
    assert np.isfinite(float(value)) and np.all(np.isfinite(gradient))  # what saturation used to break
    if kind == "ce":
        # d CE / d logits = (softmax - one-hot of the label) / scored pixels, on scored pixels only
        # (NumPy's float64 softmax as the reference).
        z = logits.numpy().astype(np.float64)
        softmax = np.exp(z - z.max(-1, keepdims=True))
        softmax /= softmax.sum(-1, keepdims=True)
        scored = masks != IGNORE_VALUE
        expected = (softmax - np.eye(3)[np.where(scored, masks, 0)]) * scored[..., None] / scored.sum()
        np.testing.assert_allclose(gradient, expected, atol=1e-6)
    # Every pixel ignored: nothing to learn from, the loss and every gradient exactly 0.
    with tf.GradientTape() as tape:
        value = SegmentationLoss(kind, focal_gamma=0.5)(np.full_like(masks, IGNORE_VALUE), logits)
    assert float(value) == 0.0 and not np.any(tape.gradient(value, logits).numpy())


def test_config_round_trip_and_bad_arguments():
    loss = SegmentationLoss(" Focal + DICE ", class_weights=[1, 2], ignore_value=7, focal_gamma=1.5, name="seg")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(again, SegmentationLoss)
    assert (again.kind, again.class_weights, again.ignore_value, again.focal_gamma, again.name) == (
        "focal+dice", [1.0, 2.0], 7, 1.5, "seg")
    assert parse_kind("ce+dice") == ("ce", "dice")
    for bad in ("bce", "ce+ce", "", "ce+"):
        with pytest.raises(ValueError, match="kind"):
            SegmentationLoss(bad)
    with pytest.raises(ValueError, match="sample_weight"):
        SegmentationLoss()(np.zeros((1, 2, 2)), np.zeros((1, 2, 2, 2)), sample_weight=np.ones(1))
    with pytest.raises(ValueError, match="focal_gamma"):
        SegmentationLoss(focal_gamma=-1)
