"""Training and validation mask data from one or two sources: the split and what was wrong.

Which images validate, in this order:

1. ``val_source`` given: all of it, read with training's classes and value
   table (a ``classes.txt`` of its own must name the same classes); a
   training source with ``train/`` and ``val/`` folders then trains on
   ``train/`` only;
2. a folder with ``train/`` and ``val/`` (or ``valid/``, ``validation/``)
   folders of one mask format (CamVid, balloon): those folders;
3. ``tfds:NAME`` with a validation split: that split (``test`` is never used);
4. otherwise a seeded split of the images (``transfer.data.split``): grouped
   by each image's rarest region class where regions say it (VIA, COCO),
   all together for mask files (their classes are known only once decoded).

Everything is sorted by path first, so the same inputs and seed give the
same split on every machine.

Example:
    >>> data = load_mask_data("camvid", ignore_index=11)
    >>> len(data.split.train), len(data.split.val), data.split.origin
    (367, 101, 'folders train/ val/')
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from transfer.data.findings import FoundData
from transfer.data.masks.folders import find_mask_folder
from transfer.data.masks.reading import MaskListing, list_masks, raise_for_stops, split_folders
from transfer.data.masks.tfds_masks import read_tfds_masks, split_names, tfds_builder
from transfer.data.masks.values import find_classes_file, read_classes_file
from transfer.data.samples import DataSplit, Samples, class_indices
from transfer.data.split import check_val_fraction, split_by_labels
from transfer.data.sources.tfds import PREFIX
from transfer.core.errors import TransferError


# What load_mask_data returns: the split and its findings (one class for every annotated source).
MaskData = FoundData


def load_mask_data(
    source: str | os.PathLike, *, val_source: str | os.PathLike | None = None, val_fraction: float = 0.2,
    seed: int = 0, class_names: Sequence[str] | None = None, ignore_index: int | None = None,
    allow_outside_root: bool = False,
) -> MaskData:
    """Training and validation images with their masks (see the module docstring for the split).

    ``class_names``, ``ignore_index`` and ``allow_outside_root`` are those of
    ``read_masks``. Raises TransferError when a source cannot be read, holds
    problems that stop training, or either side has no usable image.

    Example:
        >>> data = load_mask_data("membrane/train", val_fraction=5 / 30, seed=0)
        >>> len(data.split.train), len(data.split.val), data.split.class_names
        (25, 5, ('background', 'foreground'))
    """
    val_fraction = check_val_fraction(val_fraction)
    options = dict(ignore_index=ignore_index, allow_outside_root=allow_outside_root)
    text = os.fspath(source)
    folders = split_folders(source)
    if text.startswith(PREFIX) and val_source is None:
        return _tfds_data(text, val_fraction, seed, class_names, ignore_index)
    train_source = folders[0] if folders is not None else source
    train = _listed(train_source, role="training", class_names=class_names, **options)
    if val_source is not None or (folders is not None and folders[1] is not None):
        val_from = val_source if val_source is not None else folders[1]
        val = _listed(val_from, role="validation", class_names=train.samples.class_names,
                      values=shared_values(train), **options)
        _same_classes(train, train_source, val, val_from)
        origin = (f"separate validation source {os.fspath(val_source)}" if val_source is not None
                  else f"folders {Path(train_source).name}/ {Path(val_from).name}/")
        split = DataSplit(train.samples, val.samples, origin=origin)
        found = train.findings + val.findings
    else:
        split = seeded_mask_split(train.samples, val_fraction=val_fraction, seed=seed)
        found = train.findings
    if len(split.val) == 0:
        raise TransferError(f"{os.fspath(val_source or source)}: no validation images left (none usable).",
                            fix="Check the findings of `transfer check-data` on it, or give another validation source.")
    return MaskData(split, tuple(found))


def _listed(source, *, role: str, **kwargs) -> MaskListing:
    """The listing of one side; TransferError when it stops training or leaves nothing to learn (score)."""
    listing = list_masks(source, **kwargs)
    raise_for_stops(source, listing.stops)
    if len(listing.samples) == 0:
        raise nothing_usable(source, listing.findings, role)
    return listing


def nothing_usable(source, findings, role: str) -> TransferError:
    """The error for a side without a usable image; says so when its masks were all ignored (loss 0, IoU 0)."""
    text = os.fspath(source)
    ignored = [f for f in findings if f.code == "mask_all_ignored"]
    check = f"`transfer check-data {text}` names each file."
    if ignored:
        verb = "learn" if role == "training" else "score"
        return TransferError(
            f"{text}: {role} has nothing to {verb}: every mask left ({len(ignored)}, e.g. {ignored[0].path}) is "
            "entirely the ignored value (it would train with loss 0 and IoU 0).",
            fix=f"Label the masks, or check --ignore-index and the class values; {check}")
    return TransferError(f"{text}: no usable image with a mask for {role} ({len(findings)} problem(s)).",
                         fix=f"Fix the files the findings name; {check}")


def shared_values(listing: MaskListing) -> tuple[tuple[int, int], ...] | None:
    """The value table training's mask files share (None for polygon sources)."""
    tables = {t.values for t in listing.samples.targets if t.kind in ("file", "encoded")}
    return next(iter(tables)) if len(tables) == 1 else None


def _same_classes(train: MaskListing, train_source, val: MaskListing, val_source) -> None:
    """A validation folder's own ``classes.txt`` must name training's classes."""
    layout = find_mask_folder(val_source) if val.format == "folder" else None
    if layout is None:
        return
    own = find_classes_file([layout.masks, layout.root, layout.root.parent])
    if own is not None and read_classes_file(own) != train.samples.class_names:
        raise TransferError(
            f"{own} names the classes {list(read_classes_file(own))}, but training ({os.fspath(train_source)}) has "
            f"{list(train.samples.class_names)}.",
            fix="Use one classes.txt for both (e.g. in the folder above train/ and val/), in the same value order.",
        )


def seeded_mask_split(samples: Samples, *, val_fraction: float = 0.2, seed: int = 0) -> DataSplit:
    """``samples`` (mask targets) split by ``stratified_split``, grouping images by their rarest region class.

    Example:
        >>> split = seeded_mask_split(read_masks("membrane/train")[0], val_fraction=5 / 30)
        >>> len(split.train), len(split.val)
        (25, 5)
    """
    return split_by_labels(samples, [class_indices(t) for t in samples.targets], val_fraction=val_fraction,
                           seed=seed)


def _tfds_data(name: str, val_fraction: float, seed: int, class_names, ignore_index) -> MaskData:
    bare = name[len(PREFIX):]
    builder = tfds_builder(bare)
    train_split, val_split = split_names(builder)
    train, found = read_tfds_masks(bare, split=train_split, class_names=class_names, ignore_index=ignore_index,
                                   builder=builder)
    raise_for_stops(name, [f for f in found if f.action == "stop"])  # values no class has, in any mask
    if len(train) == 0:
        raise nothing_usable(f"{name} ({train_split})", found, "training")
    if val_split is None:
        return MaskData(seeded_mask_split(train, val_fraction=val_fraction, seed=seed), tuple(found))
    val, val_found = read_tfds_masks(bare, split=val_split, class_names=class_names, ignore_index=ignore_index,
                                     builder=builder)
    raise_for_stops(name, [f for f in val_found if f.action == "stop"])
    if len(val) == 0:
        raise nothing_usable(f"{name} ({val_split})", val_found, "validation")
    return MaskData(DataSplit(train, val, origin=f"tfds splits {train_split}/{val_split}"), tuple(found + val_found))
