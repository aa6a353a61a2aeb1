"""Data-doctor checks for detection: what a split of box data holds that a detector should know of.

The readers (``box_checks``) judge each box against its image; these checks
judge the boxes together, after reading, over a whole ``DataSplit``. Each
finding's ``path`` is the image (``Samples`` keep no annotation paths) and its
detail names the box, the side (training or validation) and the rule.

The rules:

- **Background image** (``box_background``, info): an image with no box is
  kept as a negative example; the detail counts how many of its side there are.
- **Tiny box** (``box_tiny``, warning): shorter side under ``MIN_BOX_SIDE``
  (4) pixels of the original image, or area under ``MIN_BOX_AREA_FRACTION``
  (1/10,000) of the image's. The fraction is what survives resizing: a box of
  1% x 1% of the image is 5x5 pixels at a 512-pixel model input, under one
  cell of the finest (stride-8) level a detection head predicts on.
- **Duplicate box** (``box_duplicate``, warning): a box of the same class as
  an earlier box of the same image with IoU over ``DUPLICATE_IOU`` (0.9);
  the later box is reported, naming the earlier one (found by a sweep,
  ``duplicates.first_duplicates``: bounded memory whatever the box count). 0.9, not 0.95: copied
  boxes nudged by a couple of pixels land between (BCCD has seven RBC pairs
  shifted by exactly (2, 2) px, IoU 0.915 to 0.933), while two real objects
  of one class rarely overlap that much (BCCD's next pair: 0.83).
- **Class only in validation** (``box_val_only_class``, warning): a class with
  validation boxes and no training box; one finding per class, at its first
  validation image.

Example:
    >>> data = load_box_data("bccd/")
    >>> sorted({f.code for f in detection_findings(data.split)})
    ['box_duplicate']
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from transfer.data.boxes.duplicates import TooDense, first_duplicates, iou_rows
from transfer.data.findings import Finding, finding
from transfer.data.samples import Boxes, DataSplit, Samples

MIN_BOX_SIDE = 4.0
MIN_BOX_AREA_FRACTION = 1e-4
DUPLICATE_IOU = 0.9
# Duplicate (and tiny) boxes of one image listed one by one; the rest are counted in one finding.
MAX_DUPLICATES_LISTED = 100


def detection_findings(split: DataSplit) -> list[Finding]:
    """Background images, tiny and duplicate boxes on both sides, then classes only in validation.

    Example:
        >>> [f.code for f in detection_findings(split)]
        ['box_background', 'box_tiny', 'box_val_only_class']
    """
    found: list[Finding] = []
    for side, samples in (("training", split.train), ("validation", split.val)):
        found += _background_images(samples, side)
        for source, target in _box_targets(samples):
            found += _tiny_boxes(source, target, samples.class_names, side)
            found += _duplicate_boxes(source, target, samples.class_names, side)
    found += _validation_only_classes(split)
    return found + nothing_to_score(split)


def nothing_to_score(split: DataSplit) -> list[Finding]:
    """A ``box_nothing_to_score`` stop for a side whose images hold no box at all (every image
    background): a detector would learn nothing, and mAP would have nothing to measure."""
    found = []
    for side, samples, why in (("training", split.train, "nothing to learn"),
                               ("validation", split.val, "nothing to score (mAP would be undefined)")):
        targets = _box_targets(samples)
        if targets and not any(len(t) for _, t in targets):
            found.append(finding(targets[0][0], "box_nothing_to_score",
                                 f"none of the {len(targets)} {side} images has a box: {why}"))
    return found


def _box_targets(samples: Samples):
    """``(source, Boxes)`` of each image whose target is boxes (other targets have no box to judge)."""
    return [(s, t) for s, t in zip(samples.sources, samples.targets) if isinstance(t, Boxes)]


def _box_name(target: Boxes, index: int, class_names) -> str:
    """E.g. ``box 3 'RBC' (10, 20, 13, 40)`` (1-based, as a person counts)."""
    corners = ", ".join(f"{v:g}" for v in target.xyxy[index])
    return f"box {index + 1} '{class_names[target.labels[index]]}' ({corners})"


def _background_images(samples: Samples, side: str) -> list[Finding]:
    empty = [source for source, target in _box_targets(samples) if len(target) == 0]
    return [
        finding(source, "box_background",
                f"{side} image without boxes; kept as a background image ({len(empty)} of {len(samples)} "
                f"{side} images have none)")
        for source in empty
    ]


def _tiny_boxes(source: str, target: Boxes, class_names, side: str) -> list[Finding]:
    found = []
    min_area = MIN_BOX_AREA_FRACTION * target.width * target.height
    for i, (x0, y0, x1, y1) in enumerate(target.xyxy):
        w, h = x1 - x0, y1 - y0
        if min(w, h) < MIN_BOX_SIDE:
            why = f"under {MIN_BOX_SIDE:g} px a side"
        elif w * h < min_area:
            why = f"{100 * w * h / (target.width * target.height):.3g}% of the image's area, under " \
                  f"{100 * MIN_BOX_AREA_FRACTION:g}%"
        else:
            continue
        found.append(finding(source, "box_tiny",
                             f"{side} image: {_box_name(target, i, class_names)} is {w:g}x{h:g} px in the "
                             f"{target.width}x{target.height} image ({why})"))
    if len(found) > MAX_DUPLICATES_LISTED + 1:  # thousands of specks: one line for the rest
        more = len(found) - MAX_DUPLICATES_LISTED
        found[MAX_DUPLICATES_LISTED:] = [finding(source, "box_tiny", f"{side} image: {more:,} more tiny boxes (of "
                                                                     f"{len(target):,} boxes), not listed one by one")]
    return found


def pairwise_iou(boxes: np.ndarray) -> np.ndarray:
    """IoU ``[N, N]`` of every pair of pixel ``xyxy`` boxes ``[N, 4]`` (0 where the union is empty).

    Example:
        >>> float(pairwise_iou(np.array([[0, 0, 10, 10], [0, 0, 10, 5]]))[0, 1])
        0.5
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0 = np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    y0 = np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    x1 = np.minimum(boxes[:, None, 2], boxes[None, :, 2])
    y1 = np.minimum(boxes[:, None, 3], boxes[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _duplicate_boxes(source: str, target: Boxes, class_names, side: str) -> list[Finding]:
    if len(target) < 2:
        return []
    # A sweep, not pairwise_iou: one image may hold thousands of boxes (an N x N matrix of 172k is 221 GiB).
    try:
        later, earlier = first_duplicates(target.xyxy, target.labels, DUPLICATE_IOU)
    except TooDense as e:
        return [finding(source, "box_duplicate",
                        f"{side} image: its {len(target):,} boxes are too many and too close together to be checked "
                        f"for duplicates one by one ({e}); duplicates were not checked, look at its annotation")]
    boxes = np.asarray(target.xyxy, np.float64)
    ious = iou_rows(boxes[earlier[:MAX_DUPLICATES_LISTED]], boxes[later[:MAX_DUPLICATES_LISTED]])
    found = [
        finding(source, "box_duplicate",
                f"{side} image: {_box_name(target, late, class_names)} repeats "
                f"{_box_name(target, first, class_names)} (IoU {iou:.3f}, over {DUPLICATE_IOU:g})")
        for late, first, iou in zip(later.tolist(), earlier.tolist(), ious.tolist())
    ]
    if len(later) > MAX_DUPLICATES_LISTED:  # a pile of copies: one line for the rest, not 200k lines
        found.append(finding(source, "box_duplicate",
                             f"{side} image: {len(later) - MAX_DUPLICATES_LISTED:,} more duplicate boxes (of "
                             f"{len(target):,} boxes), not listed one by one"))
    return found


def _validation_only_classes(split: DataSplit) -> list[Finding]:
    trained = {label for _, target in _box_targets(split.train) for label in target.labels}
    boxes: Counter = Counter()
    images: Counter = Counter()
    first_image: dict[int, str] = {}
    for source, target in _box_targets(split.val):
        for label in set(target.labels) - trained:
            images[label] += 1
            first_image.setdefault(label, source)
        boxes.update(label for label in target.labels if label not in trained)
    return [
        finding(first_image[label], "box_val_only_class",
                f"class '{split.class_names[label]}' has {boxes[label]} validation box(es) in {images[label]} "
                "image(s) (this is the first) and no training box")
        for label in sorted(first_image)
    ]
