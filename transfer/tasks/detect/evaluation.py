"""Evaluation of a detector with the reference tool: pycocotools' COCOeval on boxes built in memory.

Ground truth (``Boxes`` in the original image's pixels) and predictions
(one ``(boxes [K, 4] xyxy pixels, scores [K], labels [K])`` per image) become
COCO dicts (``bbox`` ``[x, y, w, h]``, ``area`` ``w * h``, ``iscrowd`` 1 for an
ignore region (``Boxes.ignore``: a COCO crowd, a VOC difficult object), else 0) and
COCOeval measures them with its defaults: IoU thresholds 0.50:0.05:0.95, 101
recall points, area range ``all`` for the headline numbers. Its prints are
silenced; its numbers are read from ``COCOeval.eval`` (the arrays its
``summarize`` averages), so per-class AP comes from the same computation.

The COCO rules kept, and what they mean here:

- **100 detections per image**: COCO scores the 100 highest-scoring
  detections of each image (over all classes). Lower-scoring ones are dropped
  before COCOeval sees them and counted in ``detections_dropped``.
- **Classes without ground truth** have no AP (COCOeval writes -1): reported as
  ``None`` (JSON ``null``) and left out of ``map``, so their false positives
  do not lower it (``detections_of_absent_classes`` counts them).
- **Images without boxes** count in ``num_images``; their detections are false
  positives of their classes.
- **Ignore regions** (crowds, VOC ``difficult`` objects) go to COCOeval as
  ``iscrowd: 1``: a detection that falls on one (IoU taken as COCO takes it for
  crowds: the overlap over the detection's own area) is left out of both the
  hits and the false positives, and they do not count as boxes to find.
  VOC's devkit measures the overlap with the ordinary IoU; COCO's rule is kept
  for both, so one evaluation scores every format.

Example:
    >>> report = evaluate_detections(samples, predictions, ("Platelets", "RBC", "WBC"))
    >>> report.headline()
    ('mAP@0.5', 0.87)
    >>> sorted(report.summary())[:4]
    ['detections_dropped', 'detections_of_absent_classes', 'map', 'map50']
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from transfer.data.samples import Boxes, Samples
from transfer.core.errors import TransferError

# COCO's protocol: the 100 top-scoring detections of each image (COCOeval's maxDets[-1]).
MAX_DETECTIONS = 100
PROTOCOL = ("pycocotools COCOeval, iouType bbox: AP averaged over IoU 0.50:0.05:0.95 and 101 recall points, "
            f"area range all, top {MAX_DETECTIONS} detections per image")
# Indices into COCOeval.eval["precision"] [T, R, K, A, M] and ["recall"] [T, K, A, M].
_AREA = {"all": 0, "small": 1, "medium": 2, "large": 3}
_LAST_MAX_DETS = -1  # maxDets [1, 10, 100]: the 100 column

Prediction = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class DetectionReport:
    """COCO metrics of one evaluation; ``None`` where there was no ground truth to measure against.

    ``per_class_ap`` / ``per_class_ap50`` / ``per_class_boxes`` follow
    ``class_names``. ``map_small`` / ``map_medium`` / ``map_large`` are COCO's
    area ranges (under 32², 32² to 96², over 96² pixels of the original image).

    Example:
        >>> report = transfer.evaluate_run("runs/bccd")
        >>> print(report.table())        # mAP, AR, then AP and AP50 per class
        >>> report.to_dict()["map50"]    # JSON-ready, as metrics.json
        0.8123
    """

    class_names: tuple[str, ...]
    map: float | None
    map50: float | None
    map75: float | None
    map_small: float | None
    map_medium: float | None
    map_large: float | None
    mar100: float | None
    per_class_ap: tuple[float | None, ...]
    per_class_ap50: tuple[float | None, ...]
    per_class_boxes: tuple[int, ...]
    num_images: int
    num_detections: int
    detections_dropped: int
    detections_of_absent_classes: int

    @property
    def num_boxes(self) -> int:
        return sum(self.per_class_boxes)

    def summary(self) -> dict[str, Any]:
        """``map``, ``map50``, ``map75``, ``per_class_ap`` ({name: AP@[.5:.95] or None}), then the rest."""
        r = _rounded
        return {
            "map": r(self.map), "map50": r(self.map50), "map75": r(self.map75),
            "per_class_ap": {n: r(v) for n, v in zip(self.class_names, self.per_class_ap)},
            "per_class_ap50": {n: r(v) for n, v in zip(self.class_names, self.per_class_ap50)},
            "map_small": r(self.map_small), "map_medium": r(self.map_medium), "map_large": r(self.map_large),
            "mar100": r(self.mar100),
            "per_class_boxes": dict(zip(self.class_names, self.per_class_boxes)),
            "num_images": self.num_images, "num_boxes": self.num_boxes, "num_detections": self.num_detections,
            "detections_dropped": self.detections_dropped,
            "detections_of_absent_classes": self.detections_of_absent_classes,
            "protocol": PROTOCOL,
        }

    def headline(self) -> tuple[str, float | None]:
        return "mAP@0.5", self.map50

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values: ``summary()`` (what ``transfer evaluate --json`` prints).

        Example:
            >>> json.dumps(report.to_dict())[:12]
            '{"map": 0.4791'
        """
        return self.summary()

    def table(self) -> str:
        """A plain-text table: the overall numbers, then AP and AP50 per class.

        Example:
            >>> print(report.table().splitlines()[2])
            mAP@0.5       0.812
        """
        f = _shown
        lines = [f"images {self.num_images}, boxes {self.num_boxes}, detections {self.num_detections}",
                 f"mAP@[.5:.95]  {f(self.map)}", f"mAP@0.5       {f(self.map50)}",
                 f"mAP@0.75      {f(self.map75)}", f"AR@100        {f(self.mar100)}",
                 f"mAP small/medium/large  {f(self.map_small)} / {f(self.map_medium)} / {f(self.map_large)}"]
        width = max([len("class"), *(len(n) for n in self.class_names)])
        lines.append(f"{'class'.ljust(width)}  {'boxes':>6}  {'AP':>6}  {'AP50':>6}")
        for name, boxes, ap, ap50 in zip(self.class_names, self.per_class_boxes, self.per_class_ap,
                                          self.per_class_ap50):
            lines.append(f"{name.ljust(width)}  {boxes:>6}  {f(ap):>6}  {f(ap50):>6}")
        if self.detections_dropped:
            lines.append(f"{self.detections_dropped} detection(s) beyond the top {MAX_DETECTIONS} of their image "
                         "were not scored (COCO's rule)")
        if self.detections_of_absent_classes:
            lines.append(f"{self.detections_of_absent_classes} detection(s) of classes without ground truth "
                         "(no AP; they do not lower mAP)")
        return "\n".join(lines)

    def write(self, out_dir) -> dict[str, Path]:
        """``metrics.json`` (the summary) and ``per_class_ap.png``."""
        from transfer.core.atomic import atomic_write_bytes, atomic_write_json

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = {"metrics": out_dir / "metrics.json", "per_class_ap": out_dir / "per_class_ap.png"}
        atomic_write_json(written["metrics"], self.summary())
        atomic_write_bytes(written["per_class_ap"], per_class_ap_png(self))
        return written


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def per_class_ap_png(report: DetectionReport) -> bytes:
    """Bars of AP@[.5:.95] and AP@0.5 per class (a class without ground truth is marked 'no boxes')."""
    from transfer.core.figures import bars_png

    return bars_png(report.class_names, [("AP@[.5:.95]", report.per_class_ap, "tab:blue"),
                                         ("AP@0.5", report.per_class_ap50, "tab:orange")],
                    ylabel="average precision", missing="no boxes",
                    title=f"mAP@[.5:.95] {_shown(report.map)}, mAP@0.5 {_shown(report.map50)} "
                          f"({report.num_images} images, {report.num_boxes} boxes)")


def evaluate_detections(
    samples: Samples, predictions: Sequence[Prediction], class_names: Sequence[str]
) -> DetectionReport:
    """COCO AP of ``predictions`` (one ``(boxes [K, 4], scores [K], labels [K])`` per sample) on ``samples``.

    Boxes are ``xyxy`` in the original image's pixels, as in ``Boxes``;
    labels index ``class_names`` (the model's classes). Ground-truth classes
    are matched to ``class_names`` by name. Raises TransferError (naming the
    image) for predictions that do not fit their sample.

    Example:
        >>> preds = [(np.array([[81., 88., 522., 408.]]), np.array([0.9]), np.array([0]))]
        >>> evaluate_detections(samples, preds, ("raccoon",)).map50
        1.0
    """
    class_names = tuple(class_names)
    if not class_names:
        raise TransferError("Detection evaluation needs the model's class names. Received: class_names=().",
                            fix="Pass the class names the model was trained on (e.g. samples.class_names).")
    if len(predictions) != len(samples):
        raise TransferError(
            f"Detection evaluation needs one prediction per image. Received: {len(predictions)} predictions "
            f"for {len(samples)} images.",
            fix="Pass a list with one (boxes, scores, labels) tuple per sample, in the samples' order.",
        )
    truth_index = _truth_class_index(samples, class_names)
    images, truths, detections = [], [], []
    dropped = 0
    for image_id, (source, target, prediction) in enumerate(zip(samples.sources, samples.targets, predictions), 1):
        if not isinstance(target, Boxes):
            raise TransferError(f"{source}: its target is {type(target).__name__}, not Boxes.",
                                fix="Evaluate detections on box data (transfer.data.boxes.read_boxes).")
        images.append({"id": image_id, "file_name": source, "width": target.width, "height": target.height})
        for k, (xyxy, label) in enumerate(zip(target.xyxy, target.labels)):
            truths.append(_coco_box(image_id, truth_index[label], xyxy, len(truths) + 1,
                                    crowd=target.is_ignored(k)))
        boxes, scores, labels = _checked_prediction(source, prediction, len(class_names))
        order = np.argsort(-scores, kind="stable")
        dropped += max(len(order) - MAX_DETECTIONS, 0)
        for k in order[:MAX_DETECTIONS]:
            detections.append(_coco_box(image_id, int(labels[k]), boxes[k], len(detections) + 1, float(scores[k])))

    categories = [{"id": i + 1, "name": name} for i, name in enumerate(class_names)]
    per_class_boxes = [0] * len(class_names)
    for truth in truths:
        per_class_boxes[truth["category_id"] - 1] += not truth["iscrowd"]
    absent = sum(per_class_boxes[d["category_id"] - 1] == 0 for d in detections)
    precision, recall = _coco_eval(images, categories, truths, detections)

    def area_ap(area: str) -> float | None:
        return _mean_measured(precision[:, :, :, _AREA[area], _LAST_MAX_DETS])

    everything = precision[:, :, :, _AREA["all"], _LAST_MAX_DETS]  # [T, R, K]
    thresholds = _iou_thresholds()
    at50, at75 = int(np.argmin(abs(thresholds - 0.5))), int(np.argmin(abs(thresholds - 0.75)))
    return DetectionReport(
        class_names=class_names,
        map=_mean_measured(everything), map50=_mean_measured(everything[at50]),
        map75=_mean_measured(everything[at75]),
        map_small=area_ap("small"), map_medium=area_ap("medium"), map_large=area_ap("large"),
        mar100=_mean_measured(recall[:, :, _AREA["all"], _LAST_MAX_DETS]),
        per_class_ap=tuple(_mean_measured(everything[:, :, k]) for k in range(len(class_names))),
        per_class_ap50=tuple(_mean_measured(everything[at50, :, k]) for k in range(len(class_names))),
        per_class_boxes=tuple(per_class_boxes), num_images=len(samples), num_detections=len(detections),
        detections_dropped=dropped, detections_of_absent_classes=int(absent),
    )


def _truth_class_index(samples: Samples, class_names: tuple[str, ...]) -> dict[int, int]:
    """Each ground-truth label of ``samples`` as a category of ``class_names`` (matched by name)."""
    wanted = {name: i for i, name in enumerate(class_names)}
    index = {}
    for label, name in enumerate(samples.class_names):
        if name in wanted:
            index[label] = wanted[name]
    for source, target in zip(samples.sources, samples.targets):
        for label in getattr(target, "labels", ()):
            if label not in index:
                name = samples.class_names[label] if 0 <= label < len(samples.class_names) else f"#{label}"
                raise TransferError(
                    f"{source}: a ground-truth box of class '{name}', which the model does not know "
                    f"(its classes: {', '.join(class_names)}).",
                    fix="Read the evaluation data with the model's classes (read_boxes(..., class_names=...)), "
                        "which drops and reports boxes of other classes.",
                )
    return index


def _checked_prediction(source: str, prediction, num_classes: int) -> Prediction:
    """``(boxes [K, 4] float64, scores [K], labels [K] int)`` of one image, or a TransferError naming it."""
    try:
        boxes, scores, labels = prediction
    except (TypeError, ValueError):
        raise TransferError(f"{source}: its prediction is not a (boxes, scores, labels) tuple.",
                            fix="Pass boxes [K, 4], scores [K] and labels [K] arrays per image.") from None
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4) if np.size(boxes) else np.zeros((0, 4))
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise TransferError(
            f"{source}: the prediction has {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels.",
            fix="Give one score and one label per predicted box.",
        )
    if not (np.all(np.isfinite(boxes)) and np.all(np.isfinite(scores))):
        raise TransferError(f"{source}: the predicted boxes or scores hold NaN or infinity.",
                            fix="Check the model's outputs (a diverged training gives NaN).")
    if len(labels) and (not np.all(labels == np.round(labels)) or labels.min() < 0 or labels.max() >= num_classes):
        raise TransferError(
            f"{source}: predicted labels {sorted(set(labels.tolist()))} are not class indices 0..{num_classes - 1}.",
            fix="Pass class indices of class_names as labels.",
        )
    return boxes, scores, labels.astype(np.int64)


def _coco_box(image_id: int, category: int, xyxy, box_id: int, score: float | None = None, *,
              crowd: bool = False) -> dict[str, Any]:
    """One COCO annotation (or detection, with ``score``); category ids are class index + 1. A ``crowd``
    truth (an ignore region: COCO crowd, VOC difficult) is matched as COCOeval matches crowds: a
    detection on it is neither a hit nor a false positive."""
    x0, y0, x1, y1 = (float(v) for v in xyxy)
    # A predicted box with its corners swapped has no area (IoU 0), as pycocotools would not say itself.
    w, h = max(x1 - x0, 0.0), max(y1 - y0, 0.0)
    box = {"id": box_id, "image_id": image_id, "category_id": category + 1, "bbox": [x0, y0, w, h],
           "area": w * h, "iscrowd": int(crowd)}
    if score is not None:
        box["score"] = score
    return box


def _iou_thresholds() -> np.ndarray:
    from pycocotools.cocoeval import Params

    return np.asarray(Params(iouType="bbox").iouThrs)


def _coco_eval(images, categories, truths, detections) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's ``precision`` [T, R, K, A, M] and ``recall`` [T, K, A, M] (-1 where nothing to measure)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def in_memory(annotations) -> COCO:
        # Built directly (not COCO.loadRes), which fails on an empty list and re-derives areas itself.
        coco = COCO()
        coco.dataset = {"images": images, "categories": categories, "annotations": annotations}
        coco.createIndex()
        return coco

    # pycocotools prints progress to stdout; the numbers are read from COCOeval.eval instead.
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(in_memory(truths), in_memory(detections), iouType="bbox")
        evaluator.params.imgIds = [image["id"] for image in images]
        evaluator.params.catIds = [category["id"] for category in categories]
        evaluator.evaluate()
        evaluator.accumulate()
    return np.asarray(evaluator.eval["precision"]), np.asarray(evaluator.eval["recall"])


def _mean_measured(values: np.ndarray) -> float | None:
    """The mean of the entries COCOeval measured (> -1), as its ``summarize`` takes it; None when none were."""
    measured = values[values > -1]
    if measured.size == 0:
        return None
    mean = float(np.mean(measured))
    return None if math.isnan(mean) else mean
