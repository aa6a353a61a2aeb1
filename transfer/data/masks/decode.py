"""One ``Mask`` to pixels: a uint8 ``[height, width]`` array of class indices (``IGNORE_VALUE`` ignored).

A mask file is decoded with PIL: a palette PNG gives its palette indices (as
Pascal VOC stores classes), ``L``/``I;16``/``I`` their values, a ``1`` image
0/255, and an RGB(A) image its grey value when every pixel has equal
channels (a colour-coded mask is refused: its colours would need a colour
table). The values go through ``Mask.values``; a value the table does not
list raises a TransferError naming the file and the values, so a wrong class
list can never train silently. ``threshold`` (JPEG masks) first snaps each
pixel to the nearest listed value.

Polygons are filled in order with PIL's ``ImageDraw.polygon`` (a later region
paints over an earlier one, as VIA and COCO draw them); COCO RLE regions are
decoded with ``pycocotools.mask.decode`` after their run lengths are checked
to cover exactly the image (the C decoder trusts them). Background is 0.

TFDS masks have no file: ``EncodedMask`` (a ``Mask`` whose ``path`` is
``"<encoded>"``) carries its PNG bytes itself, so it travels with its sample
through splits and subsets and needs no global registry or cache folder.

Example:
    >>> mask = Mask(width=4, height=3, polygons=((1, (0, 0, 3, 0, 3, 2, 0, 2)),))
    >>> load_mask(mask).sum()
    12
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from transfer.data.samples import IGNORE_VALUE, Mask
from transfer.core.orientation import displayed_size, mask_to_stored
from transfer.core.errors import TransferError
from transfer.core.regular_files import read_regular

ENCODED_PATH = "<encoded>"
LOSSY_EXTENSIONS = (".jpg", ".jpeg")
# A JPEG-compressed grey mask holds small differences between its channels; more is a colour mask.
_GREY_TOLERANCE = 24
_LISTED = 10  # unknown values named in a message
_RLE_FIX = "Export the annotation again: an RLE's run lengths must add up to width x height of its image."


@dataclass(frozen=True)
class EncodedMask(Mask):
    """A mask held in memory as encoded PNG bytes (TFDS sources): ``path`` is ``"<encoded>"``.

    ``name`` says where the mask came from, for messages (e.g.
    ``"tfds:oxford_iiit_pet/train[3]"``); ``kind`` is ``"encoded"``.

    Example:
        >>> m = EncodedMask(width=2, height=2, path=ENCODED_PATH, data=png_bytes, name="tfds:x/train[0]")
        >>> m.kind, load_mask(m).shape
        ('encoded', (2, 2))
    """

    data: bytes = field(default=b"", repr=False)
    name: str = ""

    @property
    def kind(self) -> str:
        return "encoded"


def mask_name(target: Mask) -> str:
    """What messages call the mask: its file, or where an encoded mask came from."""
    if isinstance(target, EncodedMask):
        return target.name or ENCODED_PATH
    return str(target.path)


def load_mask(target: Mask, *, source: str | None = None) -> np.ndarray:
    """The uint8 ``[target.height, target.width]`` class indices of ``target`` (see the module docstring).

    ``source`` (the image the mask belongs to) is only named in messages.
    Raises TransferError for an unreadable mask file, a mask whose size is
    not the image's, values not in ``target.values`` and malformed regions.

    Example:
        >>> load_mask(Mask(480, 360, path="camvid/train/masks/0001TP_006690.png",
        ...                values=tuple((v, v) for v in range(11)) + ((11, IGNORE_VALUE),))).max()
        255
    """
    kind = target.kind
    if kind == "polygons":
        return draw_polygons(target.width, target.height, target.polygons)
    if kind == "rle":
        out = np.zeros((target.height, target.width), np.uint8)
        for index, rle in target.rle:
            out[decode_rle(rle, target.width, target.height, source or "") > 0] = _class_index(index)
        return out
    if kind == "empty":
        return np.zeros((target.height, target.width), np.uint8)
    raw = read_pixels(target, source=source)
    return map_values(raw, target.values, threshold=target.threshold, name=mask_name(target), source=source)


def read_pixels(target: Mask, *, source: str | None = None) -> np.ndarray:
    """The raw 2-D values of a file (or encoded) mask, after checking its size against the image's."""
    name = mask_name(target)
    try:
        from PIL import Image

        # A mask drawn on an EXIF-rotated photo as displayed has the displayed size; it is turned into the
        # stored frame, the pixels the model sees (transfer.core.orientation).
        expected = displayed_size((target.width, target.height), target.orientation)
        # Only a regular file is read: a FIFO or device where a mask should be never blocks us.
        data = target.data if isinstance(target, EncodedMask) else read_regular(target.path)
        with Image.open(io.BytesIO(data)) as image:
            if image.size != expected:
                image_name = f"its image '{source}'" if source else "its image"
                shown = " as displayed" if target.orientation != 1 else ""
                raise TransferError(
                    f"{name}: the mask is {image.size[0]}x{image.size[1]} but {image_name} is "
                    f"{expected[0]}x{expected[1]}{shown}.",
                    fix="Export the mask again at the image's size (masks are pixels of the image as stored).",
                )
            pixels = _pixels(image, name, lossy=target.threshold)
        return mask_to_stored(pixels, target.orientation) if target.orientation != 1 else pixels
    except TransferError:
        raise
    except FileNotFoundError:
        raise TransferError(f"{name}: mask file not found" + (f" (for '{source}')." if source else "."),
                            fix="Restore the mask file, or remove its image from the data.") from None
    except (OSError, ValueError, SyntaxError, _bomb_error()) as e:  # PIL raises these for broken files
        raise TransferError(f"{name}: the mask cannot be decoded ({e}).",
                            fix="Export the mask again as a PNG of class values.") from None


def _bomb_error() -> type:
    """PIL's error for an image of more pixels than it decodes (a mask file may be hostile too)."""
    from PIL import Image

    return Image.DecompressionBombError


def _pixels(image: Any, name: str, *, lossy: bool) -> np.ndarray:
    mode = image.mode
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode in ("P", "L") or mode.startswith("I"):
        return np.asarray(image)  # P: palette indices, the class values of VOC-style masks
    if mode in ("LA", "PA"):
        return np.asarray(image)[..., 0]
    if mode in ("RGB", "RGBA", "RGBX"):
        rgb = np.asarray(image)[..., :3]
        spread = int((rgb.max(axis=-1).astype(np.int16) - rgb.min(axis=-1)).max())
        if spread == 0:
            return rgb[..., 0]
        if lossy and spread <= _GREY_TOLERANCE:
            return np.round(rgb.mean(axis=-1)).astype(np.uint8)
        raise TransferError(
            f"{name}: a colour mask (RGB pixels whose channels differ by up to {spread}); masks need one class "
            "value per pixel.",
            fix="Convert it to a greyscale or palette PNG whose pixel values are the class indices.",
        )
    raise TransferError(f"{name}: mask images of mode {mode} are not read.",
                        fix="Save the mask as an 8-bit greyscale (L) or palette (P) PNG of class values.")


def map_values(
    raw: np.ndarray, values: Sequence[tuple[int, int]] | None, *, threshold: bool = False, name: str = "",
    source: str | None = None,
) -> np.ndarray:
    """``raw`` pixel values mapped through ``values`` to uint8 class indices; TransferError naming unknown ones.

    Example:
        >>> map_values(np.array([[0, 255]]), ((0, 0), (255, 1))).tolist()
        [[0, 1]]
    """
    raw = np.asarray(raw)
    if values is None:  # the file already holds class indices
        if raw.size and (int(raw.min()) < 0 or int(raw.max()) > IGNORE_VALUE):
            _unknown(name, raw, (raw < 0) | (raw > IGNORE_VALUE), "0..255", source)
        return raw.astype(np.uint8)
    table = dict(values)
    for value, index in table.items():
        _class_index(index)
    keys = np.array(sorted(table), dtype=np.int64)
    if raw.size == 0:
        return raw.astype(np.uint8)
    if threshold and len(keys):  # each pixel to the nearest listed value (ties to the lower)
        wide = raw.astype(np.int64)
        right = np.clip(np.searchsorted(keys, wide), 0, len(keys) - 1)
        left = np.clip(right - 1, 0, len(keys) - 1)
        raw = np.where(np.abs(wide - keys[left]) <= np.abs(keys[right] - wide), keys[left], keys[right])
    low, high = int(raw.min()), int(raw.max())
    if low >= 0 and high < 1 << 16:  # a lookup table: one pass over the pixels
        lut = np.full(max(high, int(keys.max()) if len(keys) else 0) + 1, -1, np.int16)
        for value, index in table.items():
            if 0 <= value < len(lut):
                lut[value] = index
        out = lut[raw]
    else:
        out = np.full(raw.shape, -1, np.int16)
        for value, index in table.items():
            out[raw == value] = index
    if (out < 0).any():
        _unknown(name, raw, out < 0, ", ".join(str(v) for v in sorted(table)), source)
    return out.astype(np.uint8)


def _unknown(name: str, raw: np.ndarray, where: np.ndarray, known: str, source: str | None) -> None:
    found, counts = np.unique(raw[where], return_counts=True)
    listed = ", ".join(str(int(v)) for v in found[:_LISTED]) + (", ..." if len(found) > _LISTED else "")
    of = f" (the mask of '{source}')" if source else ""
    raise TransferError(
        f"{name}{of}: pixel value(s) {listed} ({int(counts.sum())} pixels) are not class values; the classes "
        f"are the values {known}.",
        fix="Name every class in value order (--class-names or classes.txt), or pass --ignore-index VALUE for the "
        "value that marks unlabelled pixels.",
    )


def _class_index(index: Any) -> int:
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= int(index) <= IGNORE_VALUE:
        raise TransferError(f"Mask class index {index!r} is not an integer in 0..{IGNORE_VALUE}.",
                            fix="Give class indices 0..C-1 (or IGNORE_VALUE, 255, for ignored pixels).")
    return int(index)


def draw_polygons(width: int, height: int, polygons: Sequence[tuple[int, Sequence[float]]]) -> np.ndarray:
    """``[height, width]`` uint8: 0, then each ``(class, (x0, y0, x1, y1, ...))`` filled in order.

    Example:
        >>> draw_polygons(5, 4, [(1, (1, 1, 3, 1, 3, 2, 1, 2))])[1:3, 1:4].tolist()
        [[1, 1, 1], [1, 1, 1]]
    """
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (int(width), int(height)), 0)
    draw = ImageDraw.Draw(canvas)
    for index, coords in polygons:
        points = [(float(x), float(y)) for x, y in zip(coords[0::2], coords[1::2])]
        if len(points) >= 3:  # readers drop smaller ones with a finding; a hand-made Mask may hold them
            draw.polygon(points, fill=_class_index(index))
    return np.asarray(canvas)


def decode_rle(rle: Any, width: int, height: int, name: str = "") -> np.ndarray:
    """``[height, width]`` uint8 0/1 of one COCO RLE dict (``counts`` a string or a list of run lengths).

    Example:
        >>> decode_rle({"size": [2, 3], "counts": [1, 4, 1]}, 3, 2).tolist()
        [[0, 1, 1], [1, 1, 0]]
    """
    check_rle(rle, width, height, name)
    from pycocotools import mask as mask_utils

    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed (crowd regions): pycocotools compresses it first
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    else:
        rle = {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(rle)


def check_rle(rle: Any, width: int, height: int, name: str = "") -> None:
    """TransferError unless ``rle`` is an RLE dict of a ``width`` x ``height`` image whose runs cover it exactly."""
    where = f"{name}: " if name else ""
    if not isinstance(rle, dict) or "counts" not in rle or "size" not in rle:
        raise TransferError(f"{where}an RLE region must be an object with 'size' and 'counts'; got "
                            f"{type(rle).__name__}.", fix=_RLE_FIX)
    size = rle["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or [int(v) if isinstance(v, int) and not isinstance(v, bool) else None for v in size] != [height, width]):
        raise TransferError(f"{where}an RLE region's size {str(size)[:40]} is not the image's [height, width] "
                            f"[{height}, {width}].", fix=_RLE_FIX)
    counts = rle["counts"]
    try:
        runs = rle_counts(counts)
    except ValueError as e:
        raise TransferError(f"{where}an RLE region's counts are malformed ({e}).", fix=_RLE_FIX) from None
    if sum(runs) != width * height:
        raise TransferError(f"{where}an RLE region's runs cover {sum(runs)} pixels, not {width}x{height} = "
                            f"{width * height}.", fix=_RLE_FIX)


def rle_counts(counts: Any) -> list[int]:
    """The run lengths of an RLE ``counts`` (a list, or COCO's compressed string, decoded as ``rleFrString``).

    Example:
        >>> rle_counts(";230009")
        [11, 2, 3, 2, 3, 2, 12]
    """
    if isinstance(counts, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
            raise ValueError("run lengths must be non-negative integers")
        return counts
    if isinstance(counts, str):
        counts = counts.encode("ascii", errors="replace")
    if not isinstance(counts, bytes):
        raise ValueError(f"counts is a {type(counts).__name__}, not a string or a list")
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts) or k > 12:
                raise ValueError("a run length is cut short or too long")
            c = counts[p] - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {chr(counts[p])!r} is not an RLE character")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        if x < 0:
            raise ValueError("a run length is negative")
        runs.append(x)
    return runs
