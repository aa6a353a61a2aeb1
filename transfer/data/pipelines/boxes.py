"""Box samples -> ``tf.data`` batches of ``(uint8 images [B, S, S, 3], {"box", "class"} targets)``.

The box counterpart of ``transfer.data.pipelines.images.make_dataset``: decode and
resize by the run's ``transfer.core.resize.ResizePolicy`` (the serving graph's pixels),
boxes normalized to the resized image, decoded images cached once (uint8, with
their boxes) by the same policy as classification, then shuffle, seeded box
augmentation (``BoxAugmenter``: new views every epoch, boxes follow the
pixels), batch and prefetch.

Localization trains on one box per image: the largest (by area), the rule
``largest_box`` states and ``several_boxes`` counts, so the task can say
"15 images have 2+ boxes: the largest is used".

Example:
    >>> ds = make_box_dataset(split.train, image_size=224, batch_size=16, training=True,
    ...                       augment=("flip", "zoom"), seed=0, cache="memory")
    >>> images, targets = next(iter(ds))  # uint8 [16,224,224,3]; targets["box"] float32 [16,4]
"""

from __future__ import annotations

import shutil
import weakref

import numpy as np
import tensorflow as tf

from transfer.data.pipelines.box_augment import PAD_LABEL, BoxAugmenter, resize_with_boxes
from transfer.data.pipelines.cache_policy import choose_image_cache
from transfer.data.pipelines.images import cache_images, shuffle_buffer_size
from transfer.data.samples import Boxes, Samples
from transfer.core.errors import TransferError
from transfer.core.imageops import decode_image
from transfer.core.resize import ResizePolicy

# Recipe augmentation names a box pipeline can honour (``rotate`` cannot: a
# rotated box is no longer the tight box of its object).
BOX_AUGMENTATIONS = ("flip", "zoom", "color")


def largest_box(boxes: Boxes) -> tuple[tuple[float, float, float, float], int]:
    """The box (pixel ``xyxy``) and label an image is localized by: its largest box by area
    (the first of equals, so the rule is reproducible), an ignore region (a crowd, a difficult
    object) only when the image has nothing else.

    Example:
        >>> largest_box(Boxes(((0, 0, 10, 10), (0, 0, 50, 40)), (0, 1), 100, 80))
        ((0, 0, 50, 40), 1)
    """
    if len(boxes) == 0:
        raise ValueError("An image without boxes has no largest box.")
    index = _largest_first(boxes)[0]
    return tuple(boxes.xyxy[index]), int(boxes.labels[index])


def _largest_first(boxes: Boxes) -> list[int]:
    """Box indices, largest area first (stable: first of equals), ignore regions after the others:
    a crowd region is usually the largest box, yet not the object an image is localized by."""
    areas = [max(x1 - x0, 0) * max(y1 - y0, 0) for x0, y0, x1, y1 in boxes.xyxy]
    return sorted(range(len(areas)), key=lambda i: (boxes.is_ignored(i), -areas[i]))


def several_boxes(samples: Samples) -> int:
    """How many images hold 2 or more boxes (localization uses only their largest)."""
    return sum(1 for target in samples.targets if len(target) > 1)


def box_arrays(samples: Samples, max_boxes: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pixel boxes ``[N, max_boxes, 4]`` (largest first) and labels ``[N, max_boxes]``
    (``PAD_LABEL`` in empty slots). Raises ``TransferError`` naming an image without a box."""
    boxes = np.zeros((len(samples), max_boxes, 4), np.float32)
    labels = np.full((len(samples), max_boxes), PAD_LABEL, np.int32)
    for row, (source, target) in enumerate(zip(samples.sources, samples.targets)):
        if not isinstance(target, Boxes) or len(target) == 0:
            raise TransferError(
                f"'{source}' has no box; a box pipeline needs at least one box per image.",
                fix="Leave images without boxes out (LocalizeTask.load_data does), or annotate them.",
            )
        order = _largest_first(target)[:max_boxes]
        for slot, index in enumerate(order):
            boxes[row, slot] = target.xyxy[index]
            labels[row, slot] = target.labels[index]
    return boxes, labels


def box_augmenter(augment: tuple[str, ...], *, what: str = "Box", zoom_range=(0.75, 1.33),
                  translate: float = 0.1, keep_all_boxes: bool = True) -> BoxAugmenter | None:
    """The ``BoxAugmenter`` for a recipe's ``augment`` names (None when there is nothing to do).

    ``flip``: left-right mirror; ``zoom``: zoom over ``zoom_range`` and move the view by
    up to ``translate`` of its side; ``color``: brightness, contrast, saturation and hue
    jitter. ``keep_all_boxes``: a zoom never cuts a box off (one box per image), else boxes
    the view leaves are dropped (detection). ``what`` names the task in the refusal.

    Example:
        >>> box_augmenter(("flip",)).flip
        True
    """
    unknown = [name for name in augment if name not in BOX_AUGMENTATIONS]
    if unknown:
        raise TransferError(f"{what} augmentation {unknown} is not supported.",
                            fix=f"Use any of {BOX_AUGMENTATIONS} (rotate would no longer give tight boxes).")
    if not augment:
        return None
    zoom = "zoom" in augment
    return BoxAugmenter(flip="flip" in augment, scale_range=tuple(zoom_range) if zoom else (1.0, 1.0),
                        translate=translate if zoom else 0.0, color="color" in augment,
                        keep_all_boxes=keep_all_boxes)


def make_box_dataset(
    samples: Samples,
    image_size: int,
    batch_size: int,
    *,
    training: bool,
    augment: tuple[str, ...] = (),
    seed: int = 0,
    cache="auto",
    max_boxes: int = 1,
    resize: ResizePolicy | None = None,
) -> tf.data.Dataset:
    """Batched ``(images, targets)``; shuffled and augmented only when ``training``.

    Targets: ``{"box": float32 [B, 4]}`` (normalized ``xyxy`` of the largest box;
    ``[B, max_boxes, 4]`` when ``max_boxes > 1``) plus ``"class"``: one-hot
    float32 ``[B, C]`` of that box's class when there are several classes
    (``[B, max_boxes, C]``, zero rows in empty slots, when ``max_boxes > 1``).
    ``cache``: as ``transfer.data.pipelines.images.make_dataset`` ("auto", "memory",
    "disk", "none"/False or a ``CacheDecision``). ``resize``: the run's ``ResizePolicy``
    (``ResizePolicy.from_config(run config)``; default stretch).
    """
    pixel_boxes, labels = box_arrays(samples, max_boxes)
    return batched_box_dataset(samples, pixel_boxes, labels, image_size, batch_size, training=training,
                               augmenter=box_augmenter(tuple(augment)), seed=seed, cache=cache,
                               to_targets=_targets(samples.num_classes, max_boxes), resize=resize)


def batched_box_dataset(samples: Samples, pixel_boxes: np.ndarray, labels: np.ndarray, image_size: int,
                        batch_size: int, *, training: bool, augmenter: BoxAugmenter | None, seed: int, cache,
                        to_targets, resize: ResizePolicy | None = None) -> tf.data.Dataset:
    """What every box pipeline does with an image and its box arrays (pixel ``[N, K, 4]``, labels
    ``[N, K]`` with ``PAD_LABEL`` in empty slots): decode and resize by ``resize`` (the run's
    ``ResizePolicy``; default stretch), boxes normalized,
    cache, then when ``training`` shuffle and ``augmenter``; ``to_targets(image, boxes, labels)``
    gives the task's ``(image, targets)``; batch, prefetch.

    Example (what ``make_box_dataset`` does):
        >>> boxes, labels = box_arrays(split.train)
        >>> ds = batched_box_dataset(split.train, boxes, labels, 224, 16, training=False, augmenter=None,
        ...                          seed=0, cache="auto", to_targets=_targets(1, 1))
    """
    if len(samples) == 0:
        raise ValueError("Cannot build a dataset from 0 samples.")
    decision = choose_image_cache(len(samples), image_size, cache=cache)
    buffer = shuffle_buffer_size(len(samples), image_size)
    items = np.asarray(samples.sources if samples.encoded is None else samples.encoded, dtype=object)
    if training and buffer < len(samples):
        # Mixed before caching, so a buffer smaller than the set still mixes the files.
        order = np.random.default_rng(seed).permutation(len(samples))
        items, pixel_boxes, labels = items[order], pixel_boxes[order], labels[order]
    read = (lambda item: item) if samples.encoded is not None else tf.io.read_file
    policy = resize or ResizePolicy()

    def load(item, boxes, box_labels):
        # Sliced together with their image, so a box can never pair with another file's pixels.
        image, normalized = resize_with_boxes(decode_image(read(item)), boxes, image_size, mode=policy)
        return image, tf.where((box_labels >= 0)[:, None], normalized, 0.0), box_labels

    ds = tf.data.Dataset.from_tensor_slices((list(items), pixel_boxes, labels)).map(
        load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds, folder = cache_images(ds, decision)
    if training:
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        if augmenter is not None:
            # A seeded random stream: reproducible for a seed, new views every epoch.
            seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
            ds = tf.data.Dataset.zip((ds, seeds)).map(
                lambda example, pair: augmenter(*example, pair), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(to_targets, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    if folder is not None:
        weakref.finalize(ds, shutil.rmtree, str(folder), True)
    return ds


def _targets(num_classes: int, max_boxes: int):
    """``(image, boxes, labels)`` -> ``(image, {"box": ..., "class": ...})``."""

    def to_targets(image, boxes, labels):
        targets = {"box": boxes[0] if max_boxes == 1 else boxes}
        if num_classes > 1:
            one_hot = tf.one_hot(labels, num_classes, dtype=tf.float32)  # -1 (empty slot) -> zeros
            targets["class"] = one_hot[0] if max_boxes == 1 else one_hot
        return image, targets

    return to_targets
