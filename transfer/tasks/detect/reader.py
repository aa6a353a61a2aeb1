"""Run an exported detector on files, images or bytes, and draw its boxes.

The detection reader on ``transfer.serving.reader.ExportedModel`` (whose
loading, input limits and per-input refusals it shares): TensorFlow, NumPy,
PIL (for ``draw``) and the standard library only, everything else read from
the export. The export has already applied its score threshold, per-class
NMS and detection limit (recorded in its ``assets/transfer.json``).

Results of ``predict_files`` are one plain dict per input file, in input order
(``predict_images``: the same without ``"file"``):

- ``{"file": path, "detections": [{"box": [xmin, ymin, xmax, ymax], "class": name, "score": s}, ...]}``:
  boxes in the original image's pixels, best score first (an empty list: nothing found), in
  the frame a viewer shows the photo (its EXIF orientation applied; ``predict_bytes`` and a raw TF
  Serving client get the pixels as stored, see ``transfer.core.orientation``);
- ``{"file": path, "error": message}`` for a file that cannot be used.

Security: loading a SavedModel runs its graph; only load exports you trust.

Example:
    >>> detector = ExportedDetector.load("exports/bccd")
    >>> detector.predict_files(["BloodImage_00007.jpg"])[0]["detections"][0]
    {'box': [263.1, 188.4, 380.2, 301.9], 'class': 'WBC', 'score': 0.87}
    >>> detector.draw("BloodImage_00007.jpg", out="drawn/BloodImage_00007.png").size
    (640, 480)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transfer.core.errors import TransferError
from transfer.serving.drawing import CLASS_COLORS
from transfer.serving.frames import displayed_boxes
from transfer.serving.reader import ExportedModel, _check_positive


DETECTION_OUTPUTS = ("boxes", "scores", "class_names", "count")


class ExportedDetector(ExportedModel):
    """A loaded detection export: ``class_names``, ``image_size``, ``metadata``, predict methods and ``draw``.

    Example:
        >>> detector = ExportedDetector.load("exports/raccoon")
        >>> out = detector.predict_bytes([open("raccoon-1.jpg", "rb").read()])
        >>> out[0][0]["class"], len(out[0])
        ('raccoon', 1)
    """

    task_title = "detection"
    kind = "a detector"
    draws = "the boxes"

    def __init__(self, export_dir: Path, loaded, metadata: dict[str, Any], **limits):
        super().__init__(export_dir, loaded, metadata, **limits)
        self._require_outputs(DETECTION_OUTPUTS)

    def predict_bytes(self, images: Sequence[bytes], batch_size: int = 32) -> list[list[dict[str, Any]]]:
        """Per image, its detections ``[{"box", "class", "score"}, ...]`` (best first).

        Raises ``TransferError`` naming the positions of images that are refused
        (``predict_files`` gives one error per file instead).
        """
        _check_positive("batch_size", batch_size)
        answers: list[list[dict[str, Any]]] = []
        for out in self._serve_batches(images, batch_size, DETECTION_OUTPUTS):
            for boxes, scores, names, count in zip(out["boxes"], out["scores"], out["class_names"], out["count"]):
                answers.append([
                    {"box": [round(float(v), 2) for v in boxes[k]], "class": names[k].decode("utf-8"),
                     "score": round(float(scores[k]), 4)}
                    for k in range(int(count))
                ])
        return answers

    def _answering(self, batch_size: int):
        """The ``answer`` (encoded images -> result fields) of ``predict_files`` and ``predict_images``."""
        _check_positive("batch_size", batch_size)

        def answer(images):
            answers = self.predict_bytes(images, batch_size=batch_size)
            for data, found in zip(images, answers):  # boxes in the frame viewers show (EXIF orientation applied)
                for d, box in zip(found, displayed_boxes(data, [d["box"] for d in found])):
                    d["box"] = box
            return [{"detections": found} for found in answers]

        return answer

    def drawing(self, data: bytes, result: dict[str, Any]):
        return detections_drawing(data, result, self.class_names)

    def describe(self, result: dict[str, Any]) -> list[str]:
        """``transfer predict``'s lines: see ``describe_detections``."""
        return describe_detections(result)


def describe_detections(result: dict[str, Any]) -> list[str]:
    """The lines ``transfer predict`` prints for one file.

    Example:
        >>> describe_detections({"file": "a.jpg", "detections": [{"box": [1, 2, 30, 40], "class": "WBC",
        ...                                                       "score": 0.9}]})
        ['a.jpg: 1 detection', '  WBC 0.900 at (1, 2, 30, 40)']
    """
    if "error" in result:
        return [f"{result['file']}: ERROR {result['error']}"]
    found = result["detections"]
    lines = [f"{result['file']}: {len(found)} detection{'' if len(found) == 1 else 's'}"]
    for d in found:
        box = ", ".join(f"{v:.0f}" for v in d["box"])
        lines.append(f"  {d['class']} {d['score']:.3f} at ({box})")
    return lines


def draw_detections(image: str | os.PathLike | bytes, result: dict[str, Any], out_path: str | os.PathLike,
                    class_names: Sequence[str] = ()) -> Path:
    """Write ``image`` (a path, or the file's bytes as read) with ``result``'s boxes and labels drawn
    to ``out_path`` (atomically; format from the suffix: JPEG for ``.jpg``/``.jpeg``, else PNG); see
    ``detections_drawing``.

    Example:
        >>> draw_detections("a.jpg", detector.predict_files(["a.jpg"])[0], "drawn/a.png", detector.class_names)
        PosixPath('drawn/a.png')
    """
    from transfer.serving.drawing import save_drawing

    return save_drawing(detections_drawing(image, result, class_names), out_path)


def detections_drawing(image: str | os.PathLike | bytes, result: dict[str, Any], class_names: Sequence[str] = ()):
    """``image`` as a PIL RGB image in the frame its viewer shows (EXIF orientation applied, see
    ``transfer.tasks.localize.reader.open_displayed``) with ``result``'s boxes and labels drawn: one colour
    per class (its position in ``class_names``, else in order of appearance). A result holding an
    ``"error"`` is refused.

    Example:
        >>> detections_drawing(open("a.jpg", "rb").read(), result, ["RBC", "WBC"]).size
        (640, 480)
    """
    from PIL import ImageDraw

    from transfer.serving.drawing import drawn_name, open_displayed

    if "error" in result or "detections" not in result:
        raise TransferError(f"No detections to draw for '{drawn_name(image, result)}': "
                            f"{result.get('error', 'no detections')}.",
                            fix="Draw only results that have detections.")
    image = open_displayed(image)
    draw = ImageDraw.Draw(image)
    order = list(class_names)
    # A line about 0.4% of the image's side: visible on a photo and on a thumbnail.
    width = max(2, round(max(image.size) / 250))
    for d in sorted(result["detections"], key=lambda d: d["score"]):  # best drawn last, on top
        if d["class"] not in order:
            order.append(d["class"])
        color = CLASS_COLORS[order.index(d["class"]) % len(CLASS_COLORS)]
        xmin, ymin, xmax, ymax = (float(v) for v in d["box"])
        draw.rectangle([xmin, ymin, max(xmax - 1, xmin), max(ymax - 1, ymin)], outline=color, width=width)
        label = f"{d['class']} {float(d['score']):.2f}"
        text_box = draw.textbbox((0, 0), label)
        text_h = text_box[3] - text_box[1] + 4
        top = ymin - text_h if ymin >= text_h else ymin
        draw.rectangle([xmin, top, xmin + text_box[2] - text_box[0] + 6, top + text_h], fill=color)
        draw.text((xmin + 3, top + 1), label, fill=(255, 255, 255))
    return image


def detections_as_arrays(detections: list[dict[str, Any]], class_names: Sequence[str]):
    """``(boxes [K, 4], scores [K], labels [K])`` of one file's detections (for ``evaluate_detections``)."""
    names = list(class_names)
    boxes = np.array([d["box"] for d in detections], np.float32).reshape(-1, 4)
    scores = np.array([d["score"] for d in detections], np.float32)
    labels = np.array([names.index(d["class"]) for d in detections], np.int64)
    return boxes, scores, labels
