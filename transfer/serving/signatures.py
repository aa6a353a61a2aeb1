"""The signatures an export serves, as ``assets/transfer.json`` records them.

``serving_default`` takes encoded image bytes, ``serving_images`` uint8 pixels
of any size; what they answer is the task's (``Task.serving_outputs``).

Example:
    >>> sorted(signatures_with({"top_class": "string [N]"}))
    ['serving_default', 'serving_images']
"""

from __future__ import annotations

from typing import Mapping

BYTES_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "serving_images"
SIGNATURE_INPUTS = {
    BYTES_SIGNATURE: {"image_bytes": "string [N] (encoded JPEG/PNG/GIF/BMP)"},
    IMAGES_SIGNATURE: {"images": "uint8 [N, H, W, 3] (any size)"},
}


def signatures_with(outputs: Mapping[str, str]) -> dict[str, dict]:
    """Both signatures' inputs, each answering ``outputs`` (a task's ``serving_outputs``)."""
    return {key: {"inputs": dict(inputs), "outputs": dict(outputs)} for key, inputs in SIGNATURE_INPUTS.items()}
