"""Tasks: each package (``classify``, ``localize``, ``detect``, ``segment``) owns one task's
data, head, objective, evaluation and serving outputs.

``get_task(name)`` returns the ``transfer.tasks.base.Task`` registered under a
name (the run's ``config["task"]``, the CLI's ``--task``). Task modules are
imported only when asked for, so this package imports nothing heavy.

Example:
    >>> get_task("localize").name
    'localize'
    >>> sorted(TASKS)
    ['classify', 'detect', 'localize', 'segment']
    >>> task_of_config({"class_names": ["cat", "dog"]})  # a run from before tasks existed
    'classify'
"""

from __future__ import annotations

import importlib

from typing import Any, Mapping

from transfer.core.errors import TransferError

# name -> "module:class"; imported on first use.
TASKS = {
    "classify": "transfer.tasks.classify.task:ClassifyTask",
    "localize": "transfer.tasks.localize.task:LocalizeTask",
    "detect": "transfer.tasks.detect.task:DetectTask",
    "segment": "transfer.tasks.segment.task:SegmentTask",
}
# Runs and exports from before tasks existed are classifiers: what a config without "task" means.
DEFAULT_TASK = "classify"
# Names older runs and exports recorded.
_ALIASES = {"classification": "classify", "localization": "localize", "detection": "detect",
            "segmentation": "segment"}


def get_task(name: str):
    """The task registered as ``name`` (an instance of a ``transfer.tasks.base.Task`` subclass)."""
    key = _ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    if key not in TASKS:
        raise TransferError(f"Unknown task {name!r}.", fix=f"Use one of: {', '.join(sorted(TASKS))}.")
    module, cls = TASKS[key].split(":")
    return getattr(importlib.import_module(module), cls)()


def task_of_config(config: Mapping[str, Any]) -> str:
    """The task name a run's config (``run.json``, an export's ``transfer.json``) records;
    ``DEFAULT_TASK`` when it records none.

    Example:
        >>> task_of_config({"task": "segment"}), task_of_config({})
        ('segment', 'classify')
    """
    return config.get("task", DEFAULT_TASK)
