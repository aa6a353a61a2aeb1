"""Small synthetic images for tests: class-dependent colors and stripes.

Each class gets its own base color and stripe direction/period, and each image
within a class a shifted stripe phase and a small brightness change, so
images of one class look alike, classes look different, and no two files are
byte-identical. Everything is deterministic (no randomness).

Example:
    >>> from tests.imagefactory import write_image_folder
    >>> paths = write_image_folder(tmp_path / "data", {"cat": 6, "dog": 5}, size=32)
    >>> sorted(p.parent.name for p in paths)[:1]
    ['cat']
    >>> write_image_folder(tmp_path / "split", {"cat": 4, "dog": 4}, val_counts={"cat": 2, "dog": 2})
    ... # writes split/train/{cat,dog}/ and split/val/{cat,dog}/
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

# Well-separated base colors (RGB); classes beyond these cycle with a darker tone.
PALETTE = (
    (220, 40, 40), (40, 180, 60), (40, 80, 220), (230, 200, 40), (170, 60, 200),
    (40, 200, 200), (240, 130, 30), (120, 120, 120), (250, 250, 250), (20, 20, 20),
)
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp"}


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    """(width, height) from an int or a (width, height) pair."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def image_array(class_index: int = 0, sample_index: int = 0, size: int | tuple[int, int] = 32) -> np.ndarray:
    """A ``(height, width, 3)`` uint8 image for a class and a sample.

    Example:
        >>> image_array(1, 0, size=(40, 20)).shape
        (20, 40, 3)
    """
    width, height = _size(size)
    base = np.array(PALETTE[class_index % len(PALETTE)], dtype=np.float32)
    if class_index >= len(PALETTE):
        base *= 0.6
    period = 4 + 2 * (class_index % 4)
    ys, xs = np.mgrid[0:height, 0:width]
    coord = ys if class_index % 2 == 0 else xs  # even classes: horizontal stripes; odd: vertical
    stripes = ((coord + sample_index) // (period // 2)) % 2  # the phase moves with the sample
    shade = 1.0 - 0.35 * stripes[..., None] - 0.01 * (sample_index % 10)
    return np.clip(base * shade, 0, 255).astype(np.uint8)


def encode_image(array: np.ndarray, fmt: str = "JPEG") -> bytes:
    """``array`` encoded as ``fmt`` (any PIL format name) bytes.

    Example:
        >>> encode_image(image_array(0, 0, 8), "PNG")[:4]
        b'\\x89PNG'
    """
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt.upper())
    return buffer.getvalue()


def write_image(
    path: str | Path, class_index: int = 0, sample_index: int = 0,
    size: int | tuple[int, int] = 32, fmt: str | None = None,
) -> Path:
    """Write one synthetic image to ``path`` (format from ``fmt`` or the extension); returns the path.

    Example:
        >>> write_image(tmp_path / "a.png", class_index=2).suffix
        '.png'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_array(class_index, sample_index, size)).save(path, format=fmt.upper() if fmt else None)
    return path


def write_class_images(
    folder: str | Path, class_index: int, count: int, *,
    size: int | tuple[int, int] = 32, fmt: str = "JPEG", start: int = 0, prefix: str = "img",
) -> list[Path]:
    """Write ``count`` images of class ``class_index`` into ``folder`` (named ``img_000.jpg``, ...).

    ``start`` offsets the sample index, so train and val images differ.

    Example:
        >>> [p.name for p in write_class_images(tmp_path / "cat", 0, 2, fmt="PNG")]
        ['img_000.png', 'img_001.png']
    """
    ext = EXTENSIONS.get(fmt.upper(), "." + fmt.lower())
    return [
        write_image(Path(folder) / f"{prefix}_{start + i:03d}{ext}", class_index, start + i, size, fmt)
        for i in range(count)
    ]


def write_image_folder(
    root: str | Path, counts: Mapping[str, int], *, size: int | tuple[int, int] = 32, fmt: str = "JPEG",
    val_counts: Mapping[str, int] | None = None, val_dirname: str = "val",
) -> list[Path]:
    """Write a folder-per-class dataset; returns the image paths, sorted.

    Class ``i`` of ``sorted(counts)`` gets color/pattern ``i``. Without
    ``val_counts``: ``root/<class>/``. With ``val_counts``: ``root/train/<class>/``
    (``counts`` images) and ``root/<val_dirname>/<class>/`` (``val_counts``).

    Example:
        >>> len(write_image_folder(tmp_path / "d", {"cat": 3, "dog": 2}, fmt="PNG"))
        5
    """
    root = Path(root)
    names = sorted(set(counts) | set(val_counts or {}))
    paths: list[Path] = []
    layout = [(root, counts)] if val_counts is None else [(root / "train", counts), (root / val_dirname, val_counts)]
    for offset, (base, class_counts) in enumerate(layout):
        for name, count in class_counts.items():
            # Val images start at 1000 so they are not copies of train images.
            paths += write_class_images(base / name, names.index(name), count, size=size, fmt=fmt, start=1000 * offset)
    return sorted(paths)


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    """Write a CSV file with ``header`` and ``rows``; returns its path.

    Example:
        >>> write_csv(tmp_path / "labels.csv", ["path", "label"], [["a.jpg", "cat"]]).name
        'labels.csv'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path
