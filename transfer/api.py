"""The Python API's data entry: ``load_data`` for every task, the sources the CLI reads.

``transfer.load_data(source, task=...)`` reads a source through the task's own
``Task.load_data`` (as ``transfer train --task ... --data ...`` does):
class folders, a CSV or ``tfds:NAME`` (classify); a box CSV, a Pascal VOC
folder or a COCO JSON file (localize, detect); mask folders, VIA or COCO
polygon JSON, or ``tfds:NAME`` with masks (segment). Without ``task`` it
reads classification sources, and refuses a source that clearly holds boxes
or masks, naming the tasks that read it (guessing would train the wrong model).

Example:
    >>> split = load_data("raccoon/train_labels.csv", task="localize", val_source="raccoon/test_labels.csv")
    >>> len(split.train), len(split.val), split.class_names
    (160, 40, ('raccoon',))
"""

from __future__ import annotations

import os
from typing import Callable

from transfer.core.errors import TransferError

_BOX_CHOICES = "task='localize' (one box and class per image) or task='detect' (every box of every class)"


def load_data(source: str | os.PathLike, *, task=None, val_source: str | os.PathLike | None = None,
              val_fraction: float = 0.2, seed: int = 0, allow_outside_root: bool = False,
              echo: Callable[[str], None] | None = print, **options):
    """Training and validation ``DataSplit`` from ``source`` for ``task``.

    ``task``: ``"classify"``, ``"localize"``, ``"detect"``, ``"segment"``, or a task
    with options (``transfer.get_task("segment").with_options(ignore_index=11)``);
    pass the same one to ``transfer.train``. Without it, a classification source
    is read as before and a box or mask source is refused with the choices.
    ``options``: the task's own (segment: ``class_names``, ``ignore_index``,
    ``decoder``, ``loss``), refused by a task that does not take them.
    ``val_source`` validates on another source instead of splitting ``source``
    (``val_fraction``, ``seed``). ``echo`` gets the lines about data problems
    that do not stop training (a clipped box, a dropped image), each naming
    its file (None: silent).

    Example:
        >>> split = load_data("balloon/train", task="segment", val_source="balloon/val")
        >>> split.train.targets[0]
        Mask(path=None, width=1024, height=683, polygons=((1, (...)),), ...)
    """
    from transfer.tasks import get_task
    from transfer.tasks.base import Task

    if task is None:
        refuse_ambiguous_source(source)
        if val_source is not None:
            refuse_ambiguous_source(val_source)
        task = "classify"
    chosen = task if isinstance(task, Task) else get_task(task)
    if options:
        chosen = chosen.with_options(**options)
    return chosen.load_data(os.fspath(source), val_source=None if val_source is None else os.fspath(val_source),
                            val_fraction=val_fraction, seed=seed, allow_outside_root=allow_outside_root, echo=echo)


def refuse_ambiguous_source(source: str | os.PathLike) -> None:
    """Raise a ``TransferError`` naming the tasks to choose from when ``source`` is clearly box or mask
    data (which classification cannot read); return for anything else.

    Example:
        >>> refuse_ambiguous_source("raccoon/annotations.csv")
        TransferError: 'raccoon/annotations.csv' holds boxes: pass task='localize' (...) or task='detect' (...).
    """
    from transfer.data import TFDS_PREFIX
    from transfer.data.boxes import box_format
    from transfer.data.masks import is_mask_source

    text = os.fspath(source)
    if text.startswith(TFDS_PREFIX):
        return  # TFDS names stay classification's (a masked dataset: task='segment')
    if is_mask_source(text):  # before boxes: a mask folder is never a VOC folder, a VIA file never COCO
        raise TransferError(f"'{text}' holds segmentation masks (or polygons): load_data without task= reads "
                            "classification data.", fix="Pass task='segment' (a class for every pixel).")
    kind = box_format(text)
    if kind == "coco":
        raise TransferError(f"'{text}' is a COCO annotation file: load_data without task= reads classification "
                            "data.", fix=f"Pass {_BOX_CHOICES}, or task='segment' (its polygons as masks).")
    if kind is not None:
        what = "a Pascal VOC folder" if kind == "voc" else "a box CSV"
        raise TransferError(f"'{text}' holds boxes ({what}): load_data without task= reads classification data.",
                            fix=f"Pass {_BOX_CHOICES}.")
