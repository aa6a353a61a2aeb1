"""Samples -> ``tf.data`` pipeline of ``(uint8 image [S, S, 3], float target)``.

Decoding and resizing use ``transfer.imageops``, the same functions as the
exported serving graph. Decoded images are cached once (uint8, so 4x smaller
than floats) and augmentation runs after the cache, so every epoch sees new
random views without decoding files again.

Example:
    >>> ds = make_dataset(split.train, image_size=128, batch_size=32, training=True)
    >>> images, targets = next(iter(ds))   # uint8 [32,128,128,3], float32 [32, C]
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from transfer.data.samples import Samples
from transfer.imageops import decode_and_resize


def targets_array(samples: Samples) -> np.ndarray:
    """One-hot (single-label) or multi-hot (multi-label) float32 targets ``[N, C]``."""
    out = np.zeros((len(samples), samples.num_classes), np.float32)
    for row, target in enumerate(samples.targets):
        out[row, list(target) if isinstance(target, tuple) else target] = 1.0
    return out


def decoded_images(samples: Samples, image_size: int) -> tf.data.Dataset:
    """Unbatched uint8 images in sample order, decoded and resized in parallel."""
    return _decoded(samples, image_size, targets=None)


def _decoded(samples: Samples, image_size: int, targets: np.ndarray | None) -> tf.data.Dataset:
    """Images, or ``(image, target)`` pairs sliced together so that a skipped
    image can never shift the pairing."""
    items = list(samples.encoded) if samples.encoded is not None else list(samples.sources)
    read = (lambda data: data) if samples.encoded is not None else tf.io.read_file

    def load(item, *target):
        image = decode_and_resize(read(item), image_size)
        return (image, *target) if target else image

    slices = items if targets is None else (items, targets)
    return tf.data.Dataset.from_tensor_slices(slices).map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )


def make_dataset(
    samples: Samples,
    image_size: int,
    batch_size: int,
    *,
    training: bool,
    augment: tuple[str, ...] = (),
    seed: int = 0,
    cache: bool = True,
) -> tf.data.Dataset:
    """Batched ``(images, targets)``; shuffled and augmented only when ``training``."""
    if len(samples) == 0:
        raise ValueError("Cannot build a dataset from 0 samples.")
    ds = _decoded(samples, image_size, targets=targets_array(samples))
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(min(len(samples), 10_000), seed=seed, reshuffle_each_iteration=True)
        if augment:
            # Stateless ops fed by a seeded random stream: reproducible for a
            # seed, yet new views each epoch (rerandomize_each_iteration).
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
            augmenter = Augmenter(augment, image_size)
            ds = tf.data.Dataset.zip((ds, seeds)).map(augmenter, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(samples: Samples, batch_size: int) -> int:
    return math.ceil(len(samples) / batch_size)


class Augmenter:
    """Random label-preserving views of a uint8 image (classification only).

    ``flip``: left-right mirror. ``zoom``: a random crop of 75-100% of the side,
    resized back. ``rotate``: a random multiple of 90 degrees. ``color``:
    brightness / contrast / saturation jitter.
    """

    def __init__(self, names: tuple[str, ...], image_size: int):
        self.names = tuple(names)
        self.image_size = image_size

    def __call__(self, sample, seed):
        image, target = sample
        size = self.image_size
        seeds = tf.random.experimental.stateless_split(seed, 7)
        x = image
        if "flip" in self.names:
            x = tf.image.stateless_random_flip_left_right(x, seeds[0])
        if "rotate" in self.names:
            k = tf.random.stateless_uniform([], seeds[1], 0, 4, dtype=tf.int32)
            x = tf.image.rot90(x, k)
        if "zoom" in self.names:
            side = tf.cast(
                tf.round(size * tf.random.stateless_uniform([], seeds[2], 0.75, 1.0)), tf.int32
            )
            x = tf.image.stateless_random_crop(x, [side, side, 3], seeds[3])
            x = tf.image.resize(x, (size, size), antialias=True)
        x = tf.cast(x, tf.float32)
        if "color" in self.names:
            x = tf.image.stateless_random_brightness(x, 0.15 * 255, seeds[4])
            x = tf.image.stateless_random_contrast(x, 0.8, 1.2, seeds[5])
            x = tf.image.stateless_random_saturation(x, 0.8, 1.2, seeds[6])
        x = tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)
        x.set_shape([size, size, 3])
        return x, target
