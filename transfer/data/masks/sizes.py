"""An image's or mask's size from its header alone, or the finding code that says why not.

Listing a mask source never decodes an image: ``real_image_size`` (the box
readers' header reader) gives ``(width, height)``; this wraps it into the
``(code, what)`` of the image checks' findings so every reader reports an
unreadable file the same way. A FIFO, socket or device is never opened
(``not_regular_file``: reading one could wait forever), a 0-byte file is
``empty_file``.

Example:
    >>> header_size("membrane/train/image/0.png")
    ((512, 512), None)
"""

from __future__ import annotations

import os

from transfer.core import imagesize
from transfer.data.boxes.box_checks import real_image_size
from transfer.core.regular_files import NotRegularFileError, not_regular, read_regular


def header_size(path: str) -> tuple[tuple[int, int] | None, tuple[str, str] | None]:
    """``((width, height), None)``, or ``(None, (finding code, what went wrong))``."""
    if "\0" in str(path):
        return None, ("not_image", "the file name holds a NUL byte (\\0), which no file name can hold")
    kind = not_regular(path)
    if kind is not None:
        return None, ("not_regular_file", f"{kind}, not a regular file; not read (reading it could wait forever)")
    try:
        if os.stat(path).st_size == 0:
            return None, ("empty_file", "the file is empty (0 bytes)")
        return real_image_size(path), None
    except FileNotFoundError:
        return None, ("missing_file", "file not found")
    except NotRegularFileError as e:  # swapped for a FIFO since the check above
        return None, ("not_regular_file", f"{e.kind}, not a regular file; not read")
    except OSError as e:
        return None, ("not_image", f"the file cannot be read ({e.strerror or e})")
    except imagesize.TruncatedHeader as e:
        return None, ("truncated", str(e))
    except ValueError as e:
        code = "not_image"
        try:
            if imagesize.sniff(read_regular(path, max_bytes=1024)) in imagesize.UNSUPPORTED:
                code = "unsupported_format"
        except (OSError, ValueError):
            pass  # gone since, or a name no file can have: "not an image" stands
        return None, (code, str(e))


def bytes_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of encoded image bytes from their header (ValueError when not an image)."""
    header = imagesize.read_header(data)
    return header.width, header.height
