"""Segmentation masks: mask files, VIA and COCO polygons, TFDS masks; every problem named with its file.

``read_masks`` reads one source into ``Samples`` whose targets are ``Mask``
(sizes from the image headers, nothing decoded but a bounded scan of mask
values) plus ``Finding``s for every problem; ``load_mask_data`` makes the
training/validation split; ``load_mask`` turns one ``Mask`` into a uint8
``[height, width]`` array of class indices (``IGNORE_VALUE`` where ignored).
Nothing is printed and nothing here imports TensorFlow at import time (TFDS
sources import it when read).

Modules, one job each: ``decode`` (``load_mask``, ``EncodedMask``),
``values`` (class names, ``classes.txt``, value tables, bounded scans),
``folders`` (``images/`` + ``masks/`` files), ``via`` and ``coco`` parse
their JSON into plain records that ``region_checks`` judges against the real
image (with ``regions`` geometry), ``tfds_masks`` (``tfds:oxford_iiit_pet``),
``reading`` detects the format, ``loading`` splits, ``check_source`` is what
``transfer check-data`` asks of a mask source.

Example:
    >>> data = load_mask_data("camvid/", ignore_index=11)
    >>> len(data.split.train), len(data.split.val), data.split.class_names[:3]
    (367, 101, ('Sky', 'Building', 'Pole'))
    >>> load_mask(data.split.train.targets[0]).shape
    (360, 480)
"""

from __future__ import annotations

from transfer.data.masks.check_source import is_mask_source, list_mask_source
from transfer.data.masks.decode import ENCODED_PATH, EncodedMask, load_mask
from transfer.data.masks.loading import MaskData, load_mask_data, seeded_mask_split
from transfer.data.masks.reading import FORMATS, MaskListing, list_masks, mask_format, read_masks, split_folders
from transfer.data.samples import IGNORE_VALUE, Mask

__all__ = [
    "ENCODED_PATH",
    "FORMATS",
    "IGNORE_VALUE",
    "EncodedMask",
    "Mask",
    "MaskData",
    "MaskListing",
    "is_mask_source",
    "list_mask_source",
    "list_masks",
    "load_mask",
    "load_mask_data",
    "mask_format",
    "read_masks",
    "seeded_mask_split",
    "split_folders",
]
