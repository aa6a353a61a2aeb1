"""An image's or mask's size from its header alone, or the finding code that says why not.

Listing a mask source never decodes an image: ``real_image_size`` (the box
readers' header reader) gives ``(width, height)``; this wraps it into the
``(code, what)`` of the image checks' findings so every reader reports an
unreadable file the same way.

Example:
    >>> header_size("membrane/train/image/0.png")
    ((512, 512), None)
"""

from __future__ import annotations

from transfer import imagesize
from transfer.data.boxes.box_checks import real_image_size


def header_size(path: str) -> tuple[tuple[int, int] | None, tuple[str, str] | None]:
    """``((width, height), None)``, or ``(None, (finding code, what went wrong))``."""
    try:
        return real_image_size(path), None
    except FileNotFoundError:
        return None, ("missing_file", "file not found")
    except OSError as e:
        return None, ("not_image", f"the file cannot be read ({e.strerror or e})")
    except imagesize.TruncatedHeader as e:
        return None, ("truncated", str(e))
    except ValueError as e:
        code = "not_image"
        try:
            with open(path, "rb") as f:
                if imagesize.sniff(f.read(1024)) in imagesize.UNSUPPORTED:
                    code = "unsupported_format"
        except OSError:
            pass
        return None, (code, str(e))


def bytes_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of encoded image bytes from their header (ValueError when not an image)."""
    header = imagesize.read_header(data)
    return header.width, header.height
