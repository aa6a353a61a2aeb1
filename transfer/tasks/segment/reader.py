"""Run an exported segmenter on files, images or bytes; write its masks and draw them over the images.

The segmentation reader on ``transfer.serving.reader.ExportedModel`` (whose
loading, input limits, per-input refusals and serving loop it shares):
TensorFlow, NumPy, PIL (for the PNGs and overlays) and the standard library
only, everything else read from the export.

Results of ``predict_files`` are one plain dict per input file, in input order
(``predict_images``: the same without ``"file"``):

- ``{"file": path, "mask": uint8 array [height, width], "class_pixels": {name: share}}``:
  the class index of every pixel at the image's original resolution, and the
  share of the image's pixels each class takes (with ``probabilities=True``
  also ``"probabilities"``: float32 ``[height, width, C]``). Both are in the
  frame a viewer shows the photo: an EXIF-rotated photo's are turned (height
  and width swapped for orientations 5-8); ``predict_bytes`` and a raw TF
  Serving client get the pixels as stored (see ``transfer.core.orientation``).
- ``{"file": path, "error": message}`` for a file that cannot be used (see
  ``transfer.serving.reader``); one bad file never fails the others.

Memory: the export resizes one image's probabilities at a time; a batch holds
its images' masks (1 byte a pixel), so a 2048 x 2048 photo costs ~4 MB of
mask plus ~16 MB x C while its probabilities are resized.

Security: loading a SavedModel runs its graph; only load exports you trust.

Example:
    >>> segmenter = ExportedSegmenter.load("exports/membrane")
    >>> result = segmenter.predict_files(["0.png"])[0]
    >>> result["mask"].shape, result["class_pixels"]
    ((512, 512), {'membrane': 0.21, 'cell': 0.79})
    >>> write_mask_png(result["mask"], "masks/0.png")
    >>> segmenter.draw("0.png", result, out="drawn/0.png").size
    (512, 512)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transfer.core.errors import TransferError
from transfer.serving.frames import displayed_mask
from transfer.serving.reader import ExportedModel, _check_positive

MASK_OUTPUTS = ("mask", "height", "width")
PROBABILITIES_SIGNATURE = "serving_probabilities"
OVERLAY_ALPHA = 0.45  # the class colour's share of an overlay pixel
# A photo is a few megapixels: a few per batch keeps the masks and decoded images small.
DEFAULT_BATCH = 4


class ExportedSegmenter(ExportedModel):
    """A loaded segmentation export: ``class_names``, ``image_size``, ``metadata``, predict methods and ``draw``.

    Example:
        >>> segmenter = ExportedSegmenter.load("exports/camvid", max_pixels=50_000_000)
        >>> [m.shape for m in segmenter.predict_bytes([open("frame.png", "rb").read()])["mask"]]
        [(360, 480)]
    """

    task_title = "segmentation"
    kind = "a segmenter"
    writes = ("mask_file", "drawn")  # --out: the mask as a PNG of class values; --draw: the overlay
    draws = "the masks"

    def __init__(self, export_dir: Path, loaded, metadata: dict[str, Any], **limits):
        super().__init__(export_dir, loaded, metadata, **limits)
        self._require_outputs(MASK_OUTPUTS)

    def predict_bytes(self, images: Sequence[bytes], batch_size: int = DEFAULT_BATCH,
                      probabilities: bool = False) -> dict[str, list[np.ndarray]]:
        """``{"mask": [uint8 [h, w] per image]}`` at each image's original resolution (with
        ``probabilities``: also ``"probabilities"``, float32 ``[h, w, C]`` per image, from the
        export's ``serving_probabilities`` signature).

        Raises ``TransferError`` naming the positions of images that are refused
        (``predict_files`` gives one error per file instead).
        """
        _check_positive("batch_size", batch_size)
        names = MASK_OUTPUTS + (("probabilities",) if probabilities else ())
        signature = "serving_default"
        if probabilities:
            signature = self.metadata.get("probabilities_signature", PROBABILITIES_SIGNATURE)
            if signature not in self._loaded.signatures:
                raise TransferError(f"The export '{self.export_dir}' has no {signature!r} signature.",
                                    fix="Export the run again with this version of transfer.")
        out: dict[str, list[np.ndarray]] = {"mask": []}
        if probabilities:
            out["probabilities"] = []
        for batch in self._serve_batches(images, batch_size, names, signature=signature):
            # Each image's own rows and columns of the batch's padded masks.
            for row, (h, w) in enumerate(zip(batch["height"], batch["width"])):
                out["mask"].append(np.ascontiguousarray(batch["mask"][row, :h, :w]))
                if probabilities:
                    out["probabilities"].append(np.ascontiguousarray(batch["probabilities"][row, :h, :w]))
        return out

    def predict_files(self, paths: Sequence[str | os.PathLike], batch_size: int = DEFAULT_BATCH,
                      probabilities: bool = False, *, read_bytes: dict | None = None) -> list[dict[str, Any]]:
        """One result dict per file, in input order (see the module docstring). ``read_bytes``: a dict
        that receives each answered file's bytes by position (what ``transfer predict --draw`` draws).

        Example:
            >>> segmenter.predict_files(["0.png", "missing.png"])[1]
            {'file': 'missing.png', 'error': "File not found: 'missing.png'."}
        """
        return self._answer_files(paths, self._answering(batch_size, probabilities), read_bytes)

    def predict_images(self, images, batch_size: int = DEFAULT_BATCH, probabilities: bool = False):
        """``predict_files``'s answer for NumPy uint8 ``[H, W, 3]`` arrays or PIL images (their pixels
        as given; masks of their size), or encoded bytes: one dict for one image, a list for a list
        (or an ``[N, H, W, 3]`` array). A refused image gets ``{"error": message}``.

        Example:
            >>> segmenter.predict_images(np.zeros((360, 480, 3), np.uint8))["mask"].shape
            (360, 480)
        """
        return self._answer_images(images, self._answering(batch_size, probabilities))

    def _answering(self, batch_size: int, probabilities: bool):
        """The ``answer`` (encoded images -> result fields) of ``predict_files`` and ``predict_images``."""
        _check_positive("batch_size", batch_size)

        def answer(images):
            out = self.predict_bytes(images, batch_size=batch_size, probabilities=probabilities)
            results = []
            for row, (data, mask) in enumerate(zip(images, out["mask"])):
                # In the frame viewers show: an EXIF-rotated photo's mask turned from the stored pixels.
                mask = displayed_mask(data, mask)
                result = {"mask": mask, "class_pixels": class_pixels(mask, self.class_names)}
                if probabilities:
                    result["probabilities"] = displayed_mask(data, out["probabilities"][row])
                results.append(result)
            return results

        return answer

    def _answers(self, images: list[bytes]) -> list[dict[str, Any]]:
        return self._answering(DEFAULT_BATCH, False)(images)

    def drawing(self, data: bytes, result: dict[str, Any]):
        if "mask" not in result:
            raise TransferError("The result holds no mask to draw.", fix="Draw a result of this segmenter.")
        return overlay_drawing(data, result["mask"], self.class_names)

    def describe(self, result: dict[str, Any]) -> list[str]:
        """``transfer predict``'s line: see ``describe_result``."""
        return [describe_result(result)]

    def output_file(self, key: str, data: bytes, result: dict[str, Any]) -> bytes:
        """``"mask_file"``: the mask as a PNG of class values (``mask_png``); ``"drawn"``: the overlay."""
        return mask_png(result["mask"]) if key == "mask_file" else super().output_file(key, data, result)

    def output_note(self, key: str) -> str:
        legend = ", ".join(f"{i} {n}" for i, n in enumerate(self.class_names))
        return f" (PNG, pixel value = class index: {legend})" if key == "mask_file" else ""

    def answers_document(self, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The class names, and each result with its mask's size in place of the mask (the mask
        itself is the ``--out`` PNG)."""
        shown = []
        for r in results:
            shown.append({k: v for k, v in r.items() if k != "mask"})
            if "mask" in r:
                shown[-1]["height"], shown[-1]["width"] = (int(v) for v in r["mask"].shape)
        return {"export": str(self.export_dir), "class_names": self.class_names, "results": shown}


def class_pixels(mask: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    """The share of ``mask``'s pixels each class takes (every class listed, rounded to 4 places).

    Example:
        >>> class_pixels(np.array([[0, 1], [1, 1]], np.uint8), ["bg", "cell"])
        {'bg': 0.25, 'cell': 0.75}
    """
    counts = np.bincount(np.asarray(mask).ravel(), minlength=len(class_names))
    total = max(int(counts.sum()), 1)
    return {name: round(float(counts[i]) / total, 4) for i, name in enumerate(class_names)}


def describe_result(result: dict[str, Any]) -> str:
    """One line for ``transfer predict``: the classes by share, largest first.

    Example:
        >>> describe_result({"file": "a.png", "mask": np.zeros((2, 3)), "class_pixels": {"bg": 0.8, "cell": 0.2}})
        'a.png: 3x2 mask; bg 80.0%, cell 20.0%'
    """
    if "error" in result:
        return f"{result['file']}: ERROR {result['error']}"
    h, w = result["mask"].shape
    shares = sorted(result["class_pixels"].items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{name} {share:.1%}" for name, share in shares if share > 0)
    return f"{result['file']}: {w}x{h} mask; {shown}"


def write_mask_png(mask: np.ndarray, out_path: str | os.PathLike) -> Path:
    """Write a class mask as an 8-bit greyscale PNG of class values (atomically).

    Example:
        >>> write_mask_png(np.array([[0, 1]], np.uint8), "masks/a.png")
        PosixPath('masks/a.png')
    """
    from transfer.core.atomic import atomic_write_bytes

    out_path = Path(out_path)
    if out_path.suffix.lower() != ".png":
        raise TransferError(f"A mask is written as PNG (lossless); '{out_path}' is not a .png path.",
                            fix="Name the mask file NAME.png.")
    data = mask_png(mask)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(out_path, data)


def mask_png(mask: np.ndarray) -> bytes:
    """A class mask encoded as an 8-bit greyscale PNG of class values.

    Example:
        >>> mask_png(np.array([[0, 1]], np.uint8))[:4]
        b'\\x89PNG'
    """
    from PIL import Image

    from transfer.serving.drawing import encode_drawing

    return encode_drawing(Image.fromarray(np.asarray(mask, np.uint8)), ".png")


def class_color(index: int) -> tuple[int, int, int]:
    """The overlay colour of class ``index`` (detection's palette, cycled past ten classes)."""
    from transfer.serving.drawing import CLASS_COLORS

    return CLASS_COLORS[index % len(CLASS_COLORS)]


def draw_overlay(image: str | os.PathLike | bytes, mask: np.ndarray, class_names: Sequence[str],
                 out_path: str | os.PathLike, alpha: float = OVERLAY_ALPHA) -> Path:
    """Write ``image`` (a path, or the file's bytes as read) with ``mask`` blended over it to
    ``out_path`` (atomically; format from the suffix); see ``overlay_drawing``.

    Example:
        >>> draw_overlay("0.png", result["mask"], segmenter.class_names, "drawn/0.png")
        PosixPath('drawn/0.png')
    """
    from transfer.serving.drawing import save_drawing

    return save_drawing(overlay_drawing(image, mask, class_names, alpha), out_path)


def overlay_drawing(image: str | os.PathLike | bytes, mask: np.ndarray, class_names: Sequence[str],
                    alpha: float = OVERLAY_ALPHA):
    """``image`` as a PIL RGB image in the frame its viewer shows (EXIF orientation applied, see
    ``transfer.tasks.localize.reader.open_displayed``) with ``mask`` blended over it (one colour per class)
    and a legend of the classes it holds (colour, name, share of the pixels).

    Example:
        >>> overlay_drawing(open("0.png", "rb").read(), result["mask"], segmenter.class_names).size
        (512, 512)
    """
    from PIL import Image, ImageDraw, ImageFont

    from transfer.serving.drawing import open_displayed

    mask = np.asarray(mask)
    where = "" if isinstance(image, (bytes, bytearray, memoryview)) else f" '{image}'"
    image = np.asarray(open_displayed(image), np.float32)
    if image.shape[:2] != mask.shape:
        raise TransferError(f"The mask ({mask.shape[1]}x{mask.shape[0]}) does not fit the image{where} "
                            f"({image.shape[1]}x{image.shape[0]} as displayed).",
                            fix="Draw each image with its own mask.")
    colors = np.array([class_color(i) for i in range(max(len(class_names), int(mask.max(initial=0)) + 1))],
                      np.float32)
    blended = (1.0 - alpha) * image + alpha * colors[mask]
    drawn = Image.fromarray(np.clip(np.round(blended), 0, 255).astype(np.uint8))

    # The legend: a swatch, the name and the share of each class present, top left, scaled to the image.
    shares = class_pixels(mask, class_names)
    present = [i for i, name in enumerate(class_names) if shares[name] > 0]
    side = max(10, round(min(drawn.size) / 40))
    font = ImageFont.load_default(size=side)
    draw = ImageDraw.Draw(drawn)
    labels = [f"{class_names[i]} {shares[class_names[i]]:.1%}" for i in present]
    text_w = max((draw.textbbox((0, 0), label, font=font)[2] for label in labels), default=0)
    pad, line = side // 2, side + side // 2
    draw.rectangle([0, 0, 3 * pad + side + text_w, pad + line * len(present)], fill=(255, 255, 255))
    for row, (i, label) in enumerate(zip(present, labels)):
        top = pad + row * line
        draw.rectangle([pad, top, pad + side, top + side], fill=class_color(i), outline=(0, 0, 0))
        draw.text((2 * pad + side, top), label, fill=(0, 0, 0), font=font)
    return drawn
