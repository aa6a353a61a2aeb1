"""Evaluation of a localizer: IoU of each image's predicted box with its largest true box.

IoU is measured in the original image's pixels (the predicted normalized box
mapped back by the run's resize policy, as the export maps it), against the box the model was
trained to find (``transfer.data.pipelines.boxes.largest_box``).

Example:
    >>> report = evaluate_localizer(model, samples, image_size=224, batch_size=32)
    >>> report.headline()
    ('mean IoU', 0.78)
    >>> sorted(report.summary())
    ['class_accuracy', 'iou50_accuracy', 'mean_iou', 'num_images', 'worst']   # class_accuracy: >1 class
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IOU_THRESHOLD = 0.5
WORST_SHOWN = 10


@dataclass(frozen=True)
class LocalizeReport:
    """Per-image IoUs (and class hits with several classes) of one evaluation.

    ``files``, ``ious`` (in ``[0, 1]``), ``class_correct`` (None with one class).

    Example:
        >>> report = transfer.evaluate_run("runs/raccoon")
        >>> print(report.table())            # mean IoU, share at IoU >= 0.5, the lowest images
        >>> report.to_dict()["mean_iou"]     # JSON-ready, as metrics.json
        0.7412
    """

    files: tuple[str, ...]
    ious: tuple[float, ...]
    class_correct: tuple[bool, ...] | None = None

    @property
    def num_images(self) -> int:
        return len(self.ious)

    @property
    def mean_iou(self) -> float:
        return float(np.mean(self.ious)) if self.ious else 0.0

    @property
    def iou50_accuracy(self) -> float:
        return float(np.mean(np.asarray(self.ious) >= IOU_THRESHOLD)) if self.ious else 0.0

    @property
    def class_accuracy(self) -> float | None:
        if self.class_correct is None:
            return None
        return float(np.mean(self.class_correct)) if self.class_correct else 0.0

    def worst(self, count: int = WORST_SHOWN) -> list[dict[str, Any]]:
        """The ``count`` images with the lowest IoU, lowest first."""
        order = np.argsort(np.asarray(self.ious), kind="stable")[:count]
        return [{"file": self.files[i], "iou": round(float(self.ious[i]), 4)} for i in order]

    def summary(self) -> dict[str, Any]:
        """``mean_iou``, ``iou50_accuracy``, ``class_accuracy`` (several classes only),
        ``num_images`` and the ``worst`` images."""
        out: dict[str, Any] = {"mean_iou": round(self.mean_iou, 4), "iou50_accuracy": round(self.iou50_accuracy, 4)}
        if self.class_correct is not None:
            out["class_accuracy"] = round(self.class_accuracy, 4)
        out["num_images"] = self.num_images
        out["worst"] = self.worst()
        return out

    def headline(self) -> tuple[str, float]:
        return "mean IoU", self.mean_iou

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values: ``summary()`` (what ``transfer evaluate --json`` prints).

        Example:
            >>> json.dumps(report.to_dict())[:17]
            '{"mean_iou": 0.7412'
        """
        return self.summary()

    def table(self) -> str:
        """Plain text: the image count, mean IoU, the share at IoU >= 0.5 (class accuracy with several
        classes), then the lowest-IoU images.

        Example:
            >>> print(report.table().splitlines()[1])
            mean IoU        0.741
        """
        lines = [f"images          {self.num_images}",
                 f"mean IoU        {self.mean_iou:.3f}",
                 f"IoU >= {IOU_THRESHOLD:g}      {self.iou50_accuracy:.3f}"]
        if self.class_correct is not None:
            lines.append(f"class accuracy  {self.class_accuracy:.3f}")
        worst = self.worst(5)
        if worst:
            lines.append("lowest IoU:")
            lines += [f"  {row['iou']:.3f}  {row['file']}" for row in worst]
        return "\n".join(lines)

    def write(self, out_dir) -> dict[str, Path]:
        """``metrics.json`` (the summary) and ``iou_histogram.png``."""
        from transfer.core.atomic import atomic_write_bytes, atomic_write_json

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = {"metrics": out_dir / "metrics.json", "iou_histogram": out_dir / "iou_histogram.png"}
        atomic_write_json(written["metrics"], self.summary())
        atomic_write_bytes(written["iou_histogram"], iou_histogram_png(self))
        return written


def iou_histogram_png(report: LocalizeReport) -> bytes:
    """A histogram of the per-image IoUs, the 0.5 threshold marked."""
    # Figure without pyplot: no GUI backend, no global state.
    from matplotlib.figure import Figure

    from transfer.core.figures import figure_png

    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    ax.hist(report.ious, bins=np.linspace(0, 1, 21), color="tab:blue", edgecolor="white")
    ax.axvline(IOU_THRESHOLD, color="tab:red", linestyle="--", label=f"IoU {IOU_THRESHOLD:g}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU of predicted and true box")
    ax.set_ylabel("images")
    ax.set_title(f"mean IoU {report.mean_iou:.3f}, IoU>=0.5 {report.iou50_accuracy:.3f} "
                 f"({report.num_images} images)", fontsize=9)
    ax.legend(fontsize=8)
    return figure_png(fig)


def pixel_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of aligned pixel ``xyxy`` boxes ``[N, 4]`` (NumPy; 0 for empty boxes)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    inter_w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    inter_h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = inter_w * inter_h
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def boxes_in_pixels(samples, normalized: np.ndarray, image_size: int | None = None, resize=None) -> np.ndarray:
    """The model's boxes ``[N, 4]`` (normalized on its ``image_size`` input, clipped to it) -> each
    image's original pixels ``float64 [N, 4]`` by the run's ``resize`` policy (default stretch),
    as the export's graph maps them. A stretch maps the same at every input size, so it needs
    no ``image_size``; a letterbox does.

    Example:
        >>> boxes_in_pixels(samples, np.array([[0.0, 0.25, 1.0, 0.75]]), 64, ResizePolicy("letterbox"))
    """
    from transfer.core.resize import ResizePolicy

    policy = resize or ResizePolicy()
    if image_size is None and policy.mode != "stretch":
        raise ValueError(f"Mapping {policy.mode} boxes back needs the input size. Received: image_size=None")
    normalized = np.clip(np.asarray(normalized, np.float64).reshape(-1, 4), 0.0, 1.0)
    if len(normalized) != len(samples):
        raise ValueError(f"One predicted box per image needed. Received: {len(normalized)} boxes "
                         f"for {len(samples)} images")
    heights = np.array([t.height for t in samples.targets], np.float64)
    widths = np.array([t.width for t in samples.targets], np.float64)
    return np.asarray(policy.boxes_to_original(normalized, heights, widths, image_size or 1), np.float64)


def compute_localize_report(samples, predicted_boxes: np.ndarray, predicted_classes: np.ndarray | None = None,
                            *, image_size: int | None = None, resize=None) -> LocalizeReport:
    """The report from predicted boxes ``[N, 4]`` normalized on the model's input (mapped to each
    image's pixels by ``boxes_in_pixels`` with the run's ``image_size`` and ``resize``) and class
    indices ``[N]``, for ``samples`` (targets: ``Boxes`` in pixels).

    Example:
        >>> compute_localize_report(samples, np.array([[0.1, 0.1, 0.5, 0.5]])).mean_iou
    """
    return report_from_pixels(samples, boxes_in_pixels(samples, predicted_boxes, image_size, resize),
                              predicted_classes)


def report_from_pixels(samples, pixel_boxes: np.ndarray, predicted_classes: np.ndarray | None = None
                       ) -> LocalizeReport:
    """The report from predicted boxes ``[N, 4]`` in each image's original pixels."""
    from transfer.data.pipelines.boxes import largest_box

    truths = [largest_box(t) for t in samples.targets]
    ious = pixel_iou(np.asarray(pixel_boxes, np.float64).reshape(-1, 4),
                     np.array([box for box, _ in truths], np.float64))
    correct = None
    if samples.num_classes > 1 and predicted_classes is not None:
        correct = tuple(bool(int(p) == label) for p, (_, label) in zip(predicted_classes, truths))
    return LocalizeReport(tuple(samples.sources), tuple(float(v) for v in ious), correct)


def predict_boxes(model, samples, image_size: int, batch_size: int = 32, resize=None
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """Each image's predicted box in its original pixels (the box the export answers for it) and,
    with several classes, its class index. ``resize``: the run's ``ResizePolicy``.

    Example:
        >>> boxes, classes = predict_boxes(model, samples, 224, resize=ResizePolicy.from_config(config))
    """
    from transfer.data.pipelines.boxes import make_box_dataset

    ds = make_box_dataset(samples, image_size, batch_size, training=False, cache="none", resize=resize)
    outputs = model.predict(ds.map(lambda images, targets: images), verbose=0)
    classes = np.argmax(outputs["class"], axis=-1) if "class" in outputs else None
    return boxes_in_pixels(samples, outputs["box"], image_size, resize), classes


def evaluate_localizer(model, samples, image_size: int, batch_size: int = 32, resize=None) -> LocalizeReport:
    """Run ``model`` on ``samples`` (no augmentation, resized by the run's ``resize`` policy) and
    measure it in each image's original pixels."""
    return report_from_pixels(samples, *predict_boxes(model, samples, image_size, batch_size, resize))
