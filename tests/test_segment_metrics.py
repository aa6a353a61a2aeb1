"""Segmentation metrics on hand-made masks with known answers; streaming equals NumPy."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from transfer.data.samples import IGNORE_VALUE
from transfer.tasks.segment.metrics import PixelAccuracy, SegmentIoU, confusion_matrix, segmentation_scores

# 4x4, left half class 0, right half class 1; the prediction gets one class-1 pixel wrong.
TRUE = np.array([[0, 0, 1, 1]] * 4)
PRED = TRUE.copy()
PRED[0, 2] = 0


def _logits(pred, num_classes):
    return 5.0 * np.eye(num_classes, dtype="float32")[pred]


def test_one_wrong_pixel_by_hand():
    confusion = confusion_matrix(TRUE, PRED, 2)
    np.testing.assert_array_equal(confusion, [[8, 0], [1, 7]])
    assert confusion.dtype == np.int64
    scores = segmentation_scores(confusion, ["bg", "fg"])
    # IoU: bg 8 / (8 + 1 false positive) = 8/9; fg 7 / (7 + 1 false negative) = 7/8.
    assert scores["per_class_iou"] == pytest.approx({"bg": 8 / 9, "fg": 7 / 8})
    assert scores["mean_iou"] == pytest.approx((8 / 9 + 7 / 8) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(15 / 16)
    # Dice: 2 TP / (|truth| + |prediction|): bg 16 / (8 + 9), fg 14 / (8 + 7).
    assert scores["per_class_dice"] == pytest.approx({"bg": 16 / 17, "fg": 14 / 15})
    assert scores["dice"] == pytest.approx((16 / 17 + 14 / 15) / 2)

    metric, accuracy = SegmentIoU(2), PixelAccuracy()
    metric.update_state(TRUE[None], _logits(PRED, 2)[None])
    accuracy.update_state(TRUE[None], _logits(PRED, 2)[None])
    assert float(metric.result()) == pytest.approx((8 / 9 + 7 / 8) / 2, rel=1e-6)
    assert float(accuracy.result()) == pytest.approx(15 / 16)


def test_ignored_pixels_are_not_counted():
    true = TRUE.copy()
    true[3, :] = IGNORE_VALUE  # whatever is predicted there
    pred = PRED.copy()
    pred[3, :] = [1, 1, 0, 0]
    confusion = confusion_matrix(true, pred, 2)
    np.testing.assert_array_equal(confusion, [[6, 0], [1, 5]])
    metric, accuracy = SegmentIoU(2), PixelAccuracy()
    metric.update_state(true[None], _logits(pred, 2)[None])
    accuracy.update_state(true[None], _logits(pred, 2)[None])
    assert float(metric.result()) == pytest.approx((6 / 7 + 5 / 6) / 2, rel=1e-6)
    assert float(accuracy.result()) == pytest.approx(11 / 12)


def test_absent_classes_are_left_out_of_the_means():
    # Class 2 in neither truth nor prediction: no IoU, not in the mean. Class 3 only predicted: IoU 0.
    pred = PRED.copy()
    pred[3, 3] = 3
    scores = segmentation_scores(confusion_matrix(TRUE, pred, 4), ["bg", "fg", "sky", "car"])
    assert scores["per_class_iou"]["sky"] is None and scores["per_class_dice"]["sky"] is None
    assert scores["per_class_iou"]["car"] == 0.0
    assert scores["mean_iou"] == pytest.approx((8 / 9 + 6 / 8 + 0.0) / 3)
    metric = SegmentIoU(4)
    metric.update_state(TRUE[None], _logits(pred, 4)[None])
    assert float(metric.result()) == pytest.approx(scores["mean_iou"], rel=1e-6)
    empty = segmentation_scores(np.zeros((2, 2), np.int64), ["bg", "fg"])
    assert empty["mean_iou"] is None and empty["pixel_accuracy"] is None and empty["per_class_iou"]["bg"] is None
    assert float(SegmentIoU(2).result()) == 0.0 and float(PixelAccuracy().result()) == 0.0


def test_streaming_over_batches_equals_numpy_on_everything_and_resets():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, (5, 8, 7))
    true[rng.random(true.shape) < 0.15] = IGNORE_VALUE
    logits = rng.normal(size=true.shape + (3,)).astype("float32")
    pred = logits.argmax(-1)
    expected = segmentation_scores(confusion_matrix(true, pred, 3), ["a", "b", "c"])
    # Batch by batch, the NumPy matrices add up to the whole one.
    summed = confusion_matrix(true[:2], pred[:2], 3) + confusion_matrix(true[2:], pred[2:], 3)
    np.testing.assert_array_equal(summed, confusion_matrix(true, pred, 3))

    metric, accuracy = SegmentIoU(3), PixelAccuracy()
    for batch in (slice(0, 2), slice(2, 5)):
        # As Keras hands them over: float masks with a channel axis.
        metric.update_state(true[batch, ..., None].astype("float32"), logits[batch])
        accuracy.update_state(true[batch], logits[batch])
    assert float(metric.result()) == pytest.approx(expected["mean_iou"], rel=1e-6)
    assert float(accuracy.result()) == pytest.approx(expected["pixel_accuracy"], rel=1e-6)
    metric.reset_state()
    accuracy.reset_state()
    assert float(metric.result()) == 0.0 and float(accuracy.result()) == 0.0
    metric.update_state(TRUE[None], _logits(PRED, 3)[None])
    assert float(metric.result()) == pytest.approx((8 / 9 + 7 / 8) / 2, rel=1e-6)


def test_sample_weight_zero_drops_an_image():
    true = np.stack([TRUE, 1 - TRUE])
    logits = np.stack([_logits(PRED, 2), _logits(TRUE, 2)])  # the second image is all wrong
    metric, accuracy = SegmentIoU(2), PixelAccuracy()
    metric.update_state(true, logits, sample_weight=np.array([1.0, 0.0]))
    accuracy.update_state(true, logits, sample_weight=np.array([1.0, 0.0]))
    assert float(metric.result()) == pytest.approx((8 / 9 + 7 / 8) / 2, rel=1e-6)
    assert float(accuracy.result()) == pytest.approx(15 / 16)


def test_config_round_trip_and_bad_inputs():
    metric = SegmentIoU(5, ignore_value=9, name="val_miou")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert isinstance(again, SegmentIoU) and (again.num_classes, again.ignore_value, again.name) == (5, 9, "val_miou")
    accuracy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(PixelAccuracy(ignore_value=3)))
    assert isinstance(accuracy, PixelAccuracy) and accuracy.ignore_value == 3 and accuracy.name == "pixel_accuracy"
    with pytest.raises(ValueError, match="3 classes"):
        SegmentIoU(2).update_state(TRUE[None], _logits(PRED, 3)[None])
    with pytest.raises(ValueError, match="one shape"):
        confusion_matrix(TRUE, PRED[:2], 2)
    with pytest.raises(ValueError, match="0..1"):
        confusion_matrix(TRUE, PRED + 1, 2)
    with pytest.raises(ValueError, match="len\\(class_names\\)"):
        segmentation_scores(np.zeros((2, 2)), ["one"])
