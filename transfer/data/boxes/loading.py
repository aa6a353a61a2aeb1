"""Training and validation box data from one or two sources: the split and what was wrong.

Which images validate, in this order:

1. ``val_source`` given: all of it (boxes of classes training does not know
   are dropped and reported); a VOC training folder with
   ``ImageSets/Main/train.txt`` then trains on that list only;
2. a VOC folder with ``ImageSets/Main/train.txt`` and ``val.txt``: those lists
   (use ``read_boxes(folder, split="test")`` for the test list); a folder of
   ``train/`` and ``val/`` VOC folders: those folders;
3. otherwise a seeded split of the images (``transfer.data.split``),
   stratified by each image's rarest class (background images in a group of
   their own), so every class with two images or more is on both sides.

Example:
    >>> data = load_box_data("raccoon/train_labels.csv", val_source="raccoon/test_labels.csv")
    >>> len(data.split.train), len(data.split.val), data.split.origin
    (160, 40, 'separate validation source raccoon/test_labels.csv')
"""

from __future__ import annotations

import os

from transfer.data.boxes.reading import box_format, read_boxes, split_folders
from transfer.data.boxes.voc import find_voc_layout
from transfer.data.findings import FoundData
from transfer.data.samples import DataSplit, Samples
from transfer.data.split import check_val_fraction, split_by_labels
from transfer.core.errors import TransferError


# What load_box_data returns: the split and its findings (one class for every annotated source).
BoxData = FoundData


def load_box_data(
    source: str | os.PathLike, *, val_source: str | os.PathLike | None = None, val_fraction: float = 0.2,
    seed: int = 0, allow_outside_root: bool = False,
) -> BoxData:
    """Training and validation images with their boxes (see the module docstring for the split).

    Training's class names (sorted) drive validation's. Raises TransferError
    when a source cannot be read, holds problems that stop training (see
    ``read_boxes``), training has no box at all or validation no image.

    Example:
        >>> data = load_box_data("bccd/")
        >>> len(data.split.train), len(data.split.val), data.split.class_names
        (205, 87, ('Platelets', 'RBC', 'WBC'))
    """
    val_fraction = check_val_fraction(val_fraction)
    lists, origin = voc_splits(source)
    train_split = "train" if "train" in lists else None
    if val_source is not None:
        train, found = read_boxes(source, split=train_split, allow_outside_root=allow_outside_root)
        _require_boxes(source, train)
        val, val_found = read_boxes(val_source, class_names=train.class_names, allow_outside_root=allow_outside_root)
        split = DataSplit(train, val, origin=f"separate validation source {os.fspath(val_source)}")
        found += val_found
    elif train_split and "val" in lists:
        train, found = read_boxes(source, split="train")
        _require_boxes(source, train)
        val, val_found = read_boxes(source, split="val", class_names=train.class_names)
        split = DataSplit(train, val, origin=origin)
        found += val_found
    else:
        samples, found = read_boxes(source, allow_outside_root=allow_outside_root)
        _require_boxes(source, samples)
        split = seeded_box_split(samples, val_fraction=val_fraction, seed=seed)
    if len(split.val) == 0:
        raise TransferError(
            f"{val_source or source}: no validation images left (none listed, or none usable).",
            fix="Check the findings of `transfer check-data` on it, or give another validation source.",
        )
    return BoxData(split, tuple(found))


def seeded_box_split(samples: Samples, *, val_fraction: float = 0.2, seed: int = 0) -> DataSplit:
    """``samples`` (box targets) split by ``stratified_split``, grouping images by their rarest class.

    Example:
        >>> split = seeded_box_split(read_boxes("raccoon/")[0], val_fraction=0.2, seed=0)
        >>> len(split.train), len(split.val), split.origin
        (160, 40, 'stratified 80/20, seed 0')
    """
    return split_by_labels(samples, [target.labels for target in samples.targets], val_fraction=val_fraction,
                           seed=seed)


def voc_splits(source: str | os.PathLike) -> tuple[tuple[str, ...], str]:
    """The splits of a VOC source and where they come from: ``train/`` and ``val/`` folders of a parent, or
    the ImageSets/Main lists of a VOC folder (none for other sources).

    Example:
        >>> voc_splits("bccd/")
        (('test', 'train', 'trainval', 'val'), 'ImageSets/Main train/val lists')
    """
    if box_format(source) != "voc":
        return (), ""
    folders = split_folders(source)
    if folders is not None:
        return tuple(folders), "folders " + " ".join(f"{p.name}/" for p in folders.values())
    layout = find_voc_layout(source)
    return (layout.splits() if layout is not None else ()), "ImageSets/Main train/val lists"


def _require_boxes(source: str | os.PathLike, samples: Samples) -> None:
    if not samples.class_names:
        raise TransferError(
            f"{source}: no usable box in {len(samples)} image(s); a box model needs at least one.",
            fix="Check the annotations (`transfer check-data` lists every dropped box), or pass another source.",
        )
