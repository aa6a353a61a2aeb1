"""Every box judged against the real image: what is kept, clipped, scaled or dropped, and why.

The readers say what an annotation file claims; this module turns those
claims into ``Samples`` of ``Boxes`` and one ``Finding`` per problem. The
finding's ``path`` is the annotation file (with the CSV ``line``), its
``related`` the image, and its detail names the image, so each problem can be
found in both. Image-level problems (image missing or unreadable) have the
image as ``path`` and the ``skip`` action, as the image checks do.

The rules, in the order they apply:

0. **EXIF orientation.** A photo whose EXIF tag turns it for display is
   annotated on the displayed image, but the model sees the pixels as stored
   (``transfer.core.orientation``): its boxes are judged in the displayed frame
   and then mapped, exactly, into the stored one. A stated size equal to the
   stored one means a tool that ignored the tag (used as written, noted as
   ``exif_annotation_frame``); one that fits neither frame leaves the image
   out (``exif_unplaced``).
1. **Real size.** Width and height come from the image header (read without
   decoding, ``transfer.core.imagesize``), never from the annotation. When the
   annotation states another size (``box_size_mismatch``):

   - it states 0 (or less): the real size is used and the boxes are kept as
     written (a note: many VOC exporters write 0);
   - it states the same shape at another scale (aspect ratios within 1%) and
     every box fits the stated size: the image was resized after annotating,
     so the boxes are scaled to the real image;
   - it states the width and height swapped (often an EXIF rotation the
     annotation tool applied; training reads pixels as stored), or any other
     size: the boxes are kept as written and the next checks judge them
     against the real image.

2. **Known class.** With ``class_names`` (a validation source judged by the
   training classes), a box of another class is dropped (``box_unknown_class``).
3. **Positive area.** ``xmax <= xmin`` or ``ymax <= ymin``: dropped (``box_degenerate``).
4. **Inside the image.** A box reaching past the image edges is clipped to
   them when at least ``MIN_INSIDE`` (half) of its area lies inside
   (``box_clipped``, a warning), and dropped when less does (``box_outside``).

An image keeps its place even when all its boxes are dropped (it becomes a
background image), so dropping a bad box never changes which images exist.

Example:
    >>> samples, findings = check_annotations(read_voc_folder("raccoon/"))
    >>> samples.class_names, len(samples)
    (('raccoon',), 200)
"""

from __future__ import annotations

import os
from typing import Sequence

from transfer.core import imagesize
from transfer.data.boxes.records import AnnotatedImage, Annotations, RawBox
from transfer.data.findings import Finding, finding
from transfer.data.samples import Boxes, Samples
from transfer.core.regular_files import NotRegularFileError, read_regular
from transfer.core.orientation import DESCRIPTIONS, annotation_frame, boxes_to_stored, displayed_size, exif_orientation

# A box reaching outside the image is clipped when at least this share of its area lies inside, dropped below it.
MIN_INSIDE = 0.5
# Stated and real aspect ratios this close (relative) mean "the same image at another scale".
ASPECT_TOLERANCE = 0.01
# Most headers (JPEG SOF, PNG IHDR) sit in the first bytes; EXIF/ICC blocks can push a JPEG's further.
_HEADER_BYTES = 1 << 16


class EmptyImageFile(ValueError):
    """The image file holds 0 bytes (an interrupted copy or download)."""


def real_image_size(path: str) -> tuple[int, int]:
    """``(width, height)`` of the image file at ``path`` from its header alone (no decoding).

    Raises OSError when the file cannot be read (``NotRegularFileError`` for a
    FIFO, socket or device, which is never opened for reading) and ValueError
    (``TruncatedHeader`` when cut short, ``EmptyImageFile`` for 0 bytes) when it
    is not a JPEG/PNG/GIF/BMP/WebP image.

    Example:
        >>> real_image_size("raccoon/images/raccoon-1.jpg")
        (650, 417)
    """
    if "\0" in path:
        raise ValueError("the file name holds a NUL byte (\\0), which no file name can hold")
    data = read_regular(path, max_bytes=_HEADER_BYTES)  # a FIFO or device raises NotRegularFileError, never blocks
    if not data:
        raise EmptyImageFile("the file is empty (0 bytes)")
    try:
        header = imagesize.read_header(data[:_HEADER_BYTES])
    except imagesize.TruncatedHeader:
        if len(data) <= _HEADER_BYTES:
            raise
        header = imagesize.read_header(read_regular(path))  # a header behind large metadata
    return header.width, header.height


def check_annotations(
    annotations: Annotations, class_names: Sequence[str] | None = None
) -> tuple[Samples, list[Finding]]:
    """Judge every box of ``annotations``; the usable images (sorted by path) and every problem.

    ``class_names`` fixes the classes (boxes of others are dropped and
    reported); without it the classes are the sorted names of the kept boxes.

    Example:
        >>> samples, findings = check_annotations(read_voc_folder("bccd/"))
        >>> sorted({f.code for f in findings})
        ['box_degenerate']
    """
    findings: list[Finding] = list(annotations.findings)
    known = None if class_names is None else set(class_names)
    judged: dict[str, tuple[list[tuple[tuple[float, float, float, float], str, bool]], int, int]] = {}
    first_annotation: dict[str, str] = {}
    for record in annotations.images:
        key = os.path.normcase(os.path.abspath(record.image))
        if key in first_annotation:
            findings.append(_finding(
                record, annotations.root, "box_annotation",
                f"is also annotated by '{first_annotation[key]}'; only that annotation is used",
                action="review", severity="warning",
            ))
            continue
        size = _real_size(record, annotations.root, findings)
        if size is None:
            continue
        first_annotation[key] = record.annotation
        # The boxes are judged in the frame they were drawn in (an EXIF-rotated photo's displayed one)
        # and then mapped to the pixels as stored, which is what the model sees.
        placed = _annotation_frame(record, size, annotations.root, findings)
        if placed is None:
            continue
        orientation, (width, height) = placed
        scale = _size_rule(record, width, height, annotations.root, findings)
        kept = []
        for box in record.boxes:
            xyxy = _judge_box(record, box, scale, width, height, known, annotations.root, findings)
            if xyxy is not None:
                if orientation != 1:
                    xyxy = boxes_to_stored([xyxy], orientation, (width, height))[0]
                kept.append((xyxy, box.label, box.ignore))
        judged[record.image] = (kept, *size)

    names = tuple(sorted(class_names if class_names is not None else
                         {label for kept, _, _ in judged.values() for _, label, _ in kept}))
    index = {name: i for i, name in enumerate(names)}
    sources = tuple(sorted(judged))
    targets = []
    for source in sources:
        kept, width, height = judged[source]
        targets.append(Boxes(
            xyxy=tuple(xyxy for xyxy, _, _ in kept), labels=tuple(index[label] for _, label, _ in kept),
            width=width, height=height, ignore=tuple(ignore for _, _, ignore in kept),
        ))
    return Samples(sources, tuple(targets), names), findings


def _shown(path: str, root: str) -> str:
    """``path`` relative to the dataset root when it lies inside, else as given (for details)."""
    if root:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
        if not rel.startswith(".."):
            return rel
    return path


def _finding(
    record: AnnotatedImage, root: str, code: str, detail: str, *, box: RawBox | None = None, **overrides
) -> Finding:
    """A box-level finding: the annotation file (and CSV line) as path, the image as related."""
    line = box.line if box is not None and box.line is not None else record.line
    return finding(record.annotation, code, f"{_shown(record.image, root)}: {detail}.", line=line,
                   related=record.image, **overrides)


def _real_size(record: AnnotatedImage, root: str, findings: list[Finding]) -> tuple[int, int] | None:
    """The image's real size, or None (with an image-level ``skip`` finding) when it cannot be read."""
    boxes = f"its {len(record.boxes)} box(es) in '{record.annotation}' are not used"
    try:
        return real_image_size(record.image)
    except FileNotFoundError:
        code, what = "missing_file", "image file not found"
    except NotRegularFileError as e:
        code, what = "not_regular_file", f"{e.kind}, not a regular file; not read"
    except OSError as e:
        code, what = "not_image", f"the file cannot be read ({e.strerror or e})"
    except imagesize.TruncatedHeader as e:
        code, what = "truncated", str(e)
    except EmptyImageFile as e:
        code, what = "empty_file", str(e)
    except ValueError as e:
        code, what = "not_image", str(e)
        try:
            if imagesize.sniff(read_regular(record.image, max_bytes=1024)) in imagesize.UNSUPPORTED:
                code = "unsupported_format"
        except (OSError, ValueError):
            pass  # the NUL-byte name, or a file gone since: "not an image" stands
    findings.append(finding(record.image, code, f"{what}; {boxes}", related=record.annotation))
    return None


def _annotation_frame(
    record: AnnotatedImage, size: tuple[int, int], root: str, findings: list[Finding]
) -> tuple[int, tuple[int, int]] | None:
    """``(orientation to map from, (width, height) of the frame the boxes are in)``, or None (refused, with
    a finding) for an EXIF-rotated image whose stated size fits neither its displayed nor its stored frame.

    Boxes are taken to be drawn on the image as displayed (``transfer.core.orientation``); orientation 1 is
    returned when they need no mapping (no EXIF rotation, or the stated size says "as stored").
    """
    orientation = exif_orientation(record.image)
    if orientation == 1:
        return 1, size
    turned = f"EXIF orientation {orientation} ({DESCRIPTIONS[orientation]} for display)"
    shown = displayed_size(size, orientation)
    frame = annotation_frame(record.claimed_size, size, orientation, ASPECT_TOLERANCE)
    if frame == "displayed":
        return orientation, shown
    if frame == "stored":
        findings.append(_finding(
            record, root, "exif_annotation_frame",
            f"{turned}, but the annotation states the size as stored ({size[0]}x{size[1]}, not the displayed "
            f"{shown[0]}x{shown[1]}): its boxes are taken as pixels as stored and used as written",
        ))
        return 1, size
    stated = f"{record.claimed_size[0]:g}x{record.claimed_size[1]:g}"
    findings.append(finding(
        record.image, "exif_unplaced",
        f"{turned}: '{record.annotation}' states {stated}, neither the displayed {shown[0]}x{shown[1]} nor the "
        f"stored {size[0]}x{size[1]} image, so its {len(record.boxes)} box(es) cannot be placed; the image is "
        "not used", related=record.annotation,
    ))
    return None


def _size_rule(
    record: AnnotatedImage, width: int, height: int, root: str, findings: list[Finding]
) -> tuple[float, float]:
    """The ``(x, y)`` factors that bring the record's boxes to the real image (see the module docstring)."""
    if record.claimed_size is None:
        return 1.0, 1.0
    stated_w, stated_h = record.claimed_size
    if abs(stated_w - width) < 0.5 and abs(stated_h - height) < 0.5:
        return 1.0, 1.0
    says = f"annotation says {stated_w:g}x{stated_h:g}, image is {width}x{height}"
    if stated_w <= 0 or stated_h <= 0:
        findings.append(_finding(record, root, "box_size_mismatch",
                                 f"{says}: the real size is used and the boxes are kept as written",
                                 severity="info"))
        return 1.0, 1.0
    same_shape = abs((stated_w / stated_h) / (width / height) - 1.0) <= ASPECT_TOLERANCE
    fits = all(b.xyxy[2] <= stated_w + 0.5 and b.xyxy[3] <= stated_h + 0.5 for b in record.boxes)
    if same_shape and fits:
        factor_x, factor_y = width / stated_w, height / stated_h
        findings.append(_finding(
            record, root, "box_size_mismatch",
            f"{says}: the same shape at another scale, so the image was resized after annotating; "
            f"its boxes are scaled by {factor_x:.4g}",
        ))
        return factor_x, factor_y
    if abs(stated_w - height) < 0.5 and abs(stated_h - width) < 0.5:
        why = (" (width and height swapped: often an EXIF rotation that the annotation tool applied and "
               "training does not)")
    else:
        why = ""
    findings.append(_finding(
        record, root, "box_size_mismatch",
        f"{says}{why}; the boxes are kept as written and checked against the real image",
    ))
    return 1.0, 1.0


def _describe(box: RawBox, xyxy: Sequence[float]) -> str:
    where = f"{box.where} " if box.where else ""
    return f"{where}box '{box.label}' ({', '.join(f'{v:g}' for v in xyxy)})"


def _judge_box(
    record: AnnotatedImage, box: RawBox, scale: tuple[float, float], width: int, height: int,
    known: set[str] | None, root: str, findings: list[Finding],
) -> tuple[float, float, float, float] | None:
    """The box in real pixels (clipped if needed), or None when it is dropped (with its finding)."""
    if known is not None and box.label not in known:
        findings.append(_finding(record, root, "box_unknown_class",
                                 f"{_describe(box, box.xyxy)} has a class training does not know; dropped",
                                 box=box))
        return None
    x0, y0, x1, y1 = box.xyxy[0] * scale[0], box.xyxy[1] * scale[1], box.xyxy[2] * scale[0], box.xyxy[3] * scale[1]
    if x1 <= x0 or y1 <= y0:
        area = "zero" if x1 == x0 or y1 == y0 else "negative"
        findings.append(_finding(record, root, "box_degenerate",
                                 f"{_describe(box, box.xyxy)} has {area} area (needs xmax > xmin and "
                                 "ymax > ymin); dropped", box=box))
        return None
    cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    if (cx0, cy0, cx1, cy1) == (x0, y0, x1, y1):
        return x0, y0, x1, y1
    inside = max(cx1 - cx0, 0.0) * max(cy1 - cy0, 0.0) / ((x1 - x0) * (y1 - y0))
    if inside < MIN_INSIDE:
        findings.append(_finding(
            record, root, "box_outside",
            f"{_describe(box, (x0, y0, x1, y1))} lies {100 * inside:.0f}% inside the {width}x{height} image "
            f"(under {100 * MIN_INSIDE:.0f}%); dropped", box=box,
        ))
        return None
    findings.append(_finding(
        record, root, "box_clipped",
        f"{_describe(box, (x0, y0, x1, y1))} reaches outside the {width}x{height} image; clipped to "
        f"({cx0:g}, {cy0:g}, {cx1:g}, {cy1:g})", box=box,
    ))
    return cx0, cy0, cx1, cy1
