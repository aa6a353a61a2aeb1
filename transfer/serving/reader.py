"""Run an exported classifier on files or bytes, from the export folder alone.

This module imports only TensorFlow, NumPy and the standard library (plus
``transfer.core.errors`` and the stdlib-only ``transfer.core.imagesize``): no Keras, no
model code. Everything it needs - graph,
weights, class names, image size - is inside the export.

Results of ``predict_files`` are one plain dict per input file, in input order:

- ``{"file": path, "predictions": [{"class": name, "score": s}, ...]}``, best
  first. Single-label: the ``top_k`` best classes. Multi-label: every class
  scoring at least ``threshold`` (0.5 by default) plus as many more as needed
  to show ``top_k`` (so a positive label is never cut off by ``top_k``), and
  ``"labels"``: the names scoring at least ``threshold`` (the decision).
- ``{"file": path, "error": message}`` for a file that is missing, empty,
  not an image, too large (over ``max_bytes`` bytes, or a header declaring
  more than ``max_pixels`` pixels: a decompression bomb is refused before it
  is decoded), smaller than 8x8 pixels, or that cannot be decoded. One bad
  file never fails the others.

Security: loading a SavedModel runs the graph stored in it, with the rights of
the calling process. Only load exports you made or trust; nothing here
unpickles anything, but a hostile graph needs no pickle to do harm.

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
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

import transfer.core.imagesize as imagesize
from transfer.core.errors import TransferError
from transfer.core.regular_files import read_regular

logger = logging.getLogger(__name__)

SIGNATURE = "serving_default"
METADATA_PATH = os.path.join("assets", "transfer.json")
MULTI_LABEL_THRESHOLD = 0.5
# Inputs are untrusted here: a 40-megapixel image decodes to 120 MB (and the
# float32 resize to ~500 MB), larger than any ordinary camera photo needs.
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 100_000_000
_MAX_METADATA_BYTES = 64 << 20  # transfer.json lists class names: far smaller
_LIMIT_FIX = "pass --max-megapixels / --max-megabytes (max_pixels= / max_bytes= in Python) to allow it if you trust it"


def export_task(export_dir: str | os.PathLike) -> str:
    """The ``task`` an export's ``assets/transfer.json`` records (``"classification"`` when it
    cannot be read: ``ExportedClassifier.load`` then says what is wrong).

    Example:
        >>> export_task("exports/raccoon")
        'localization'
    """
    try:
        metadata = json.loads(read_regular(Path(export_dir) / METADATA_PATH, _MAX_METADATA_BYTES))
    except (OSError, ValueError):
        return "classification"
    task = metadata.get("task") if isinstance(metadata, dict) else None
    return task if isinstance(task, str) else "classification"


class ExportedClassifier:
    """A loaded export: ``class_names``, ``image_size``, ``multi_label``, ``metadata`` and predict methods.

    Example:
        >>> clf = ExportedClassifier.load("exports/flowers")
        >>> scores = clf.predict_bytes([open("rose.jpg", "rb").read()])  # [1, C]
        >>> clf.class_names[scores[0].argmax()]
        'rose'
    """

    def __init__(
        self, export_dir: Path, loaded, metadata: dict[str, Any], *,
        max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_BYTES,
    ):
        _check_positive("max_pixels", max_pixels)
        _check_positive("max_bytes", max_bytes)
        self.export_dir = export_dir
        self.max_pixels = int(max_pixels)  # larger images are refused before decoding
        self.max_bytes = int(max_bytes)  # larger files are refused before reading
        self.metadata = metadata
        self.class_names: list[str] = list(metadata["class_names"])
        self.image_size: int = int(metadata["image_size"])
        self.multi_label: bool = bool(metadata.get("multi_label", False))
        # The export's own decision threshold (its ``labels`` output); older exports: 0.5.
        self.threshold: float = float(metadata.get("threshold", MULTI_LABEL_THRESHOLD))
        self._loaded = loaded  # keeps the variables the signature reads alive
        self._serve = loaded.signatures[SIGNATURE]

    def _require_outputs(self, names: Sequence[str], kind: str, fix: str) -> None:
        """Refuse an export whose default signature lacks ``names`` (another task's export): for the
        task readers (``ExportedLocalizer``, ...); ``kind`` says what it is not, e.g. "a localizer"."""
        outputs = set(self._serve.structured_outputs)
        missing = [name for name in names if name not in outputs]
        if missing:
            raise TransferError(
                f"The export '{self.export_dir}' has no {missing} output(s): it is not {kind} "
                f"(its task: {self.metadata.get('task', 'unknown')!r}).", fix=fix)

    @classmethod
    def load(
        cls, export_dir: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> "ExportedClassifier":
        """Load the export folder written by ``transfer.serving.export.export_model``.

        ``max_pixels`` and ``max_bytes`` bound the inputs it accepts (see the
        module docstring). Loading runs the SavedModel's graph: only load
        exports you trust.

        Example:
            >>> clf = ExportedClassifier.load("exports/flowers", max_pixels=50_000_000)
        """
        export_dir = Path(export_dir)
        fix = "Pass the folder written by `transfer export` (it holds saved_model.pb and assets/)."
        if not export_dir.is_dir():
            raise TransferError(f"Export folder not found: '{export_dir}'.", fix=fix)
        if not (export_dir / "saved_model.pb").is_file():
            raise TransferError(f"Not a SavedModel: '{export_dir / 'saved_model.pb'}' is missing.", fix=fix)
        meta_file = export_dir / METADATA_PATH
        try:
            metadata = json.loads(read_regular(meta_file, _MAX_METADATA_BYTES))  # a FIFO is refused, not read
        except FileNotFoundError:
            raise TransferError(f"Not a transfer export: '{meta_file}' is missing.", fix=fix) from None
        except (OSError, ValueError) as e:
            raise TransferError(f"Cannot read export metadata '{meta_file}': {e}", fix=fix) from None
        if not isinstance(metadata, dict) or "class_names" not in metadata or "image_size" not in metadata:
            raise TransferError(f"Export metadata '{meta_file}' lacks class_names or image_size.", fix=fix)
        from transfer.engine.artifact_loading import export_fix, load_saved_model

        loaded = load_saved_model(export_dir, fix=export_fix(export_dir, metadata.get("run_dir")))
        if SIGNATURE not in loaded.signatures:
            raise TransferError(
                f"The SavedModel in '{export_dir}' has no {SIGNATURE!r} signature "
                f"(found: {sorted(loaded.signatures)}).",
                fix=fix,
            )
        logger.info("Loaded %d-class export from %s", len(metadata["class_names"]), export_dir)
        return cls(export_dir, loaded, metadata, max_pixels=max_pixels, max_bytes=max_bytes)

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

    def _serve_batches(self, images: Sequence[bytes], batch_size: int, outputs: Sequence[str],
                       signature: str = SIGNATURE) -> list[dict]:
        """The bytes signature's ``outputs`` (NumPy), batch by batch, for every task's ``predict_bytes``
        (``signature``: another ``image_bytes`` signature of the export, e.g. ``serving_probabilities``).

        Raises one ``TransferError`` naming the positions of the images that are
        refused (headers, checked before anything is decoded) or undecodable
        (each image decoded on its own only when its batch fails).
        """
        images = [bytes(data) for data in images]
        # Header checks first (cheap, and a bomb must never reach the decoder) ...
        problems = {i: p for i, p in enumerate(map(self._refuse, images)) if p}
        serve = self._serve if signature == SIGNATURE else self._loaded.signatures[signature]
        batches = []
        for start in range(0, len(images), batch_size):
            if problems:
                break
            batch = images[start : start + batch_size]
            try:
                served = serve(image_bytes=tf.constant(batch, dtype=tf.string))
            except tf.errors.InvalidArgumentError:
                # ... then, only when the batch fails, a per-image decode to name the culprits.
                problems = {start + i: p for i, p in enumerate(map(_decode_error, batch)) if p}
                if not problems:
                    raise
                continue
            batches.append({name: served[name].numpy() for name in outputs})
        if problems:
            listed = "; ".join(f"{i}: {problem}" for i, problem in list(problems.items())[:10])
            raise TransferError(
                f"Cannot use the images at positions {sorted(problems)}: {listed}.",
                fix="Check those inputs, or use predict_files to get an error per file and answers for the rest.",
            )
        return batches

    def _refuse(self, data: bytes) -> str | None:
        """Why ``data`` is refused before decoding (size, format, header), or None."""
        if len(data) > self.max_bytes:
            return f"{len(data) / 1e6:.1f} MB is over the limit of {self.max_bytes / 1e6:g} MB; {_LIMIT_FIX}"
        return check_image_bytes(data, max_pixels=self.max_pixels)

    def predict_files(
        self,
        paths: Sequence[str | os.PathLike],
        top_k: int | None = 5,
        batch_size: int = 32,
        threshold: float | None = None,
    ) -> list[dict[str, Any]]:
        """One result dict per file, in input order (see the module docstring).

        ``top_k=None`` lists every class. ``threshold`` only matters for
        multi-label exports (default: the export's, as its ``labels`` output uses).

        Example:
            >>> clf.predict_files(["rose.jpg", "missing.jpg"], top_k=1)
            [{'file': 'rose.jpg', 'predictions': [{'class': 'rose', 'score': 0.93}]},
             {'file': 'missing.jpg', 'error': "File not found: 'missing.jpg'."}]
        """
        if top_k is not None:
            _check_positive("top_k", top_k)
        _check_positive("batch_size", batch_size)
        threshold = self.threshold if threshold is None else float(threshold)

        def answer(images):
            scores = self.predict_bytes(images, batch_size=batch_size)
            return [rank_scores(row, self.class_names, top_k=top_k, multi_label=self.multi_label,
                                threshold=threshold) for row in scores]

        return self._answer_files(paths, answer)

    def _answer_files(self, paths, answer, read_bytes: dict | None = None) -> list[dict[str, Any]]:
        """One dict per file, in order: ``{"file", "error"}`` for a file that cannot be used, else
        ``{"file", **fields}`` with ``fields`` from ``answer(list of image bytes) -> list of dicts``
        (called once, on the readable files; every task's ``predict_files`` goes through here).
        ``read_bytes``: a dict that receives each answered file's bytes by position, so that
        ``transfer predict --draw`` draws what was answered even if the file changes or vanishes."""
        results: list[dict[str, Any]] = []
        good: list[tuple[int, bytes]] = []
        for path in paths:
            data, error = self._read_image(path)
            results.append({"file": str(path), "error": error} if error else {"file": str(path)})
            if not error:
                good.append((len(results) - 1, data))
        if good:
            for (index, _), fields in zip(good, answer([data for _, data in good])):
                results[index].update(fields)
            if read_bytes is not None:
                read_bytes.update(good)
        bad = sum("error" in r for r in results)
        if bad:
            logger.warning("%d of %d files could not be read as images", bad, len(results))
        return results

    def _read_image(self, path) -> tuple[bytes | None, str | None]:
        """The file's bytes, or an error message naming the file."""
        p = Path(path)
        if not p.exists():
            return None, f"File not found: '{path}'."
        if not p.is_file():
            return None, f"Not a file: '{path}'."
        try:
            size = p.stat().st_size
            if size > self.max_bytes:
                return None, (
                    f"'{path}' is {size / 1e6:.1f} MB, over the limit of {self.max_bytes / 1e6:g} MB; {_LIMIT_FIX}."
                )
            data = p.read_bytes()
        except OSError as e:
            return None, f"Cannot read '{path}': {e.strerror or e}."
        refused = check_image_bytes(data, max_pixels=self.max_pixels)
        if refused:
            limit = "over the limit" in refused or "too small" in refused
            return None, f"Refused '{path}': {refused}." if limit else f"Cannot decode '{path}' as an image: {refused}."
        error = _decode_error(data)
        if error:
            return None, f"Cannot decode '{path}' as an image (JPEG, PNG, GIF, BMP or WebP): {error}"
        return data, None


def displayed_boxes(data: bytes, boxes: Sequence[Sequence[float]]) -> list[list[float]]:
    """``boxes`` (``[xmin, ymin, xmax, ymax]`` in the stored pixels of the encoded image ``data``, which
    the model sees) in the frame a viewer shows (EXIF orientation applied), rounded to 2 places.

    ``predict_files`` answers in that frame (``predict_bytes``, like a raw TF Serving client, gets
    the stored one); without an orientation tag the two are one.

    Example:
        >>> displayed_boxes(open("phone.jpg", "rb").read(), [[20, 250, 60, 290]])   # 400x300 stored, orientation 6
        [[10.0, 20.0, 50.0, 60.0]]
    """
    from transfer.core.orientation import boxes_to_displayed, exif_orientation

    orientation = exif_orientation(data)
    if orientation != 1:
        header = imagesize.read_header(data)
        boxes = boxes_to_displayed(boxes, orientation, (header.width, header.height))
    return [[round(float(v), 2) for v in box] for box in boxes]


def displayed_mask(data: bytes, mask: np.ndarray) -> np.ndarray:
    """A ``[height, width, ...]`` answer in the stored frame of the encoded image ``data`` turned into
    the frame a viewer shows (EXIF orientation applied; the same array without one).

    Example:
        >>> displayed_mask(open("phone.jpg", "rb").read(), np.zeros((300, 400), np.uint8)).shape
        (400, 300)
    """
    from transfer.core.orientation import exif_orientation, mask_to_displayed

    orientation = exif_orientation(data)
    return mask_to_displayed(mask, orientation) if orientation != 1 else mask


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


def check_image_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Why encoded image ``data`` is refused before decoding, or None when it may be decoded.

    Reads only the header: the format must be JPEG, PNG, GIF, BMP or WebP, the
    declared size at most ``max_pixels`` pixels and at least 8x8.

    Example:
        >>> check_image_bytes(open("bomb.png", "rb").read())
        'the header declares 30000x30000 pixels (900 megapixels), over the limit of 40 megapixels; ...'
    """
    if not data:
        return "the file is empty (0 bytes)"
    try:
        header = imagesize.read_header(data)
    except ValueError as e:
        return f"{e}"
    if header.pixels > max_pixels:
        return (
            f"the header declares {header.width}x{header.height} pixels ({header.pixels / 1e6:.0f} megapixels), "
            f"over the limit of {max_pixels / 1e6:g} megapixels; {_LIMIT_FIX}"
        )
    if min(header.width, header.height) < imagesize.MIN_SIDE:
        return (
            f"{header.width}x{header.height} pixels is too small to classify "
            f"(at least {imagesize.MIN_SIDE}x{imagesize.MIN_SIDE} needed)"
        )
    return None


def _decode_error(data: bytes) -> str | None:
    # Decoded eagerly, one image at a time, with the op the serving graph uses,
    # so a bad file is found here instead of failing the whole batch later.
    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError) as e:
        text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", getattr(e, "message", None) or str(e))
        text = re.sub(r"\s*\[Op:\w+\]", "", text)
        return (text.strip().splitlines() or ["unknown decoding error"])[0]
    return None


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer. Received: {name}={value!r}")
