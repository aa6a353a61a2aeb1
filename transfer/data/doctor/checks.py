"""The data doctor's checks, and ``register``, the one place a check is added.

Checks are small functions registered per concern with ``@register(kind)``:

- ``"image"``: ``fn(info: ImageInfo, ctx) -> findings`` (one file);
- ``"target"``: ``fn(item: Item, ctx) -> findings`` (one sample and its
  annotation: the place for box and mask checks of future tasks);
- ``"dataset"``: ``fn(items: list[Item], ctx) -> findings`` (duplicates,
  balance, ...).

The built-in checks below cover unusable files, size, extension, color,
animation, EXIF orientation, exact and near duplicates, and class balance.
``transfer.data.doctor.diagnose.run_checks`` runs whatever is in ``CHECKS``.

Example:
    >>> @register("image")
    ... def wide(info, ctx):
    ...     if info.width and info.height and info.width > 4 * info.height:
    ...         yield finding(info.source, "layout", "a panorama")
    >>> wide in CHECKS["image"]
    True
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from transfer.core import imagesize
from transfer.data.findings import Finding, finding
from transfer.data.doctor.inspection import DEFAULT_MAX_PIXELS, MIN_SIDE, ImageInfo
from transfer.data.samples import class_indices

# Upscaled more than this many times to the input size: reported.
UPSCALE_WARNING = 4
# dHash bits (of 64) two images may differ in and still count as near duplicates.
NEAR_DUPLICATE_BITS = 4
# Largest class / smallest class above this: reported.
IMBALANCE_RATIO = 10
# A class with fewer usable images than this: reported.
FEW_IMAGES = 5
DEFAULT_IMAGE_SIZE = 224
_MAX_BUCKET = 2000


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
    annotated: bool = False  # box or mask annotations: an EXIF-rotated photo's are mapped into its stored frame


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
    if info.error is None and info.exif_orientation in _ORIENTATIONS and ctx.annotated:
        yield finding(
            info.source, "exif_annotation_frame",
            f"EXIF orientation {info.exif_orientation} ({_ORIENTATIONS[info.exif_orientation]} for display); the "
            "model sees the pixels as stored, and the annotations, taken as drawn on the image as displayed (unless "
            "their stated size is the stored one), are mapped into that frame; predict answers as displayed",
        )
    elif info.error is None and info.exif_orientation in _ORIENTATIONS:
        yield finding(
            info.source, "exif_orientation",
            f"EXIF orientation {info.exif_orientation} ({_ORIENTATIONS[info.exif_orientation]} for display); "
            "training and the export use the pixels as stored",
        )


def _class_of(target: Any, ctx: CheckContext) -> str:
    return ";".join(ctx.class_names[t] for t in class_indices(target))


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
        for t in class_indices(item.target):  # a box target counts each box
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
