"""Mask values with no class (== C, 255) count nowhere: pixel accuracy, IoU, the confusion matrix
and the loss leave out the same pixels, checked against hand counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from transfer.data.samples import IGNORE_VALUE
from transfer.tasks.segment.loss import SegmentationLoss
from transfer.tasks.segment.metrics import PixelAccuracy, SegmentIoU, confusion_matrix

# Two classes. Value 2 (== C: e.g. a void class of the mask format the run did not map) and 255
# (IGNORE_VALUE) are no class: the 10 pixels labelled 0 or 1 are the only scored ones.
TRUE = np.array([[0, 0, 1, 1],
                 [0, 0, 1, 1],
                 [0, 2, 1, IGNORE_VALUE],
                 [2, 2, IGNORE_VALUE, IGNORE_VALUE]])
# One miss among the scored pixels, at (0, 3); the value-2 pixels are predicted 0 or 1, never 2
# (there is no class 2), so counting them would add three misses: 9 / 13 instead of 9 / 10.
PRED = np.array([[0, 0, 1, 0],
                 [0, 0, 1, 1],
                 [0, 0, 1, 1],
                 [1, 1, 1, 1]])
LOGITS = (5.0 * np.eye(2, dtype="float32")[PRED])[None]


def test_pixel_accuracy_leaves_out_labels_at_or_above_the_class_count():
    accuracy = PixelAccuracy()
    accuracy.update_state(TRUE[None], LOGITS)
    assert float(accuracy.result()) == pytest.approx(9 / 10, rel=1e-6)


def test_pixel_accuracy_leaves_them_out_when_the_class_count_is_known_only_at_run_time():
    accuracy = PixelAccuracy()
    update = tf.function(accuracy.update_state, input_signature=[
        tf.TensorSpec([None, None, None], tf.int32), tf.TensorSpec([None, None, None, None], tf.float32)])
    update(tf.constant(TRUE[None], tf.int32), tf.constant(LOGITS))
    assert float(accuracy.result()) == pytest.approx(9 / 10, rel=1e-6)


def test_accuracy_iou_confusion_and_loss_score_the_same_pixels():
    # Scored pixels by hand: truth 0 at (0,0) (0,1) (1,0) (1,1) (2,0), all predicted 0; truth 1 at
    # (0,2) (0,3) (1,2) (1,3) (2,2), (0,3) predicted 0.
    np.testing.assert_array_equal(confusion_matrix(TRUE, PRED, 2), [[5, 0], [1, 4]])
    iou = SegmentIoU(2)
    iou.update_state(TRUE[None], LOGITS)
    assert float(iou.result()) == pytest.approx((5 / 6 + 4 / 5) / 2, rel=1e-6)
    # Cross-entropy of logits 5 * one-hot: log(1 + e^-5) on a hit, log(1 + e^5) on a miss,
    # averaged over the 10 scored pixels only.
    expected = (9 * math.log1p(math.exp(-5)) + math.log1p(math.exp(5))) / 10
    loss = SegmentationLoss("ce")(tf.constant(TRUE[None]), tf.constant(LOGITS))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
