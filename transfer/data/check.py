"""The data doctor: find what would break or silently spoil a training run, before it starts.

``check_data(source)`` (the ``transfer check-data`` command) lists a folder of
class folders or a CSV file without judging it, inspects every image and runs
the registered checks; ``check_split(split)`` does the same for data already
loaded (the quick check ``transfer train`` runs first); ``drop_unreadable``
removes from a split what training cannot read, naming each file.

Every image is read once, in parallel: a stdlib header parse
(``transfer.imagesize``) refuses decompression bombs before anything is
decoded, PIL reports mode, EXIF orientation and animation, and TensorFlow's own
``decode_image`` (the op the training pipeline and the export use) decides
whether the file is usable. What TensorFlow decodes is used; what it cannot is
skipped. EXIF orientation is *reported*, never applied: the pipeline and the
exported model both read pixels as stored, so they agree.

Checks are small functions registered per concern with ``@register(kind)``:

- ``"image"``: ``fn(info: ImageInfo, ctx) -> findings`` (one file);
- ``"target"``: ``fn(item: Item, ctx) -> findings`` (one sample and its
  annotation: the place for box and mask checks of future tasks);
- ``"dataset"``: ``fn(items: list[Item], ctx) -> findings`` (duplicates,
  balance, ...).

Example:
    >>> report = check_data("flowers/")
    >>> print(report.table())
    >>> report.exit_code   # 0: nothing skipped; 1: some files would be skipped or training would not start
    0
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from transfer import imagesize
from transfer.data.findings import Finding, finding
from transfer.data.samples import DataSplit, Samples
from transfer.errors import TransferError

logger = logging.getLogger(__name__)

# A 100-megapixel RGB image decodes to 300 MB (and resizing works in float32,
# 1.2 GB): more than that is refused for training. Predict is stricter (40 MP).
DEFAULT_MAX_PIXELS = 100_000_000
MIN_SIDE = imagesize.MIN_SIDE  # smaller images hold no usable content (a 1x1 tracking pixel)
# Upscaled more than this many times to the input size: reported.
UPSCALE_WARNING = 4
# dHash bits (of 64) two images may differ in and still count as near duplicates.
NEAR_DUPLICATE_BITS = 4
# Largest class / smallest class above this: reported.
IMBALANCE_RATIO = 10
# A class with fewer usable images than this: reported.
FEW_IMAGES = 5
DEFAULT_IMAGE_SIZE = 224
_TABLE_ROWS_PER_CODE = 20
_MAX_CACHE = 500_000
_MAX_BUCKET = 2000


# ---------------------------------------------------------------- one image


@dataclass(frozen=True)
class ImageInfo:
    """What inspecting one image found.

    ``error`` is ``(code, detail)`` when the file cannot be used at all
    (missing, empty, not an image, too large, not decodable); the other fields
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
    key = (source, stat.st_size, stat.st_mtime_ns, max_pixels)
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    try:
        with open(source, "rb") as f:
            data = f.read()
    except OSError as e:
        return ImageInfo(source, error=("undecodable", f"cannot read the file: {e.strerror or e}"))
    if len(_CACHE) > _MAX_CACHE:
        _CACHE.clear()  # a long-lived process checking many datasets: start over rather than grow
    info = _CACHE[key] = _inspect_bytes(source, data, max_pixels)
    return info


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


# ---------------------------------------------------------------- check registry


@dataclass(frozen=True)
class Item:
    """One sample as the checks see it: source, target, split (``train``/``val``/None) and inspection."""

    source: str
    target: Any
    split: str | None
    info: ImageInfo


@dataclass(frozen=True)
class CheckContext:
    """Settings shared by all checks."""

    class_names: tuple[str, ...]
    multi_label: bool = False
    image_size: int = DEFAULT_IMAGE_SIZE
    max_pixels: int = DEFAULT_MAX_PIXELS
    near_duplicates: bool = True
    split_given: bool = False  # train/val came from the data (folders, CSV column), not a seeded split


CHECKS: dict[str, list[Callable]] = {"image": [], "target": [], "dataset": []}


def register(kind: str):
    """Add a check of ``kind`` (``image``, ``target`` or ``dataset``) to the doctor.

    Example:
        >>> @register("target")
        ... def boxes_inside_image(item, ctx):
        ...     for box in item.target.boxes:
        ...         if box.x_max > item.info.width:
        ...             yield finding(item.source, "box_outside", f"box {box} ends past the right edge")
    """
    if kind not in CHECKS:
        raise ValueError(f"Unknown check kind. Received: kind={kind!r}; expected one of {sorted(CHECKS)}")

    def decorator(fn):
        CHECKS[kind].append(fn)
        return fn

    return decorator


@register("image")
def _unusable(info: ImageInfo, ctx: CheckContext) -> Iterable[Finding]:
    if info.error is not None:
        code, detail = info.error
        yield finding(info.source, code, detail)


@register("image")
def _size(info: ImageInfo, ctx: CheckContext) -> Iterable[Finding]:
    if info.error is not None or not info.width or not info.height:
        return
    side = min(info.width, info.height)
    if side < MIN_SIDE:
        yield finding(
            info.source, "too_small", f"{info.width}x{info.height} pixels; images under {MIN_SIDE}x{MIN_SIDE} "
            "hold no usable content and are left out", severity="error", action="skip",
        )
    elif side * UPSCALE_WARNING < ctx.image_size:
        yield finding(
            info.source, "too_small",
            f"{info.width}x{info.height} pixels, upscaled {ctx.image_size / side:.0f}x to {ctx.image_size}",
        )


@register("image")
def _extension(info: ImageInfo, ctx: CheckContext) -> Iterable[Finding]:
    # Only for usable files: an unusable one's own finding already says what its content is.
    if info.error is not None or info.kind not in imagesize.EXTENSIONS or info.source.startswith("tfds:"):
        return
    suffix = os.path.splitext(info.source)[1].lower()
    if suffix and suffix not in imagesize.EXTENSIONS[info.kind]:
        content = imagesize.describe(info.kind)
        yield finding(info.source, "wrong_extension", f"{content} data in a '{suffix}' file (read as {content})")


@register("image")
def _color(info: ImageInfo, ctx: CheckContext) -> Iterable[Finding]:
    if info.error is not None:
        return
    mode = info.mode or ""
    if info.color == "cmyk" or mode in ("CMYK", "YCCK"):
        yield finding(info.source, "cmyk", "CMYK JPEG; the decoder converts it to RGB (colors may shift)")
    elif info.color in ("gray", "gray+alpha") or mode in ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "F"):
        yield finding(info.source, "grayscale", "one channel; read as 3 equal RGB channels")
    if info.alpha:
        yield finding(info.source, "alpha", "has transparency; the decoder drops the alpha channel")
    if info.bit_depth and info.bit_depth > 8 and info.kind == "png":
        yield finding(info.source, "high_bit_depth", f"{info.bit_depth} bits per channel; read as 8 bits")


@register("image")
def _animation(info: ImageInfo, ctx: CheckContext) -> Iterable[Finding]:
    if info.error is None and info.animated:
        yield finding(info.source, "animated", f"animated {imagesize.describe(info.kind)}; the first frame is used")


_ORIENTATIONS = {
    2: "mirrored", 3: "rotated 180 degrees", 4: "flipped upside down", 5: "mirrored and rotated 90 degrees",
    6: "rotated 90 degrees", 7: "mirrored and rotated 270 degrees", 8: "rotated 270 degrees",
}


@register("image")
def _orientation(info: ImageInfo, ctx: CheckContext) -> Iterable[Finding]:
    if info.error is None and info.exif_orientation in _ORIENTATIONS:
        yield finding(
            info.source, "exif_orientation",
            f"EXIF orientation {info.exif_orientation} ({_ORIENTATIONS[info.exif_orientation]} for display); "
            "training and the export use the pixels as stored",
        )


def _class_of(target: Any, ctx: CheckContext) -> str:
    if isinstance(target, tuple):
        return ";".join(ctx.class_names[t] for t in target)
    return ctx.class_names[target]


@register("dataset")
def _exact_duplicates(items: list[Item], ctx: CheckContext) -> Iterable[Finding]:
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        if item.info.digest and item.info.error is None:
            groups[item.info.digest].append(item)
    for group in groups.values():
        # The train copy, then the shorter name ("IMG_1.jpg" before "IMG_1 (1).jpg"), counts as the original.
        group.sort(key=lambda i: (i.split != "train", len(os.path.basename(i.source)), i.source))
        for other in group[1:]:
            yield _pair_finding(group[0], other, ctx, "byte-identical to", near=False)


@register("dataset")
def _near_duplicates(items: list[Item], ctx: CheckContext) -> Iterable[Finding]:
    if not ctx.near_duplicates:
        return
    usable = [i for i in items if i.info.dhash is not None and i.info.error is None]
    reported: set[int] = set()
    for a, b, distance in near_duplicate_pairs([i.info.dhash for i in usable], NEAR_DUPLICATE_BITS):
        first, other = sorted((usable[a], usable[b]),
                              key=lambda i: (i.split != "train", len(os.path.basename(i.source)), i.source))
        if first.info.digest == other.info.digest or id(other) in reported:
            continue  # exact copies are the exact check's; one report per file
        reported.add(id(other))
        yield _pair_finding(first, other, ctx, f"nearly identical (hash distance {distance}/64) to", near=True)


def _pair_finding(first: Item, other: Item, ctx: CheckContext, how: str, *, near: bool) -> Finding:
    """The finding about ``other``, a copy of ``first``: its code depends on classes and splits."""
    first_class, other_class = _class_of(first.target, ctx), _class_of(other.target, ctx)
    detail = f"{how} '{first.source}'"
    if first_class != other_class:
        detail += f" (labelled '{first_class}' there, '{other_class}' here)"
    across = bool(first.split and other.split and first.split != other.split)
    if across:
        detail += f" ({first.split} there, {other.split} here" + (
            ")" if ctx.split_given else "; the seeded split put them apart)")
    if near:
        code = "near_duplicate"
    elif first_class != other_class:
        code = "duplicate_conflicting_labels"
    elif across:
        code = "duplicate_across_splits"
    else:
        code = "duplicate"
    return finding(other.source, code, detail, related=first.source)


def near_duplicate_pairs(hashes: Sequence[int], max_bits: int) -> list[tuple[int, int, int]]:
    """Index pairs ``(i, j, distance)``, ``i < j``, of 64-bit hashes at most ``max_bits`` apart.

    Pigeonhole bucketing: split each hash into ``max_bits + 1`` slices; two
    hashes that differ in at most ``max_bits`` bits agree on at least one slice,
    so only hashes sharing a slice are compared (no N^2 loop over all pairs).

    Example:
        >>> near_duplicate_pairs([0b1011, 0b1010, 1 << 40], max_bits=2)
        [(0, 1, 1)]
    """
    slices = max_bits + 1
    bounds = [round(64 * k / slices) for k in range(slices + 1)]
    found: dict[tuple[int, int], int] = {}
    for k in range(slices):
        lo, hi = bounds[k], bounds[k + 1]
        mask = (1 << (hi - lo)) - 1
        buckets: dict[int, list[int]] = defaultdict(list)
        for index, value in enumerate(hashes):
            buckets[(value >> lo) & mask].append(index)
        for members in buckets.values():
            # A huge bucket is a crowd of flat images (exact copies, reported anyway): cap the quadratic work.
            members = members[:_MAX_BUCKET]
            for a_pos, a in enumerate(members):
                for b in members[a_pos + 1:]:
                    if (a, b) not in found:
                        distance = (hashes[a] ^ hashes[b]).bit_count()
                        if distance <= max_bits:
                            found[(a, b)] = distance
    return sorted((a, b, d) for (a, b), d in found.items())


@register("dataset")
def _balance(items: list[Item], ctx: CheckContext) -> Iterable[Finding]:
    listed: Counter = Counter()
    usable: Counter = Counter()
    for item in items:
        for t in item.target if isinstance(item.target, tuple) else (item.target,):
            listed[t] += 1
            usable[t] += item.info.error is None
    for t in sorted(listed):
        name = ctx.class_names[t]
        if usable[t] == 0:
            yield finding(name, "no_usable_images", f"class '{name}': none of its {listed[t]} images can be used")
        elif usable[t] < FEW_IMAGES:
            yield finding(name, "few_images", f"class '{name}' has only {usable[t]} usable image(s)")
    nonzero = {ctx.class_names[t]: n for t, n in usable.items() if n}
    if len(nonzero) >= 2:
        biggest = max(nonzero, key=nonzero.get)
        smallest = min(nonzero, key=nonzero.get)
        ratio = nonzero[biggest] / nonzero[smallest]
        if ratio >= IMBALANCE_RATIO:
            yield finding(
                smallest, "class_imbalance",
                f"class '{biggest}' has {nonzero[biggest]} usable images, '{smallest}' only {nonzero[smallest]} "
                f"({ratio:.0f}x fewer)",
            )


# ---------------------------------------------------------------- the report


_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
_ACTION_ORDER = {a: i for i, a in enumerate(("stop", "skip", "review", "convert", "use", "ignore"))}


@dataclass
class DataReport:
    """Everything the doctor found, with the numbers training will see.

    ``findings`` are sorted (errors first); ``usable`` counts images training
    will use; ``class_counts`` counts them per class; ``median_side`` is the
    median short side in pixels of the usable images (None when unknown), for
    ``transfer train``'s image-size warning.
    """

    source: str
    root: str | None
    num_images: int
    usable: int
    class_counts: dict[str, int]
    findings: list[Finding]
    seconds: float
    median_side: int | None = None

    @property
    def skipped(self) -> list[str]:
        """Image files training leaves out (each named in a warning when it runs)."""
        return sorted({f.path for f in self.findings if f.action == "skip" and f.line is None})

    @property
    def stops(self) -> list[Finding]:
        """Findings that stop training until fixed."""
        return [f for f in self.findings if f.action == "stop"]

    @property
    def exit_code(self) -> int:
        """0 when training would use every file; 1 when it would skip some or not start."""
        return 1 if any(f.action in ("stop", "skip") for f in self.findings) else 0

    def _show(self, path: str) -> str:
        if self.root and not path.startswith("tfds:"):
            try:
                rel = os.path.relpath(path, self.root)
            except ValueError:
                return path
            if not rel.startswith(".."):
                return rel
        return path

    def table(self, *, all_rows: bool = False) -> str:
        """A plain-text table, one line per finding; errors always listed in full.

        Warnings and notes list at most 20 files per problem unless ``all_rows``.
        """
        lines = [self.headline()]
        if not self.findings:
            return lines[0]
        rows = []
        shown: Counter = Counter()
        hidden: Counter = Counter()
        for f in self.findings:
            if f.severity != "error" and not all_rows and shown[f.code] >= _TABLE_ROWS_PER_CODE:
                hidden[f.code] += 1
                continue
            shown[f.code] += 1
            where = self._show(f.path) + (f":{f.line}" if f.line is not None else "")
            detail = f.detail.replace(f"'{self.root}{os.sep}", "'") if self.root else f.detail
            rows.append((f.severity, f.action, f.code, where, detail))
        widths = [max(len(r[i]) for r in rows + [("SEVERITY", "ACTION", "PROBLEM", "FILE", "")]) for i in range(4)]
        header = ("SEVERITY", "ACTION", "PROBLEM", "FILE", "DETAIL")
        for row in [header, *rows]:
            lines.append("  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)).rstrip())
        for code, n in sorted(hidden.items()):
            lines.append(f"... and {n} more '{code}' (use --all or --json to list every file)")
        lines.append("")
        lines.append(self.actions_text())
        return "\n".join(lines)

    def headline(self) -> str:
        where = f" in '{self.root}'" if self.root else ""
        classes = f" in {len(self.class_counts)} classes" if self.class_counts else ""
        return (f"Checked {self.num_images} images{classes}{where} in {self.seconds:.1f}s: "
                f"{self.usable} usable, {len(self.skipped)} to skip, "
                f"{sum(f.severity == 'warning' for f in self.findings)} warnings.")

    def actions_text(self) -> str:
        """What training will do, in words (the legend under the table)."""
        parts = []
        stops = self.stops
        if stops:
            parts.append(f"Training will not start until the {len(stops)} 'stop' problem(s) are fixed.")
        if self.skipped:
            parts.append(f"Training skips the {len(self.skipped)} 'skip' file(s), naming each; "
                         "--quarantine DIR moves them aside.")
        by_code = Counter(f.code for f in self.findings if f.action not in ("stop", "skip"))
        if by_code:
            parts.append("Used as noted: " + ", ".join(f"{code} {n}" for code, n in sorted(by_code.items())) + ".")
        return " ".join(parts) if parts else "Nothing to fix."

    def summary(self) -> str:
        """Two lines for the start of `transfer train`: counts per problem, and where to see the details."""
        if not self.findings:
            return f"Data check: {self.num_images} images in {self.seconds:.1f}s, all usable."
        skip = Counter(f.code for f in self.findings if f.action == "skip" and f.line is None)
        other = Counter(f.code for f in self.findings if f.action not in ("skip", "stop", "ignore"))
        text = f"Data check: {self.num_images} images in {self.seconds:.1f}s: {self.usable} usable"
        if skip:
            text += f", {sum(skip.values())} skipped (" + ", ".join(f"{c} {n}" for c, n in sorted(skip.items())) + ")"
        if other:
            text += "; notes: " + ", ".join(f"{c} {n}" for c, n in sorted(other.items()))
        return text + f". Details: transfer check-data {self.source or 'DATA'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "root": self.root,
            "num_images": self.num_images,
            "usable": self.usable,
            "class_counts": self.class_counts,
            "seconds": round(self.seconds, 3),
            "median_side": self.median_side,
            "exit_code": self.exit_code,
            "findings": [f.to_dict() for f in self.findings],
        }


def _sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    unique = list(dict.fromkeys(findings))
    return sorted(unique, key=lambda f: (_SEVERITY_ORDER.get(f.severity, 9), _ACTION_ORDER.get(f.action, 9),
                                         f.code, f.path, f.line or 0))


def run_checks(
    items: list[Item], ctx: CheckContext, *, extra: Sequence[Finding] = (), source: str = "", root: str | None = None,
    started: float | None = None,
) -> DataReport:
    """Run every registered check over inspected ``items``; ``extra`` adds findings from listing the source."""
    findings: list[Finding] = list(extra)
    for item in items:
        for check in CHECKS["image"]:
            findings.extend(check(item.info, ctx))
        for check in CHECKS["target"]:
            findings.extend(check(item, ctx))
    skip = {f.path for f in findings if f.action == "skip" and f.line is None}
    # Dataset-level checks see the final verdict of each file (error set when any check skips it).
    judged = [
        item if item.source not in skip or item.info.error else
        Item(item.source, item.target, item.split, _with_error(item.info, "skipped"))
        for item in items
    ]
    for check in CHECKS["dataset"]:
        findings.extend(check(judged, ctx))
    usable_items = [i for i in judged if i.info.error is None]
    counts = Counter()
    for item in usable_items:
        for t in item.target if isinstance(item.target, tuple) else (item.target,):
            counts[ctx.class_names[t]] += 1
    seconds = time.perf_counter() - started if started is not None else 0.0
    sides = sorted(min(i.info.width, i.info.height) for i in usable_items if i.info.width and i.info.height)
    return DataReport(
        source=source, root=root, num_images=len(items), usable=len(usable_items),
        class_counts={name: counts.get(name, 0) for name in ctx.class_names},
        findings=_sort_findings(findings), seconds=seconds,
        median_side=sides[len(sides) // 2] if sides else None,
    )


def _with_error(info: ImageInfo, code: str) -> ImageInfo:
    return replace(info, error=(code, "skipped"))


def _items(split: DataSplit | None, samples: Samples | None, max_pixels: int) -> list[Item]:
    """Inspect the samples of ``split`` (train and val tagged) or of ``samples`` (no split known)."""
    parts = [("train", split.train), ("val", split.val)] if split is not None else [(None, samples)]
    out: list[Item] = []
    for name, part in parts:
        infos = inspect_images(part.sources, part.encoded, max_pixels=max_pixels)
        out.extend(Item(s, t, name, info) for s, t, info in zip(part.sources, part.targets, infos))
    return out


def check_split(
    split: DataSplit, *, image_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
    near_duplicates: bool = True, source: str = "", root: str | None = None, split_given: bool | None = None,
) -> DataReport:
    """Check data already loaded (what ``transfer train`` runs before training).

    Example:
        >>> report = check_split(load_data("flowers/"), image_size=128)
        >>> print(report.summary())
        Data check: 4317 images in 3.1s, all usable.
    """
    started = time.perf_counter()
    ctx = CheckContext(
        split.class_names, split.multi_label, int(image_size or DEFAULT_IMAGE_SIZE), max_pixels, near_duplicates,
        split_given=bool(split_given if split_given is not None else not split.origin.startswith("stratified")),
    )
    items = _items(split, None, max_pixels)
    return run_checks(items, ctx, source=source, root=root, started=started)


def check_data(
    source: str | os.PathLike, *, image_size: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
    near_duplicates: bool = True, val_fraction: float = 0.2, seed: int = 0, allow_outside_root: bool = False,
) -> DataReport:
    """Check a data source (folder of class folders, CSV file or ``tfds:NAME``) without stopping at the first problem.

    Layout problems (an empty class folder, a bad CSV line) become findings
    instead of errors, so one run lists everything. Raises TransferError only
    when ``source`` does not exist or cannot be read at all.

    Example:
        >>> report = check_data("flowers/", image_size=128)
        >>> [f.path for f in report.findings if f.action == "skip"]
        ['flowers/rose/broken.jpg']
    """
    from transfer.data import TFDS_PREFIX, load_data

    started = time.perf_counter()
    text = os.fspath(source)
    size = int(image_size or DEFAULT_IMAGE_SIZE)
    if text.startswith(TFDS_PREFIX):
        split = load_data(text, val_fraction=val_fraction, seed=seed)
        report = check_split(split, image_size=size, max_pixels=max_pixels, near_duplicates=near_duplicates,
                             source=text, split_given=not split.origin.startswith("stratified"))
        report.seconds = time.perf_counter() - started
        return report
    path = Path(text)
    if text.lower().endswith(".csv") and path.is_file():
        split, samples, extra, root, given = _list_csv_source(path, val_fraction, seed, allow_outside_root)
    elif path.is_dir():
        split, samples, extra, root, given = _list_folder_source(path, val_fraction, seed)
    elif path.exists():
        raise TransferError(f"Data source '{text}' is a file but not a .csv file.",
                            fix="Pass a folder with one subfolder per class, or a .csv file with path,label columns.")
    else:
        raise TransferError(f"Data source not found: '{text}'.",
                            fix="Pass a folder with one subfolder per class, or a .csv file with path,label columns.")
    names = (split.train if split is not None else samples).class_names
    multi = (split.train if split is not None else samples).multi_label
    ctx = CheckContext(names, multi, size, max_pixels, near_duplicates, split_given=given)
    items = _items(split, samples, max_pixels)
    return run_checks(items, ctx, extra=extra, source=text, root=root, started=started)


def _seeded_split(samples: Samples, val_fraction: float, seed: int) -> DataSplit | None:
    from transfer.data.split import stratified_split

    try:
        return stratified_split(samples, val_fraction=val_fraction, seed=seed)
    except TransferError:
        return None  # too few images to split: checked as one set


def _list_csv_source(path: Path, val_fraction: float, seed: int, allow_outside_root: bool):
    from transfer.data.csvfile import list_csv

    listing = list_csv(path, allow_outside_root=allow_outside_root)
    samples = listing.samples()
    split = None
    if listing.has_split:
        train = tuple(r for r in listing.rows if r.split == "train")
        val = tuple(r for r in listing.rows if r.split == "val")
        split = DataSplit(listing.samples(train), listing.samples(val), origin="CSV split column")
    elif samples.num_classes:
        split = _seeded_split(samples, val_fraction, seed)
    extra = list(listing.findings)
    if not listing.multi_label and 0 < samples.num_classes < 2:
        extra.append(finding(str(path), "csv_format", f"only 1 class ('{samples.class_names[0]}'); "
                                                       "classification needs at least 2", action="stop"))
    return split, (None if split is not None else samples), extra, str(path.parent), listing.has_split


def _list_folder_source(root: Path, val_fraction: float, seed: int):
    from transfer.data.folder import _split_dirs, list_class_folders

    extra: list[Finding] = []
    try:
        dirs = _split_dirs(root)
    except TransferError as e:
        extra.append(finding(str(root), "layout", e.message))
        dirs = None
    if dirs is not None:
        train_listing, val_listing = list_class_folders(dirs[0]), list_class_folders(dirs[1])
        extra += train_listing.findings + val_listing.findings
        train_names = [n for n, _ in train_listing.classes]
        val_names = [n for n, _ in val_listing.classes]
        if train_names != val_names:
            extra.append(finding(
                str(root), "layout", f"the class folders of '{dirs[0].name}/' and '{dirs[1].name}/' differ: only in "
                f"train: {sorted(set(train_names) - set(val_names)) or 'none'}; only in val: "
                f"{sorted(set(val_names) - set(train_names)) or 'none'}",
            ))
        names = tuple(sorted(set(train_names) | set(val_names)))

        def samples_of(listing) -> Samples:
            pairs = [(p, names.index(n)) for n, paths in listing.classes for p in paths]
            return Samples(tuple(p for p, _ in pairs), tuple(t for _, t in pairs), names)

        split = DataSplit(samples_of(train_listing), samples_of(val_listing), origin="folders")
        _class_count_findings(root, names, extra)
        return split, None, extra, str(root), True
    base = root / "train" if (root / "train").is_dir() else root
    listing = list_class_folders(base)
    extra += listing.findings
    if not listing.classes:
        extra.append(finding(str(base), "layout", f"no class subfolders in '{base}'; put each class's images in "
                                                  "its own subfolder"))
    _class_count_findings(base, tuple(n for n, _ in listing.classes), extra)
    samples = listing.samples()
    split = _seeded_split(samples, val_fraction, seed) if samples.num_classes else None
    return split, (None if split is not None else samples), extra, str(root), False


def _class_count_findings(root: Path, names: Sequence[str], extra: list[Finding]) -> None:
    if len(names) == 1:
        extra.append(finding(str(root), "layout", f"only 1 class folder ('{names[0]}'); classification needs "
                                                  "at least 2"))


# ---------------------------------------------------------------- training and quarantine


def drop_unreadable(
    data: DataSplit, *, echo: Callable[[str], None] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DataSplit:
    """``data`` without the images training cannot read, each named in a warning.

    Unreadable means: missing, empty, not an image, unsupported, truncated or
    corrupt (TensorFlow's decoder refuses it), over ``max_pixels``, or under
    8x8 pixels. Each dropped file is reported through ``echo`` (e.g. ``print``)
    or, without it, ``logging`` warnings. Raises TransferError when a class
    loses all its training images or validation loses all its images.

    Example:
        >>> split = drop_unreadable(load_data("flowers/"), echo=print)
        Skipping flowers/rose/broken.jpg: truncated (cut short): JPEG data ends early ...
    """
    ctx = CheckContext(data.class_names, data.multi_label, DEFAULT_IMAGE_SIZE, max_pixels, near_duplicates=False)
    say = echo or (lambda message: logger.warning("%s", message))
    parts = {}
    dropped_total = 0
    for name, part in (("train", data.train), ("val", data.val)):
        infos = inspect_images(part.sources, part.encoded, max_pixels=max_pixels)
        keep = []
        for index, info in enumerate(infos):
            bad = [f for check in CHECKS["image"] for f in check(info, ctx) if f.action in ("skip", "stop")]
            if bad:
                say(f"Skipping {info.source} ({bad[0].code}): {bad[0].detail}")
            else:
                keep.append(index)
        dropped_total += len(part) - len(keep)
        parts[name] = part if len(keep) == len(part) else part.subset(keep)
    if not dropped_total:
        return data
    lost = [c for c, n in data.train.class_counts().items() if n and not parts["train"].class_counts()[c]]
    if lost:
        raise TransferError(
            f"No readable training images left for class(es) {lost}: every one of them was skipped (listed above).",
            fix="Replace the unreadable images (see `transfer check-data DATA`), or remove the class.",
        )
    if len(parts["val"]) == 0:
        raise TransferError(
            "No readable validation images left: every one was skipped (listed above).",
            fix="Replace the unreadable images (see `transfer check-data DATA`).",
        )
    say(f"Skipped {dropped_total} unreadable image(s); training on {len(parts['train'])}, "
        f"validating on {len(parts['val'])}.")
    return DataSplit(parts["train"], parts["val"], data.origin)


def quarantine(report: DataReport, dest: str | os.PathLike) -> list[tuple[str, str]]:
    """Move the files ``report`` marks ``skip`` into ``dest`` (never deletes anything).

    Files keep their path relative to the dataset root under ``dest``; a name
    already taken there gets a ``-1``, ``-2`` ... suffix. ``dest/quarantine.json``
    records every move (original path, new path, problem, detail) and grows on
    each run. Returns ``(from, to)`` pairs.

    Example:
        >>> moved = quarantine(check_data("flowers/"), "flowers-quarantine/")
        >>> moved[0]
        ('flowers/rose/broken.jpg', 'flowers-quarantine/rose/broken.jpg')
    """
    from transfer.atomic import atomic_write_json
    from transfer.data.csvfile import is_inside

    dest = Path(dest)
    root = Path(report.root) if report.root else None
    if root is None or report.source.startswith("tfds:"):
        raise TransferError("--quarantine works on image files in a folder.", fix="Drop --quarantine for this source.")
    if report.source.lower().endswith(".csv"):
        raise TransferError(
            f"--quarantine cannot be used with a CSV file ('{report.source}'): moving files it lists would leave "
            "lines pointing at missing files.",
            fix="Remove the lines of the listed files from the CSV instead (`--json` gives the list).",
        )
    if is_inside(root, dest):
        raise TransferError(
            f"The quarantine folder '{dest}' is inside the dataset '{root}', so it would be read as data.",
            fix="Pass a folder outside the dataset, e.g. --quarantine ../quarantine.",
        )
    reasons = {}
    for f in report.findings:
        if f.action == "skip" and f.line is None:
            reasons.setdefault(f.path, f)
    moved: list[tuple[str, str]] = []
    records = []
    for path, f in sorted(reasons.items()):
        if not os.path.isfile(path):
            continue
        rel = os.path.relpath(path, root) if is_inside(root, path) else os.path.basename(path)
        target = dest / rel
        stem, suffix = os.path.splitext(str(target))
        n = 0
        while target.exists():
            n += 1
            target = Path(f"{stem}-{n}{suffix}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, target)
        moved.append((path, str(target)))
        records.append({"from": path, "to": str(target), "problem": f.code, "detail": f.detail})
    if records:
        log_file = dest / "quarantine.json"
        previous = []
        if log_file.is_file():
            try:
                previous = json.loads(log_file.read_text(encoding="utf-8")).get("moved", [])
            except (OSError, ValueError, AttributeError):
                previous = []
        atomic_write_json(log_file, {"moved": previous + records})
    return moved
