"""Evaluation of a segmenter: a pixel confusion matrix at each image's ORIGINAL resolution.

The model sees each image resized to ``S x S`` by the run's resize policy (as in
training and serving); its softmax is mapped back to the image's own height and
width by the same policy and argmaxed
(``transfer.tasks.segment.masks.masks_at_original``, the export's own post-processing),
then compared with the mask as ``transfer.data.masks.load_mask`` reads it at
full size. So the figures are those of the masks ``transfer predict`` writes,
not of the downsampled ones the training's ``val_iou`` was measured on (that
one flatters: thin structures lost by the resize are lost on both sides).
Pixels whose mask value is ``IGNORE_VALUE`` count nowhere.

Memory: one batch of ``S x S`` images, and one image's ``height x width x C``
probabilities at a time.

Example:
    >>> report = evaluate_segmenter(model, samples, image_size=320, batch_size=8, class_names=("bg", "cell"))
    >>> report.headline()
    ('mean IoU', 0.81)
    >>> sorted(report.summary())[:4]
    ['confusion_matrix', 'dice', 'mean_iou', 'num_images']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

WORST_SHOWN = 10


@dataclass(frozen=True)
class SegmentReport:
    """A pixel confusion matrix (``confusion[true][predicted]``, ignored pixels left out) and
    each image's mean IoU (``image_ious``, None for an image without a labelled pixel).

    Example:
        >>> report = transfer.evaluate_run("runs/camvid")
        >>> print(report.table())          # mean IoU, pixel accuracy, Dice, then IoU and Dice per class
        >>> report.to_dict()["mean_iou"]   # JSON-ready, as metrics.json
        0.5531
    """

    class_names: tuple[str, ...]
    confusion: np.ndarray
    files: tuple[str, ...]
    image_ious: tuple[float | None, ...]

    @property
    def num_images(self) -> int:
        return len(self.files)

    def scores(self) -> dict[str, Any]:
        """``mean_iou``, ``pixel_accuracy``, ``per_class_iou``, ``dice``, ``per_class_dice``."""
        from transfer.tasks.segment.metrics import segmentation_scores

        return segmentation_scores(self.confusion, list(self.class_names))

    def worst(self, count: int = WORST_SHOWN) -> list[dict[str, Any]]:
        """The ``count`` images with the lowest mean IoU, lowest first."""
        scored = [(v, f) for v, f in zip(self.image_ious, self.files) if v is not None]
        scored.sort(key=lambda pair: pair[0])
        return [{"file": f, "mean_iou": round(float(v), 4)} for v, f in scored[:count]]

    def summary(self) -> dict[str, Any]:
        scores = self.scores()
        out = {key: _rounded(value) for key, value in scores.items()}
        out["num_images"] = self.num_images
        out["num_pixels"] = int(self.confusion.sum())  # labelled pixels (ignored ones left out)
        out["resolution"] = "original"  # each image's own pixels, as `transfer predict` answers
        out["confusion_matrix"] = {"labels": list(self.class_names), "matrix": self.confusion.tolist()}
        out["worst"] = self.worst()
        return out

    def headline(self) -> tuple[str, float]:
        return "mean IoU", float(self.scores()["mean_iou"] or 0.0)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values: ``summary()`` (what ``transfer evaluate --json`` prints).

        Example:
            >>> json.dumps(report.to_dict())[:17]
            '{"mean_iou": 0.5531'
        """
        return self.summary()

    def table(self) -> str:
        """The overall figures, then IoU, Dice and pixel share per class.

        Example:
            >>> print(report.table().splitlines()[1])
            mean IoU        0.553
        """
        scores = self.scores()
        pixels = self.confusion.sum(axis=1)
        total = max(int(pixels.sum()), 1)
        width = max(len("class"), *(len(n) for n in self.class_names))
        lines = [f"images {self.num_images}, labelled pixels {int(pixels.sum()):,} (at each image's own resolution)",
                 f"mean IoU        {_shown(scores['mean_iou'])}",
                 f"pixel accuracy  {_shown(scores['pixel_accuracy'])}",
                 f"Dice            {_shown(scores['dice'])}",
                 f"{'class'.ljust(width)}  {'IoU':>6}  {'Dice':>6}  {'pixels':>7}"]
        for i, name in enumerate(self.class_names):
            lines.append(f"{name.ljust(width)}  {_shown(scores['per_class_iou'].get(name)):>6}  "
                         f"{_shown(scores['per_class_dice'].get(name)):>6}  {pixels[i] / total:>7.1%}")
        worst = self.worst(5)
        if worst:
            lines.append("lowest mean IoU:")
            lines += [f"  {row['mean_iou']:.3f}  {row['file']}" for row in worst]
        return "\n".join(lines)

    def write(self, out_dir) -> dict[str, Path]:
        """``metrics.json`` (the summary), ``confusion_matrix.png`` (rows normalized) and
        ``per_class_iou.png``."""
        from transfer.core.atomic import atomic_write_bytes, atomic_write_json
        from transfer.core.figures import bars_png, confusion_png

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = {"metrics": out_dir / "metrics.json", "confusion_png": out_dir / "confusion_matrix.png",
                   "per_class_iou": out_dir / "per_class_iou.png"}
        scores = self.scores()
        atomic_write_json(written["metrics"], self.summary())
        title = (f"mean IoU {_shown(scores['mean_iou'])}, pixel accuracy {_shown(scores['pixel_accuracy'])} "
                 f"({self.num_images} images)")
        atomic_write_bytes(written["confusion_png"], confusion_png(self.confusion, self.class_names, title,
                                                                   normalize=True))
        names = list(self.class_names)
        atomic_write_bytes(written["per_class_iou"], bars_png(
            names, [("IoU", [scores["per_class_iou"].get(n) for n in names], "tab:blue"),
                    ("Dice", [scores["per_class_dice"].get(n) for n in names], "tab:orange")],
            ylabel="IoU / Dice", title=title, missing="no pixels"))
        return written


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return None if value is None else round(float(value), 4)


def _shown(value) -> str:
    return "-" if value is None else f"{float(value):.3f}"


def predicted_masks(model, samples, image_size: int, batch_size: int = 8, resize=None):
    """``(index, predicted uint8 mask at the original resolution)`` for each sample, in order.

    The original size is the sample's ``Mask`` ``height`` x ``width`` (the decoded image's);
    ``resize``: the run's ``ResizePolicy`` (default stretch), in and back out.
    """
    import tensorflow as tf

    from transfer.data.pipelines.images import decoded_images
    from transfer.tasks.segment.masks import masks_at_original

    index = 0
    for images in decoded_images(samples, image_size, resize).batch(batch_size):
        logits = model(images, training=False)
        logits = logits["mask"] if isinstance(logits, dict) else logits
        for row in range(int(images.shape[0])):
            target = samples.targets[index]
            size = tf.constant([[target.height, target.width]], tf.int32)
            mask = masks_at_original(logits[row:row + 1], size, resize=resize)["mask"][0].numpy()
            yield index, mask
            index += 1


def evaluate_segmenter(model, samples, image_size: int, batch_size: int = 8,
                       class_names: Sequence[str] | None = None, resize=None) -> SegmentReport:
    """Run ``model`` on ``samples`` (no augmentation; resized in and back by the run's ``resize``
    policy) and count pixels at the original resolution."""
    from transfer.data.masks import load_mask
    from transfer.data.samples import IGNORE_VALUE
    from transfer.core.errors import TransferError
    from transfer.tasks.segment.metrics import confusion_matrix, segmentation_scores

    names = tuple(class_names or samples.class_names)
    total = np.zeros((len(names), len(names)), np.int64)
    image_ious: list[float | None] = []
    for index, predicted in predicted_masks(model, samples, image_size, batch_size, resize):
        truth = np.asarray(load_mask(samples.targets[index]))
        if truth.shape != predicted.shape:
            raise TransferError(
                f"'{samples.sources[index]}': its mask is {truth.shape[1]}x{truth.shape[0]} but the image "
                f"{predicted.shape[1]}x{predicted.shape[0]}.", fix="Give each image a mask of its own size.")
        confusion = np.asarray(confusion_matrix(truth, predicted, len(names), ignore_value=IGNORE_VALUE), np.int64)
        total += confusion
        image_ious.append(segmentation_scores(confusion, list(names))["mean_iou"] if confusion.sum() else None)
    return SegmentReport(names, total, tuple(samples.sources), tuple(image_ious))
