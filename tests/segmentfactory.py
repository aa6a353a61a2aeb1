"""Small synthetic segmentation data: coloured shapes on a dark image, the same shapes in the mask.

Class 0 is the background (dark), class 1 a red rectangle, class 2 a blue
ellipse; with ``void`` a band of value ``VOID`` (unlabelled, to be ignored)
lies over part of the image, painted like a red shape so that a metric that
forgot to ignore it would count it wrong. Deterministic for a given index.

Example:
    >>> image, mask = shapes_pair(0, (64, 48))
    >>> write_mask_folder(tmp_path / "data", 12, size=(64, 48))   # images/ masks/ classes.txt
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

BACKGROUND = (30, 30, 30)
COLORS = {1: (220, 40, 40), 2: (40, 80, 220)}
CLASS_NAMES = ("background", "red", "blue")
VOID = 3


def shapes_pair(index: int, size: tuple[int, int] = (64, 64), *, void: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(image uint8 [H, W, 3], mask uint8 [H, W])`` for ``size = (width, height)``."""
    width, height = size
    rng = np.random.default_rng(index)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    mask = np.zeros((height, width), np.uint8)
    # A red rectangle, 25-45% of each side, anywhere.
    w, h = (int(width * rng.uniform(0.25, 0.45)), int(height * rng.uniform(0.25, 0.45)))
    x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
    image[y:y + h, x:x + w] = COLORS[1]
    mask[y:y + h, x:x + w] = 1
    # A blue ellipse over it (drawn second: it wins where they overlap).
    rows, cols = np.mgrid[0:height, 0:width]
    cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
    rx, ry = rng.uniform(0.12, 0.22) * width, rng.uniform(0.12, 0.22) * height
    inside = ((cols - cx) / rx) ** 2 + ((rows - cy) / ry) ** 2 <= 1.0
    image[inside] = COLORS[2]
    mask[inside] = 2
    if void:
        band = slice(height - max(2, height // 8), height)  # the bottom eighth: red pixels, unlabelled
        image[band] = COLORS[1]
        mask[band] = VOID
    return image, mask


def write_mask_folder(root: Path, count: int, *, size: tuple[int, int] = (64, 64), start: int = 0,
                      void: bool = False, sizes: list[tuple[int, int]] | None = None) -> Path:
    """``root/images/imgN.png`` + ``root/masks/imgN.png`` (+ ``classes.txt``); returns ``root``.

    ``sizes``: one ``(width, height)`` per image instead of ``size`` for all.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, mask = shapes_pair(start + i, sizes[i] if sizes else size, void=void)
        Image.fromarray(image).save(root / "images" / f"img{start + i}.png")
        Image.fromarray(mask).save(root / "masks" / f"img{start + i}.png")
    (root / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n", encoding="utf-8")
    return root


def nearest_color(image: np.ndarray, palette: dict[int, tuple[int, int, int]]) -> np.ndarray:
    """For each pixel, the key of the palette colour nearest to it (int array ``[H, W]``)."""
    keys = list(palette)
    colors = np.array([palette[k] for k in keys], np.float32)
    distance = ((image[..., None, :].astype(np.float32) - colors) ** 2).sum(-1)
    return np.array(keys)[distance.argmin(-1)]
