"""Samples -> ``tf.data`` pipeline of ``(uint8 image [S, S, 3], float target)``.

Decoding uses ``transfer.core.imageops`` and resizing the run's
``transfer.core.resize.ResizePolicy`` (stretch or letterbox), as the exported
serving graph does. Decoded images are cached once (uint8, so 4x smaller
than floats) and augmentation runs after the cache, so every epoch sees new
random views without decoding files again. The cache is in memory when the
images fit the memory budget, else in a file on disk, else absent
(``transfer.data.pipelines.cache_policy``); memory use is then bounded by the shuffle
buffer (at most 10,000 images or ~1 GB), whatever the number of images.

Example:
    >>> ds = make_dataset(split.train, image_size=128, batch_size=32, training=True)
    >>> images, targets = next(iter(ds))   # uint8 [32,128,128,3], float32 [32, C]
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
import tensorflow as tf

from transfer.data.pipelines.cache_policy import CacheDecision, choose_image_cache
from transfer.data.samples import Samples
from transfer.core.imageops import decode_and_resize
from transfer.core.resize import ResizePolicy


def targets_array(samples: Samples) -> np.ndarray:
    """One-hot (single-label) or multi-hot (multi-label) float32 targets ``[N, C]``."""
    out = np.zeros((len(samples), samples.num_classes), np.float32)
    for row, target in enumerate(samples.targets):
        out[row, list(target) if isinstance(target, tuple) else target] = 1.0
    return out


def decoded_images(samples: Samples, image_size: int, resize: ResizePolicy | None = None) -> tf.data.Dataset:
    """Unbatched uint8 images in sample order, decoded and resized (by ``resize``, the run's
    policy; default stretch) in parallel."""
    return _decoded(samples, image_size, targets=None, resize=resize)


def _decoded(samples: Samples, image_size: int, targets: np.ndarray | None,
             order: np.ndarray | None = None, resize: ResizePolicy | None = None) -> tf.data.Dataset:
    """Images, or ``(image, target)`` pairs sliced together so that a skipped
    image can never shift the pairing; in ``order`` (sample indices) when given."""
    items = list(samples.encoded) if samples.encoded is not None else list(samples.sources)
    read = (lambda data: data) if samples.encoded is not None else tf.io.read_file
    if order is not None:
        items = [items[i] for i in order]
        targets = None if targets is None else targets[order]

    def load(item, *target):
        image = decode_and_resize(read(item), image_size, resize)
        return (image, *target) if target else image

    slices = items if targets is None else (items, targets)
    return tf.data.Dataset.from_tensor_slices(slices).map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )


SHUFFLE_IMAGES = 10_000
SHUFFLE_BYTES = 2**30


def shuffle_buffer_size(num_images: int, image_size: int) -> int:
    """Images in the shuffle buffer: all of them up to 10,000, and at most ~1 GB (never under 1,000)."""
    per_image = image_size * image_size * 3
    return min(num_images, SHUFFLE_IMAGES, max(1_000, SHUFFLE_BYTES // per_image))


def cache_images(ds: tf.data.Dataset, decision: CacheDecision) -> tuple[tf.data.Dataset, Path | None]:
    """``ds`` cached as ``decision`` says; returns the disk cache's own folder too (None unless "disk").

    The caller removes that folder when done (``make_dataset`` ties it to its dataset's lifetime).
    """
    if decision.mode == "memory":
        return ds.cache(), None
    if decision.mode == "disk":
        parent = Path(decision.path or tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        _remove_dead_caches(parent)
        folder = Path(tempfile.mkdtemp(prefix=f".image-cache-{os.getpid()}-", dir=parent))
        return ds.cache(str(folder / "images")), folder
    return ds, None


def _remove_dead_caches(parent: Path) -> None:
    """Remove disk caches left in ``parent`` by processes that no longer run (a killed run)."""
    from transfer.core.atomic import _alive

    for folder in parent.glob(".image-cache-*-*"):
        pid = folder.name.split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def make_dataset(
    samples: Samples,
    image_size: int,
    batch_size: int,
    *,
    training: bool,
    augment: tuple[str, ...] = (),
    seed: int = 0,
    cache: "bool | str | CacheDecision" = "auto",
    cache_dir: str | Path | None = None,
    resize: ResizePolicy | None = None,
) -> tf.data.Dataset:
    """Batched ``(images, targets)``; shuffled and augmented only when ``training``.

    ``resize``: the run's ``ResizePolicy`` (``ResizePolicy.from_config(run config)``; default stretch).

    ``cache``: "auto" (True) caches decoded images in memory when they fit the
    budget of ``transfer.data.pipelines.cache_policy``, else on disk in a new
    ``.image-cache-*`` folder under ``cache_dir`` (default: the temp folder),
    removed when the returned dataset is garbage collected (or at exit);
    "memory", "disk", "none" (False) or a ``CacheDecision`` force a mode.
    A training set larger than the shuffle buffer is put in a seeded random
    order before caching, so the buffer mixes classes even when the files
    are listed class by class.
    """
    if len(samples) == 0:
        raise ValueError("Cannot build a dataset from 0 samples.")
    decision = choose_image_cache(len(samples), image_size, cache=cache, cache_dir=cache_dir)
    buffer = shuffle_buffer_size(len(samples), image_size)
    order = None
    if training and buffer < len(samples):
        order = np.random.default_rng(seed).permutation(len(samples))
    ds = _decoded(samples, image_size, targets=targets_array(samples), order=order, resize=resize)
    ds, folder = cache_images(ds, decision)
    if training:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        if augment:
            # Stateless ops fed by a seeded random stream: reproducible for a
            # seed, yet new views each epoch (rerandomize_each_iteration).
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
            augmenter = Augmenter(augment, image_size)
            ds = tf.data.Dataset.zip((ds, seeds)).map(augmenter, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    if folder is not None:
        weakref.finalize(ds, shutil.rmtree, str(folder), True)
    return ds


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
            # Always an enlargement (the crop is at most the decoded size), where an
            # antialiasing filter changes nothing (< 1e-4) but made the epoch's
            # augmentation 3.5x slower (1.28 -> 0.37 s for flowers5 at 128 px).
            x = tf.image.resize(x, (size, size))
        x = tf.cast(x, tf.float32)
        if "color" in self.names:
            x = tf.image.stateless_random_brightness(x, 0.15 * 255, seeds[4])
            x = tf.image.stateless_random_contrast(x, 0.8, 1.2, seeds[5])
            x = tf.image.stateless_random_saturation(x, 0.8, 1.2, seeds[6])
        x = tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)
        x.set_shape([size, size, 3])
        return x, target
