"""The plain record every data check produces: one ``Finding`` per problem.

Readers (``folder``, ``csvfile``) and the data doctor (``check``) all speak in
findings, so a problem found while listing a folder, parsing a CSV or
inspecting an image prints the same way, moves to quarantine the same way and
is tested the same way. Future annotation formats (boxes, masks) add codes to
``PROBLEMS`` and checks to ``transfer.data.doctor``; nothing else changes.

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

SEVERITIES = ("error", "warning", "info")
ACTIONS = ("stop", "skip", "review", "convert", "use", "ignore")


@dataclass(frozen=True)
class Problem:
    """What a finding code means: its default severity and action, a title and how to fix it."""

    severity: str
    action: str
    title: str
    fix: str


PROBLEMS: dict[str, Problem] = {
    # --- one image file ---------------------------------------------------------------------
    "missing_file": Problem("error", "skip", "file not found", "Restore the file or remove it from the list."),
    "empty_file": Problem("error", "skip", "empty file (0 bytes)", "Download or copy the image again."),
    "not_regular_file": Problem(
        "error", "skip", "not a regular file (FIFO, socket or device; not read)",
        "Replace it with the image file itself, or remove it from the data.",
    ),
    "not_image": Problem("error", "skip", "not an image", "Replace it with the real image or remove it."),
    "unsupported_format": Problem(
        "error", "skip", "format not supported",
        "Convert it to JPEG or PNG (e.g. `magick in.tif out.png`), or remove it.",
    ),
    "truncated": Problem("error", "skip", "truncated (cut short)", "Download or copy the image again."),
    "undecodable": Problem("error", "skip", "cannot be decoded", "Re-save it with an image editor, or remove it."),
    "too_large": Problem(
        "error", "skip", "too many pixels",
        "Downscale it, or raise the limit (--max-megapixels) if you trust the file.",
    ),
    "too_small": Problem("warning", "use", "very small image", "Use a larger image if there is one."),
    "wrong_extension": Problem(
        "warning", "use", "extension does not match content",
        "Rename it to the right extension (the content decides how it is read).",
    ),
    "grayscale": Problem("info", "convert", "grayscale", "Nothing to do: it is read as 3 equal channels."),
    "cmyk": Problem(
        "warning", "convert", "CMYK colors",
        "Convert it to RGB (e.g. `magick in.jpg -colorspace sRGB out.jpg`) if colors look wrong.",
    ),
    "alpha": Problem(
        "warning", "convert", "transparency dropped",
        "Flatten it onto a background if transparent areas matter: the decoder drops alpha and keeps "
        "whatever color lies under it (often black).",
    ),
    "high_bit_depth": Problem("info", "convert", "16 bits per channel", "Nothing to do: it is read as 8 bits."),
    "animated": Problem("info", "convert", "animation", "Nothing to do: only the first frame is used."),
    "exif_orientation": Problem(
        "warning", "use", "EXIF orientation not applied",
        "Rotate the pixels (e.g. PIL.ImageOps.exif_transpose) if the orientation matters: training and the "
        "export both read pixels as stored and ignore the EXIF tag.",
    ),
    "exif_annotation_frame": Problem(
        "info", "use", "EXIF-rotated image: annotations mapped to the pixels as stored",
        "Nothing to do if its boxes or mask look right on the image as displayed: annotations are read in the "
        "displayed frame (or as stored when their stated size says so) and mapped to the stored pixels the model "
        "sees; `transfer predict` answers in the displayed frame.",
    ),
    "exif_unplaced": Problem(
        "error", "skip", "annotation fits no frame of an EXIF-rotated image (not used)",
        "Export the annotation again from the image as it is now, or save the image with its rotation applied "
        "(PIL.ImageOps.exif_transpose) and annotate that.",
    ),
    # --- folders and classes ----------------------------------------------------------------
    "empty_class": Problem("error", "stop", "class without images", "Add images to the class folder or remove it."),
    "layout": Problem("error", "stop", "dataset layout", "See the detail."),
    "ignored_file": Problem(
        "info", "ignore", "not an image file", "Nothing to do, or convert it to JPEG/PNG if it is an image."
    ),
    "class_imbalance": Problem(
        "warning", "review", "class imbalance", "Add images to the small classes, or accept lower recall on them."
    ),
    "few_images": Problem("warning", "review", "very few images", "Add images to this class."),
    "no_usable_images": Problem("error", "stop", "no usable images", "Fix or replace the class's images."),
    # --- duplicates -------------------------------------------------------------------------
    "duplicate": Problem("info", "use", "exact duplicate", "Remove the extra copy: it counts twice."),
    "duplicate_across_splits": Problem(
        "warning", "review", "same image in train and val",
        "Remove one copy: a validation image seen in training inflates validation accuracy.",
    ),
    "duplicate_conflicting_labels": Problem(
        "warning", "review", "same image in different classes", "Keep it in the right class only."
    ),
    "near_duplicate": Problem(
        "info", "review", "near duplicate", "Check the pair: resized or re-saved copies count twice."
    ),
    # --- CSV label files --------------------------------------------------------------------
    "csv_format": Problem("error", "stop", "CSV file problem", "See the detail."),
    "csv_row": Problem("error", "stop", "bad CSV line", "Fix the line or remove it."),
    "csv_missing_file": Problem(
        "error", "stop", "listed file not found",
        "Paths are read relative to the CSV's folder (or are absolute); fix them or remove those lines.",
    ),
    "csv_empty_label": Problem("error", "stop", "empty label", "Write the class name(s), or remove the line."),
    "csv_outside_root": Problem(
        "error", "stop", "path outside the dataset folder",
        "Keep images inside the CSV's folder, or pass --allow-outside-root (allow_outside_root=True in "
        "Python) if you trust this CSV.",
    ),
    "csv_duplicate_row": Problem("warning", "skip", "duplicate line", "Remove the repeated line."),
    "csv_conflicting_labels": Problem(
        "error", "stop", "same file with different labels", "Keep one line per file with its right label(s)."
    ),
    "csv_unknown_label": Problem(
        "warning", "review", "label not seen in training", "Check the spelling, or add training images for it."
    ),
    # --- box annotations (transfer.data.boxes): the image stays, the box is dropped or fixed ---
    "box_annotation": Problem(
        "error", "stop", "annotation problem", "Fix the annotation where the detail says, or remove it."
    ),
    "box_degenerate": Problem(
        "warning", "review", "box without area (dropped)",
        "Fix the box's corners (xmax > xmin, ymax > ymin) or delete the box.",
    ),
    "box_outside": Problem(
        "warning", "review", "box mostly outside the image (dropped)",
        "Fix the box's coordinates: they are pixels of the image as stored.",
    ),
    "box_clipped": Problem(
        "warning", "use", "box reaches outside the image (clipped)",
        "Nothing to do if the clipped box still frames the object; otherwise fix its coordinates.",
    ),
    "box_unknown_class": Problem(
        "warning", "review", "box class not in training (dropped)",
        "Check the class name's spelling, or add training boxes of that class.",
    ),
    "box_size_mismatch": Problem(
        "warning", "use", "annotation's image size differs from the image",
        "Look at the boxes drawn on the image; re-export the annotation from the image as it is now.",
    ),
    "box_outside_root": Problem(
        "error", "stop", "image path outside the dataset folder",
        "Keep images inside the annotation file's folder, or pass --allow-outside-root (allow_outside_root=True "
        "in Python) if you trust this file.",
    ),
    "box_unannotated": Problem(
        "info", "ignore", "image without annotation (not used)",
        "Nothing to do, or annotate it (an annotation without boxes makes it a background image).",
    ),
    "box_crowd": Problem(
        "info", "ignore", "COCO crowd region (not used)", "Nothing to do: crowd regions are not single objects.",
    ),
    # --- detection data (transfer.data.boxes.detection_checks): judged over the whole split ---
    "box_background": Problem(
        "info", "use", "image without boxes (background)",
        "Nothing to do if no object of the classes shows: it teaches the detector what to leave alone. "
        "Otherwise annotate its objects.",
    ),
    "box_tiny": Problem(
        "warning", "review", "tiny box",
        "Check the box: a slip of the mouse makes tiny boxes. If the object is real, train at a larger image "
        "size so the detector can see it.",
    ),
    "box_duplicate": Problem(
        "warning", "review", "duplicate box",
        "Delete one of the two boxes: the object counts twice, and NMS always removes one of two such "
        "predictions.",
    ),
    "box_val_only_class": Problem(
        "warning", "review", "class only in validation",
        "Add training images with boxes of this class, or remove its boxes from validation: the model cannot "
        "learn it, so its AP is 0.",
    ),
    # --- segmentation masks (transfer.data.masks): a pair without a usable mask is left out ---
    "mask_missing": Problem(
        "error", "skip", "image without mask (not used)",
        "Add its mask (same file name, .png, in the masks folder) or remove the image.",
    ),
    "mask_orphan": Problem(
        "info", "ignore", "mask without image (not used)", "Nothing to do, or restore its image (same file name)."
    ),
    "mask_unreadable": Problem(
        "error", "skip", "mask cannot be read (not used)", "Export the mask again as a PNG of class values."
    ),
    "mask_size_mismatch": Problem(
        "error", "skip", "mask size differs from its image (not used)",
        "Export the mask again at the image's size: masks are pixels of the image as stored.",
    ),
    "mask_unknown_values": Problem(
        "error", "stop", "mask values that are not classes",
        "Name every class in value order (--class-names or classes.txt), or pass --ignore-index VALUE for "
        "the value that marks unlabelled pixels.",
    ),
    "mask_all_ignored": Problem(
        "warning", "skip", "mask entirely ignored (not used)",
        "Label its pixels (or check --ignore-index), or remove the image: a mask of only the ignored value has "
        "nothing to learn or score.",
    ),
    "box_nothing_to_score": Problem(
        "error", "stop", "no box to learn or score",
        "Annotate the objects (or check the annotation files and class names): with no box on a side, training "
        "has nothing to learn, or mAP nothing to measure.",
    ),
    "mask_nothing_to_score": Problem(
        "error", "stop", "no labelled pixel to learn or score",
        "Label the masks (or check --ignore-index and the class values): training would report loss 0 and IoU 0.",
    ),
    "mask_jpeg": Problem(
        "warning", "use", "JPEG mask (thresholded)",
        "Export masks as PNG if you can: JPEG blurs class edges, so each pixel is snapped to the nearest class "
        "value.",
    ),
    "mask_classes": Problem(
        "info", "use", "class names guessed from mask values",
        "Name the classes in value order (--class-names a,b,c or a classes.txt beside the masks).",
    ),
    "mask_annotation": Problem(
        "error", "stop", "annotation problem", "Fix the annotation where the detail says, or remove it."
    ),
    "mask_outside_root": Problem(
        "error", "stop", "image path outside the dataset folder",
        "Keep images inside the annotation file's folder, or pass --allow-outside-root (allow_outside_root=True "
        "in Python) if you trust this file.",
    ),
    "mask_region_dropped": Problem(
        "warning", "review", "region not drawn (dropped)",
        "Fix the region where the detail says (at least 3 points inside the image, a known class), or delete it.",
    ),
    "mask_region_invalid": Problem(
        "error", "skip", "region unreadable (its image is left out)",
        "Fix the region's numbers (at least 3 x,y pairs of plain numbers, or a COCO RLE of the image's size) or "
        "delete the region; until then its image is not used, since its mask would miss that object.",
    ),
    "mask_region_clipped": Problem(
        "warning", "use", "region reaches outside the image (clipped)",
        "Nothing to do if the clipped region still covers the object; otherwise fix its points.",
    ),
    "mask_unannotated": Problem(
        "info", "ignore", "image without annotation (not used)",
        "Nothing to do, or annotate it (an entry without regions makes it an all-background image).",
    ),
    "mask_pixel_share": Problem(
        "info", "use", "pixel share per class", "Nothing to do: rare classes may need more images or a weighted loss."
    ),
    "mask_rare_class": Problem(
        "warning", "review", "class (almost) absent from the masks",
        "Add images that show it, or check the class names and value order.",
    ),
}


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
