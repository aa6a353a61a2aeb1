"""Box annotations: Pascal VOC XML folders, box CSV files and COCO JSON, every box checked.

``read_boxes`` reads one source into ``Samples`` whose targets are
``Boxes`` (pixels of the real image) plus ``Finding``s for every problem;
``load_box_data`` makes the training/validation split. Nothing is printed
and nothing here imports TensorFlow.

Modules, one job each: ``voc``, ``csv_boxes``, ``coco`` parse their format
into plain records (``records``); ``box_checks`` judges every box against the
real image; ``reading`` detects the format; ``loading`` splits; ``check_source``
is what ``transfer check-data`` asks of a box source.

Example:
    >>> samples, findings = read_boxes("raccoon/")
    >>> len(samples), samples.class_names, samples.targets[0].width
    (200, ('raccoon',), 650)
    >>> data = load_box_data("raccoon/train_labels.csv", val_source="raccoon/test_labels.csv")
    >>> len(data.split.train), len(data.split.val)
    (160, 40)
"""

from __future__ import annotations

from transfer.data.boxes.box_checks import MIN_INSIDE, check_annotations, real_image_size
from transfer.data.boxes.loading import BoxData, load_box_data, seeded_box_split
from transfer.data.boxes.reading import FORMATS, BoxListing, box_format, list_boxes, read_boxes

__all__ = [
    "FORMATS",
    "MIN_INSIDE",
    "BoxData",
    "BoxListing",
    "box_format",
    "check_annotations",
    "list_boxes",
    "load_box_data",
    "read_boxes",
    "real_image_size",
    "seeded_box_split",
]
