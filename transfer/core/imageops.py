"""Decode images inside a TensorFlow graph, and the plain stretch resize.

Decoding is shared by the training pipeline and the exported serving
signature, so a served model sees exactly the pixels the trained one saw;
how an image then meets the model's square input is the run's
``transfer.core.resize.ResizePolicy`` (stretch or letterbox), which the
pipelines and the export both read from the run.

Example:
    >>> img = decode_and_resize(tf.io.read_file("cat.jpg"), 128)  # uint8 [128, 128, 3], stretched
"""

from __future__ import annotations

import tensorflow as tf

from transfer.core.resize import LETTERBOX_FILL, RESIZE_METHOD, ResizePolicy, resize_pixels  # noqa: F401


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Decode JPEG/PNG/GIF/BMP bytes to uint8 RGB ``[H, W, 3]`` (first frame of a GIF)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


def resize_image(image: tf.Tensor, size) -> tf.Tensor:
    """Resize a uint8 image (or batch) to ``size x size`` (or a ``(height, width)`` pair) with
    antialiasing, the default policy's pixels (stretch); returns uint8."""
    shape = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    return resize_pixels(image, shape)


def letterbox_image(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resize a uint8 image (or batch of same-size images) into ``size x size`` keeping its
    aspect ratio, centered and padded with gray ``LETTERBOX_FILL``
    (``ResizePolicy("letterbox").resize_image``)."""
    return ResizePolicy("letterbox").resize_image(image, size)


def decode_and_resize(encoded: tf.Tensor, size: int, policy: ResizePolicy | None = None) -> tf.Tensor:
    """Bytes of one image -> uint8 ``[size, size, 3]`` by ``policy`` (default: stretch)."""
    return (policy or ResizePolicy()).resize_image(decode_image(encoded), size)
