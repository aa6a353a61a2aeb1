"""Decode and resize images inside a TensorFlow graph.

One function is shared by the training pipeline and the exported serving
signature, so a served model sees exactly the pixels the trained one saw.

Example:
    >>> img = decode_and_resize(tf.io.read_file("cat.jpg"), 128)  # uint8 [128, 128, 3]
"""

from __future__ import annotations

import tensorflow as tf

from transfer.core.boxops import letterbox_geometry

RESIZE_METHOD = "bilinear"


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Decode JPEG/PNG/GIF/BMP bytes to uint8 RGB ``[H, W, 3]`` (first frame of a GIF)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


def resize_image(image: tf.Tensor, size) -> tf.Tensor:
    """Resize a uint8 image (or batch) to ``size x size`` (or a ``(height, width)`` pair) with
    antialiasing; returns uint8."""
    shape = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    resized = tf.image.resize(image, shape, method=RESIZE_METHOD, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


# Mid gray (as YOLO pads): close to the ImageNet mean, so padding reads as
# "nothing" after every family's preprocessing, unlike black.
LETTERBOX_FILL = 114


def letterbox_image(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resize a uint8 image (or batch of same-size images) into ``size x size`` keeping its
    aspect ratio, centered and padded with gray ``LETTERBOX_FILL`` (geometry:
    ``transfer.core.boxops.letterbox_geometry``)."""
    shape = tf.shape(image)
    content_h, content_w, top, left = letterbox_geometry(shape[-3], shape[-2], size)
    content = resize_image(image, (content_h, content_w))
    pads = [[top, size - content_h - top], [left, size - content_w - left], [0, 0]]
    pads = [[0, 0]] * (image.shape.rank - 3) + pads
    padded = tf.pad(content, pads, constant_values=LETTERBOX_FILL)
    return tf.ensure_shape(padded, image.shape[:-3] + (size, size, image.shape[-1]))


def decode_and_resize(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """Bytes of one image -> uint8 ``[size, size, 3]``."""
    return resize_image(decode_image(encoded), size)
