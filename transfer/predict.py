"""Run an exported classifier on files or bytes, from the export folder alone.

This module imports only TensorFlow, NumPy and the standard library (plus
``transfer.errors``): no Keras, no model code. Everything it needs - graph,
weights, class names, image size - is inside the export.

Results of ``predict_files`` are one plain dict per input file, in input order:

- ``{"file": path, "predictions": [{"class": name, "score": s}, ...]}``, best
  first. Single-label: the ``top_k`` best classes. Multi-label: every class
  scoring at least ``threshold`` (0.5 by default) plus as many more as needed
  to show ``top_k`` (so a positive label is never cut off by ``top_k``), and
  ``"labels"``: the names scoring at least ``threshold`` (the decision).
- ``{"file": path, "error": message}`` for a file that is missing or cannot
  be decoded. One bad file never fails the others.

Example:
    >>> clf = ExportedClassifier.load("exports/flowers")
    >>> clf.predict_files(["rose.jpg"], top_k=2)
    [{'file': 'rose.jpg', 'predictions': [{'class': 'rose', 'score': 0.93},
                                          {'class': 'tulip', 'score': 0.05}]}]
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from transfer.errors import TransferError

logger = logging.getLogger(__name__)

SIGNATURE = "serving_default"
METADATA_PATH = os.path.join("assets", "transfer.json")
MULTI_LABEL_THRESHOLD = 0.5


class ExportedClassifier:
    """A loaded export: ``class_names``, ``image_size``, ``multi_label``, ``metadata`` and predict methods.

    Example:
        >>> clf = ExportedClassifier.load("exports/flowers")
        >>> scores = clf.predict_bytes([open("rose.jpg", "rb").read()])  # [1, C]
        >>> clf.class_names[scores[0].argmax()]
        'rose'
    """

    def __init__(self, export_dir: Path, loaded, metadata: dict[str, Any]):
        self.export_dir = export_dir
        self.metadata = metadata
        self.class_names: list[str] = list(metadata["class_names"])
        self.image_size: int = int(metadata["image_size"])
        self.multi_label: bool = bool(metadata.get("multi_label", False))
        self._loaded = loaded  # keeps the variables the signature reads alive
        self._serve = loaded.signatures[SIGNATURE]

    @classmethod
    def load(cls, export_dir: str | os.PathLike) -> "ExportedClassifier":
        """Load the export folder written by ``transfer.export.export_model``.

        Example:
            >>> clf = ExportedClassifier.load("exports/flowers")
        """
        export_dir = Path(export_dir)
        fix = "Pass the folder written by `transfer export` (it holds saved_model.pb and assets/)."
        if not export_dir.is_dir():
            raise TransferError(f"Export folder not found: '{export_dir}'.", fix=fix)
        if not (export_dir / "saved_model.pb").is_file():
            raise TransferError(f"Not a SavedModel: '{export_dir / 'saved_model.pb'}' is missing.", fix=fix)
        meta_file = export_dir / METADATA_PATH
        try:
            metadata = json.loads(meta_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TransferError(f"Not a transfer export: '{meta_file}' is missing.", fix=fix) from None
        except (OSError, ValueError) as e:
            raise TransferError(f"Cannot read export metadata '{meta_file}': {e}", fix=fix) from None
        if not isinstance(metadata, dict) or "class_names" not in metadata or "image_size" not in metadata:
            raise TransferError(f"Export metadata '{meta_file}' lacks class_names or image_size.", fix=fix)
        loaded = tf.saved_model.load(str(export_dir))
        if SIGNATURE not in loaded.signatures:
            raise TransferError(
                f"The SavedModel in '{export_dir}' has no {SIGNATURE!r} signature "
                f"(found: {sorted(loaded.signatures)}).",
                fix=fix,
            )
        logger.info("Loaded %d-class export from %s", len(metadata["class_names"]), export_dir)
        return cls(export_dir, loaded, metadata)

    def __repr__(self) -> str:
        return (
            f"ExportedClassifier('{self.export_dir}', classes={len(self.class_names)}, "
            f"image_size={self.image_size}, multi_label={self.multi_label})"
        )

    def predict_bytes(self, images: Sequence[bytes], batch_size: int = 32) -> np.ndarray:
        """Scores ``[N, C]`` (float32) for encoded JPEG/PNG/GIF/BMP images.

        Raises ``TransferError`` naming the positions of undecodable images
        (use ``predict_files`` to get per-file errors instead).

        Example:
            >>> clf.predict_bytes([open("rose.jpg", "rb").read()]).shape
            (1, 5)
        """
        _check_positive("batch_size", batch_size)
        images = list(images)
        out = [np.zeros((0, len(self.class_names)), np.float32)]
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            try:
                out.append(self._serve(image_bytes=tf.constant(batch, dtype=tf.string))["scores"].numpy())
            except tf.errors.InvalidArgumentError:
                bad = [start + i for i, data in enumerate(batch) if _decode_error(data) is not None]
                if not bad:
                    raise
                raise TransferError(
                    f"Cannot decode the images at positions {bad} as JPEG, PNG, GIF or BMP.",
                    fix="Check those inputs, or use predict_files to skip bad files with an error each.",
                ) from None
        return np.concatenate(out, axis=0)

    def predict_files(
        self,
        paths: Sequence[str | os.PathLike],
        top_k: int | None = 5,
        batch_size: int = 32,
        threshold: float = MULTI_LABEL_THRESHOLD,
    ) -> list[dict[str, Any]]:
        """One result dict per file, in input order (see the module docstring).

        ``top_k=None`` lists every class. ``threshold`` only matters for
        multi-label exports.

        Example:
            >>> clf.predict_files(["rose.jpg", "missing.jpg"], top_k=1)
            [{'file': 'rose.jpg', 'predictions': [{'class': 'rose', 'score': 0.93}]},
             {'file': 'missing.jpg', 'error': "File not found: 'missing.jpg'."}]
        """
        if top_k is not None:
            _check_positive("top_k", top_k)
        _check_positive("batch_size", batch_size)
        results: list[dict[str, Any]] = []
        good: list[tuple[int, bytes]] = []
        for path in paths:
            data, error = _read_image(path)
            results.append({"file": str(path), "error": error} if error else {"file": str(path)})
            if not error:
                good.append((len(results) - 1, data))
        if good:
            scores = self.predict_bytes([data for _, data in good], batch_size=batch_size)
            for (index, _), row in zip(good, scores):
                results[index].update(
                    rank_scores(row, self.class_names, top_k=top_k, multi_label=self.multi_label, threshold=threshold)
                )
        bad = sum("error" in r for r in results)
        if bad:
            logger.warning("%d of %d files could not be read as images", bad, len(results))
        return results


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


def _read_image(path) -> tuple[bytes | None, str | None]:
    """The file's bytes, or an error message naming the file."""
    p = Path(path)
    if not p.exists():
        return None, f"File not found: '{path}'."
    if not p.is_file():
        return None, f"Not a file: '{path}'."
    try:
        data = p.read_bytes()
    except OSError as e:
        return None, f"Cannot read '{path}': {e.strerror or e}."
    error = _decode_error(data)
    if error:
        return None, f"Cannot decode '{path}' as an image (JPEG, PNG, GIF or BMP): {error}"
    return data, None


def _decode_error(data: bytes) -> str | None:
    # Decoded eagerly, one image at a time, with the op the serving graph uses,
    # so a bad file is found here instead of failing the whole batch later.
    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError, tf.errors.UnimplementedError) as e:
        return (e.message or str(e)).strip().splitlines()[0]
    return None


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
