"""The resize policy: how an image of any size becomes the model's ``S x S`` input, and back.

One frozen ``ResizePolicy`` says it, and every step that moves pixels or
coordinates between an original image and the model's input reads it from the
run's config (run.json ``"resize"``) or the export's metadata (transfer.json
``"resize"``) with ``ResizePolicy.from_config``: the training pipelines
(images, boxes with their augmentation, masks), each task's evaluation (its
predictions mapped back to the original pixels) and the export's serving graph
(resize in, boxes and masks mapped back out). No module keeps a mode of its own.

Modes:

- ``"stretch"``: both sides resized to ``S`` (the aspect ratio is not kept).
  The default, and what every run and export written before the policy existed
  did (their ``"resize"`` is ``"stretch"``, a ``{"method", "antialias"}`` dict
  or absent; they all load as stretch).
- ``"letterbox"``: the image resized to fit ``S x S`` with its aspect ratio
  kept (each content side rounded to whole pixels), centred (the odd pixel of
  padding at the bottom/right), the rest filled with gray ``fill`` (114: close
  to the ImageNet mean, as YOLO pads); masks are padded with the value the
  caller gives (the ignored value, so no loss is computed on the padding).

Pixels are resized with ``method`` (bilinear) and antialiasing; class masks
NEAREST (values copied, never blended); probabilities back to the original
size bilinearly. TensorFlow is imported inside the functions: importing this
module (the recipe does) stays light.

Example:
    >>> policy = ResizePolicy.from_config({"resize": "letterbox"})
    >>> image = policy.resize_image(tf.zeros([30, 60, 3], tf.uint8), 32)  # content rows 8..23, gray around
    >>> px = tf.constant([[6.0, 3.0, 30.0, 27.0]])
    >>> policy.boxes_to_original(policy.boxes_to_input(px, 30, 60, 32), 30, 60, 32)  # == px
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from transfer.core.errors import TransferError

RESIZE_MODES = ("stretch", "letterbox")
RESIZE_METHOD = "bilinear"
# tf.image.resize's methods that make new pixel values (images); "nearest" is the masks' own.
RESIZE_METHODS = ("bilinear", "area", "bicubic", "lanczos3", "lanczos5", "gaussian", "mitchellcubic")
LETTERBOX_FILL = 114
PLACEMENT = "center"  # where letterboxed content sits; recorded so other programs can redo it


def resize_pixels(image, shape, method: str = RESIZE_METHOD, antialias: bool = True):
    """A uint8 image (or batch) resized to ``shape`` = ``(height, width)`` (ints or tensors): uint8,
    rounded. The one pixel resize of training and serving.

    Example:
        >>> resize_pixels(tf.zeros([30, 60, 3], tf.uint8), (16, 32)).shape
        TensorShape([16, 32, 3])
    """
    import tensorflow as tf

    resized = tf.image.resize(image, tf.stack(shape) if _any_tensor(shape) else tuple(shape),
                              method=method, antialias=antialias)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _any_tensor(values) -> bool:
    return any(not isinstance(v, int) for v in values)


def letterbox_geometry(height, width, size):
    """Where an image ``height x width`` lands when letterboxed into ``size x size``.

    Returns int32 ``(content_height, content_width, top, left)``: the image is
    resized (aspect ratio kept) to ``content_height x content_width`` and put
    at row ``top``, column ``left`` of the canvas, the rest being padding
    (split evenly, the odd pixel at the bottom/right). Works elementwise on
    batches of sizes; ``size`` may be a tensor.

    Example:
        >>> letterbox_geometry(100, 200, 64)  # (32, 64, 16, 0)
    """
    import tensorflow as tf

    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    side = tf.cast(size, tf.int32)
    scale = tf.minimum(tf.cast(side, tf.float32) / h, tf.cast(side, tf.float32) / w)
    # Rounded, because an image has whole pixels; the box maps use the
    # rounded content size so they match the pixels exactly.
    content_h = tf.clip_by_value(tf.cast(tf.round(h * scale), tf.int32), 1, side)
    content_w = tf.clip_by_value(tf.cast(tf.round(w * scale), tf.int32), 1, side)
    return content_h, content_w, (side - content_h) // 2, (side - content_w) // 2


def per_coordinate(height, width, boxes):
    """``[w, h, w, h]`` shaped to broadcast against ``[..., 4]`` ``boxes`` (sizes: scalars or ``[B]``)."""
    import tensorflow as tf

    height = tf.cast(height, boxes.dtype)
    width = tf.cast(width, boxes.dtype)
    # A batch of sizes [B] against boxes [B, N, 4]: add the box axes after the batch.
    while height.shape.rank is not None and height.shape.rank and height.shape.rank < boxes.shape.rank - 1:
        height, width = height[..., None], width[..., None]
    return tf.stack([width, height, width, height], axis=-1)


@dataclass(frozen=True)
class ResizePolicy:
    """How images meet the model's square input (see the module docstring).

    Attributes:
        mode: ``"stretch"`` or ``"letterbox"``.
        method: the pixel resize (``tf.image.resize`` method), bilinear by default.
        antialias: filter when shrinking (without it, a 4000 px photo is sampled, not averaged).
        fill: the gray of letterbox padding in images (0-255).

    Example:
        >>> ResizePolicy("letterbox").to_dict()
        {'mode': 'letterbox', 'method': 'bilinear', 'antialias': True, 'fill': 114, 'placement': 'center'}
    """

    mode: str = "stretch"
    method: str = RESIZE_METHOD
    antialias: bool = True
    fill: int = LETTERBOX_FILL

    def __post_init__(self):
        if self.mode not in RESIZE_MODES:
            raise TransferError(f"Resize mode {self.mode!r} is not one of {', '.join(RESIZE_MODES)}.",
                                fix='Use resize = "stretch" (both sides to the input size) or "letterbox" '
                                    "(aspect ratio kept, padded with gray).")
        if self.method not in RESIZE_METHODS:
            raise TransferError(f"Resize method {self.method!r} is not one of {', '.join(RESIZE_METHODS)}.",
                                fix=f'Use "{RESIZE_METHOD}" (the default).')
        if not isinstance(self.antialias, bool) or not (isinstance(self.fill, int) and 0 <= self.fill <= 255):
            raise TransferError(f"Resize antialias={self.antialias!r}, fill={self.fill!r}.",
                                fix="antialias is true or false, fill a gray value 0-255 (default 114).")

    # --- records ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Everything another program needs to feed the model the same pixels (transfer.json)."""
        return {"mode": self.mode, "method": self.method, "antialias": self.antialias, "fill": self.fill,
                "placement": PLACEMENT}

    def to_config(self):
        """What run.json records under ``"resize"``: the mode alone when the rest is the default
        (as runs always recorded it), else ``to_dict()``. ``from_config`` reads both."""
        return self.mode if self == ResizePolicy(self.mode) else self.to_dict()

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> "ResizePolicy":
        """The policy a run (run.json) or an export (transfer.json) recorded under ``"resize"``;
        stretch when it recorded none or only ``{"method", "antialias"}`` (before the policy).

        Example:
            >>> ResizePolicy.from_config({}).mode, ResizePolicy.from_config({"resize": "letterbox"}).mode
            ('stretch', 'letterbox')
        """
        value = (config or {}).get("resize")
        if value is None:
            return cls()
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            return cls(mode=value.get("mode", "stretch"), method=value.get("method", RESIZE_METHOD),
                       antialias=value.get("antialias", True), fill=value.get("fill", LETTERBOX_FILL))
        raise TransferError(f'The recorded "resize" is {value!r}.',
                            fix='It is "stretch", "letterbox" or a dict with "mode" (run.json or transfer.json).')

    def describe(self) -> str:
        """One line for the training output."""
        if self.mode == "stretch":
            return "Resize: stretch (both sides to the input size; the aspect ratio is not kept)."
        return (f"Resize: letterbox (aspect ratio kept, centred, padded with gray {self.fill}); "
                "boxes and masks are mapped back to each image's own pixels.")

    # --- geometry ---------------------------------------------------------------------------
    def content_window(self, height, width, size):
        """int32 ``(top, left, content_height, content_width)``: where the image lies in the input."""
        import tensorflow as tf

        if self.mode == "letterbox":
            content_h, content_w, top, left = letterbox_geometry(height, width, size)
            return top, left, content_h, content_w
        side = tf.cast(size, tf.int32) + tf.zeros_like(tf.cast(height, tf.int32) * tf.cast(width, tf.int32))
        return tf.zeros_like(side), tf.zeros_like(side), side, side

    def _affine(self, height, width, size: int, boxes):
        """``(scale, offset)`` ``[..., 4]``: input pixel = original pixel * scale + offset."""
        import tensorflow as tf

        top, left, content_h, content_w = self.content_window(height, width, size)
        scale_x = tf.cast(content_w, boxes.dtype) / tf.cast(width, boxes.dtype)
        scale_y = tf.cast(content_h, boxes.dtype) / tf.cast(height, boxes.dtype)
        return (per_coordinate(scale_y, scale_x, boxes),
                per_coordinate(tf.cast(top, boxes.dtype), tf.cast(left, boxes.dtype), boxes))

    # --- forward: original -> model input ---------------------------------------------------
    def resize_image(self, image, size: int):
        """A uint8 image ``[H, W, 3]`` (or a batch of same-size images) -> uint8 ``[..., size, size, 3]``.

        Example:
            >>> ResizePolicy("letterbox").resize_image(tf.zeros([30, 60, 3], tf.uint8), 32).shape
            TensorShape([32, 32, 3])
        """
        import tensorflow as tf

        if self.mode == "stretch":
            return resize_pixels(image, (size, size), self.method, self.antialias)
        shape = tf.shape(image)
        top, left, content_h, content_w = self.content_window(shape[-3], shape[-2], size)
        content = resize_pixels(image, (content_h, content_w), self.method, self.antialias)
        pads = [[0, 0]] * (image.shape.rank - 3) + [
            [top, size - content_h - top], [left, size - content_w - left], [0, 0]]
        padded = tf.pad(content, pads, constant_values=self.fill)
        return tf.ensure_shape(padded, image.shape[:-3] + (size, size, image.shape[-1]))

    def resize_mask(self, mask, size: int, fill: int):
        """A uint8 class mask ``[H, W]`` -> ``[size, size]``, NEAREST (every value is one of the
        input's), aligned with ``resize_image``'s pixels; letterbox padding is ``fill``.

        Example:
            >>> ResizePolicy("letterbox").resize_mask(tf.ones([30, 60], tf.uint8), 32, 255)[:8]  # 255
        """
        import tensorflow as tf

        shape = tf.shape(mask)
        top, left, content_h, content_w = self.content_window(shape[0], shape[1], size)
        resized = tf.image.resize(mask[..., tf.newaxis], tf.stack([content_h, content_w]), method="nearest")
        resized = tf.cast(resized[..., 0], mask.dtype)
        if self.mode == "letterbox":
            resized = tf.pad(resized, [[top, size - content_h - top], [left, size - content_w - left]],
                             constant_values=fill)
        return tf.ensure_shape(resized, [size, size])

    def boxes_to_input(self, boxes, height, width, size: int):
        """Pixel ``xyxy`` boxes of an image ``height x width`` -> normalized boxes of its
        ``size x size`` input (not clipped). Sizes: scalars or one per image ``[B]``.

        Example:
            >>> ResizePolicy("letterbox").boxes_to_input(tf.constant([[0.0, 0, 200, 100]]), 100, 200, 64)
            ... # [[0, 0.25, 1, 0.75]]
        """
        import tensorflow as tf

        boxes = tf.convert_to_tensor(boxes)
        scale, offset = self._affine(height, width, size, boxes)
        return (boxes * scale + offset) / size

    # --- back: model output -> original -----------------------------------------------------
    def boxes_to_original(self, boxes, height, width, size: int):
        """Normalized boxes on the ``size x size`` input -> pixels of the original image, clipped to
        it (a letterboxed box reaching into the padding ends at the image's edge). The inverse
        of ``boxes_to_input``; in the serving graph ``height``/``width`` are run-time sizes.

        Example:
            >>> ResizePolicy("letterbox").boxes_to_original(tf.constant([[0.0, 0.25, 1, 0.75]]), 100, 200, 64)
            ... # [[0, 0, 200, 100]]
        """
        import tensorflow as tf

        boxes = tf.convert_to_tensor(boxes)
        scale, offset = self._affine(height, width, size, boxes)
        pixels = (boxes * size - offset) / scale
        return tf.minimum(tf.maximum(pixels, 0), per_coordinate(height, width, boxes))

    def probabilities_to_original(self, probabilities, height, width):
        """One image's per-pixel values ``[S, S, C]`` on the input -> ``[height, width, C]`` on the
        original image: the content window cut out (letterbox), then resized bilinearly
        (half-pixel centers, the geometry of ``resize_image``). Softmax before, argmax after.

        Example:
            >>> ResizePolicy("letterbox").probabilities_to_original(tf.zeros([32, 32, 3]), 30, 60).shape
            TensorShape([30, 60, 3])
        """
        import tensorflow as tf

        probabilities = tf.convert_to_tensor(probabilities)
        top, left, content_h, content_w = self.content_window(height, width, tf.shape(probabilities)[0])
        content = probabilities[top:top + content_h, left:left + content_w]
        return tf.image.resize(content, tf.stack([height, width]), method="bilinear", antialias=False)
