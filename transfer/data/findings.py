"""The plain record every data check produces: one ``Finding`` per problem.

Readers (``folder``, ``csvfile``) and the data doctor (``check``) all speak in
findings, so a problem found while listing a folder, parsing a CSV or
inspecting an image prints the same way, moves to quarantine the same way and
is tested the same way. Future annotation formats (boxes, masks) add codes to
``PROBLEMS`` (``transfer.data.problems``) and checks to ``transfer.data.doctor``;
nothing else changes.

Severity says how bad it is, action says what ``transfer train`` does:

=========  ==============================================================
severity   ``error`` (not usable), ``warning`` (used, but look at it),
           ``info`` (used; the pipeline handles it)
action     ``skip`` (left out of training, named in a warning),
           ``stop`` (training refuses to start until it is fixed),
           ``use`` (used as is), ``convert`` (used; the decoder converts it),
           ``ignore`` (not an image file; never read), ``review`` (used; a
           person should decide)
=========  ==============================================================

Example:
    >>> f = finding("data/cat/a.jpg", "truncated", "JPEG data ends early")
    >>> f.severity, f.action
    ('error', 'skip')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

from transfer.core.errors import TransferError
from transfer.data.problems import PROBLEMS  # the catalogue of codes (also imported from here)


@dataclass(frozen=True)
class Finding:
    """One problem with one file, folder or CSV line.

    Attributes:
        path: the file (or folder, or CSV file) the finding is about.
        code: a key of ``PROBLEMS`` (e.g. ``"truncated"``).
        severity: ``error``, ``warning`` or ``info``.
        action: what training does about it (see the module docstring).
        detail: one sentence about this file (what was found).
        line: the CSV line, when the finding is about one.
        related: another file involved (the original of a duplicate).
    """

    path: str
    code: str
    severity: str
    action: str
    detail: str
    line: int | None = None
    related: str | None = None

    @property
    def title(self) -> str:
        return PROBLEMS[self.code].title if self.code in PROBLEMS else self.code

    @property
    def fix(self) -> str:
        return PROBLEMS[self.code].fix if self.code in PROBLEMS else ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "title": self.title}

    def where(self) -> str:
        """``path`` with the CSV line when there is one, e.g. ``labels.csv:12``."""
        return f"{self.path}:{self.line}" if self.line is not None else self.path


def finding(
    path: str, code: str, detail: str, *, line: int | None = None, related: str | None = None,
    severity: str | None = None, action: str | None = None,
) -> Finding:
    """A ``Finding`` with the code's default severity and action (both may be overridden).

    Example:
        >>> finding("a.png", "wrong_extension", "PNG data in a .jpg file").action
        'use'
    """
    problem = PROBLEMS[code]
    return Finding(
        str(path), code, severity or problem.severity, action or problem.action, detail, line=line, related=related
    )


def first_few(items: Sequence[str], at_most: int) -> str:
    """The first ``at_most`` of ``items`` joined by "; ", then how many were left out: the
    list an error message names (every reader's refusal lists its problems this way).

    Example:
        >>> first_few(["a.xml: no box", "b.xml: no size", "c.xml: no box"], 2)
        'a.xml: no box; b.xml: no size; and 1 more'
    """
    more = len(items) - at_most
    return "; ".join(items[:at_most]) + (f"; and {more} more" if more > 0 else "")


def stops_listed(stops: Sequence[Finding], at_most: int) -> str:
    """``first_few`` of the findings as "where: detail" (their closing period dropped).

    Example:
        >>> stops_listed([finding("labels.csv", "csv_row", "the path is empty.", line=3)], 20)
        'labels.csv:3: the path is empty'
    """
    return first_few([f"{f.where()}: {f.detail.rstrip('.')}" for f in stops], at_most)


def refuse_stops(source: str, stops: Sequence[Finding], *, noun: str, at_most: int, fix: str) -> None:
    """One ``TransferError`` naming the ``stops`` of ``source`` (the first ``at_most``, then a
    count), or nothing when there are none: how a reader refuses to train.

    Example:
        >>> refuse_stops("bccd/", [], noun="annotation", at_most=20, fix="Fix them.")  # nothing to refuse
    """
    if stops:
        raise TransferError(f"{source}: {len(stops)} {noun} problem(s) stop training: "
                            f"{stops_listed(stops, at_most)}.", fix=fix)


@dataclass(frozen=True)
class FoundData:
    """A training/validation split read from annotations, and every problem found reading it
    (box and mask sources: ``load_box_data``, ``load_mask_data``), for training to print.

    Example:
        >>> data = load_box_data("bccd/")
        >>> data.warnings()[0][:39]
        'bccd/Annotations/BloodImage_00343.xml: '
    """

    split: Any  # transfer.data.samples.DataSplit
    findings: tuple[Finding, ...]

    def warnings(self) -> list[str]:
        """One line per finding, naming its file (and CSV line)."""
        return [f"{f.where()}: {f.detail}" for f in self.findings]


@dataclass(frozen=True)
class SourceListing:
    """An annotated source (boxes, masks) read and checked: its usable images, every problem,
    its format and root folder (``list_boxes``, ``list_masks``)."""

    samples: Any  # transfer.data.samples.Samples
    findings: tuple[Finding, ...]
    format: str
    root: str

    @property
    def stops(self) -> list[Finding]:
        """Problems that stop training until they are fixed."""
        return [f for f in self.findings if f.action == "stop"]
