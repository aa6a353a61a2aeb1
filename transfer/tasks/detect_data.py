"""Detection's data pipeline: every box of an image, background images kept, fixed-size padded targets.

The detection counterpart of ``transfer.data.box_pipeline.make_box_dataset``
(which keeps one box per image for localization): decode and stretch-resize
with ``transfer.imageops`` (the serving graph's pixels), boxes normalized to
the resized image, decoded images cached once (uint8, with all their boxes)
by the classification cache policy, then shuffle, seeded box augmentation
(``BoxAugmenter`` with ``keep_all_boxes=False``: zooming in crops, so boxes
may be clipped or, under half visible, dropped), padding to ``max_boxes``
slots (the largest kept, ``PAD_LABEL`` = -1 in empty slots), batch, prefetch.

Targets are what ``transfer.tasks.detect_loss.DetectionLoss`` takes:
``{"boxes": float32 [B, M, 4] normalized xyxy, "labels": int32 [B, M]}``.

Example:
    >>> ds = make_detection_dataset(split.train, image_size=320, batch_size=16, training=True,
    ...                             augment=("flip", "zoom", "color"), max_boxes=40)
    >>> images, targets = next(iter(ds))  # uint8 [16,320,320,3]; targets["labels"] int32 [16,40]
"""

from __future__ import annotations

import shutil
import weakref

import numpy as np
import tensorflow as tf

from transfer.data.box_augment import PAD_LABEL, BoxAugmenter, pad_boxes, resize_with_boxes
from transfer.data.cache_policy import choose_image_cache
from transfer.data.pipeline import cache_images, shuffle_buffer_size
from transfer.data.samples import Boxes, Samples
from transfer.errors import TransferError
from transfer.imageops import decode_image

DETECT_AUGMENTATIONS = ("flip", "zoom", "color")
# Zoom of the detection views: out to 1/1.5 (objects smaller, gray around) and in to 1.5x
# (a crop: objects larger, those at the edge clipped): the scale variety a fixed-size model
# sees instead of multi-size batches, which a graph of fixed input side cannot take.
ZOOM_RANGE = (1 / 1.5, 1.5)
ZOOM_TRANSLATE = 0.1
MAX_BOXES_CAP = 100


def max_boxes_for(samples: Samples, cap: int = MAX_BOXES_CAP) -> int:
    """Target slots per image: the most boxes any image holds, at least 1, at most ``cap``.

    Images with more than ``cap`` boxes train on their ``cap`` largest.

    Example:
        >>> max_boxes_for(Samples(("a.jpg",), (Boxes(((0, 0, 5, 5),) * 3, (0, 0, 0), 10, 10),), ("x",)))
        3
    """
    most = max((len(t) for t in samples.targets), default=0)
    return int(min(max(most, 1), cap))


def detection_augmenter(augment: tuple[str, ...]) -> BoxAugmenter | None:
    """The ``BoxAugmenter`` for a recipe's ``augment`` names (None when there is nothing to do)."""
    unknown = [name for name in augment if name not in DETECT_AUGMENTATIONS]
    if unknown:
        raise TransferError(f"Detection augmentation {unknown} is not supported.",
                            fix=f"Use any of {DETECT_AUGMENTATIONS} (rotate would no longer give tight boxes).")
    if not augment:
        return None
    zoom = "zoom" in augment
    return BoxAugmenter(flip="flip" in augment, scale_range=ZOOM_RANGE if zoom else (1.0, 1.0),
                        translate=ZOOM_TRANSLATE if zoom else 0.0, color="color" in augment,
                        keep_all_boxes=False)


def all_box_arrays(samples: Samples) -> tuple[np.ndarray, np.ndarray]:
    """Pixel boxes ``[N, K, 4]`` and labels ``[N, K]`` of every box (``K`` the most in an image,
    at least 1); images without boxes are all padding (``PAD_LABEL``)."""
    slots = max(max((len(t) for t in samples.targets), default=0), 1)
    boxes = np.zeros((len(samples), slots, 4), np.float32)
    labels = np.full((len(samples), slots), PAD_LABEL, np.int32)
    for row, (source, target) in enumerate(zip(samples.sources, samples.targets)):
        if not isinstance(target, Boxes):
            raise TransferError(f"'{source}': its target is {type(target).__name__}, not Boxes.",
                                fix="Detect on box data (transfer.data.boxes.read_boxes).")
        if len(target):
            boxes[row, :len(target)] = np.asarray(target.xyxy, np.float32)
            labels[row, :len(target)] = target.labels
    return boxes, labels


def make_detection_dataset(samples: Samples, image_size: int, batch_size: int, *, training: bool,
                           augment: tuple[str, ...] = (), seed: int = 0, cache="auto",
                           max_boxes: int = MAX_BOXES_CAP) -> tf.data.Dataset:
    """Batched ``(uint8 images [B, S, S, 3], {"boxes", "labels"})``; shuffled and augmented only when
    ``training``. ``cache``: as ``transfer.data.pipeline.make_dataset``."""
    if len(samples) == 0:
        raise ValueError("Cannot build a dataset from 0 samples.")
    decision = choose_image_cache(len(samples), image_size, cache=cache)
    buffer = shuffle_buffer_size(len(samples), image_size)
    pixel_boxes, labels = all_box_arrays(samples)
    items = np.asarray(samples.sources if samples.encoded is None else samples.encoded, dtype=object)
    if training and buffer < len(samples):
        order = np.random.default_rng(seed).permutation(len(samples))
        items, pixel_boxes, labels = items[order], pixel_boxes[order], labels[order]
    read = (lambda item: item) if samples.encoded is not None else tf.io.read_file

    def load(item, boxes, box_labels):
        image, normalized = resize_with_boxes(decode_image(read(item)), boxes, image_size, mode="stretch")
        return image, tf.where((box_labels >= 0)[:, None], normalized, 0.0), box_labels

    ds = tf.data.Dataset.from_tensor_slices((list(items), pixel_boxes, labels)).map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds, folder = cache_images(ds, decision)
    if training:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        augmenter = detection_augmenter(tuple(augment))
        if augmenter is not None:
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
            ds = tf.data.Dataset.zip((ds, seeds)).map(
                lambda example, pair: augmenter(*example, pair), num_parallel_calls=tf.data.AUTOTUNE)

    def to_targets(image, boxes, box_labels):
        # Padding slots are moved last (pad_boxes keeps the largest valid boxes first).
        valid = box_labels >= 0
        boxes, box_labels = pad_boxes(tf.boolean_mask(boxes, valid), tf.boolean_mask(box_labels, valid), max_boxes)
        return image, {"boxes": boxes, "labels": box_labels}

    ds = ds.map(to_targets, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    if folder is not None:
        weakref.finalize(ds, shutil.rmtree, str(folder), True)
    return ds

