"""Run an exported classifier on files, images or bytes, and draw its answer.

The classification reader on ``transfer.serving.reader.ExportedModel`` (whose
loading, input limits and per-input refusals it shares): TensorFlow, NumPy,
PIL (for ``draw``) and the standard library only, everything else read from
the export.

Results of ``predict_files`` are one plain dict per input file, in input order
(``predict_images``: the same without ``"file"``):

- ``{"file": path, "predictions": [{"class": name, "score": s}, ...]}``, best
  first. Single-label: the ``top_k`` best classes. Multi-label: every class
  scoring at least ``threshold`` (the export's, 0.5 by default) plus as many
  more as needed to show ``top_k`` (so a positive label is never cut off by
  ``top_k``), and ``"labels"``: the names scoring at least ``threshold``.
- ``{"file": path, "error": message}`` for a file that cannot be used (see
  ``transfer.serving.reader``); one bad file never fails the others.

Security: loading a SavedModel runs its graph; only load exports you trust.

Example:
    >>> clf = ExportedClassifier.load("exports/flowers")
    >>> clf.predict_files(["rose.jpg"], top_k=2)
    [{'file': 'rose.jpg', 'predictions': [{'class': 'rose', 'score': 0.93},
                                          {'class': 'tulip', 'score': 0.05}]}]
    >>> clf.draw("rose.jpg", out="drawn/rose.png").size
    (128, 128)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transfer.serving.reader import ExportedModel, _check_positive
from transfer.tasks.classify.model import MULTI_LABEL_THRESHOLD


class ExportedClassifier(ExportedModel):
    """A loaded classification export: ``class_names``, ``image_size``, ``multi_label``, ``threshold``,
    ``metadata``, predict methods and ``draw``.

    Example:
        >>> clf = ExportedClassifier.load("exports/flowers")
        >>> scores = clf.predict_bytes([open("rose.jpg", "rb").read()])  # [1, C]
        >>> clf.class_names[scores[0].argmax()]
        'rose'
        >>> clf.predict_images(np.asarray(PIL.Image.open("rose.jpg")), top_k=1)["predictions"]
        [{'class': 'rose', 'score': 0.93}]
    """

    task_title = "classification"
    kind = "a classifier"
    predict_options = ("top_k",)
    draws = "the best class"

    def __init__(self, export_dir: Path, loaded, metadata: dict[str, Any], **limits):
        super().__init__(export_dir, loaded, metadata, **limits)
        self.multi_label: bool = bool(metadata.get("multi_label", False))
        # The export's own decision threshold (its ``labels`` output); older exports: 0.5.
        self.threshold: float = float(metadata.get("threshold", MULTI_LABEL_THRESHOLD))
        self._require_outputs(("scores",))

    def __repr__(self) -> str:
        return (
            f"ExportedClassifier('{self.export_dir}', classes={len(self.class_names)}, "
            f"image_size={self.image_size}, multi_label={self.multi_label})"
        )

    def predict_bytes(self, images: Sequence[bytes], batch_size: int = 32) -> np.ndarray:
        """Scores ``[N, C]`` (float32) for encoded JPEG/PNG/GIF/BMP/WebP images.

        Raises ``TransferError`` naming the positions of images that are too
        large, too small or undecodable (use ``predict_files`` to get one error
        per file instead). Sizes are checked from the headers before anything is
        decoded.

        Example:
            >>> clf.predict_bytes([open("rose.jpg", "rb").read()]).shape
            (1, 5)
        """
        _check_positive("batch_size", batch_size)
        batches = self._serve_batches(images, batch_size, ("scores",))
        return np.concatenate([np.zeros((0, len(self.class_names)), np.float32)]
                              + [b["scores"] for b in batches], axis=0)

    def predict_files(
        self,
        paths: Sequence[str | os.PathLike],
        top_k: int | None = 5,
        batch_size: int = 32,
        threshold: float | None = None,
        *,
        read_bytes: dict | None = None,
    ) -> list[dict[str, Any]]:
        """One result dict per file, in input order (see the module docstring).

        ``top_k=None`` lists every class. ``threshold`` only matters for
        multi-label exports (default: the export's, as its ``labels`` output uses).
        ``read_bytes``: a dict that receives each answered file's bytes by position.

        Example:
            >>> clf.predict_files(["rose.jpg", "missing.jpg"], top_k=1)
            [{'file': 'rose.jpg', 'predictions': [{'class': 'rose', 'score': 0.93}]},
             {'file': 'missing.jpg', 'error': "File not found: 'missing.jpg'."}]
        """
        return self._answer_files(paths, self._answering(top_k, batch_size, threshold), read_bytes)

    def predict_images(self, images, top_k: int | None = 5, batch_size: int = 32,
                       threshold: float | None = None):
        """``predict_files``'s answer for NumPy uint8 ``[H, W, 3]`` arrays or PIL images (their pixels
        as given), or encoded bytes: one dict for one image, a list for a list (or an
        ``[N, H, W, 3]`` array). A refused image gets ``{"error": message}``.

        Example:
            >>> clf.predict_images(np.zeros((64, 64, 3), np.uint8), top_k=1)
            {'predictions': [{'class': 'daisy', 'score': 0.41}]}
        """
        return self._answer_images(images, self._answering(top_k, batch_size, threshold))

    def _answering(self, top_k, batch_size, threshold):
        """The ``answer`` (encoded images -> result fields) of ``predict_files`` and ``predict_images``."""
        if top_k is not None:
            _check_positive("top_k", top_k)
        _check_positive("batch_size", batch_size)
        threshold = self.threshold if threshold is None else float(threshold)

        def answer(images):
            scores = self.predict_bytes(images, batch_size=batch_size)
            return [rank_scores(row, self.class_names, top_k=top_k, multi_label=self.multi_label,
                                threshold=threshold) for row in scores]

        return answer

    def _answers(self, images: list[bytes]) -> list[dict[str, Any]]:
        return self._answering(5, 32, None)(images)

    def drawing(self, data: bytes, result: dict[str, Any]):
        return label_drawing(data, result)

    def describe(self, result: dict[str, Any]) -> list[str]:
        """``transfer predict``'s line: the classes and scores (multi-label: the labels first).

        Example:
            >>> clf.describe({"file": "a.jpg", "predictions": [{"class": "rose", "score": 0.93}]})
            ['a.jpg: rose 0.930']
        """
        shown = ", ".join(f"{p['class']} {p['score']:.3f}" for p in result["predictions"])
        if self.multi_label:
            labels = ", ".join(result["labels"]) or "(none)"
            shown = f"labels {labels} (score >= {self.threshold:g}); scores {shown}"
        return [f"{result['file']}: {shown}"]


def label_drawing(image: str | os.PathLike | bytes, result: dict[str, Any]):
    """``image`` as a PIL RGB image in the frame its viewer shows with ``result``'s answer (its
    ``labels`` for multi-label, else the best class and score) on a band at the top left.

    Example:
        >>> label_drawing(open("a.jpg", "rb").read(), {"predictions": [{"class": "rose", "score": 0.9}]}).size
        (128, 128)
    """
    from PIL import ImageDraw, ImageFont

    from transfer.core.errors import TransferError
    from transfer.serving.drawing import drawn_name, open_displayed

    if "error" in result or not result.get("predictions"):
        raise TransferError(f"No class to draw for '{drawn_name(image, result)}': "
                            f"{result.get('error', 'no predictions in the result')}.",
                            fix="Draw only results that have predictions.")
    image = open_displayed(image)
    best = result["predictions"][0]
    label = f"{best['class']} {float(best['score']):.2f}"
    if "labels" in result:
        label = ", ".join(result["labels"]) or "(no label)"
    # Text about 1/16 of the image's short side: readable on a thumbnail and on a photo.
    font = ImageFont.load_default(size=max(10, round(min(image.size) / 16)))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((3, 2), label, font=font)
    draw.rectangle([0, 0, right + 3, bottom + 3], fill=(230, 25, 75))
    draw.text((3, 2), label, fill=(255, 255, 255), font=font)
    return image


def rank_scores(
    scores: np.ndarray,
    class_names: Sequence[str],
    top_k: int | None = 5,
    multi_label: bool = False,
    threshold: float = MULTI_LABEL_THRESHOLD,
) -> dict[str, Any]:
    """Turn one row of scores into ``{"predictions": [...]}`` (+ ``"labels"`` for multi-label).

    Example:
        >>> rank_scores(np.array([0.1, 0.7, 0.2]), ["a", "b", "c"], top_k=2)
        {'predictions': [{'class': 'b', 'score': 0.7}, {'class': 'c', 'score': 0.2}]}
    """
    scores = np.asarray(scores, dtype=np.float64)
    # Stable sort on the negated scores: ties keep class order, so results are reproducible.
    order = np.argsort(-scores, kind="stable")
    keep = len(order) if top_k is None else min(top_k, len(order))
    result: dict[str, Any] = {}
    if multi_label:
        positives = [int(i) for i in order if scores[i] >= threshold]
        keep = max(keep, len(positives))
        result["labels"] = [class_names[i] for i in positives]
    result = {"predictions": [{"class": class_names[i], "score": float(scores[i])} for i in order[:keep]], **result}
    return result
