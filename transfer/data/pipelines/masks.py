"""Mask samples -> ``tf.data`` batches of ``(uint8 images [B, S, S, 3], uint8 masks [B, S, S])``.

The segmentation counterpart of ``transfer.data.pipelines.images.make_dataset``: each
image is decoded with ``transfer.core.imageops`` and resized by the run's
``transfer.core.resize.ResizePolicy`` (the serving graph's pixels; greyscale
becomes 3 channels), its mask read by ``transfer.data.masks.load_mask`` (one at
a time, inside ``tf.numpy_function``, so memory holds a few masks, never the
set) and resized NEAREST by the same policy to the same ``S x S`` (class values
are copied, never blended; letterbox padding is ``IGNORE_VALUE``). The decoded pairs are
cached by the shared policy (``transfer.data.pipelines.cache_policy``, the masks
counted), then shuffle, seeded augmentation (``MaskAugmenter``: new views every
epoch), batch and prefetch.

Mask values are class indices ``0..C-1`` and ``IGNORE_VALUE`` (255): pixels the
loss and metrics skip. Augmentation never makes a new value: geometric
transforms move image and mask together (the mask resampled nearest), padding
a transform brings in is ``IGNORE_VALUE`` in the mask (gray in the image), and
color jitter touches the image only. Keras's augmentation layers are not used
for masks: Keras 3.15.1 returns them as float32 and interpolates them
bilinearly in crops (new values at class borders).

Example:
    >>> ds = make_mask_dataset(split.train, image_size=256, batch_size=8, training=True,
    ...                        augment=("flip", "zoom", "color"), seed=0, cache="memory")
    >>> images, masks = next(iter(ds))   # uint8 [8, 256, 256, 3], uint8 [8, 256, 256]
"""

from __future__ import annotations

import math
import shutil
import weakref

import numpy as np
import tensorflow as tf

from transfer.data.pipelines.box_augment import BoxAugmenter, jitter_color, view_pixels
from transfer.data.pipelines.cache_policy import CacheDecision, choose_image_cache
from transfer.data.pipelines.images import cache_images, shuffle_buffer_size
from transfer.data.samples import IGNORE_VALUE, Samples
from transfer.core.errors import TransferError
from transfer.core.imageops import decode_image
from transfer.core.resize import ResizePolicy

# Recipe augmentation names a mask pipeline honours. "rotate" (multiples of 90 degrees) is for data
# without an up - microscopy, aerial, medical slices - and never a default: a road scene's sky-up
# layout does not survive it.
MASK_AUGMENTATIONS = ("flip", "zoom", "color", "rotate")
# "zoom": a view 0.75-1.33x the image (log-uniform), moved by up to 10% of its side.
ZOOM_RANGE = (0.75, 1.33)
ZOOM_TRANSLATE = 0.1


def resize_mask(mask: tf.Tensor, size) -> tf.Tensor:
    """A uint8 class mask ``[H, W]`` stretched to ``size x size`` (or ``(height, width)``), NEAREST:
    every output value is one of the input's. The same geometry as ``transfer.core.imageops.resize_image``
    (half-pixel centers), so image and mask stay aligned. (The pipeline resizes by the run's
    policy: ``ResizePolicy.resize_mask``.)

    Example:
        >>> resize_mask(tf.constant([[0, 1], [2, 255]], tf.uint8), 4).numpy()[0]
        array([0, 0, 1, 1], dtype=uint8)
    """
    shape = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    resized = tf.image.resize(mask[..., tf.newaxis], shape, method="nearest")[..., 0]
    return tf.cast(resized, tf.uint8)


class MaskAugmenter:
    """Random views of a uint8 image ``[S, S, 3]`` and its uint8 mask ``[S, S]``, for ``Dataset.map``.

    From ``seed`` alone (stateless ops): ``flip`` mirrors both left-right with
    probability 1/2; ``zoom`` takes the window ``BoxAugmenter`` draws (zoom
    ``ZOOM_RANGE``, moved by up to ``ZOOM_TRANSLATE`` of its side; zooming out
    pads), the image resampled bilinearly, the mask NEAREST with the same
    transform, padding ``IGNORE_VALUE`` in the mask; ``rotate`` turns both by
    0, 90, 180 or 270 degrees (with ``flip``: all eight views of the square);
    ``color`` jitters the image's brightness, contrast, saturation and hue
    (``box_augment.jitter_color``).

    Example:
        >>> augment = MaskAugmenter(("flip", "zoom", "color"))
        >>> image, mask = augment(image, mask, tf.constant([1, 2]))
    """

    def __init__(self, names: tuple[str, ...] = MASK_AUGMENTATIONS):
        unknown = [name for name in names if name not in MASK_AUGMENTATIONS]
        if unknown:
            raise TransferError(f"Mask augmentation {unknown} is not supported.",
                                fix=f"Use any of {MASK_AUGMENTATIONS}.")
        self.names = tuple(names)
        zoom = "zoom" in self.names
        # The same random views as box augmentation (scale, window, flip), without boxes to keep.
        self._views = BoxAugmenter(flip="flip" in self.names, scale_range=ZOOM_RANGE if zoom else (1.0, 1.0),
                                   translate=ZOOM_TRANSLATE if zoom else 0.0, color=False)

    def __call__(self, image: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 8)
        scale, offset, flip = self._views.draw_view(tf.shape(image), seeds)
        where = (offset[0], offset[1])
        image = view_pixels(image, scale, where, flip)
        mask = view_pixels(mask[..., tf.newaxis], scale, where, flip, fill=IGNORE_VALUE, nearest=True)[..., 0]
        if "rotate" in self.names:
            turns = tf.random.stateless_uniform([], seeds[7], 0, 4, dtype=tf.int32)
            # Inputs are square (S x S), so a quarter turn keeps the static shape rot90 loses.
            image = tf.ensure_shape(tf.image.rot90(image, turns), image.shape)
            mask = tf.ensure_shape(tf.image.rot90(mask[..., tf.newaxis], turns)[..., 0], mask.shape)
        if "color" in self.names:
            image = jitter_color(image, seeds[3:7])
        return image, mask


def mask_cache(decision: CacheDecision) -> CacheDecision:
    """``decision`` (made for the images alone) with the masks counted: a mask adds a third of an
    image's bytes (``S x S`` against ``S x S x 3``), so a memory cache that no longer fits the
    budget moves to disk (the temp folder)."""
    if decision.mode != "memory":
        return decision
    with_masks = int(math.ceil(decision.estimated_bytes * 4 / 3))
    if with_masks <= decision.budget_bytes:
        return decision
    return CacheDecision("disk", with_masks, decision.budget_bytes,
                         f"{decision.reason}; with their masks over the budget")


def make_mask_dataset(
    samples: Samples,
    image_size: int,
    batch_size: int,
    *,
    training: bool,
    augment: tuple[str, ...] = (),
    seed: int = 0,
    cache="auto",
    resize: ResizePolicy | None = None,
) -> tf.data.Dataset:
    """Batched ``(images, masks)``: uint8 ``[B, S, S, 3]`` and uint8 ``[B, S, S]`` (class indices,
    ``IGNORE_VALUE`` ignored); shuffled and augmented (``augment`` names, see ``MaskAugmenter``)
    only when ``training``. ``cache``: as ``transfer.data.pipelines.images.make_dataset`` ("auto",
    "memory", "disk", "none"/False or a ``CacheDecision``). ``resize``: the run's
    ``ResizePolicy`` (``ResizePolicy.from_config(run config)``; default stretch).
    """
    from transfer.data.masks import load_mask

    if len(samples) == 0:
        raise ValueError("Cannot build a dataset from 0 samples.")
    augmenter = MaskAugmenter(tuple(augment)) if training and augment else None
    # Images and masks: 4 bytes a pixel where the image-only estimate counts 3.
    decision = mask_cache(choose_image_cache(len(samples), image_size, cache=cache))
    buffer = shuffle_buffer_size(len(samples), image_size)
    items = np.asarray(samples.sources if samples.encoded is None else samples.encoded, dtype=object)
    indices = np.arange(len(samples), dtype=np.int64)
    if training and buffer < len(samples):
        # Mixed before caching, so a buffer smaller than the set still mixes the files.
        order = np.random.default_rng(seed).permutation(len(samples))
        items, indices = items[order], indices[order]
    read = (lambda item: item) if samples.encoded is not None else tf.io.read_file
    targets = samples.targets
    sources = samples.sources
    policy = resize or ResizePolicy()

    def read_mask(index) -> np.ndarray:
        index = int(index)
        mask = np.asarray(load_mask(targets[index]))
        if mask.ndim != 2 or mask.dtype != np.uint8:
            raise ValueError(f"{sources[index]}: load_mask gave {mask.dtype} {mask.shape}, not uint8 [H, W]")
        return mask

    def load(item, index):
        # The image and its mask come from one slice, so a mask never pairs with another file's pixels.
        image = policy.resize_image(decode_image(read(item)), image_size)
        mask = tf.numpy_function(read_mask, [index], tf.uint8, stateful=False)
        # Letterbox padding is ignored: no loss, no metric on pixels that are not the image.
        mask = policy.resize_mask(tf.ensure_shape(mask, [None, None]), image_size, IGNORE_VALUE)
        return image, tf.ensure_shape(mask, [image_size, image_size])

    ds = tf.data.Dataset.from_tensor_slices((list(items), indices)).map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds, folder = cache_images(ds, decision)
    if training:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        if augmenter is not None:
            # A seeded random stream: reproducible for a seed, new views every epoch.
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
            ds = tf.data.Dataset.zip((ds, seeds)).map(
                lambda pair, s: augmenter(pair[0], pair[1], s), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    if folder is not None:
        weakref.finalize(ds, shutil.rmtree, str(folder), True)
    return ds
