"""What every task's exported-model reader shares: loading an export, its limits, per-input refusals.

``ExportedModel`` loads the folder ``transfer export`` writes (the SavedModel
and its ``assets/transfer.json``), refuses another task's export, bounds what
it accepts (``max_pixels``, ``max_bytes``), turns files, NumPy arrays and PIL
images into the encoded bytes the export answers, and runs the serving
signature batch by batch. Each task's reader subclasses it (``ExportedClassifier``,
``ExportedLocalizer``, ``ExportedDetector``, ``ExportedSegmenter`` in
``transfer/tasks/<task>/reader.py``); ``transfer.serving.load.load_export``
picks the export's own through the task registry.

Imports: TensorFlow, NumPy, the standard library and ``transfer.core``'s
light modules only (no Keras, no model code): everything a reader needs is in
the export. An input that cannot be used (missing, empty, not an image, over
``max_bytes`` or ``max_pixels`` - a decompression bomb is refused from its
header, before decoding -, under 8x8 pixels, undecodable) gets its own
``{"file": path, "error": message}`` (``{"error": message}`` from
``predict_images``) and never fails the others.

Security: loading a SavedModel runs the graph stored in it, with the rights of
the calling process. Only load exports you made or trust; nothing here
unpickles anything, but a hostile graph needs no pickle to do harm.

Example:
    >>> reader = transfer.load_export("exports/flowers")   # the reader of the export's task
    >>> reader.predict_files(["rose.jpg"], top_k=1)
    [{'file': 'rose.jpg', 'predictions': [{'class': 'rose', 'score': 0.93}]}]
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import tensorflow as tf

import transfer.core.imagesize as imagesize
from transfer.core.errors import TransferError
from transfer.core.regular_files import read_regular
from transfer.serving.answers import PredictAnswers

logger = logging.getLogger(__name__)

SIGNATURE = "serving_default"
METADATA_PATH = os.path.join("assets", "transfer.json")
# Inputs are untrusted here: a 40-megapixel image decodes to 120 MB (and the
# float32 resize to ~500 MB), larger than any ordinary camera photo needs.
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_BYTES = 100_000_000
_MAX_METADATA_BYTES = 64 << 20  # transfer.json lists class names: far smaller
_LIMIT_FIX = "pass --max-megapixels / --max-megabytes (max_pixels= / max_bytes= in Python) to allow it if you trust it"
_EXPORT_FIX = "Pass the folder written by `transfer export` (it holds saved_model.pb and assets/)."


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


class ExportedModel(PredictAnswers):
    """A loaded export of any task: ``class_names``, ``image_size``, ``metadata``, the input limits.

    Subclasses (one per task) set ``task_title`` (the ``task`` their exports record,
    e.g. ``"classification"``) and ``kind`` (``"a classifier"``), and answer with
    ``predict_bytes`` / ``predict_files`` / ``predict_images`` and ``draw`` (and
    ``transfer predict`` through ``PredictAnswers``' methods).

    Example:
        >>> ExportedLocalizer.load("exports/flowers")   # a classification export
        TransferError: The export 'exports/flowers' is a classification export, not a localizer ...
    """

    task_title: ClassVar[str | None] = None  # None: any task's export (the base itself)
    kind: ClassVar[str] = "a transfer export"

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
        self._loaded = loaded  # keeps the variables the signature reads alive
        self._serve = loaded.signatures[SIGNATURE]

    def _require_outputs(self, names: Sequence[str]) -> None:
        """Refuse an export whose default signature lacks ``names`` (another task's outputs under this
        task's name: a damaged or hand-edited ``transfer.json``)."""
        outputs = set(self._serve.structured_outputs)
        missing = [name for name in names if name not in outputs]
        if missing:
            raise TransferError(
                f"The export '{self.export_dir}' has no {missing} output(s): it is not {self.kind} "
                f"(its task: {self.metadata.get('task', 'unknown')!r}).",
                fix=f"Load it with transfer.load_export('{self.export_dir}'), or export the run again.")

    @classmethod
    def load(
        cls, export_dir: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ):
        """Load the export folder written by ``transfer export`` (``transfer.serving.export.export_model``).

        ``max_pixels`` and ``max_bytes`` bound the inputs it accepts (see the
        module docstring). Another task's export is refused, naming its task
        (``transfer.load_export`` picks the right reader). Loading runs the
        SavedModel's graph: only load exports you trust.

        Example:
            >>> clf = ExportedClassifier.load("exports/flowers", max_pixels=50_000_000)
        """
        export_dir = Path(export_dir)
        if not export_dir.is_dir():
            raise TransferError(f"Export folder not found: '{export_dir}'.", fix=_EXPORT_FIX)
        if not (export_dir / "saved_model.pb").is_file():
            raise TransferError(f"Not a SavedModel: '{export_dir / 'saved_model.pb'}' is missing.", fix=_EXPORT_FIX)
        metadata = _read_metadata(export_dir)
        cls._check_task(export_dir, metadata)  # before the (slow) load
        from transfer.engine.artifact_loading import export_fix, load_saved_model

        loaded = load_saved_model(export_dir, fix=export_fix(export_dir, metadata.get("run_dir")))
        if SIGNATURE not in loaded.signatures:
            raise TransferError(
                f"The SavedModel in '{export_dir}' has no {SIGNATURE!r} signature "
                f"(found: {sorted(loaded.signatures)}).",
                fix=_EXPORT_FIX,
            )
        logger.info("Loaded %d-class export from %s", len(metadata["class_names"]), export_dir)
        return cls(export_dir, loaded, metadata, max_pixels=max_pixels, max_bytes=max_bytes)

    @classmethod
    def _check_task(cls, export_dir: Path, metadata: dict[str, Any]) -> None:
        recorded = metadata.get("task", "classification")  # exports before tasks were classifiers
        if cls.task_title is None or recorded == cls.task_title:
            return
        raise TransferError(
            f"The export '{export_dir}' is a {recorded} export, not {cls.kind} "
            f"({cls.__name__} reads {cls.task_title} exports).",
            fix=f"Load it with transfer.load_export('{export_dir}'), which returns the reader of the "
                f"export's own task.")

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.export_dir}', classes={len(self.class_names)}, image_size={self.image_size})"

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

    def _answer_files(self, paths, answer, read_bytes: dict | None = None) -> list[dict[str, Any]]:
        """One dict per file, in order: ``{"file", "error"}`` for a file that cannot be used, else
        ``{"file", **fields}`` with ``fields`` from ``answer(list of image bytes) -> list of dicts``
        (called once, on the readable files; every task's ``predict_files`` goes through here).
        ``read_bytes``: a dict that receives each answered file's bytes by position, so that
        ``transfer predict --draw`` draws what was answered even if the file changes or vanishes."""
        results = _answer_each([(self._read_image(path), {"file": str(path)}) for path in paths], answer, read_bytes)
        bad = sum("error" in r for r in results)
        if bad:
            logger.warning("%d of %d files could not be read as images", bad, len(results))
        return results

    def _answer_images(self, images, answer: Callable[[list[bytes]], list[dict]]):
        """``predict_images``'s common part: one dict per image (``{"error"}`` for one refused, else
        ``answer``'s fields), or a single dict for a single image (see ``image_list``)."""
        listed, single = image_list(images)
        read = [self.encoded_image(image) for image in listed]
        results = _answer_each([((data, error and f"Image {i}: {error}"), {}) for i, (data, error) in enumerate(read)],
                               answer)
        return results[0] if single else results

    def _to_draw(self, image, result: dict[str, Any] | None) -> tuple[bytes, dict[str, Any]]:
        """``(encoded bytes, result)`` for a task's ``draw``: ``image`` read (a path) or encoded (an
        array, a PIL image), and answered when ``result`` is None."""
        data, error = self.encoded_image(image)
        if error:
            raise TransferError(f"Cannot draw the image: {error}",
                                fix="Pass a readable image file, encoded bytes, a uint8 array or a PIL image.")
        if result is None:
            result = self._answers([data])[0]
        if "error" in result:
            raise TransferError(f"No answer to draw: {result['error']}", fix="Draw only results without an error.")
        return data, result

    def encoded_image(self, image) -> tuple[bytes | None, str | None]:
        """``(encoded bytes, None)`` for a file path, encoded bytes, a NumPy uint8 ``[H, W, 3]`` (or
        ``[H, W]``, ``[H, W, 1|4]``) array or a PIL image, or ``(None, why it is refused)``; arrays
        and PIL images become lossless PNG (their pixels as given: no EXIF orientation).

        Example:
            >>> reader.encoded_image(np.zeros((32, 32, 3), np.uint8))[0][:4]
            b'\\x89PNG'
        """
        if isinstance(image, (str, os.PathLike)):
            return self._read_image(image)
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            error = self._refuse(data) or _decode_error(data)
            return (None, error) if error else (data, None)
        pixels = pixel_array(image)
        if pixels.shape[0] * pixels.shape[1] > self.max_pixels:
            return None, (f"{pixels.shape[1]}x{pixels.shape[0]} pixels is over the limit of "
                          f"{self.max_pixels / 1e6:g} megapixels; {_LIMIT_FIX}")
        data = tf.io.encode_png(pixels).numpy()
        error = self._refuse(data)
        return (None, error) if error else (data, None)

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


def _answer_each(read, answer, read_bytes: dict | None = None) -> list[dict[str, Any]]:
    """``read``: ``((bytes, None) or (None, error), fields)`` per input -> one dict per input: its fields
    and its error, or its fields and ``answer``'s (called once, on the usable inputs)."""
    results: list[dict[str, Any]] = []
    good: list[tuple[int, bytes]] = []
    for (data, error), fields in read:
        results.append({**fields, "error": error} if error else dict(fields))
        if not error:
            good.append((len(results) - 1, data))
    if good:
        for (index, _), answered in zip(good, answer([data for _, data in good])):
            results[index].update(answered)
        if read_bytes is not None:
            read_bytes.update(good)
    return results


def _read_metadata(export_dir: Path) -> dict[str, Any]:
    """The export's ``assets/transfer.json``, checked for what every reader needs."""
    meta_file = export_dir / METADATA_PATH
    try:
        metadata = json.loads(read_regular(meta_file, _MAX_METADATA_BYTES))  # a FIFO is refused, not read
    except FileNotFoundError:
        raise TransferError(f"Not a transfer export: '{meta_file}' is missing.", fix=_EXPORT_FIX) from None
    except (OSError, ValueError) as e:
        raise TransferError(f"Cannot read export metadata '{meta_file}': {e}", fix=_EXPORT_FIX) from None
    if not isinstance(metadata, dict) or "class_names" not in metadata or "image_size" not in metadata:
        raise TransferError(f"Export metadata '{meta_file}' lacks class_names or image_size.", fix=_EXPORT_FIX)
    return metadata


def image_list(images) -> tuple[list, bool]:
    """``(the images as a list, whether one image was given)``: one image is a path, bytes, a PIL
    image or a 2-D / 3-D array; a 4-D array ``[N, H, W, 3]`` or a list/tuple holds several.

    Example:
        >>> image_list(np.zeros((2, 8, 8, 3), np.uint8))[1], image_list("a.jpg")
        (False, (['a.jpg'], True))
    """
    if isinstance(images, np.ndarray):
        return (list(images), False) if images.ndim == 4 else ([images], True)
    if isinstance(images, (list, tuple)):
        return list(images), False
    return [images], True


def pixel_array(image) -> np.ndarray:
    """A PIL image or NumPy array as a uint8 ``[H, W, C]`` array (C 1, 3 or 4); anything else is
    refused with a ``TransferError`` saying what is taken.

    Example:
        >>> pixel_array(np.zeros((4, 5), np.uint8)).shape
        (4, 5, 1)
    """
    if type(image).__module__.startswith("PIL.") and hasattr(image, "convert"):
        image = np.asarray(image.convert("RGB") if image.mode not in ("RGB", "RGBA", "L") else image)
    if not isinstance(image, np.ndarray):
        raise TransferError(f"Cannot read an image from a {type(image).__name__}.",
                            fix="Pass a file path, encoded image bytes, a NumPy uint8 [height, width, 3] "
                                "array or a PIL image (or a list of them).")
    pixels = image[..., np.newaxis] if image.ndim == 2 else image
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3, 4):
        raise TransferError(f"An image array of shape {image.shape} is not [height, width, 3].",
                            fix="Pass uint8 pixels shaped [height, width, 3] (RGB), [height, width] (grey) "
                                "or a 4-D [N, height, width, 3] batch.")
    if pixels.dtype != np.uint8:
        raise TransferError(f"Image pixels are {pixels.dtype}, not uint8 (0-255).",
                            fix="Convert them, e.g. np.clip(x * 255, 0, 255).astype(np.uint8) for values in [0, 1].")
    return np.ascontiguousarray(pixels)


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
