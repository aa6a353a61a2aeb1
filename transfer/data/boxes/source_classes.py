"""The class names a box source holds, in its own order: what ``transfer evaluate --data`` checks
against the run's before scoring it (localize and detect read boxes alike).

Example:
    >>> box_source_classes("bccd/ImageSets/Main/test.txt")
    (('Platelets', 'RBC', 'WBC'), "its boxes' classes are", False)
"""

from __future__ import annotations

from transfer.data.boxes.reading import read_boxes


def box_source_classes(data: str) -> tuple[tuple[str, ...], str, bool]:
    """``(the classes of data's boxes, what names them, False)``: read as training reads the source;
    a box source need not hold every class of the run (its missing ones are only said).

    Example:
        >>> box_source_classes("raccoon/test_labels.csv")[0]
        ('raccoon',)
    """
    return tuple(read_boxes(data)[0].class_names), "its boxes' classes are", False
