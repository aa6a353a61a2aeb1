"""Drawing an answer over its image: the displayed frame, the class colours, atomic saving.

Every task's reader draws with these, so a drawing is in the frame a photo
viewer shows (EXIF orientation applied), the colours mean the same class in
every task, and a drawing is written atomically in the format its suffix names.

Example:
    >>> image = open_displayed("phone.jpg")
    >>> save_drawing(image, "drawn/phone.png")
    PosixPath('drawn/phone.png')
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

# Distinct, readable colors, one per class (cycled past ten classes).
CLASS_COLORS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40))


def open_displayed(image: str | os.PathLike | bytes):
    """``image`` (a path, or bytes already read: ``transfer predict`` draws what it answered, even
    if the file changed or vanished since) as a PIL RGB image, turned as its EXIF orientation
    says: the frame a photo viewer shows, which predictions' coordinates refer to.

    Example:
        >>> open_displayed("phone.jpg").size   # stored 4032 x 3024, orientation 6 (turned 90 degrees)
        (3024, 4032)
    """
    from PIL import Image, ImageOps

    from transfer.core.regular_files import read_regular

    data = bytes(image) if isinstance(image, (bytes, bytearray, memoryview)) else read_regular(image)
    with Image.open(io.BytesIO(data)) as opened:
        return ImageOps.exif_transpose(opened).convert("RGB")


def drawn_name(image, result: dict[str, Any]) -> str:
    """How a message names the image being drawn: its path, or the result's ``file`` for bytes."""
    return str(result.get("file", "the image")) if isinstance(image, (bytes, bytearray, memoryview)) else str(image)


def save_drawing(image, out_path: str | os.PathLike) -> Path:
    """Write a PIL image to ``out_path`` atomically, in the format its suffix names (see
    ``encode_drawing``); every task's ``draw_*`` function.

    Example:
        >>> save_drawing(Image.new("RGB", (8, 8)), "drawn/a.png")
        PosixPath('drawn/a.png')
    """
    from transfer.core.atomic import atomic_write_bytes

    out_path = Path(out_path)
    data = encode_drawing(image, out_path.suffix)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(out_path, data)


def encode_drawing(image, suffix: str = ".png") -> bytes:
    """A PIL image encoded in the format ``suffix`` names: JPEG for ``.jpg``/``.jpeg``, else what
    PIL registers for the suffix, else PNG.

    Example:
        >>> encode_drawing(Image.new("RGB", (8, 8)))[:4]
        b'\\x89PNG'
    """
    from PIL import Image

    suffix = suffix.lower()
    fmt = "JPEG" if suffix in (".jpg", ".jpeg") else Image.registered_extensions().get(suffix, "PNG")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()
