"""What ``transfer predict`` asks of an exported-model reader, so that the command names no task.

A reader says which of the command's options its ``predict_files`` takes, the
lines an answered file prints, the JSON document ``--json`` prints, and the
files it writes for each answered file: ``"drawn"`` (``--draw``: its answer
drawn over the image) and, for a reader that lists it in ``writes``,
``"mask_file"`` (``--out``). ``ExportedModel`` (``transfer.serving.reader``)
inherits the defaults below; each task's reader overrides what differs.

Example:
    >>> reader = load_export("exports/raccoon")
    >>> result = reader.predict_files(["raccoon-1.jpg"])[0]
    >>> reader.describe(result)
    ['raccoon-1.jpg: raccoon 1.000 box (81, 89, 520, 410) (xmin, ymin, xmax, ymax in pixels)']
    >>> reader.output_file("drawn", open("raccoon-1.jpg", "rb").read(), result)[:4]
    b'\\x89PNG'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Sequence


class PredictAnswers:
    """The defaults of every reader's answers to ``transfer predict`` (see the module docstring).

    Example:
        >>> ExportedSegmenter.writes, ExportedClassifier.predict_options
        (('mask_file', 'drawn'), ('top_k',))
    """

    export_dir: Path
    # The options of `transfer predict` its predict_files takes, e.g. ("top_k",): only these are passed.
    predict_options: ClassVar[tuple[str, ...]] = ()
    # The files written per answered file, in this order: "drawn" (--draw), "mask_file" (--out).
    writes: ClassVar[tuple[str, ...]] = ("drawn",)
    # What --draw draws, for messages: "... --draw to draw the boxes".
    draws: ClassVar[str] = "the answers"

    def describe(self, result: dict[str, Any]) -> list[str]:
        """The lines ``transfer predict`` prints for an answered file (a result of ``predict_files``)."""
        raise NotImplementedError

    def predict_files(self, paths: Sequence[str | os.PathLike], batch_size: int = 32, *,
                      read_bytes: dict | None = None) -> list[dict[str, Any]]:
        """One result dict per file, in input order: ``{"file", "error"}`` for a file that cannot be used,
        else ``{"file", ...}`` with the task's answer (its reader's module docstring lists the fields).
        ``read_bytes``: a dict that receives each answered file's bytes by position (what
        ``transfer predict --draw`` draws). Readers with options (a classifier's ``top_k``) add them.

        Example:
            >>> load_export("exports/raccoon").predict_files(["raccoon-1.jpg", "missing.jpg"])[1]
            {'file': 'missing.jpg', 'error': "File not found: 'missing.jpg'."}
        """
        return self._answer_files(paths, self._answering(batch_size), read_bytes)

    def predict_images(self, images, batch_size: int = 32):
        """``predict_files``'s answer for NumPy uint8 ``[H, W, 3]`` arrays or PIL images (their pixels
        as given; boxes and masks in their pixels), or encoded bytes: one dict for one image, a list
        for a list (or an ``[N, H, W, 3]`` array). A refused image gets ``{"error": message}``.

        Example:
            >>> load_export("exports/raccoon").predict_images(np.asarray(PIL.Image.open("raccoon-1.jpg")))
            {'box': [81.2, 88.9, 519.7, 410.3], 'class': 'raccoon', 'score': 1.0}
        """
        return self._answer_images(images, self._answering(batch_size))

    def _answering(self, batch_size: int):
        """The task's ``answer`` (a list of encoded images -> a list of result-field dicts) that
        ``predict_files`` and ``predict_images`` run, at ``batch_size``."""
        raise NotImplementedError

    def _answers(self, images: list[bytes]) -> list[dict[str, Any]]:
        """The task's result fields for encoded images, with its default options (what ``draw`` draws
        when it is given no result)."""
        return self._answering(32)(images)

    def draw(self, image, result: dict[str, Any] | None = None, out: str | os.PathLike | None = None):
        """``image`` (a path, bytes, a NumPy array or a PIL image) as a PIL image in the frame a viewer
        shows, with ``result`` drawn over it (``drawing``: a classifier's best class and score, a
        localizer's box, a detector's boxes in one colour per class, a segmenter's mask with a
        legend); ``result`` is predicted when None. With ``out``, also written there atomically
        (format from the suffix).

        Example:
            >>> reader.draw("photo.jpg", out="drawn/photo.png").size   # the photo's own size
            (640, 480)
        """
        from transfer.serving.drawing import save_drawing

        if out is not None and isinstance(image, (str, os.PathLike)) and _same_file(image, out):
            from transfer.core.errors import TransferError

            raise TransferError(f"draw(out='{out}') would write over the image it draws, '{image}'.",
                                fix="Pass another out path (e.g. in a drawn/ folder).")
        data, result = self._to_draw(image, result)
        drawn = self.drawing(data, result)
        if out is not None:
            save_drawing(drawn, out)
        return drawn

    def drawing(self, data: bytes, result: dict[str, Any]):
        """The image ``data`` (encoded bytes, as read) as a PIL image in the frame a viewer shows, with
        ``result`` (its answer) drawn over it: what ``draw`` returns."""
        raise NotImplementedError

    def output_file(self, key: str, data: bytes, result: dict[str, Any]) -> bytes:
        """The encoded file written as ``key`` (one of ``writes``) for an answered file: ``"drawn"`` is
        ``drawing`` as PNG.

        Example:
            >>> reader.output_file("drawn", data, result)[:4]
            b'\\x89PNG'
        """
        from transfer.serving.drawing import encode_drawing

        if key != "drawn":
            raise ValueError(f"{type(self).__name__} writes no {key!r} files (it writes {self.writes}).")
        return encode_drawing(self.drawing(data, result))

    def output_note(self, key: str) -> str:
        """Said after the count of ``key`` files written (e.g. what a mask's pixel values mean)."""
        return ""

    def answers_document(self, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """The JSON document ``transfer predict --json`` prints for ``results`` (those of ``predict_files``,
        with the files written).

        Example:
            >>> reader.answers_document([{"file": "a.jpg", "error": "File not found: 'a.jpg'."}])
            {'export': 'exports/raccoon', 'results': [{'file': 'a.jpg', 'error': "File not found: 'a.jpg'."}]}
        """
        return {"export": str(self.export_dir), "results": list(results)}


def _same_file(a, b) -> bool:
    """Whether paths ``a`` and ``b`` name one file (symlinks followed; ``b`` need not exist yet)."""
    try:
        return Path(a).resolve() == Path(b).resolve() or os.path.samefile(a, b)
    except OSError:
        return False
