"""What an image file is and how big it claims to be, from its first bytes alone.

Standard library only (it is imported by ``transfer.serving.reader``, which must run
from an export without the training code). Nothing here decodes pixels: the
point is to refuse a decompression bomb (a small file whose header declares
e.g. 30000x30000 pixels) *before* a decoder allocates gigabytes for it, and to
say in plain words what a file that is not an image actually is.

``sniff`` names the format from magic bytes; ``read_header`` parses the
header of the formats TensorFlow's ``decode_image`` reads (JPEG, PNG, GIF,
BMP, WebP) into an ``ImageHeader``; ``looks_truncated`` tells a file cut short
from one that is corrupt inside.

Example:
    >>> header = read_header(open("cat.png", "rb").read())
    >>> header.format, header.width, header.height, header.bit_depth, header.color
    ('png', 640, 480, 8, 'rgb')
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Below this side an image holds no usable content (a 1x1 tracking pixel): training and predict refuse it.
MIN_SIDE = 8
# The formats whose size read_header can check and tf.io.decode_image decodes.
DECODABLE = ("jpeg", "png", "gif", "bmp", "webp")
# File extensions per format, for wrong-extension messages.
EXTENSIONS = {
    "jpeg": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "png": (".png",),
    "gif": (".gif",),
    "bmp": (".bmp", ".dib"),
    "webp": (".webp",),
}
# Human names of formats tf.io.decode_image does not read (or whose size cannot be checked first).
UNSUPPORTED = {
    "tiff": "TIFF",
    "ico": "ICO (Windows icon)",
    "heic": "HEIC/HEIF (iPhone photo)",
    "avif": "AVIF",
    "jpeg2000": "JPEG 2000",
    "jpegxl": "JPEG XL",
    "psd": "Photoshop PSD",
    "svg": "SVG (vector drawing)",
}
# Things that are not images at all, for "the file looks like ..." messages.
NOT_IMAGES = {
    "pdf": "a PDF document",
    "zip": "a ZIP archive",
    "gzip": "a gzip archive",
    "html": "an HTML page (often an error page saved instead of the image)",
    "xml": "an XML document",
    "text": "text",
    "video": "a video (MP4/QuickTime)",
}


class TruncatedHeader(ValueError):
    """The header ends before it says what the image is: the file was cut short."""


class _NoMarker(Exception):
    pass


@dataclass(frozen=True)
class ImageHeader:
    """What an image header declares.

    ``color`` is one of ``gray``, ``gray+alpha``, ``rgb``, ``rgba``,
    ``palette``, ``cmyk`` or ``None`` when the header does not say;
    ``alpha`` is True when the image can carry transparency (an alpha channel,
    or a PNG ``tRNS`` chunk); ``animated`` when it declares several frames.
    """

    format: str
    width: int
    height: int
    bit_depth: int | None = None
    color: str | None = None
    alpha: bool = False
    animated: bool = False

    @property
    def pixels(self) -> int:
        return self.width * self.height


def sniff(data: bytes) -> str | None:
    """The format of ``data`` from its magic bytes: a key of ``EXTENSIONS``,
    ``UNSUPPORTED`` or ``NOT_IMAGES``, or None when it is unrecognisable.

    Example:
        >>> sniff(b"\\x89PNG\\r\\n\\x1a\\n..."), sniff(b"%PDF-1.7"), sniff(b"\\x00\\x01")
        ('png', 'pdf', None)
    """
    head = bytes(data[:64])
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head.startswith(b"BM") and len(head) >= 18:
        return "bmp"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:4] in (b"\x00\x00\x01\x00", b"\x00\x00\x02\x00") and len(head) >= 6:
        return "ico"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "avif"
        if brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"):
            return "heic"
        return "video"
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return "jpeg2000"
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "jpegxl"
    if head.startswith(b"8BPS"):
        return "psd"
    if head.startswith(b"%PDF"):
        return "pdf"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "html"
    if text.startswith(b"<svg") or (text.startswith(b"<?xml") and b"<svg" in bytes(data[:1024]).lower()):
        return "svg"
    if text.startswith(b"<?xml"):
        return "xml"
    if head and _is_text(bytes(data[:512])):
        return "text"
    return None


def _is_text(sample: bytes) -> bool:
    try:
        decoded = sample.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the sample is still text.
        try:
            decoded = sample[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return bool(decoded) and all(c.isprintable() or c in "\t\r\n\f" for c in decoded)


def describe(kind: str | None) -> str:
    """A short human name for a ``sniff`` result.

    Example:
        >>> describe("heic"), describe(None)
        ('HEIC/HEIF (iPhone photo)', 'unrecognised data')
    """
    if kind is None:
        return "unrecognised data"
    if kind in EXTENSIONS:
        return "WebP" if kind == "webp" else kind.upper()
    return UNSUPPORTED.get(kind) or NOT_IMAGES.get(kind) or kind


def contents(kind: str | None) -> str:
    """What a file of a ``sniff`` kind holds, for "it holds ..." messages.

    Example:
        >>> contents("tiff"), contents("pdf"), contents(None)
        ('TIFF data', 'a PDF document', 'unrecognised data')
    """
    if kind in UNSUPPORTED or kind in EXTENSIONS:
        return f"{describe(kind)} data"
    return describe(kind)


def read_header(data: bytes) -> ImageHeader:
    """Parse the header of a JPEG, PNG, GIF, BMP or WebP image.

    Raises ``ValueError`` with a short reason when ``data`` is not one of those
    formats or its header is broken, ``TruncatedHeader`` (a ``ValueError``)
    when it is cut short. Never decodes pixels, so it is
    safe on any input, however large the image it declares.

    Example:
        >>> read_header(png_bytes).pixels
        307200
    """
    kind = sniff(data)
    parser = _PARSERS.get(kind or "")
    if parser is None:
        raise ValueError(f"not a JPEG, PNG, GIF, BMP or WebP image: it holds {contents(kind)}")
    try:
        header = parser(bytes(data))
    except (struct.error, IndexError, _NoMarker):
        raise TruncatedHeader(f"the {describe(kind)} header is cut short") from None
    if header.width <= 0 or header.height <= 0:
        raise ValueError(f"the {describe(kind)} header declares {header.width}x{header.height} pixels")
    return header


def looks_truncated(data: bytes, kind: str | None = None) -> bool:
    """Whether a JPEG/PNG/GIF/BMP/WebP file seems cut short (its end marker or declared length is missing).

    A cheap structural test used to *explain* a decoding failure; what the
    decoder accepts decides whether the file is usable.

    Example:
        >>> looks_truncated(jpeg_bytes[:1000])
        True
    """
    kind = kind or sniff(data)
    tail = bytes(data[-4096:]).rstrip(b"\x00")
    if kind == "jpeg":
        return b"\xff\xd9" not in tail
    if kind == "png":
        return b"IEND" not in tail
    if kind == "gif":
        return not tail.endswith(b";")
    if kind == "bmp":
        return len(data) >= 6 and struct.unpack_from("<I", data, 2)[0] > len(data)
    if kind == "webp":
        return len(data) >= 8 and struct.unpack_from("<I", data, 4)[0] + 8 > len(data)
    return False


# ---------------------------------------------------------------- per-format parsers

# SOF markers (baseline, extended, progressive, lossless, arithmetic); not DHT (C4), JPG (C8), DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_COLORS = {1: "gray", 3: "rgb", 4: "cmyk"}


def _jpeg(data: bytes) -> ImageHeader:
    pos = 2
    size = len(data)
    while pos < size:
        if data[pos] != 0xFF:
            # Stray bytes between segments: libjpeg skips them with a warning, and so do we.
            pos = data.find(b"\xff", pos)
            if pos < 0:
                raise _NoMarker  # no marker left before the end: cut short
        while pos < size and data[pos] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos]
        pos += 1
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers have no length
            continue
        if marker == 0xD9 or marker == 0xDA:
            raise ValueError("the JPEG has no frame header (SOF) before its image data")
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2:
            raise ValueError("the JPEG header is corrupt (a segment length is below 2)")
        if marker in _SOF:
            precision, height, width, components = struct.unpack_from(">BHHB", data, pos + 2)
            return ImageHeader("jpeg", width, height, precision, _JPEG_COLORS.get(components))
        pos += length
    raise IndexError  # ran off the end: cut short


_PNG_COLORS = {0: "gray", 2: "rgb", 3: "palette", 4: "gray+alpha", 6: "rgba"}


def _png(data: bytes) -> ImageHeader:
    length, kind = struct.unpack_from(">I4s", data, 8)
    if kind != b"IHDR" or length != 13:
        raise ValueError("the PNG does not start with its IHDR header")
    width, height, depth, color_type = struct.unpack_from(">IIBB", data, 16)
    if color_type not in _PNG_COLORS:
        raise ValueError(f"the PNG declares an invalid color type {color_type}")
    alpha, animated = color_type in (4, 6), False
    pos = 8 + 8 + length + 4
    # Chunks before the first IDAT say whether there is transparency (tRNS) or animation (acTL).
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"IDAT":
            break
        alpha = alpha or kind == b"tRNS"
        animated = animated or kind == b"acTL"
        pos += 12 + length
    return ImageHeader("png", width, height, depth, _PNG_COLORS[color_type], alpha, animated)


def _gif(data: bytes) -> ImageHeader:
    width, height = struct.unpack_from("<HH", data, 6)
    # A NETSCAPE looping block is the usual sign of an animation (counting frames would mean parsing them all).
    animated = b"NETSCAPE2.0" in bytes(data[:4096])
    return ImageHeader("gif", width, height, 8, "palette", False, animated)


def _bmp(data: bytes) -> ImageHeader:
    (dib_size,) = struct.unpack_from("<I", data, 14)
    if dib_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height, _, bits = struct.unpack_from("<HHHH", data, 18)
    elif dib_size >= 40:
        width, height, _, bits = struct.unpack_from("<iiHH", data, 18)
    else:
        raise ValueError(f"the BMP has an unknown header size {dib_size}")
    color = "palette" if bits <= 8 else ("rgba" if bits == 32 else "rgb")
    return ImageHeader("bmp", width, abs(height), bits, color, bits == 32)


def _webp(data: bytes) -> ImageHeader:
    chunk = data[12:16]
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise ValueError("the WebP (lossy) header is corrupt")
        width, height = struct.unpack_from("<HH", data, 26)
        return ImageHeader("webp", width & 0x3FFF, height & 0x3FFF, 8, "rgb")
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            raise ValueError("the WebP (lossless) header is corrupt")
        (bits,) = struct.unpack_from("<I", data, 21)
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        return ImageHeader("webp", width, height, 8, "rgba" if bits >> 28 & 1 else "rgb", bool(bits >> 28 & 1))
    if chunk == b"VP8X":
        if len(data) < 30:
            raise IndexError
        flags = data[20]
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        alpha, animated = bool(flags & 0x10), bool(flags & 0x02)
        return ImageHeader("webp", width, height, 8, "rgba" if alpha else "rgb", alpha, animated)
    raise ValueError(f"the WebP has an unknown first chunk {chunk!r}")


_PARSERS = {"jpeg": _jpeg, "png": _png, "gif": _gif, "bmp": _bmp, "webp": _webp}
