"""Duplicate boxes of one image found by a sweep, never by an ``N x N`` matrix.

Two boxes ``a`` (the left one, ``x0a <= x0b``) and ``b`` with IoU over ``t``
overlap by more than ``t`` of either width, so ``x0b - x0a < (1 - t) * wa``
(and the same along y). Sorting the boxes of a class by ``x0`` (or ``y0``,
whichever gives fewer candidates) leaves a short window of candidates after
each box; only those pairs are scored, a bounded number at a time. Identical
boxes are grouped first, so a pile of copies costs one comparison per copy.
Time is ``O(N log N)`` plus the candidate pairs, which are capped
(``MAX_PAIRS``: past it, thousands of distinct boxes lie on one spot, and
``TooDense`` says so instead of scoring for minutes); memory grows with ``N``
(pairs are judged in chunks and reduced as they go).

The answer is the same as the full matrix gives: for each box, the first
earlier box of its class (lowest index) with IoU over ``t``.

Example:
    >>> later, earlier = first_duplicates([(0, 0, 10, 10), (50, 50, 60, 60), (0, 0, 10, 10.5)], [0, 0, 0], 0.9)
    >>> later.tolist(), earlier.tolist()
    ([2], [0])
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Candidate pairs scored at once: a few arrays of this many float64, tens of MB.
_CHUNK = 1 << 20
# Candidate pairs one image may ask for (a few seconds of scoring); more is a pile of boxes on top of
# each other, reported as such (``TooDense``) instead of scored for minutes.
MAX_PAIRS = 1_000_000


class TooDense(ValueError):
    """The boxes of an image overlap so densely that checking them would take too long."""

    def __init__(self, pairs: int, limit: int):
        self.pairs, self.limit = pairs, limit
        super().__init__(f"{pairs:,} candidate pairs, over the duplicate check's budget of {limit:,}")


def first_duplicates(
    xyxy: Sequence[Sequence[float]], labels: Sequence[int], threshold: float, *, max_pairs: int = MAX_PAIRS,
) -> tuple[np.ndarray, np.ndarray]:
    """``(later, earlier)`` index arrays: box ``later[i]`` repeats the earlier box ``earlier[i]`` of its class
    (IoU over ``threshold``, ``0 < threshold < 1``), ``earlier[i]`` the lowest such index.

    Raises ``TooDense`` (before scoring anything) when the sweep leaves more than ``max_pairs``
    candidate pairs: thousands of distinct boxes piled on one spot.

    Example:
        >>> first_duplicates([(0, 0, 10, 10)] * 3, [1, 1, 2], 0.9)[0].tolist()
        [1]
    """
    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    count = len(boxes)
    none = np.zeros(0, np.int64)
    if count < 2:
        return none, none
    # Group identical boxes of one class: the group's first box stands for all of them.
    keys = np.concatenate([labels[:, None].astype(np.float64), boxes], axis=1)
    by_key = np.lexsort(keys.T[::-1])  # stable: equal rows keep index order, so a run starts at its first box
    starts = np.ones(count, bool)
    starts[1:] = np.any(keys[by_key[1:]] != keys[by_key[:-1]], axis=1)
    group = np.empty(count, np.int64)
    group[by_key] = np.cumsum(starts) - 1
    reps = by_key[starts]
    rep_boxes, rep_labels = boxes[reps], labels[reps]
    window = (1.0 - threshold) * (1 + 1e-6)  # a hair wider than 1 - t: rounding never loses a pair at the edge
    sweeps = [(members, _sweep(rep_boxes[members], window))
              for members in (np.flatnonzero(rep_labels == label) for label in np.unique(rep_labels))]
    pairs = sum(int(counts.sum()) for _, (_, counts) in sweeps)
    if pairs > max_pairs:
        raise TooDense(pairs, max_pairs)
    # The lowest first-index of a group that duplicates each group (count: none).
    nearest = np.full(len(reps), count, np.int64)
    for members, (order, counts) in sweeps:
        for a, b in _pairs(order, counts):
            a, b = members[a], members[b]
            hit = iou_rows(rep_boxes[a], rep_boxes[b]) > threshold
            a, b = a[hit], b[hit]
            np.minimum.at(nearest, a, reps[b])
            np.minimum.at(nearest, b, reps[a])
    index = np.arange(count)
    own = reps[group]
    positive = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # IoU of two empty boxes is 0
    earlier = np.where((own < index) & positive, own, count)
    other = nearest[group]
    earlier = np.minimum(earlier, np.where(other < index, other, count))
    later = np.flatnonzero(earlier < count)
    return later, earlier[later]


def _sweep(boxes: np.ndarray, window: float) -> tuple[np.ndarray, np.ndarray]:
    """``(order, counts)``: after sorting by ``order``, box ``k`` pairs with the ``counts[k]`` boxes after it
    that start less than ``window`` of its extent further, along x or y, whichever gives fewer pairs."""
    best = None
    for axis in (0, 1):
        start, extent = boxes[:, axis], boxes[:, axis + 2] - boxes[:, axis]
        order = np.argsort(start, kind="stable")
        sorted_start = start[order]
        ends = np.searchsorted(sorted_start, sorted_start + np.maximum(extent[order], 0.0) * window, side="right")
        counts = np.maximum(ends - np.arange(len(order)) - 1, 0)
        if best is None or counts.sum() < best[1].sum():
            best = (order, counts)
    return best


def _pairs(order: np.ndarray, counts: np.ndarray):
    """The pairs of a sweep as index arrays ``(a, b)``, about ``_CHUNK`` at a time."""
    cumulative = np.cumsum(counts)
    position = 0
    while position < len(order) and cumulative[-1] > 0:
        # The rows whose pairs fit in one chunk (at least one row, however many pairs it has).
        done = cumulative[position - 1] if position else 0
        stop = max(int(np.searchsorted(cumulative, done + _CHUNK, side="right")), position + 1)
        rows = np.arange(position, stop)
        sizes = counts[rows]
        if sizes.sum():
            row = np.repeat(rows, sizes)
            offset = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
            yield order[row], order[row + 1 + offset]
        position = stop


def iou_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of the rows of ``a`` and ``b`` (``[M, 4]`` each), 0 where the union is empty.

    Example:
        >>> iou_rows(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 5]])).tolist()
        [0.5]
    """
    inter = (np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
             * np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None))
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
