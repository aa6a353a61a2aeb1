"""Image inspection for the data doctor: read each image once and say what it is and whether it decodes.

A stdlib header parse (``transfer.core.imagesize``) refuses decompression bombs
before anything is decoded, PIL reports mode, EXIF orientation and animation,
and TensorFlow's own ``decode_image`` (the op the training pipeline and the
export use) decides whether the file is usable. EXIF orientation is
*reported*, never applied: the pipeline and the exported model both read
pixels as stored, so they agree. A 64-bit difference hash of the decoded
pixels feeds the near-duplicate check.

Example:
    >>> info = inspect_image("flowers/rose/1.jpg")
    >>> info.width, info.height, info.error
    (500, 333, None)
    >>> [i.source for i in inspect_images(["a.jpg", "cut.jpg"]) if i.error]
    ['cut.jpg']
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

from transfer.core import imagesize
from transfer.core.regular_files import NotRegularFileError, kind_of, read_regular

# A 100-megapixel RGB image decodes to 300 MB (and resizing works in float32,
# 1.2 GB): more than that is refused for training. Predict is stricter (40 MP).
DEFAULT_MAX_PIXELS = 100_000_000
MIN_SIDE = imagesize.MIN_SIDE  # smaller images hold no usable content (a 1x1 tracking pixel)
_MAX_CACHE = 500_000


@dataclass(frozen=True)
class ImageInfo:
    """What inspecting one image found.

    ``error`` is ``(code, detail)`` when the file cannot be used at all
    (missing, empty, a FIFO/socket/device, not an image, too large, not decodable); the other fields
    are filled as far as inspection got. ``width``/``height`` come from the
    header (and are what the decoder produced when it ran).
    """

    source: str
    num_bytes: int = 0
    digest: str | None = None
    kind: str | None = None
    width: int | None = None
    height: int | None = None
    bit_depth: int | None = None
    color: str | None = None
    alpha: bool = False
    mode: str | None = None
    animated: bool = False
    exif_orientation: int | None = None
    dhash: int | None = None
    error: tuple[str, str] | None = None

    @property
    def decodable(self) -> bool:
        return self.error is None


# Inspections keyed by (path, size, mtime, max_pixels) for files and by a hash for
# in-memory bytes (TFDS): the quick check before `transfer train` and train()'s
# drop_unreadable share the work.
_CACHE: dict[tuple, ImageInfo] = {}


def _tf_message(exc: Exception) -> str:
    """A TensorFlow op error without the graph plumbing around it."""
    text = getattr(exc, "message", None) or str(exc)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:\w+\]", "", text)
    return (text.strip().splitlines() or ["unknown error"])[0]


def inspect_image(source: str, data: bytes | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Inspect one image file (or its bytes): header, mode, EXIF, and a real decode.

    Never raises for bad input: problems land in ``ImageInfo.error``. Images
    whose header declares more than ``max_pixels`` are not decoded.

    Example:
        >>> inspect_image("data/cat/1.jpg").error
        >>> inspect_image("data/cat/cut.jpg").error
        ('truncated', 'JPEG data ends early ...')
    """
    if data is not None:
        data = bytes(data)
        key = ("bytes", source, len(data), hashlib.blake2b(data, digest_size=16).digest(), max_pixels)
        cached = _CACHE.get(key)
        if cached is None:
            cached = _CACHE[key] = _inspect_bytes(source, data, max_pixels)
        return cached
    try:
        stat = os.stat(source)
    except FileNotFoundError:
        return ImageInfo(source, error=("missing_file", "the file does not exist"))
    except OSError as e:
        return ImageInfo(source, error=("undecodable", f"cannot read the file: {e.strerror or e}"))
    kind = kind_of(stat.st_mode)
    if kind is not None:  # a FIFO would block the read forever, a device never end: reported, never opened
        return _not_regular(source, kind)
    key = (source, stat.st_size, stat.st_mtime_ns, max_pixels)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    try:
        data = read_regular(source)  # checks the open file again: a path swapped for a FIFO cannot hang us
    except NotRegularFileError as e:
        return _not_regular(source, e.kind)
    except OSError as e:
        return ImageInfo(source, error=("undecodable", f"cannot read the file: {e.strerror or e}"))
    if len(_CACHE) > _MAX_CACHE:
        _CACHE.clear()  # a long-lived process checking many datasets: start over rather than grow
    info = _CACHE[key] = _inspect_bytes(source, data, max_pixels)
    return info


def _not_regular(source: str, kind: str) -> ImageInfo:
    why = "" if kind == "a folder" else " (reading it could wait forever)"
    return ImageInfo(source, error=("not_regular_file", f"{kind}, not a regular file; not read{why}"))


def _inspect_bytes(source: str, data: bytes, max_pixels: int) -> ImageInfo:
    if not data:
        return ImageInfo(source, error=("empty_file", "the file is empty (0 bytes)"))
    base = {"source": source, "num_bytes": len(data), "digest": hashlib.blake2b(data, digest_size=16).hexdigest()}
    kind = imagesize.sniff(data)
    base["kind"] = kind
    if kind in imagesize.UNSUPPORTED:
        detail = f"{imagesize.describe(kind)} data; TensorFlow reads JPEG, PNG, GIF, BMP and WebP"
        return ImageInfo(**base, error=("unsupported_format", detail))
    if kind not in imagesize.DECODABLE:
        return ImageInfo(**base, error=("not_image", f"the file holds {imagesize.contents(kind)}, not an image"))
    try:
        header = imagesize.read_header(data)
    except ValueError as e:
        return ImageInfo(**base, error=("truncated" if isinstance(e, imagesize.TruncatedHeader) else "undecodable",
                                        str(e)))
    base.update(width=header.width, height=header.height, bit_depth=header.bit_depth, color=header.color,
                alpha=header.alpha, animated=header.animated)
    if header.pixels > max_pixels:
        detail = (
            f"the header declares {header.width}x{header.height} = {header.pixels / 1e6:.0f} megapixels, over the "
            f"limit of {max_pixels / 1e6:g} (decoded it would take {header.pixels * 3 / 1e9:.1f} GB); not decoded"
        )
        return ImageInfo(**base, error=("too_large", detail))
    base.update(_pil_facts(data, header))
    unsupported = _unsupported_variant(header, base)
    if unsupported:
        return ImageInfo(**base, error=("unsupported_format", unsupported))
    pixels, error = _decode(data)
    if error is not None:
        code = "truncated" if imagesize.looks_truncated(data, kind) else "undecodable"
        what = imagesize.describe(kind)
        detail = f"{what} data ends early" if code == "truncated" else f"{what} data is corrupt"
        return ImageInfo(**base, error=(code, f"{detail}; TensorFlow cannot decode it ({error})"))
    base.update(height=int(pixels.shape[0]), width=int(pixels.shape[1]), dhash=_dhash(pixels))
    return ImageInfo(**base)


def _pil_facts(data: bytes, header: imagesize.ImageHeader) -> dict[str, Any]:
    """Mode, EXIF orientation and animation from PIL (which only reads headers here)."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS and header.pixels > Image.MAX_IMAGE_PIXELS:
        return {}  # PIL would warn or refuse (its own bomb guard); the header facts suffice
    try:
        with Image.open(io.BytesIO(data)) as image:
            facts: dict[str, Any] = {"mode": image.mode}
            orientation = image.getexif().get(0x0112)
            if isinstance(orientation, int):
                facts["exif_orientation"] = orientation
            if getattr(image, "is_animated", False):
                facts["animated"] = True
            if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
                facts["alpha"] = True
            return facts
    except Exception:  # noqa: BLE001 - PIL's view is optional; TensorFlow's decode decides
        return {}


def _unsupported_variant(header: imagesize.ImageHeader, facts: dict[str, Any]) -> str | None:
    """Variants of readable formats that TensorFlow's decoder refuses, named before trying."""
    if header.format == "bmp" and header.bit_depth is not None and header.bit_depth < 8:
        return f"{header.bit_depth}-bit BMP; TensorFlow reads 8, 24 and 32-bit BMP"
    if header.format == "jpeg" and header.bit_depth not in (None, 8):
        return f"{header.bit_depth}-bit JPEG; TensorFlow reads 8-bit JPEG"
    if header.format == "webp" and facts.get("animated"):
        return "animated WebP; TensorFlow reads still WebP images only"
    return None


def _decode(data: bytes):
    """``(pixels, None)`` or ``(None, message)``, decoding exactly as the training pipeline does."""
    import tensorflow as tf

    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
        return image.numpy(), None
    except (tf.errors.OpError, ValueError) as e:
        return None, _tf_message(e)


def _dhash(pixels) -> int:
    """A 64-bit difference hash: re-saved, resized or lightly edited copies differ in few bits."""
    import numpy as np
    from PIL import Image

    height, width = pixels.shape[:2]
    step = max(1, min(height, width) // 64)  # a cheap pre-shrink; the box filter does the rest
    gray = Image.fromarray(np.ascontiguousarray(pixels[::step, ::step])).convert("L")
    small = np.asarray(gray.resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).reshape(-1)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def inspect_images(
    sources: Sequence[str], encoded: Sequence[bytes] | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[ImageInfo]:
    """``inspect_image`` over many files (or byte strings), in parallel threads.

    Example:
        >>> infos = inspect_images(split.train.sources)
        >>> [i.source for i in infos if i.error]
    """
    if not sources:
        return []
    import tensorflow  # noqa: F401  imported once here, not racing in every thread

    workers = min(8, (os.cpu_count() or 1) + 1, len(sources))
    items = list(zip(sources, encoded)) if encoded is not None else [(s, None) for s in sources]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda item: inspect_image(item[0], item[1], max_pixels=max_pixels), items))
