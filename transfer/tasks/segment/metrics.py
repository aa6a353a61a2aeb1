"""Segmentation metrics: streaming Keras metrics for training, NumPy scores for evaluation.

Both count pixels in a confusion matrix ``[C, C]`` (rows: true class, columns:
predicted class) and skip pixels whose true label is ``IGNORE_VALUE`` (255)
or outside ``0..C-1``. From it:

- IoU of class ``c`` = ``TP / (TP + FP + FN)``; Dice = ``2 TP / (2 TP + FP + FN)``.
- A class that appears neither in the truth nor in the prediction has no IoU
  (0 / 0): it is left out of the means, as in the standard mIoU (PASCAL VOC,
  Cityscapes), rather than counted as 0 or 1.
- Pixel accuracy = ``trace / total`` over the scored pixels.

Counts are summed over the whole dataset before dividing (the standard mIoU;
not a mean of per-image IoUs, which over-weighs small images and classes).

Example:
    >>> model.compile(..., metrics=[SegmentIoU(num_classes=3), PixelAccuracy()])  # logs "iou", "val_iou"
    >>> confusion = sum(confusion_matrix(t, p, 3) for t, p in batches)
    >>> segmentation_scores(confusion, ["background", "cat", "dog"])["mean_iou"]
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import ops

from transfer.data.samples import IGNORE_VALUE


def _labels(y_true, rank: int):
    """Int32 labels ``[N, H, W]`` from masks Keras may hand over as floats or with a channel axis."""
    labels = ops.cast(y_true, "int32")
    if len(labels.shape) == rank:  # [N, H, W, 1]
        labels = ops.squeeze(labels, axis=-1)
    return labels


def _pixel_weights(valid, sample_weight):
    weights = ops.cast(valid, "float32")
    if sample_weight is not None:
        sample_weight = ops.cast(sample_weight, "float32")
        while len(sample_weight.shape) < len(weights.shape):  # per image [N] -> [N, 1, 1]
            sample_weight = ops.expand_dims(sample_weight, -1)
        weights = weights * sample_weight
    return weights


@keras.saving.register_keras_serializable(package="transfer")
class SegmentIoU(keras.metrics.Metric):
    """Mean IoU over the classes present (in truth or prediction), from a streaming confusion matrix.

    ``y_true``: int masks ``[N, H, W]``; ``y_pred``: logits or probabilities
    ``[N, H, W, C]`` (argmax). The matrix is float64: float32 counts stop
    being exact past 2**24 pixels (64 images of 512 x 512).

    Example:
        >>> metric = SegmentIoU(num_classes=2)
        >>> metric.update_state(np.array([[[0, 1]]]), np.array([[[[5.0, 0.0], [0.0, 5.0]]]]))
        >>> float(metric.result())
        1.0
    """

    def __init__(self, num_classes: int, ignore_value: int = IGNORE_VALUE, name: str = "iou", **kwargs):
        super().__init__(name=name, **kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1. Received: num_classes={num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_value = int(ignore_value)
        self.confusion = self.add_variable(shape=(self.num_classes, self.num_classes), initializer="zeros",
                                           dtype="float64", name="confusion")

    def update_state(self, y_true, y_pred, sample_weight=None):
        c = self.num_classes
        if y_pred.shape[-1] is not None and y_pred.shape[-1] != c:
            raise ValueError(f"SegmentIoU(num_classes={c}) got predictions for {y_pred.shape[-1]} classes.")
        labels = _labels(y_true, len(y_pred.shape))
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        valid = (labels != self.ignore_value) & (labels >= 0) & (labels < c)
        weights = _pixel_weights(valid, sample_weight)
        index = ops.where(valid, labels, 0) * c + predicted
        weights = ops.cast(ops.reshape(weights, (-1,)), "float64")  # exact counts past 2**24 pixels a batch
        counts = ops.bincount(ops.reshape(index, (-1,)), weights=weights, minlength=c * c)
        self.confusion.assign_add(ops.reshape(counts, (c, c)))

    def result(self):
        return ops.cast(_mean_iou(self.confusion), "float32")

    def reset_state(self):
        self.confusion.assign(ops.zeros((self.num_classes, self.num_classes), "float64"))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "ignore_value": self.ignore_value}


def _mean_iou(confusion):
    true_positive = ops.diagonal(confusion)
    union = ops.sum(confusion, axis=0) + ops.sum(confusion, axis=1) - true_positive
    present = union > 0
    iou = ops.where(present, true_positive / ops.where(present, union, 1.0), 0.0)
    return ops.sum(iou) / ops.maximum(ops.sum(ops.cast(present, confusion.dtype)), 1.0)


@keras.saving.register_keras_serializable(package="transfer")
class PixelAccuracy(keras.metrics.Metric):
    """Share of scored pixels whose argmax class is the true one.

    A pixel is scored as ``SegmentIoU`` and the loss score it: its true label is not
    ``ignore_value`` and lies in ``0..C-1`` (``C`` from ``y_pred``'s last axis).

    Example:
        >>> metric = PixelAccuracy()
        >>> metric.update_state(np.array([[[0, 1, 255]]]), np.zeros((1, 1, 3, 2)))
        >>> float(metric.result())
        0.5
    """

    def __init__(self, ignore_value: int = IGNORE_VALUE, name: str = "pixel_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.ignore_value = int(ignore_value)
        self.correct = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = _labels(y_true, len(y_pred.shape))
        predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        # Labels >= C (a void value other than ignore_value, 16-bit masks) have no class to hit:
        # left out as SegmentIoU and the loss leave them out, or they would count as misses.
        num_classes = y_pred.shape[-1] if y_pred.shape[-1] is not None else ops.shape(y_pred)[-1]
        valid = (labels != self.ignore_value) & (labels >= 0) & (labels < num_classes)
        weights = _pixel_weights(valid, sample_weight)
        hits = ops.cast(labels == predicted, "float32") * weights
        self.correct.assign_add(ops.cast(ops.sum(hits), "float64"))
        self.total.assign_add(ops.cast(ops.sum(weights), "float64"))

    def result(self):
        return ops.cast(self.correct / ops.maximum(self.total, 1.0), "float32")

    def reset_state(self):
        self.correct.assign(ops.zeros((), "float64"))
        self.total.assign(ops.zeros((), "float64"))

    def get_config(self):
        return {**super().get_config(), "ignore_value": self.ignore_value}


def confusion_matrix(true, pred, num_classes: int, ignore_value: int = IGNORE_VALUE) -> np.ndarray:
    """Pixel counts ``int64 [C, C]`` (rows true, columns predicted) of int masks of one shape.

    Memory is that of the masks passed: call it per batch and sum the matrices.

    Example:
        >>> confusion_matrix(np.array([[0, 1], [1, 255]]), np.array([[0, 1], [0, 0]]), 2)
        array([[1, 0],
               [1, 1]])
    """
    true = np.asarray(true)
    pred = np.asarray(pred)
    if true.shape != pred.shape:
        raise ValueError(f"true and pred must have one shape. Received: {true.shape} and {pred.shape}")
    true = true.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    valid = (true != ignore_value) & (true >= 0) & (true < num_classes)
    true, pred = true[valid], pred[valid]
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"Predicted classes must be in 0..{num_classes - 1}. "
                         f"Received: classes {pred.min()}..{pred.max()}")
    counts = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def segmentation_scores(confusion, class_names: Sequence[str]) -> dict:
    """IoU, Dice and pixel accuracy from a confusion matrix, overall and per class.

    Returns ``mean_iou``, ``pixel_accuracy``, ``dice`` (floats; ``None`` when
    no pixel was scored), ``per_class_iou`` and ``per_class_dice``
    (``{name: float}``, ``None`` for a class in neither truth nor prediction,
    which the means leave out).

    Example:
        >>> scores = segmentation_scores(np.array([[3, 1], [0, 4]]), ["bg", "fg"])
        >>> scores["per_class_iou"], scores["pixel_accuracy"]
        ({'bg': 0.75, 'fg': 0.8}, 0.875)
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    names = list(class_names)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or confusion.shape[0] != len(names):
        raise ValueError(f"confusion must be [C, C] with C = len(class_names) = {len(names)}. "
                         f"Received: shape {confusion.shape}")
    true_positive = np.diag(confusion)
    truth, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    union = truth + predicted - true_positive
    present = union > 0
    iou = [float(true_positive[i] / union[i]) if present[i] else None for i in range(len(names))]
    dice = [float(2 * true_positive[i] / (truth[i] + predicted[i])) if present[i] else None
            for i in range(len(names))]
    total = confusion.sum()
    return {
        "mean_iou": _mean(iou),
        "pixel_accuracy": float(true_positive.sum() / total) if total > 0 else None,
        "dice": _mean(dice),
        "per_class_iou": dict(zip(names, iou)),
        "per_class_dice": dict(zip(names, dice)),
    }


def _mean(values) -> float | None:
    scored = [v for v in values if v is not None]
    return float(np.mean(scored)) if scored else None
