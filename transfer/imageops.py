"""Decode and resize images inside a TensorFlow graph.

One function is shared by the training pipeline and the exported serving
signature, so a served model sees exactly the pixels the trained one saw.

Example:
    >>> img = decode_and_resize(tf.io.read_file("cat.jpg"), 128)  # uint8 [128, 128, 3]
"""

from __future__ import annotations

import tensorflow as tf

RESIZE_METHOD = "bilinear"


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Decode JPEG/PNG/GIF/BMP bytes to uint8 RGB ``[H, W, 3]`` (first frame of a GIF)."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


def resize_image(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resize a uint8 image (or batch) to ``size x size`` with antialiasing; returns uint8."""
    resized = tf.image.resize(image, (size, size), method=RESIZE_METHOD, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def decode_and_resize(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """Bytes of one image -> uint8 ``[size, size, 3]``."""
    return resize_image(decode_image(encoded), size)
