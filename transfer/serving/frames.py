"""Answers in the frame a viewer shows: boxes and masks of the stored pixels turned by the EXIF tag.

The model sees an encoded image's pixels as stored; ``predict_files`` and
``predict_images`` answer in the frame a photo viewer shows (the EXIF
orientation applied), as annotations are drawn. NumPy and the standard
library at import (the orientation tag is read by ``transfer.core.orientation``).

Example:
    >>> displayed_boxes(open("phone.jpg", "rb").read(), [[20, 250, 60, 290]])   # 400x300 stored, orientation 6
    [[10.0, 20.0, 50.0, 60.0]]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

import transfer.core.imagesize as imagesize


def displayed_boxes(data: bytes, boxes: Sequence[Sequence[float]]) -> list[list[float]]:
    """``boxes`` (``[xmin, ymin, xmax, ymax]`` in the stored pixels of the encoded image ``data``, which
    the model sees) in the frame a viewer shows (EXIF orientation applied), rounded to 2 places.

    ``predict_files`` answers in that frame (``predict_bytes``, like a raw TF Serving client, gets
    the stored one); without an orientation tag the two are one.

    Example:
        >>> displayed_boxes(open("phone.jpg", "rb").read(), [[20, 250, 60, 290]])   # 400x300 stored, orientation 6
        [[10.0, 20.0, 50.0, 60.0]]
    """
    from transfer.core.orientation import boxes_to_displayed, exif_orientation

    orientation = exif_orientation(data)
    if orientation != 1:
        header = imagesize.read_header(data)
        boxes = boxes_to_displayed(boxes, orientation, (header.width, header.height))
    return [[round(float(v), 2) for v in box] for box in boxes]


def displayed_mask(data: bytes, mask: np.ndarray) -> np.ndarray:
    """A ``[height, width, ...]`` answer in the stored frame of the encoded image ``data`` turned into
    the frame a viewer shows (EXIF orientation applied; the same array without one).

    Example:
        >>> displayed_mask(open("phone.jpg", "rb").read(), np.zeros((300, 400), np.uint8)).shape
        (400, 300)
    """
    from transfer.core.orientation import exif_orientation, mask_to_displayed

    orientation = exif_orientation(data)
    return mask_to_displayed(mask, orientation) if orientation != 1 else mask
