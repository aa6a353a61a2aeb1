"""What every finding code means: its default severity and action, a title and how to fix it.

The catalogue ``transfer.data.findings`` draws each ``Finding``'s defaults
from; a new check adds its code here (the doctor's table and ``--json`` show
the title and fix).

Example:
    >>> PROBLEMS["truncated"].action
    'skip'
"""

from __future__ import annotations

from dataclasses import dataclass

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
        "info", "ignore", "COCO crowd region (an ignore region)",
        "Nothing to do: a crowd region is not trained on, and COCO's evaluation neither rewards nor penalizes a "
        "detection on it.",
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
