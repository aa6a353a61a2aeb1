"""A box source read for evaluation against a trained run: its classes put in the run's order.

A source sorts its own class names (``read_boxes``), so a test set holding a
subset of the run's classes numbers them differently; evaluation needs the
run's numbering. A class the run never learnt is refused: its boxes could only
count as misses.

Example:
    >>> samples = read_boxes_in_run_classes("bccd/ImageSets/Main/test.txt", ("Platelets", "RBC", "WBC"))
    >>> samples.class_names
    ('Platelets', 'RBC', 'WBC')
"""

from __future__ import annotations

from typing import Sequence

from transfer.core.errors import TransferError
from transfer.data.boxes.reading import read_boxes
from transfer.data.samples import Boxes, Samples


def read_boxes_in_run_classes(data: str, run_names: Sequence[str]) -> Samples:
    """Every image of the box source ``data`` (background images included), its labels
    renumbered to ``run_names``; a ``TransferError`` naming any class not among them.

    Example:
        >>> read_boxes_in_run_classes("raccoon/test_labels.csv", ("cat", "raccoon")).targets[0].labels
        (1,)
    """
    samples, _ = read_boxes(data)
    run_names = tuple(run_names)
    unknown = [name for name in samples.class_names if name not in run_names]
    if unknown:
        raise TransferError(
            f"{data}: class(es) {unknown} are not among the run's classes {list(run_names)}.",
            fix="Evaluate on data annotated with the run's classes, or remove those boxes.",
        )
    index = {i: run_names.index(name) for i, name in enumerate(samples.class_names)}
    targets = tuple(Boxes(t.xyxy, tuple(index[label] for label in t.labels), t.width, t.height, t.ignore)
                    for t in samples.targets)
    return Samples(samples.sources, targets, run_names, encoded=samples.encoded)
