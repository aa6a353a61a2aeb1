"""``load_export``: the right reader for any export, chosen by the task the export records.

The export's ``assets/transfer.json`` names its task (``"classification"``,
``"localization"``, ...); the task registry (``transfer.tasks.get_task``)
names that task's reader as ``"module:Class"`` (``Task.reader``), imported
here by name, so serving imports no task package.

Example:
    >>> reader = load_export("exports/raccoon")
    >>> type(reader).__name__, reader.class_names
    ('ExportedLocalizer', ['raccoon'])
"""

from __future__ import annotations

import importlib
import os

from transfer.core.errors import TransferError
from transfer.serving.reader import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, ExportedModel, export_task


def load_export(export_dir: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                max_bytes: int = DEFAULT_MAX_BYTES) -> ExportedModel:
    """The export at ``export_dir`` loaded by its task's reader: an ``ExportedClassifier``,
    ``ExportedLocalizer``, ``ExportedDetector`` or ``ExportedSegmenter``, each with
    ``predict_files``, ``predict_images`` and ``draw``.

    ``max_pixels`` and ``max_bytes`` bound the inputs it accepts (see
    ``transfer.serving.reader``). Loading runs the SavedModel's graph: only
    load exports you trust.

    Example:
        >>> detector = load_export("exports/bccd")
        >>> detector.predict_files(["BloodImage_00007.jpg"])[0]["detections"][0]["class"]
        'WBC'
    """
    return reader_class(export_task(export_dir), export_dir).load(export_dir, max_pixels=max_pixels,
                                                                  max_bytes=max_bytes)


def reader_class(task_title: str, export_dir: str | os.PathLike = "") -> type[ExportedModel]:
    """The reader class of exports whose ``task`` is ``task_title`` (``"detection"``, or a task name).

    Example:
        >>> reader_class("segmentation").__name__
        'ExportedSegmenter'
    """
    from transfer.tasks import get_task

    try:
        task = get_task(task_title)
    except TransferError:
        raise TransferError(
            f"The export '{export_dir}' records the task {task_title!r}, which this version of transfer "
            "does not know.", fix="Use the transfer version that wrote the export, or export the run again.") from None
    module, name = task.reader.split(":")
    return getattr(importlib.import_module(module), name)
