"""The class names a mask source holds, in its own order: what ``transfer evaluate --data`` checks
against the run's before scoring it.

Mask files hold values, not names: a mask folder's ``classes.txt`` says which
value is which class, and then every class of the run must be there (read with
the run's names, swapped classes would be scored without a word); a mask
folder without one names nothing (its values are read as the run's classes).
Polygons (VIA, COCO) name their classes; a ``tfds:`` source is read by the
task with the run's names.

Example:
    >>> mask_source_classes("camvid-test/")
    (('Sky', 'Building', ...), 'camvid-test/classes.txt names', True)
"""

from __future__ import annotations

from transfer.data.masks.folders import find_mask_folder
from transfer.data.masks.reading import mask_format, read_masks
from transfer.data.masks.values import find_classes_file, read_classes_file


def mask_source_classes(data: str, ignore_index: int | None = None):
    """``(the source's class names or None, what names them, whether every run class must be there)``
    (see the module docstring); ``ignore_index``: the run's ignored value, for polygon sources.

    Example:
        >>> mask_source_classes("membrane/")  # a mask folder without classes.txt
        (None, 'its masks come without a classes.txt', True)
    """
    kind = mask_format(data)
    if kind == "folder":
        layout = find_mask_folder(data)
        # The same places, in the same order, as reading the folder looks (transfer.data.masks.folders).
        own = find_classes_file([layout.masks, layout.root, layout.root.parent]) if layout else None
        if own is None:
            return None, "its masks come without a classes.txt", True
        return read_classes_file(own), f"{own} names", True
    if kind in ("via", "coco"):  # polygons name their classes: read by name, background first
        samples, _ = read_masks(data, ignore_index=ignore_index)
        return tuple(samples.class_names), "its regions' classes are", False
    return None, "its label names", False  # tfds: the task reads it with the run's names
