"""Detection's data pipeline: every box of an image, background images kept, fixed-size padded targets.

The detection counterpart of ``transfer.data.pipelines.boxes.make_box_dataset``
(which keeps one box per image for localization), on the same
``batched_box_dataset``: decode and resize by the run's
``transfer.core.resize.ResizePolicy`` (the serving graph's pixels), boxes normalized to
the resized image, decoded images cached once (uint8, with all their boxes)
by the classification cache policy, then shuffle, seeded box augmentation
(``BoxAugmenter`` with ``keep_all_boxes=False``: zooming in crops, so boxes
may be clipped or, under half visible, dropped), padding to ``max_boxes``
slots (the largest kept, ``PAD_LABEL`` = -1 in empty slots), batch, prefetch.

Targets are what ``transfer.tasks.detect.loss.DetectionLoss`` takes:
``{"boxes": float32 [B, M, 4] normalized xyxy, "labels": int32 [B, M]}``.

Example:
    >>> ds = make_detection_dataset(split.train, image_size=320, batch_size=16, training=True,
    ...                             augment=("flip", "zoom", "color"), max_boxes=40)
    >>> images, targets = next(iter(ds))  # uint8 [16,320,320,3]; targets["labels"] int32 [16,40]
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from transfer.data.pipelines.box_augment import PAD_LABEL, BoxAugmenter, pad_boxes
from transfer.data.pipelines.boxes import BOX_AUGMENTATIONS, batched_box_dataset, box_augmenter
from transfer.data.samples import Boxes, Samples
from transfer.core.errors import TransferError

DETECT_AUGMENTATIONS = BOX_AUGMENTATIONS
# Zoom of the detection views: out to 1/1.5 (objects smaller, gray around) and in to 1.5x
# (a crop: objects larger, those at the edge clipped): the scale variety a fixed-size model
# sees instead of multi-size batches, which a graph of fixed input side cannot take.
ZOOM_RANGE = (1 / 1.5, 1.5)
ZOOM_TRANSLATE = 0.1
MAX_BOXES_CAP = 100


def max_boxes_for(samples: Samples, cap: int | None = MAX_BOXES_CAP) -> int:
    """Target slots per image: the most boxes (ignore regions left out) any image holds, at least 1,
    at most ``cap`` (None: no cap).

    Images with more than ``cap`` boxes train on their ``cap`` largest.

    Example:
        >>> max_boxes_for(Samples(("a.jpg",), (Boxes(((0, 0, 5, 5),) * 3, (0, 0, 0), 10, 10),), ("x",)))
        3
    """
    most = max(max((len(t.kept()) for t in samples.targets), default=0), 1)
    return int(most if cap is None else min(most, cap))


def detection_augmenter(augment: tuple[str, ...]) -> BoxAugmenter | None:
    """The ``BoxAugmenter`` for a recipe's ``augment`` names (None when there is nothing to do):
    a wider zoom than localization's, and boxes a zoom leaves are dropped, not kept."""
    return box_augmenter(augment, what="Detection", zoom_range=ZOOM_RANGE, translate=ZOOM_TRANSLATE,
                         keep_all_boxes=False)


def all_box_arrays(samples: Samples) -> tuple[np.ndarray, np.ndarray]:
    """Pixel boxes ``[N, K, 4]`` and labels ``[N, K]`` of every box a detector learns (``K`` the most
    in an image, at least 1; ignore regions left out); images without boxes are all padding (``PAD_LABEL``)."""
    for source, target in zip(samples.sources, samples.targets):
        if not isinstance(target, Boxes):
            raise TransferError(f"'{source}': its target is {type(target).__name__}, not Boxes.",
                                fix="Detect on box data (transfer.data.boxes.read_boxes).")
    slots = max_boxes_for(samples, cap=None)
    boxes = np.zeros((len(samples), slots, 4), np.float32)
    labels = np.full((len(samples), slots), PAD_LABEL, np.int32)
    for row, target in enumerate(samples.targets):
        target = target.kept()
        if len(target):
            boxes[row, :len(target)] = np.asarray(target.xyxy, np.float32)
            labels[row, :len(target)] = target.labels
    return boxes, labels


def make_detection_dataset(samples: Samples, image_size: int, batch_size: int, *, training: bool,
                           augment: tuple[str, ...] = (), seed: int = 0, cache="auto",
                           max_boxes: int = MAX_BOXES_CAP, resize=None) -> tf.data.Dataset:
    """Batched ``(uint8 images [B, S, S, 3], {"boxes", "labels"})``; shuffled and augmented only when
    ``training``. ``cache``: as ``transfer.data.pipelines.images.make_dataset``; ``resize``: the run's
    ``transfer.core.resize.ResizePolicy`` (default stretch)."""
    pixel_boxes, labels = all_box_arrays(samples)

    def to_targets(image, boxes, box_labels):
        # Padding slots are moved last (pad_boxes keeps the largest valid boxes first).
        valid = box_labels >= 0
        boxes, box_labels = pad_boxes(tf.boolean_mask(boxes, valid), tf.boolean_mask(box_labels, valid), max_boxes)
        return image, {"boxes": boxes, "labels": box_labels}

    return batched_box_dataset(samples, pixel_boxes, labels, image_size, batch_size, training=training,
                               augmenter=detection_augmenter(tuple(augment)), seed=seed, cache=cache,
                               to_targets=to_targets, resize=resize)
