"""Box-aware resizing and augmentation, one example at a time inside ``tf.data``.

The order in a box pipeline: decode -> ``resize_with_boxes`` (to the training
size by the run's ``ResizePolicy``; boxes become normalized) -> ``pad_boxes`` (fixed shapes) -> cache ->
``BoxAugmenter`` (new random views every epoch, after the cache).

Padding convention: an image's boxes live in ``max_boxes`` slots, ``boxes``
float32 ``[max_boxes, 4]`` (normalized ``xyxy``, ``[0, 1]`` of the image) and
``labels`` int32 ``[max_boxes]``. A slot is valid when its label is ``>= 0``;
padding and boxes dropped by augmentation have label ``PAD_LABEL`` (-1) and a
zero box. Localization uses ``max_boxes=1``.

The geometry is done here with TF ops, not Keras bounding-box layers (Keras
3.15.1's ``RandomCrop`` moves boxes along the wrong axes, keras-team/keras#23518);
the tests draw a box into an image and check that it still frames its pixels.

Example:
    >>> image, boxes = resize_with_boxes(decoded, pixel_boxes, 128, mode="letterbox")
    >>> boxes, labels = pad_boxes(boxes, labels, max_boxes=1)
    >>> augment = BoxAugmenter(keep_all_boxes=True)
    >>> image, boxes, labels = augment(image, boxes, labels, seed=tf.constant([1, 2]))
"""

from __future__ import annotations

import math

import tensorflow as tf

from transfer.core.boxops import box_area, clip_boxes
from transfer.core.resize import LETTERBOX_FILL, RESIZE_MODES, ResizePolicy

PAD_LABEL = -1


def valid_boxes(labels: tf.Tensor) -> tf.Tensor:
    """bool mask of the slots that hold a box (label ``>= 0``)."""
    return labels >= 0


def pad_boxes(boxes: tf.Tensor, labels: tf.Tensor, max_boxes: int) -> tuple[tf.Tensor, tf.Tensor]:
    """``[N, 4]`` boxes and ``[N]`` labels -> exactly ``max_boxes`` slots (see the padding convention).

    With more than ``max_boxes`` boxes the largest are kept, in their order.

    Example:
        >>> b, l = pad_boxes(tf.constant([[0.1, 0.1, 0.5, 0.5]]), tf.constant([3]), max_boxes=2)
        >>> l  # [3, -1]; b[1] is [0, 0, 0, 0]
    """
    if max_boxes < 1:
        raise ValueError(f"max_boxes must be at least 1. Received: max_boxes={max_boxes}")
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    labels = tf.cast(labels, tf.int32)
    kept = tf.minimum(tf.shape(boxes)[0], max_boxes)
    keep = tf.sort(tf.math.top_k(box_area(boxes), kept).indices)
    boxes, labels = tf.gather(boxes, keep), tf.gather(labels, keep)
    missing = max_boxes - kept
    boxes = tf.pad(boxes, [[0, missing], [0, 0]])
    labels = tf.pad(labels, [[0, missing]], constant_values=PAD_LABEL)
    return tf.ensure_shape(boxes, [max_boxes, 4]), tf.ensure_shape(labels, [max_boxes])


def resize_with_boxes(image: tf.Tensor, boxes: tf.Tensor, size: int,
                      mode: "str | ResizePolicy" = "stretch") -> tuple[tf.Tensor, tf.Tensor]:
    """A decoded uint8 image ``[H, W, 3]`` and its pixel boxes ``[N, 4]`` -> uint8
    ``[size, size, 3]`` and boxes normalized to that canvas, clipped to ``[0, 1]``.

    ``mode``: the run's ``transfer.core.resize.ResizePolicy`` (what the pipelines pass), or a
    mode name: "stretch" (both sides to ``size``) or "letterbox" (aspect ratio kept,
    centered, padded with gray ``LETTERBOX_FILL`` = 114). The same pixels and box maps as
    the serving graph.

    Example:
        >>> image, boxes = resize_with_boxes(decoded, tf.constant([[81.0, 88, 522, 408]]), 128)
    """
    if not isinstance(mode, ResizePolicy):
        if mode not in RESIZE_MODES:
            raise ValueError(f"Unknown resize mode. Received: mode={mode!r}; expected one of {RESIZE_MODES}.")
        mode = ResizePolicy(mode)
    shape = tf.shape(image)
    boxes = mode.boxes_to_input(tf.cast(boxes, tf.float32), shape[0], shape[1], size)
    return mode.resize_image(image, size), clip_boxes(boxes)


def zoom_with_boxes(image: tf.Tensor, boxes: tf.Tensor, labels: tf.Tensor, scale, offset,
                    flip=False, min_visible: float = 0.5) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """One fixed view of a uint8 image ``[H, W, 3]`` with its padded normalized boxes.

    The view is the window of ``H/scale x W/scale`` input pixels whose top
    left corner is ``offset = (x, y)`` (input pixels; may be negative or reach
    past the image), resized to ``H x W``: ``scale > 1`` zooms in (crops),
    ``scale < 1`` zooms out (gray ``LETTERBOX_FILL`` around). ``flip`` then
    mirrors it left-right. Boxes follow the pixels, are clipped to the view
    and dropped (label -1, zero box) when less than ``min_visible`` of their
    area stays in it. This is what ``BoxAugmenter`` draws at random.

    Example:
        >>> image, boxes, labels = zoom_with_boxes(image, boxes, labels, 2.0, (32.0, 32.0))
    """
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(scale, tf.float32)
    ox, oy = tf.cast(offset[0], tf.float32), tf.cast(offset[1], tf.float32)
    flip = tf.cast(flip, tf.bool)
    view = view_pixels(image, scale, (ox, oy), flip)

    boxes = tf.cast(boxes, tf.float32)
    xmin, ymin, xmax, ymax = tf.unstack(boxes, 4, axis=-1)
    # Normalized input -> normalized view coordinates: x' = (x * W - ox) * scale / W.
    to_x = lambda x: (x * w - ox) * scale / w  # noqa: E731
    to_y = lambda y: (y * h - oy) * scale / h  # noqa: E731
    x0, x1 = to_x(xmin), to_x(xmax)
    x0, x1 = tf.where(flip, 1.0 - x1, x0), tf.where(flip, 1.0 - x0, x1)
    moved = tf.stack([x0, to_y(ymin), x1, to_y(ymax)], axis=-1)
    return (view, *_drop_hidden(moved, labels, min_visible))


def view_pixels(image: tf.Tensor, scale, offset, flip=False, *, fill: int = LETTERBOX_FILL,
                nearest: bool = False) -> tf.Tensor:
    """The pixels of ``zoom_with_boxes``'s view of a uint8 ``[H, W, C]`` image (same shape and dtype).

    Bilinear, with ``fill`` where the window leaves the image; ``nearest=True``
    copies input values unchanged (class masks: no value is ever blended into a
    new one), so a mask viewed with the image's ``scale``/``offset``/``flip``
    stays aligned with it.
    """
    shape = tf.shape(image)
    w = tf.cast(shape[1], tf.float32)
    scale = tf.cast(scale, tf.float32)
    ox, oy = tf.cast(offset[0], tf.float32), tf.cast(offset[1], tf.float32)
    flip = tf.cast(flip, tf.bool)
    # Output pixel (column j, row i) samples input (x, y) in index coordinates
    # (pixel centers at integers, as ImageProjectiveTransformV3 reads them):
    # center j + 0.5 of the view is at ox + (j + 0.5) / scale in the input.
    step_x = tf.where(flip, -1.0 / scale, 1.0 / scale)
    start_x = tf.where(flip, ox + (w - 0.5) / scale - 0.5, ox + 0.5 / scale - 0.5)
    transform = tf.stack([step_x, 0.0, start_x, 0.0, 1.0 / scale, oy + 0.5 / scale - 0.5, 0.0, 0.0])
    pixels = tf.raw_ops.ImageProjectiveTransformV3(
        images=(image if nearest else tf.cast(image, tf.float32))[None], transforms=transform[None],
        output_shape=shape[:2], fill_value=float(fill), interpolation="NEAREST" if nearest else "BILINEAR",
        fill_mode="CONSTANT",
    )[0]
    if not nearest:
        pixels = tf.cast(tf.clip_by_value(tf.round(pixels), 0.0, 255.0), tf.uint8)
    return tf.ensure_shape(pixels, image.shape)


def _drop_hidden(moved: tf.Tensor, labels: tf.Tensor, min_visible: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Clip moved boxes to ``[0, 1]``; invalidate those that kept under ``min_visible`` of their area."""
    clipped = clip_boxes(moved)
    kept_area = box_area(clipped)
    visible = kept_area / tf.maximum(box_area(moved), 1e-12)
    keep = valid_boxes(labels) & (kept_area > 0) & (visible >= min_visible)
    boxes = tf.where(keep[:, None], clipped, tf.zeros_like(clipped))
    return boxes, tf.where(keep, tf.cast(labels, tf.int32), PAD_LABEL)


class BoxAugmenter:
    """Random views of a uint8 image ``[S, S, 3]`` with padded normalized boxes, for ``Dataset.map``.

    Each call draws, from ``seed`` alone (stateless ops: the same seed gives
    the same view): a zoom factor log-uniform in ``scale_range`` (above 1
    zooms in and crops, below 1 zooms out onto gray), a window position
    (anywhere the window covers or contains the image, plus up to
    ``translate`` of the window's side beyond), a left-right ``flip`` with
    probability 1/2, and with ``color`` a brightness (+-0.125), contrast
    (0.75-1.25), saturation (0.75-1.25) and hue (+-0.04) jitter of the pixels
    only. Boxes follow the pixels; a box keeping less than ``min_visible`` of
    its area is dropped (see ``zoom_with_boxes``).

    ``keep_all_boxes=True`` (localization) restricts zoom and window so that
    every valid box of positive area stays whole in the view: no box is
    ever lost.

    Example:
        >>> augment = BoxAugmenter(scale_range=(0.75, 1.33), keep_all_boxes=True)
        >>> seeds = tf.data.Dataset.random(seed=0, rerandomize_each_iteration=True).batch(2)
        >>> ds = tf.data.Dataset.zip((cached, seeds)).map(
        ...     lambda example, seed: augment(*example, seed))   # example = (image, boxes, labels)
    """

    def __init__(self, *, flip: bool = True, scale_range: tuple[float, float] = (0.75, 1.33),
                 translate: float = 0.1, color: bool = True, min_visible: float = 0.5,
                 keep_all_boxes: bool = False):
        low, high = (float(v) for v in scale_range)
        if not 0 < low <= high:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, e.g. (0.75, 1.33). "
                             f"Received: scale_range={scale_range!r}")
        if translate < 0:
            raise ValueError(f"translate must be >= 0 (a fraction of the view, e.g. 0.1). "
                             f"Received: translate={translate!r}")
        if not 0 < min_visible <= 1:
            raise ValueError(f"min_visible must be in (0, 1], the share of a box's area that must stay "
                             f"visible, e.g. 0.5. Received: min_visible={min_visible!r}")
        self.flip = flip
        self.scale_range = (low, high)
        self.translate = float(translate)
        self.color = color
        self.min_visible = float(min_visible)
        self.keep_all_boxes = keep_all_boxes

    def __call__(self, image: tf.Tensor, boxes: tf.Tensor, labels: tf.Tensor,
                 seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """``(image, boxes, labels)`` of one example and a ``[2]`` int seed -> the same, augmented."""
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 8)
        boxes = tf.cast(boxes, tf.float32)
        scale, offset, flip = self.draw_view(tf.shape(image), seeds, boxes, labels)
        view, boxes, labels = zoom_with_boxes(image, boxes, labels, scale, (offset[0], offset[1]),
                                              flip=flip, min_visible=self.min_visible)
        if self.color:
            view = jitter_color(view, seeds[3:7])
        return view, boxes, labels

    def draw_view(self, shape, seeds, boxes=None, labels=None):
        """``(scale, offset (x, y), flip)`` of one random view of an image of ``shape``, drawn from
        ``seeds[0:3]`` (what ``__call__`` applies; ``seeds[3:7]`` are left for the color jitter)."""
        size = tf.cast(tf.stack([shape[1], shape[0]]), tf.float32)  # (W, H)
        low, high = self.scale_range
        # Log-uniform, so zooming in by 1.33 is as likely as zooming out by 1/1.33.
        share = tf.random.stateless_uniform([], seeds[0])
        scale = tf.exp(math.log(low) + share * (math.log(high) - math.log(low)))
        lo, hi = self._window_range(size, scale)
        if self.keep_all_boxes and boxes is not None:
            scale, lo, hi = self._keep_boxes_whole(size, scale, boxes, labels)
        offset = lo + tf.random.stateless_uniform([2], seeds[1]) * (hi - lo)
        flip = self.flip and tf.random.stateless_uniform([], seeds[2]) < 0.5
        return scale, offset, flip

    def _window_range(self, size, scale):
        """Lowest and highest ``(x, y)`` of the window's corner: covering the image (zoom in) or
        inside it (zoom out), extended by ``translate`` of the window."""
        window = size / scale
        slack = self.translate * window
        return tf.minimum(0.0, size - window) - slack, tf.maximum(0.0, size - window) + slack

    def _keep_boxes_whole(self, size, scale, boxes, labels):
        """Cap the zoom so the valid boxes' hull fits the window, and keep the corner where it
        contains the hull. Always possible: the hull lies inside the image."""
        valid = valid_boxes(labels) & (box_area(boxes) > 0)
        has_boxes = tf.reduce_any(valid)
        pixels = clip_boxes(boxes) * tf.concat([size, size], 0)
        hull_lo = tf.reduce_min(tf.where(valid[:, None], pixels[:, :2], size), axis=0)
        hull_hi = tf.reduce_max(tf.where(valid[:, None], pixels[:, 2:], 0.0), axis=0)
        hull = tf.maximum(hull_hi - hull_lo, 1e-6)
        capped = tf.where(has_boxes, tf.minimum(scale, tf.reduce_min(size / hull)), scale)
        lo, hi = self._window_range(size, capped)
        window = size / capped
        fit_lo = tf.where(has_boxes, tf.maximum(lo, hull_hi - window), lo)
        fit_hi = tf.where(has_boxes, tf.minimum(hi, hull_lo), hi)
        return capped, fit_lo, tf.maximum(fit_lo, fit_hi)


def jitter_color(image: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
    """Brightness, contrast, saturation and hue jitter of a uint8 image (pixels only)."""
    x = tf.cast(image, tf.float32) / 255.0  # the hue and saturation ops expect [0, 1]
    x = tf.image.stateless_random_brightness(x, 0.125, seeds[0])
    x = tf.image.stateless_random_contrast(x, 0.75, 1.25, seeds[1])
    x = tf.image.stateless_random_saturation(tf.clip_by_value(x, 0.0, 1.0), 0.75, 1.25, seeds[2])
    x = tf.image.stateless_random_hue(x, 0.04, seeds[3])
    out = tf.cast(tf.clip_by_value(tf.round(x * 255.0), 0.0, 255.0), tf.uint8)
    return tf.ensure_shape(out, image.shape)
