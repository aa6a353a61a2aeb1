"""Which detector location answers which ground-truth box: ATSS assignment and the box encoding.

Conventions (shared with ``detect_loss`` and ``detect_decode``):

- Locations: ``detect_model.anchor_points(image_size)``, centers ``[L, 2]``
  (x, y) and strides ``[L]``, in input pixels.
- Ground truth: ``transfer.data.pipelines.box_augment``'s padded slots, boxes
  ``[B, M, 4]`` **normalized** ``xyxy`` (``[0, 1]`` of the ``S x S`` input)
  and labels ``[B, M]`` int32, ``-1`` for an empty slot. Normalized because
  that is what the pipeline and the export hand around; the assigner scales
  them by ``image_size`` where it measures against pixel locations.
- Box regression: distances ``(left, top, right, bottom)`` from a location's
  center to the box's sides in units of the location's stride
  (``encode_boxes`` / ``decode_boxes``, pixel ``xyxy`` on the other side).

The assigner is ATSS (Zhang et al. 2020, "Bridging the Gap Between
Anchor-based and Anchor-free Detection"): for each box, the ``top_k``
locations of each level nearest its center are candidates; those whose
anchor (a square ``8 x stride`` wide at the location, the paper's anchor)
has IoU with the box of at least the candidates' mean + standard deviation,
and whose center lies inside the box, are positives; a location claimed by
several boxes takes the one of highest IoU. It has one hyperparameter, and
picks each box's level from the statistics of its own candidates, which suits
small datasets with unusual box sizes. Plain TF ops with static shapes: it runs
inside the loss in the train step (or in ``tf.data``) on any batch size.

Example:
    >>> assignment = assign_atss(boxes, labels, image_size=64)
    >>> assignment.labels.shape, assignment.boxes.shape  # [B, 84], [B, 84, 4]
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from transfer.core.boxops import box_iou
from transfer.tasks.detect.model import DETECTION_STRIDES, anchor_points, level_sizes

ATSS_TOP_K = 9  # the paper's default, robust over 3..19 (its table 4)
ATSS_ANCHOR_SCALE = 8.0  # anchor side in strides (RetinaNet's base anchor, as ATSS uses)
BACKGROUND = -1


class Assignment(NamedTuple):
    """Per location targets of a batch.

    ``labels`` int32 ``[B, L]`` (class, or ``BACKGROUND`` -1); ``boxes``
    float32 ``[B, L, 4]`` normalized ``xyxy`` of the assigned box (zeros for
    background); ``positive`` bool ``[B, L]``; ``anchor_iou`` float32 ``[B, L]``:
    IoU of the location's anchor with its box (0 for background).
    """

    labels: tf.Tensor
    boxes: tf.Tensor
    positive: tf.Tensor
    anchor_iou: tf.Tensor


def encode_boxes(points, strides, boxes) -> tf.Tensor:
    """Pixel ``xyxy`` boxes ``[..., L, 4]`` -> ``(l, t, r, b)`` distances from ``points`` ``[L, 2]``,
    in units of ``strides`` ``[L]``. Negative where the center lies outside the box.

    Example:
        >>> encode_boxes([[8.0, 8.0]], [8.0], [[0.0, 4.0, 24.0, 16.0]])  # [[1, 0.5, 2, 1]]
    """
    points = tf.convert_to_tensor(points, tf.float32)
    strides = tf.convert_to_tensor(strides, tf.float32)[:, None]
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    x, y = points[:, 0], points[:, 1]
    xmin, ymin, xmax, ymax = tf.unstack(boxes, 4, axis=-1)
    return tf.stack([x - xmin, y - ymin, xmax - x, ymax - y], axis=-1) / strides


def decode_boxes(points, strides, distances) -> tf.Tensor:
    """``(l, t, r, b)`` distances ``[..., L, 4]`` in stride units -> pixel ``xyxy`` boxes
    (inverse of ``encode_boxes``).

    Example:
        >>> decode_boxes([[8.0, 8.0]], [8.0], [[1.0, 0.5, 2.0, 1.0]])  # [[0, 4, 24, 16]]
    """
    points = tf.convert_to_tensor(points, tf.float32)
    strides = tf.convert_to_tensor(strides, tf.float32)[:, None]
    distances = tf.convert_to_tensor(distances, tf.float32) * strides
    left, top, right, bottom = tf.unstack(distances, 4, axis=-1)
    x, y = points[:, 0], points[:, 1]
    return tf.stack([x - left, y - top, x + right, y + bottom], axis=-1)


def assign_atss(boxes, labels, image_size: int, strides: Sequence[int] = DETECTION_STRIDES,
                top_k: int = ATSS_TOP_K) -> Assignment:
    """ATSS targets for padded ground truth ``boxes`` ``[B, M, 4]`` (normalized ``xyxy``) and
    ``labels`` ``[B, M]`` (``-1`` = empty slot) on the detector's locations.

    Example:
        >>> a = assign_atss(tf.constant([[[0.25, 0.25, 0.75, 0.75]]]), tf.constant([[2]]), 64)
        >>> int(tf.reduce_sum(tf.cast(a.positive, tf.int32))) > 0, set(a.labels.numpy().ravel())
        (True, {-1, 2})
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1. Received: top_k={top_k}")
    points_np, strides_np = anchor_points(image_size, strides)
    points = tf.constant(points_np)
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    labels = tf.cast(labels, tf.int32)
    pixel_boxes = boxes * float(image_size)
    valid = labels >= 0  # [B, M]

    # Distances of the box centers [B, M, 1, 2] to every location [L, 2] -> [B, M, L].
    centers = (pixel_boxes[..., :2] + pixel_boxes[..., 2:]) / 2
    distance = tf.norm(centers[:, :, None, :] - points, axis=-1)
    candidate = _nearest_per_level(distance, level_sizes(image_size, strides), top_k)

    half = (ATSS_ANCHOR_SCALE * strides_np / 2)[:, None]
    anchors = tf.constant(np.concatenate([points_np - half, points_np + half], axis=-1))
    iou = box_iou(pixel_boxes[:, :, None, :], anchors)  # [B, M, L]

    # Threshold per box: mean + std of its candidates' IoU (unbiased std, as the paper's code).
    as_float = tf.cast(candidate, tf.float32)
    count = tf.reduce_sum(as_float, axis=-1, keepdims=True)
    mean = tf.reduce_sum(iou * as_float, axis=-1, keepdims=True) / count
    variance = tf.reduce_sum(tf.square(iou - mean) * as_float, axis=-1, keepdims=True) / tf.maximum(count - 1, 1)
    threshold = mean + tf.sqrt(variance)

    # Center strictly inside the box (the paper's code asks 0.01 px of margin).
    sides = encode_boxes(points_np, np.ones_like(strides_np), pixel_boxes[:, :, None, :])
    inside = tf.reduce_min(sides, axis=-1) > 0.01
    positive = candidate & (iou >= threshold) & inside & valid[:, :, None]

    # A location claimed by several boxes answers the one it overlaps most.
    claimed = tf.where(positive, iou, -1.0)
    best = tf.argmax(claimed, axis=1, output_type=tf.int32)  # [B, L]
    is_positive = tf.reduce_any(positive, axis=1)
    assigned_labels = tf.where(is_positive, tf.gather(labels, best, batch_dims=1), BACKGROUND)
    assigned_boxes = tf.gather(boxes, best, batch_dims=1) * tf.cast(is_positive, tf.float32)[..., None]
    anchor_iou = tf.maximum(tf.reduce_max(claimed, axis=1), 0.0)
    return Assignment(assigned_labels, assigned_boxes, is_positive, anchor_iou)


def _nearest_per_level(distance: tf.Tensor, sizes: Sequence[int], top_k: int) -> tf.Tensor:
    """bool ``[B, M, L]``: the ``top_k`` locations of each level nearest each box's center."""
    masks, start = [], 0
    for size in sizes:
        count = size * size
        k = min(top_k, count)
        nearest = tf.math.top_k(-distance[..., start:start + count], k=k).indices  # [B, M, k]
        masks.append(tf.reduce_max(tf.one_hot(nearest, count, dtype=tf.int32), axis=-2) > 0)
        start += count
    return tf.concat(masks, axis=-1)
