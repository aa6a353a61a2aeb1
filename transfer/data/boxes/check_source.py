"""What ``transfer check-data`` asks of a box source: its images, split and box findings.

The data doctor inspects images and judges class balance on single- or
multi-label targets. For a box source it gets a stand-in: each image's
target is the tuple of the classes of its kept boxes (so class counts count
images per class), and the findings of ``list_boxes`` (every dropped,
clipped or mis-sized box, with its annotation file) come along as extra
findings. The split is the one training would make (``loading``).

Example:
    >>> split, samples, extra, root, given = list_box_source(Path("bccd"), 0.2, 0, False)
    >>> len(split.train), len(split.val), given, [f.code for f in extra]
    (205, 87, True, ['box_degenerate', 'box_degenerate'])
"""

from __future__ import annotations

from pathlib import Path

from transfer.data.boxes.detection_checks import detection_findings
from transfer.data.boxes.loading import seeded_box_split, voc_splits
from transfer.data.boxes.reading import list_boxes, split_folders
from transfer.data.findings import Finding
from transfer.data.samples import DataSplit, Samples
from transfer.core.errors import TransferError


def as_class_sets(samples: Samples) -> Samples:
    """``samples`` with each ``Boxes`` target replaced by the sorted tuple of its classes (multi-label).

    Example:
        >>> as_class_sets(samples).targets[0]
        (1, 2)
    """
    return Samples(
        samples.sources, tuple(tuple(sorted(set(t.labels))) for t in samples.targets), samples.class_names,
        multi_label=True, encoded=samples.encoded,
    )


def list_box_source(
    path: Path, val_fraction: float, seed: int, allow_outside_root: bool
) -> tuple[DataSplit | None, Samples | None, list[Finding], str, bool]:
    """``(split, samples, extra findings, root, split given)`` of a box source, nothing raised for bad boxes.

    ``split`` is None when the images are too few to split (then ``samples``
    holds them all). Raises TransferError only for a source that cannot be read
    at all or is hostile (see ``list_boxes``).
    """
    lists, origin = voc_splits(path)
    if "train" in lists and "val" in lists:
        train = list_boxes(path, split="train")
        val = list_boxes(path, split="val", class_names=train.samples.class_names)
        boxes = DataSplit(train.samples, val.samples, origin)
        split = DataSplit(as_class_sets(train.samples), as_class_sets(val.samples), boxes.origin)
        root = str(path) if split_folders(path) is not None else train.root  # the parent of train/ val/
        return split, None, [*train.findings, *val.findings, *detection_findings(boxes)], root, True
    listing = list_boxes(path, allow_outside_root=allow_outside_root)
    try:
        split = seeded_box_split(listing.samples, val_fraction=val_fraction, seed=seed)
    except TransferError:  # too few images to split: checked as one set
        return None, as_class_sets(listing.samples), list(listing.findings), listing.root, False
    # Detection's own checks (background images, tiny and duplicate boxes, classes only in
    # validation) judge the boxes of the split training would make.
    extra = [*listing.findings, *detection_findings(split)]
    split = DataSplit(as_class_sets(split.train), as_class_sets(split.val), split.origin)
    return split, None, extra, listing.root, False
