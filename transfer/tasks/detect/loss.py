"""The detector's loss: quality focal loss on the class scores, GIoU + L1 on the positives' boxes.

Targets are assigned on the fly by ATSS (``detect_targets.assign_atss``)
from the padded ground truth, inside the train step. The classification
target of a positive location is the IoU of its predicted box with its
assigned box, for its class (0 for the other classes and for background):
GFL's quality focal loss (Li et al. 2020) turns the class score into a
localization-aware score, which is what NMS ranks by, with no centerness
branch. ``BCE(p, q) * |q - p| ** beta`` (``beta`` 2) is the focal loss's
modulation extended to soft targets; with ``iou_targets=False`` the target is
1 and it is the focal loss of RetinaNet without alpha.

Both terms are normalized by the number of positive locations in the batch
(RetinaNet, FCOS), so the loss does not depend on the image size; under a
``tf.distribute`` strategy, the positives of the global batch (each replica
returns its share, and the shares add up to the whole batch's loss). The box
term is ``1 - GIoU`` (Rezatofighi et al. 2019; weight 2 as GFL/ATSS) plus an
L1 on the normalized corners (weight 1; DETR's GIoU + L1 pairing), on
positives only.

How to train with it: ``build_detector`` returns a ``Detector``; compile it
with ``loss=DetectionLoss(image_size=S)`` and no per-output metrics, and feed
``(image uint8 [B, S, S, 3], {"boxes": [B, M, 4] normalized xyxy, "labels":
[B, M] int32, -1 padding})``. The Detector hands the loss the whole target and
output dicts (Keras would split them per output).

Example:
    >>> loss = DetectionLoss(image_size=64)
    >>> value = loss({"boxes": boxes, "labels": labels}, model(images))
    >>> parts = loss.components({"boxes": boxes, "labels": labels}, model(images))  # the terms apart
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from transfer.core.boxops import box_giou, box_iou
from transfer.engine.cross_replica import global_batch_sum
from transfer.tasks.detect.model import DETECTION_STRIDES, anchor_points
from transfer.tasks.detect.targets import ATSS_TOP_K, assign_atss, decode_boxes


def quality_focal_loss(logits, targets, beta: float = 2.0) -> tf.Tensor:
    """Elementwise ``BCE(sigmoid(logits), targets) * |targets - sigmoid(logits)| ** beta``.

    ``targets`` in ``[0, 1]`` (a soft IoU target, or 0/1), same shape as ``logits``.

    Example:
        >>> quality_focal_loss(tf.constant([0.0]), tf.constant([1.0]))  # log(2) * 0.5**2 = 0.1733
    """
    logits = tf.cast(logits, tf.float32)
    targets = tf.cast(targets, tf.float32)
    probability = tf.sigmoid(logits)
    cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    return cross_entropy * tf.pow(tf.abs(targets - probability), beta)


@keras.saving.register_keras_serializable(package="transfer")
class DetectionLoss(keras.losses.Loss):
    """Detection loss for ``{"boxes", "labels"}`` targets and ``{"class_logits", "box"}`` outputs.

    ``image_size``: the model's input side (locations come from ``anchor_points``);
    ``class_weight``, ``giou_weight``, ``l1_weight``: the terms' weights;
    ``iou_targets``: quality focal loss with IoU targets (True) or with 1s;
    ``beta``: the focusing exponent; ``top_k``: ATSS candidates per level.
    Returns a scalar; ``sample_weight`` is not supported (images weigh by
    their positives).

    Example:
        >>> model.compile(optimizer="adam", loss=DetectionLoss(image_size=320))
    """

    # Read by detect_model.Detector.compute_loss: call with the whole dicts.
    takes_all_outputs = True

    def __init__(self, image_size: int, strides: Sequence[int] = DETECTION_STRIDES, *,
                 class_weight: float = 1.0, giou_weight: float = 2.0, l1_weight: float = 1.0,
                 iou_targets: bool = True, beta: float = 2.0, top_k: int = ATSS_TOP_K,
                 name: str = "detection_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.image_size = int(image_size)
        self.strides = tuple(int(s) for s in strides)
        self.class_weight = float(class_weight)
        self.giou_weight = float(giou_weight)
        self.l1_weight = float(l1_weight)
        self.iou_targets = bool(iou_targets)
        self.beta = float(beta)
        self.top_k = int(top_k)

    def components(self, y_true: dict, y_pred: dict) -> dict:
        """The weighted terms ``{"classification", "giou", "l1"}`` (their sum is the loss) and
        ``"num_positive"`` (float32 scalar)."""
        points, strides = anchor_points(self.image_size, self.strides)
        logits = tf.cast(y_pred["class_logits"], tf.float32)
        distances = tf.cast(y_pred["box"], tf.float32)
        assignment = assign_atss(y_true["boxes"], y_true["labels"], self.image_size, self.strides, self.top_k)
        positive = tf.cast(assignment.positive, tf.float32)  # [B, L]
        num_positive = tf.reduce_sum(positive)
        # The global batch's positives: under a strategy each replica's sums over its images are its
        # share of the batch's loss, and Keras sums the replicas' gradients (a replica's own count
        # would weigh the replicas' positives unequally, and the gradient would be replicas times larger).
        normalizer = tf.maximum(global_batch_sum(num_positive), 1.0)

        predicted = decode_boxes(points, strides, distances) / float(self.image_size)  # normalized xyxy
        if self.iou_targets:
            # The score learns how well this location's box fits: no gradient into the box through it.
            quality = tf.stop_gradient(box_iou(predicted, assignment.boxes)) * positive
        else:
            quality = positive
        num_classes = tf.shape(logits)[-1]
        # one_hot(-1) is all zeros: background locations have a 0 target for every class.
        class_targets = tf.one_hot(assignment.labels, num_classes) * quality[..., None]
        classification = tf.reduce_sum(quality_focal_loss(logits, class_targets, self.beta)) / normalizer

        giou = tf.reduce_sum((1.0 - box_giou(predicted, assignment.boxes)) * positive) / normalizer
        l1 = tf.reduce_sum(tf.reduce_sum(tf.abs(predicted - assignment.boxes), axis=-1) * positive) / normalizer
        return {"classification": self.class_weight * classification, "giou": self.giou_weight * giou,
                "l1": self.l1_weight * l1, "num_positive": num_positive}

    def call(self, y_true, y_pred):
        parts = self.components(y_true, y_pred)
        return parts["classification"] + parts["giou"] + parts["l1"]

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Keras's Loss.__call__ reduces per-sample values and casts one tensor; this loss takes
        # dicts and is already a scalar, normalized by the positives.
        if sample_weight is not None:
            raise ValueError("DetectionLoss does not take sample_weight. Received: sample_weight="
                             f"{type(sample_weight).__name__}; drop it (images weigh by their positive locations).")
        return self.call(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "strides": list(self.strides),
                "class_weight": self.class_weight, "giou_weight": self.giou_weight, "l1_weight": self.l1_weight,
                "iou_targets": self.iou_targets, "beta": self.beta, "top_k": self.top_k}
