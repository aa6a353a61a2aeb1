"""Run an exported localizer on files, images or bytes, and draw its answers.

The localization reader on ``transfer.serving.reader.ExportedModel`` (whose
loading, input limits and per-input refusals it shares): TensorFlow, NumPy,
PIL (for ``draw``) and the standard library only, everything else read from
the export.

Results of ``predict_files`` are one plain dict per input file, in input order
(``predict_images``: the same without ``"file"``):

- ``{"file": path, "box": [xmin, ymin, xmax, ymax], "class": name, "score": s}``:
  the box in the original image's pixels; ``score`` the class's probability
  (1.0 for a single-class export: it always answers one box).
- ``{"file": path, "error": message}`` for a file that cannot be used (see
  ``transfer.serving.reader``); one bad file never fails the others.

Frames: ``predict_files`` answers in the frame a viewer shows the photo (its
EXIF orientation applied, as annotations are drawn and ``--draw`` draws); the
model sees, and ``predict_bytes`` and a raw TF Serving client get, the pixels
as stored (send EXIF-transposed bytes to get the displayed frame from them).
See ``transfer.core.orientation``.

Security: loading a SavedModel runs its graph; only load exports you trust.

Example:
    >>> localizer = ExportedLocalizer.load("exports/raccoon")
    >>> localizer.predict_files(["raccoon-1.jpg"])
    [{'file': 'raccoon-1.jpg', 'box': [81.2, 88.9, 519.7, 410.3], 'class': 'raccoon', 'score': 1.0}]
    >>> localizer.draw("raccoon-1.jpg", out="drawn/raccoon-1.jpg").size
    (650, 417)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transfer.core.errors import TransferError
from transfer.serving.drawing import drawn_name, open_displayed, save_drawing
from transfer.serving.frames import displayed_boxes
from transfer.serving.reader import ExportedModel, _check_positive


BOX_OUTPUTS = ("box", "class_name", "score")


class ExportedLocalizer(ExportedModel):
    """A loaded localization export: ``class_names``, ``image_size``, ``metadata``, predict methods and ``draw``.

    Example:
        >>> localizer = ExportedLocalizer.load("exports/raccoon", max_pixels=50_000_000)
        >>> out = localizer.predict_bytes([open("raccoon-1.jpg", "rb").read()])
        >>> out["box"].shape, out["class_name"][0]
        ((1, 4), 'raccoon')
    """

    task_title = "localization"
    kind = "a localizer"
    draws = "the boxes"

    def __init__(self, export_dir: Path, loaded, metadata: dict[str, Any], **limits):
        super().__init__(export_dir, loaded, metadata, **limits)
        self._require_outputs(BOX_OUTPUTS)

    def predict_bytes(self, images: Sequence[bytes], batch_size: int = 32) -> dict[str, np.ndarray]:
        """``{"box": float32 [N, 4] (original pixels), "class_name": str [N], "score": float32 [N]}``.

        Raises ``TransferError`` naming the positions of images that are refused
        (``predict_files`` gives one error per file instead).
        """
        _check_positive("batch_size", batch_size)
        batches = self._serve_batches(images, batch_size, BOX_OUTPUTS)
        if not batches:
            return {"box": np.zeros((0, 4), np.float32), "class_name": np.zeros((0,), str),
                    "score": np.zeros((0,), np.float32)}
        out = {name: np.concatenate([b[name] for b in batches]) for name in BOX_OUTPUTS}
        out["class_name"] = np.array([name.decode("utf-8") for name in out["class_name"]])
        return out

    def _answering(self, batch_size: int):
        """The ``answer`` (encoded images -> result fields) of ``predict_files`` and ``predict_images``."""
        _check_positive("batch_size", batch_size)

        def answer(images):
            out = self.predict_bytes(images, batch_size=batch_size)
            # The box in the frame viewers show (an EXIF-rotated photo's turned from the stored pixels).
            return [{"box": displayed_boxes(data, [out["box"][row]])[0], "class": str(out["class_name"][row]),
                     "score": float(out["score"][row])} for row, data in enumerate(images)]

        return answer

    def drawing(self, data: bytes, result: dict[str, Any]):
        return box_drawing(data, result)

    def describe(self, result: dict[str, Any]) -> list[str]:
        """``transfer predict``'s line: the class, score and box (whole pixels).

        Example:
            >>> localizer.describe({"file": "a.jpg", "box": [1, 2, 30, 40], "class": "raccoon", "score": 1.0})
            ['a.jpg: raccoon 1.000 box (1, 2, 30, 40) (xmin, ymin, xmax, ymax in pixels)']
        """
        box = ", ".join(f"{v:.0f}" for v in result["box"])
        return [f"{result['file']}: {result['class']} {result['score']:.3f} box ({box}) "
                "(xmin, ymin, xmax, ymax in pixels)"]


def describe_result(result: dict[str, Any]) -> str:
    """One line for ``transfer predict``.

    Example:
        >>> describe_result({"file": "a.jpg", "box": [1, 2, 30, 40], "class": "raccoon", "score": 1.0})
        'a.jpg: raccoon 1.000 at (1, 2, 30, 40)'
    """
    if "error" in result:
        return f"{result['file']}: error: {result['error']}"
    box = ", ".join(f"{v:g}" for v in result["box"])
    return f"{result['file']}: {result['class']} {result['score']:.3f} at ({box})"


def draw_box(image: str | os.PathLike | bytes, result: dict[str, Any], out_path: str | os.PathLike) -> Path:
    """Write ``image`` (a path, or the file's bytes as read) with ``result``'s box and label drawn to
    ``out_path`` (atomically); see ``box_drawing``.

    The format follows ``out_path``'s suffix (JPEG for ``.jpg``/``.jpeg``, else PNG
    unless PIL knows the suffix). A result holding an ``"error"`` is refused.

    Example:
        >>> draw_box("raccoon-1.jpg", localizer.predict_files(["raccoon-1.jpg"])[0], "drawn/raccoon-1.jpg")
        PosixPath('drawn/raccoon-1.jpg')
    """
    return save_drawing(box_drawing(image, result), out_path)


def box_drawing(image: str | os.PathLike | bytes, result: dict[str, Any]):
    """``image`` as a PIL RGB image in the frame its viewer shows (see ``open_displayed``), with
    ``result``'s box and label drawn (``transfer predict --draw`` encodes it with ``encode_drawing``).

    Example:
        >>> box_drawing(open("a.jpg", "rb").read(), {"file": "a.jpg", "box": [1, 2, 30, 40], "class": "x"}).size
        (64, 48)
    """
    from PIL import ImageDraw

    if "error" in result or "box" not in result:
        raise TransferError(f"No box to draw for '{drawn_name(image, result)}': "
                            f"{result.get('error', 'no box in the result')}.",
                            fix="Draw only results that have a box.")
    image = open_displayed(image)
    draw = ImageDraw.Draw(image)
    xmin, ymin, xmax, ymax = (float(v) for v in result["box"])
    # A line about 0.5% of the image's side: visible on a phone photo and on a thumbnail.
    width = max(2, round(max(image.size) / 200))
    draw.rectangle([xmin, ymin, max(xmax - 1, xmin), max(ymax - 1, ymin)], outline=(255, 40, 40), width=width)
    label = f"{result.get('class', '')} {float(result.get('score', 1.0)):.2f}".strip()
    text_box = draw.textbbox((0, 0), label)
    text_h = text_box[3] - text_box[1] + 4
    top = ymin - text_h if ymin >= text_h else ymin  # above the box, or inside it at the image's top
    draw.rectangle([xmin, top, xmin + text_box[2] - text_box[0] + 6, top + text_h], fill=(255, 40, 40))
    draw.text((xmin + 3, top + 1), label, fill=(255, 255, 255))
    return image
