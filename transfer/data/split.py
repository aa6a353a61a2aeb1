"""Seeded, stratified train/validation split of ``Samples``.

Each class is split on its own, so every class keeps (as closely as integer
counts allow) the same share of validation images. The split depends only on
the seed, the samples and their order: the same inputs give the same split on
every machine and Python version.

Example:
    >>> split = stratified_split(samples, val_fraction=0.2, seed=0)
    >>> split.origin
    'stratified 80/20, seed 0'
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter, defaultdict
from numbers import Real

from transfer.data.samples import DataSplit, Samples
from transfer.core.errors import TransferError

logger = logging.getLogger(__name__)

# Groups whose images have no label at all (multi-label only) are stratified together.
_NO_LABEL = -1


def check_val_fraction(val_fraction: float) -> float:
    """``val_fraction`` as a float, or a TransferError when it is not in (0, 1).

    Example:
        >>> check_val_fraction(0.2)
        0.2
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, Real):
        raise TransferError(
            f"val_fraction must be a number between 0 and 1 (exclusive). "
            f"Received: val_fraction={val_fraction!r}",
            fix="Pass a fraction such as 0.2 (20% of each class goes to validation).",
        )
    if not 0.0 < float(val_fraction) < 1.0:  # NaN fails this too
        raise TransferError(
            f"val_fraction must be between 0 and 1 (exclusive). Received: val_fraction={val_fraction!r}",
            fix="Pass a fraction such as 0.2 (20% of each class goes to validation).",
        )
    return float(val_fraction)


def split_origin(val_fraction: float, seed: int) -> str:
    """The text a split records about itself, e.g. ``'stratified 80/20, seed 0'``."""
    val_pct = round(val_fraction * 100, 2)
    return f"stratified {100 - val_pct:g}/{val_pct:g}, seed {seed}"


def stratify_keys(samples: Samples) -> list[int]:
    """One stratification key per sample.

    Single-label: the class index. Multi-label: the sample's *rarest* label
    (fewest images in the whole set; ties go to the lower class index), so the
    rare labels, which are the ones a random split would most likely leave out
    of validation, are spread over both sides. Samples with no label share one
    group.

    Example:
        >>> stratify_keys(Samples(("a", "b"), (1, 0), ("x", "y")))
        [1, 0]
    """
    if not samples.multi_label:
        return [int(t) for t in samples.targets]
    counts = Counter(label for target in samples.targets for label in set(target))
    return [
        min(target, key=lambda label: (counts[label], label)) if target else _NO_LABEL
        for target in samples.targets
    ]


def _val_count(n: int, val_fraction: float) -> int:
    """How many of ``n`` images of a group go to validation."""
    if n < 2:
        return 0  # a single image is needed for training; there is none to spare
    # Round half up (Python's round() would round half to even); the epsilon keeps
    # e.g. 5 * 0.3 = 1.4999999999999998 rounding to 2 as the exact value would.
    count = math.floor(n * val_fraction + 0.5 + 1e-9)
    return min(max(count, 1), n - 1)


def stratified_split(samples: Samples, val_fraction: float = 0.2, seed: int = 0) -> DataSplit:
    """Split ``samples`` into train and val, class by class.

    Every class with at least 2 images gets at least 1 validation and 1 training
    image; a class with 1 image goes to training only. Per class,
    ``round(n * val_fraction)`` images (rounding half up, then clamped to
    ``[1, n - 1]``) go to validation. Multi-label samples are grouped by their
    rarest label (see ``stratify_keys``). Within each side the samples keep
    their input order.

    Example:
        >>> s = Samples(tuple(f"{i}.jpg" for i in range(10)), (0,) * 5 + (1,) * 5, ("a", "b"))
        >>> split = stratified_split(s, val_fraction=0.2, seed=0)
        >>> len(split.train), len(split.val)
        (8, 2)
    """
    val_fraction = check_val_fraction(val_fraction)
    if len(samples) == 0:
        raise TransferError(
            "There are no images to split into training and validation.",
            fix="Check that the data source lists at least 2 images per class.",
        )
    groups: dict[int, list[int]] = defaultdict(list)
    for index, key in enumerate(stratify_keys(samples)):
        groups[key].append(index)

    val_indices: list[int] = []
    for key in sorted(groups):
        members = groups[key]
        # A generator per group, seeded by (seed, key): a class's split does not
        # change when other classes gain or lose images. String seeds hash with
        # SHA-512, so this is the same on every platform and run.
        rng = random.Random(f"transfer-split:{seed}:{key}")
        shuffled = list(members)
        rng.shuffle(shuffled)
        val_indices.extend(shuffled[: _val_count(len(members), val_fraction)])

    singles = [samples.class_names[k] for k, members in groups.items() if len(members) == 1 and k >= 0]
    if singles:
        logger.warning("Classes with a single image go to training only: %s", ", ".join(sorted(singles)))
    if not val_indices:
        raise TransferError(
            f"Too few images to make a validation set: {len(samples)} images, "
            "no class (or label group) has 2 or more.",
            fix="Add images so that each class has at least 2, or give a separate validation set.",
        )

    val_set = set(val_indices)
    train = [i for i in range(len(samples)) if i not in val_set]
    val = sorted(val_set)
    return DataSplit(
        train=samples.subset(train),
        val=samples.subset(val),
        origin=split_origin(val_fraction, seed),
    )


def split_by_labels(samples: Samples, labels, *, val_fraction: float = 0.2, seed: int = 0) -> DataSplit:
    """``samples`` of any target kind (boxes, masks) split by ``stratified_split`` on ``labels``.

    ``labels``: one tuple of class indices per sample (the classes its boxes or
    regions show); images are grouped by their rarest class, label-less ones
    together. The targets themselves travel unchanged.

    Example:
        >>> split = split_by_labels(boxes, [t.labels for t in boxes.targets], val_fraction=0.2)
        >>> len(split.train) + len(split.val) == len(boxes)
        True
    """
    # A stand-in whose sources are positions carries the multi-label split back to the real samples.
    stand_in = Samples(
        sources=tuple(str(i) for i in range(len(samples))),
        targets=tuple(tuple(sorted(set(int(c) for c in classes))) for classes in labels),
        class_names=samples.class_names, multi_label=True,
    )
    halves = stratified_split(stand_in, val_fraction=val_fraction, seed=seed)
    return DataSplit(
        train=samples.subset([int(i) for i in halves.train.sources]),
        val=samples.subset([int(i) for i in halves.val.sources]),
        origin=halves.origin,
    )
