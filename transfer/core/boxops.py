"""Box geometry as plain TensorFlow ops: formats, normalizing, clipping, the IoU family.

Boxes are ``[..., 4]`` tensors. ``xyxy`` is ``(xmin, ymin, xmax, ymax)`` with
the origin at the top left and edges as pixel extents (a box covering pixels
0..9 has ``xmin=0, xmax=10``); ``cxcywh`` is ``(center x, center y, width,
height)``. "Normalized" means divided by the image width/height, so ``[0, 1]``
spans the image. Every function works on any leading batch shape, inside a
``tf.function`` and with sizes only known at run time, so the export can map a
batch of predictions back to the original images inside the serving graph.
The resize geometry (stretch, letterbox) is ``transfer.core.resize``'s;
``boxes_to_canvas``/``boxes_to_original`` are its maps by mode name.

Example:
    >>> px = tf.constant([[10.0, 20.0, 50.0, 60.0]])
    >>> canvas = boxes_to_canvas(px, height=100, width=200, size=64, mode="letterbox")
    >>> boxes_to_original(canvas, height=100, width=200, size=64, mode="letterbox")  # == px
"""

from __future__ import annotations

import math

import tensorflow as tf

# The resize geometry lives in transfer.core.resize (one policy for every consumer); these names
# stay importable from here.
from transfer.core.resize import RESIZE_MODES, ResizePolicy, letterbox_geometry  # noqa: F401
from transfer.core.resize import per_coordinate as _per_coordinate

# Small enough not to bias IoU of real boxes, large enough to stay a normal
# float32 number; half precision inputs are computed in float32 (see _as_float).
_EPS = 1e-7


def xyxy_to_cxcywh(boxes: tf.Tensor) -> tf.Tensor:
    """``(xmin, ymin, xmax, ymax)`` -> ``(cx, cy, w, h)``.

    Example:
        >>> xyxy_to_cxcywh(tf.constant([[0.0, 0.0, 4.0, 2.0]]))  # [[2, 1, 4, 2]]
    """
    xmin, ymin, xmax, ymax = tf.unstack(boxes, 4, axis=-1)
    return tf.stack([(xmin + xmax) / 2, (ymin + ymax) / 2, xmax - xmin, ymax - ymin], axis=-1)


def cxcywh_to_xyxy(boxes: tf.Tensor) -> tf.Tensor:
    """``(cx, cy, w, h)`` -> ``(xmin, ymin, xmax, ymax)``.

    Example:
        >>> cxcywh_to_xyxy(tf.constant([[2.0, 1.0, 4.0, 2.0]]))  # [[0, 0, 4, 2]]
    """
    cx, cy, w, h = tf.unstack(boxes, 4, axis=-1)
    return tf.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def normalize_boxes(boxes: tf.Tensor, height, width) -> tf.Tensor:
    """Pixel ``xyxy`` -> ``[0, 1]`` of an image ``height x width``.

    ``height``/``width``: Python numbers or tensors, scalars or one per image
    (``[B]`` for boxes ``[B, 4]`` or ``[B, N, 4]``).

    Example:
        >>> normalize_boxes(tf.constant([[10.0, 5.0, 20.0, 10.0]]), 10, 20)  # [[0.5, 0.5, 1, 1]]
    """
    boxes = tf.convert_to_tensor(boxes)
    return boxes / _per_coordinate(height, width, boxes)


def denormalize_boxes(boxes: tf.Tensor, height, width) -> tf.Tensor:
    """``[0, 1]`` ``xyxy`` -> pixels of an image ``height x width`` (inverse of ``normalize_boxes``).

    Example:
        >>> denormalize_boxes(tf.constant([[0.5, 0.5, 1.0, 1.0]]), 10, 20)  # [[10, 5, 20, 10]]
    """
    boxes = tf.convert_to_tensor(boxes)
    return boxes * _per_coordinate(height, width, boxes)


def clip_boxes(boxes: tf.Tensor, height=1.0, width=1.0) -> tf.Tensor:
    """``xyxy`` boxes clipped to ``[0, width] x [0, height]`` (default: normalized ``[0, 1]``).

    Example:
        >>> clip_boxes(tf.constant([[-0.2, 0.1, 0.5, 1.3]]))  # [[0, 0.1, 0.5, 1]]
    """
    boxes = tf.convert_to_tensor(boxes)
    return tf.minimum(tf.maximum(boxes, 0), _per_coordinate(height, width, boxes))


def box_area(boxes: tf.Tensor) -> tf.Tensor:
    """Area of ``xyxy`` boxes ``[...]``; an inverted (degenerate) box has area 0."""
    xmin, ymin, xmax, ymax = tf.unstack(boxes, 4, axis=-1)
    return tf.maximum(xmax - xmin, 0) * tf.maximum(ymax - ymin, 0)


def _resize_policy(mode: str):
    """The ``ResizePolicy`` of a mode name (a ``ValueError`` naming the modes for another)."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"Unknown resize mode. Received: mode={mode!r}; expected one of {RESIZE_MODES}.")
    return ResizePolicy(mode)


def boxes_to_canvas(boxes: tf.Tensor, height, width, size: int, mode: str = "stretch") -> tf.Tensor:
    """Pixel boxes of an image ``height x width`` -> normalized boxes of its ``size x size`` input.

    ``mode``: "stretch" or "letterbox" (``transfer.core.resize.ResizePolicy.boxes_to_input``,
    which the pipelines call with the run's policy). Sizes may be tensors, scalars or ``[B]``.

    Example:
        >>> boxes_to_canvas(tf.constant([[0.0, 0.0, 200.0, 100.0]]), 100, 200, 64, "letterbox")
        ... # [[0, 0.25, 1, 0.75]]
    """
    return _resize_policy(mode).boxes_to_input(boxes, height, width, size)


def boxes_to_original(boxes: tf.Tensor, height, width, size: int, mode: str = "stretch") -> tf.Tensor:
    """Normalized boxes on the ``size x size`` input -> pixels of the original image, clipped to it.

    The inverse of ``boxes_to_canvas`` (``ResizePolicy.boxes_to_original``, which the export
    and the evaluations call with the run's policy).

    Example:
        >>> boxes_to_original(tf.constant([[0.0, 0.25, 1.0, 0.75]]), 100, 200, 64, "letterbox")
        ... # [[0, 0, 200, 100]]
    """
    return _resize_policy(mode).boxes_to_original(boxes, height, width, size)


def _as_float(a: tf.Tensor, b: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Both boxes in float32 (float64 if either is float64): half precision
    would flush the epsilons to zero and lose the atan terms of CIoU."""
    a, b = tf.convert_to_tensor(a), tf.convert_to_tensor(b)
    dtype = tf.float64 if tf.float64 in (a.dtype, b.dtype) else tf.float32
    return tf.cast(a, dtype), tf.cast(b, dtype)


def _iou_parts(a: tf.Tensor, b: tf.Tensor):
    """IoU plus the enclosing box's corners, shared by IoU, GIoU and CIoU."""
    a, b = _as_float(a, b)
    ax0, ay0, ax1, ay1 = tf.unstack(a, 4, axis=-1)
    bx0, by0, bx1, by1 = tf.unstack(b, 4, axis=-1)
    inter_w = tf.maximum(tf.minimum(ax1, bx1) - tf.maximum(ax0, bx0), 0)
    inter_h = tf.maximum(tf.minimum(ay1, by1) - tf.maximum(ay0, by0), 0)
    inter = inter_w * inter_h
    union = box_area(a) + box_area(b) - inter
    iou = inter / (union + _EPS)
    enclose = (tf.minimum(ax0, bx0), tf.minimum(ay0, by0), tf.maximum(ax1, bx1), tf.maximum(ay1, by1))
    return a, b, iou, union, enclose


def box_iou(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Intersection over union of aligned ``xyxy`` boxes ``[..., 4]`` -> ``[...]`` in ``[0, 1]``.

    Degenerate boxes (zero or negative size) give 0, never NaN. Computed and
    returned in float32 (float64 for float64 inputs), also for float16 inputs.

    Example:
        >>> box_iou(tf.constant([[0.0, 0, 2, 2]]), tf.constant([[1.0, 0, 3, 2]]))  # [1/3]
    """
    return _iou_parts(a, b)[2]


def box_giou(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Generalized IoU (Rezatofighi et al. 2019) of aligned boxes -> ``[...]`` in ``[-1, 1]``.

    IoU minus the share of the enclosing box that neither box covers, so
    disjoint boxes still get a gradient; a loss is ``1 - box_giou``.

    Example:
        >>> box_giou(tf.constant([[0.0, 0, 1, 1]]), tf.constant([[2.0, 0, 3, 1]]))  # [-1/3]
    """
    _, _, iou, union, (ex0, ey0, ex1, ey1) = _iou_parts(a, b)
    enclose_area = tf.maximum(ex1 - ex0, 0) * tf.maximum(ey1 - ey0, 0)
    return iou - (enclose_area - union) / (enclose_area + _EPS)


def box_ciou(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """Complete IoU (Zheng et al. 2020) of aligned boxes -> ``[...]`` in ``[-1, 1]``.

    IoU minus the squared center distance over the enclosing box's squared
    diagonal, minus an aspect-ratio term; a loss is ``1 - box_ciou``. As in the
    paper, the aspect term's weight ``alpha`` is held constant in the gradient.
    Pass the target as ``a`` and the prediction as ``b`` (the value is
    symmetric; only this weight's gradient stop cares).

    Example:
        >>> box_ciou(tf.constant([[0.0, 0, 2, 2]]), tf.constant([[0.0, 0, 2, 2]]))  # [1]
    """
    a, b, iou, _, (ex0, ey0, ex1, ey1) = _iou_parts(a, b)
    diagonal2 = tf.square(ex1 - ex0) + tf.square(ey1 - ey0)
    ca, cb = xyxy_to_cxcywh(a), xyxy_to_cxcywh(b)
    center2 = tf.square(ca[..., 0] - cb[..., 0]) + tf.square(ca[..., 1] - cb[..., 1])
    # Widths/heights floored at 0 (degenerate boxes) and the divisor at eps, so
    # atan stays finite with finite gradients.
    wa, ha = tf.maximum(ca[..., 2], 0), tf.maximum(ca[..., 3], 0)
    wb, hb = tf.maximum(cb[..., 2], 0), tf.maximum(cb[..., 3], 0)
    v = (4 / math.pi**2) * tf.square(tf.atan(wa / (ha + _EPS)) - tf.atan(wb / (hb + _EPS)))
    alpha = tf.stop_gradient(v / (1 - iou + v + _EPS))
    return iou - center2 / (diagonal2 + _EPS) - alpha * v
