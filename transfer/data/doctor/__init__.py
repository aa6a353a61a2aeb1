"""The data doctor's former single module, kept so existing imports keep working.

The doctor now lives in rooms with one job each:

- ``transfer.data.doctor.inspection``: read one image (``ImageInfo``, ``inspect_image``,
  ``inspect_images``);
- ``transfer.data.doctor.checks``: the checks and ``register``, the one place a check
  is added;
- ``transfer.data.doctor.report``: ``DataReport`` (text table, summary, JSON);
- ``transfer.data.doctor.diagnose``: ``check_data``, ``check_split``, ``run_checks``
  and the listing of a source;
- ``transfer.data.doctor.quarantine``: ``drop_unreadable`` and ``quarantine``.

Example:
    >>> from transfer.data.doctor import check_data
    >>> check_data("flowers/").exit_code
    0
"""

from __future__ import annotations

from transfer.data.doctor.checks import (
    CHECKS,
    DEFAULT_IMAGE_SIZE,
    FEW_IMAGES,
    IMBALANCE_RATIO,
    NEAR_DUPLICATE_BITS,
    UPSCALE_WARNING,
    CheckContext,
    Item,
    near_duplicate_pairs,
    register,
)
from transfer.data.doctor.diagnose import check_data, check_split, run_checks
from transfer.data.findings import Finding, finding
from transfer.data.doctor.inspection import _CACHE  # noqa: F401 - the inspection cache, cleared by tests as check._CACHE
from transfer.data.doctor.inspection import DEFAULT_MAX_PIXELS, MIN_SIDE, ImageInfo, inspect_image, inspect_images
from transfer.data.doctor.quarantine import drop_unreadable, quarantine
from transfer.data.doctor.report import DataReport

__all__ = [
    "CHECKS",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_MAX_PIXELS",
    "FEW_IMAGES",
    "IMBALANCE_RATIO",
    "MIN_SIDE",
    "NEAR_DUPLICATE_BITS",
    "UPSCALE_WARNING",
    "CheckContext",
    "DataReport",
    "Finding",
    "ImageInfo",
    "Item",
    "check_data",
    "check_split",
    "drop_unreadable",
    "finding",
    "inspect_image",
    "inspect_images",
    "near_duplicate_pairs",
    "quarantine",
    "register",
    "run_checks",
]
