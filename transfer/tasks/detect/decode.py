"""Serving-time decoding: raw detector outputs -> per image boxes, scores and classes after per-class NMS.

Everything is TFLite builtin ops (TOPK_V2, GATHER, NON_MAX_SUPPRESSION_V4,
CUMSUM, SCATTER_ND, ...), with no loop: not ``combined_non_max_suppression``
(a Flex op since TF 2.9) and not ``tf.map_fn`` over images. One
class-agnostic ``NonMaxSuppressionV4`` call does the NMS of every class of
every image at once (torchvision's ``batched_nms`` trick): each box is moved
by ``2 x (image index x C + class)`` normalized image sides, so boxes of
different classes or images never overlap, and NMS only suppresses within a
class of an image. The suppression survivors come back sorted by score; each
image keeps its first ``max_detections``.

Outputs, fixed shapes per image (``D`` = ``max_detections``): ``boxes``
float32 ``[N, D, 4]`` normalized ``xyxy`` on the ``S x S`` input (the task maps
them to original pixels with ``boxops.boxes_to_original``), ``scores``
float32 ``[N, D]`` (sigmoid of the class logit), ``classes`` int32 ``[N, D]``,
``count`` int32 ``[N]``; empty slots have zero boxes and scores and class -1.

Example:
    >>> outputs = model(images)
    >>> detections = decode_detections(outputs["class_logits"], outputs["box"], image_size=320,
    ...                                score_threshold=0.3, iou_threshold=0.5, max_detections=50)
    >>> detections["boxes"].shape  # [N, 50, 4]
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from transfer.core.boxops import clip_boxes
from transfer.tasks.detect.model import DETECTION_STRIDES, anchor_points
from transfer.tasks.detect.targets import decode_boxes

# Normalized boxes are clipped to [0, 1]; groups 2 apart cannot touch. Kept small because the
# offset costs float32 precision: at 2 * 5000 groups a coordinate is still exact to 1e-3.
_GROUP_OFFSET = 2.0


def decode_detections(class_logits, box, image_size: int, strides: Sequence[int] = DETECTION_STRIDES, *,
                      score_threshold: float = 0.05, iou_threshold: float = 0.5, max_detections: int = 100,
                      candidates: int = 1000) -> dict:
    """``{"boxes", "scores", "classes", "count"}`` from the detector's ``[N, L, C]`` logits and
    ``[N, L, 4]`` stride-unit distances (see the module's output shapes).

    ``candidates``: the per-image (location, class) pairs of highest score that go to NMS
    (RetinaNet's 1000), which bounds the NMS cost however many locations and classes.

    Example:
        >>> decode_detections(logits, distances, 64, max_detections=10)["classes"].shape  # [N, 10]
    """
    points, point_strides = anchor_points(image_size, strides)
    logits = tf.cast(class_logits, tf.float32)
    num_locations, num_classes = logits.shape[1], logits.shape[2]
    if num_locations is not None and num_locations != len(points):
        raise ValueError(f"class_logits has {num_locations} locations; a {image_size} px detector with strides "
                         f"{tuple(strides)} has {len(points)}. Pass the model's image_size and strides.")
    boxes = clip_boxes(decode_boxes(points, point_strides, tf.cast(box, tf.float32)) / float(image_size))
    batch = tf.shape(logits)[0]
    flat_scores = tf.reshape(tf.sigmoid(logits), [batch, len(points) * num_classes])
    top = tf.math.top_k(flat_scores, k=min(candidates, len(points) * num_classes))
    location = top.indices // num_classes
    classes = top.indices % num_classes
    # Gather each image's boxes from the flattened batch (plain GATHER, no batch_dims).
    first = tf.range(batch)[:, None] * len(points)
    candidate_boxes = tf.gather(tf.reshape(boxes, [-1, 4]), location + first)
    return batched_nms(candidate_boxes, top.values, classes, score_threshold=score_threshold,
                       iou_threshold=iou_threshold, max_detections=max_detections)


def batched_nms(boxes, scores, classes, *, score_threshold: float = 0.05, iou_threshold: float = 0.5,
                max_detections: int = 100) -> dict:
    """Per-class NMS of each image's candidates: normalized ``xyxy`` ``boxes`` ``[N, K, 4]``,
    ``scores`` ``[N, K]``, int ``classes`` ``[N, K]`` -> the padded outputs of ``decode_detections``.

    A box survives if its score is above ``score_threshold`` and no higher-scored
    box of its class in its image overlaps it with IoU above ``iou_threshold``.

    Example:
        >>> out = batched_nms(tf.constant([[[0, 0, .5, .5], [0, 0, .5, .52]]]), tf.constant([[.9, .8]]),
        ...                   tf.constant([[0, 0]]), max_detections=3)
        >>> out["count"], out["classes"]  # [1], [[0, -1, -1]]
    """
    if max_detections < 1:
        raise ValueError(f"max_detections must be at least 1. Received: max_detections={max_detections}")
    boxes = tf.cast(boxes, tf.float32)
    scores = tf.cast(scores, tf.float32)
    classes = tf.cast(classes, tf.int32)
    shape = tf.shape(scores)
    batch, per_image = shape[0], shape[1]
    num_groups = tf.reduce_max(classes) + 1
    group = tf.range(batch)[:, None] * tf.maximum(num_groups, 1) + classes  # [N, K]
    shifted = clip_boxes(boxes) + _GROUP_OFFSET * tf.cast(group, tf.float32)[..., None]
    total = batch * per_image
    selected, valid = tf.raw_ops.NonMaxSuppressionV4(
        boxes=tf.reshape(shifted, [-1, 4]), scores=tf.reshape(scores, [-1]), max_output_size=total,
        iou_threshold=tf.constant(iou_threshold, tf.float32),
        score_threshold=tf.constant(score_threshold, tf.float32), pad_to_max_output_size=True)
    # The survivors, best first; each image's rank among them decides its slot.
    alive = tf.range(total) < valid
    image = selected // per_image
    in_image = tf.one_hot(image, batch, dtype=tf.int32) * tf.cast(alive, tf.int32)[:, None]  # [total, N]
    rank = tf.reduce_sum((tf.cumsum(in_image, axis=0) - in_image) * in_image, axis=1)
    kept = alive & (rank < max_detections)
    # Dropped ones are written to a spare row N, cut off below.
    rows = tf.where(kept, image, batch)
    slots = tf.where(kept, rank, 0)
    where = tf.stack([rows, slots], axis=-1)
    padded = tf.stack([batch + 1, max_detections])

    def place(values, trailing=()):
        target = tf.concat([padded, tf.constant(trailing, tf.int32)], axis=0) if trailing else padded
        return tf.scatter_nd(where, values, target)[:batch]

    flat_boxes = tf.gather(tf.reshape(boxes, [-1, 4]), selected)
    flat_scores = tf.gather(tf.reshape(scores, [-1]), selected)
    flat_classes = tf.gather(tf.reshape(classes, [-1]), selected)
    keep_float = tf.cast(kept, tf.float32)
    return {
        "boxes": place(flat_boxes * keep_float[:, None], (4,)),
        "scores": place(flat_scores * keep_float),
        # Stored as class + 1 so that the empty slots (0) come out as -1.
        "classes": place((flat_classes + 1) * tf.cast(kept, tf.int32)) - 1,
        "count": tf.reduce_sum(in_image * tf.cast(kept, tf.int32)[:, None], axis=0),
    }
