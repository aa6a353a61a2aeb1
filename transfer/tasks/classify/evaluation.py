"""Validation metrics for a classifier: accuracy, per-class precision/recall/F1,
the confusion matrix (JSON and PNG) and the worst-predicted files.

Example:
    >>> report = evaluate_model(model, split.val, image_size=128)
    >>> report.accuracy, report.per_class["daisy"]["f1"]
    >>> write_evaluation(report, "runs/flowers/evaluation")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from transfer.core.atomic import atomic_write_bytes, atomic_write_json
from transfer.data.samples import Samples
from transfer.tasks.classify.model import MULTI_LABEL_THRESHOLD


@dataclass(frozen=True)
class EvalReport:
    """Metrics of one model on one set of samples.

    ``confusion[i][j]`` counts images of true class i predicted as class j
    (single-label). For multi-label data it is ``None`` and ``accuracy`` is the
    mean per-label accuracy at threshold 0.5, which flatters: ``no_label_accuracy``
    is what predicting no label at all would score. The multi-label headline is
    ``macro_f1`` (the mean of the labels' F1, what picked the best epoch);
    ``exact_match`` is the share of images with every label right.

    Example:
        >>> report = transfer.evaluate_run("runs/flowers")
        >>> print(report.table())          # per-class precision, recall, F1; accuracy
        >>> report.to_dict()["accuracy"]   # JSON-ready, as metrics.json
        0.912
    """

    class_names: tuple[str, ...]
    accuracy: float
    per_class: dict[str, dict[str, float]]
    num_images: int
    multi_label: bool = False
    confusion: list[list[int]] | None = None
    exact_match: float | None = None
    worst: list[dict[str, Any]] = field(default_factory=list)
    no_label_accuracy: float | None = None

    @property
    def macro_f1(self) -> float:
        """The mean over classes (labels) of their F1."""
        return float(np.mean([m["f1"] for m in self.per_class.values()])) if self.per_class else 0.0

    def headline(self) -> tuple[str, float]:
        """``("accuracy", value)``, or ``("macro F1", value)`` for multi-label data."""
        return ("macro F1", self.macro_f1) if self.multi_label else ("accuracy", self.accuracy)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict with an ``accuracy`` key first."""
        out: dict[str, Any] = {"accuracy": self.accuracy, "num_images": self.num_images}
        if self.multi_label:
            out["macro_f1"] = self.macro_f1
            out["threshold"] = MULTI_LABEL_THRESHOLD
            out["no_label_accuracy"] = self.no_label_accuracy
        if self.exact_match is not None:
            out["exact_match"] = self.exact_match
        macro = {
            k: float(np.mean([m[k] for m in self.per_class.values()])) for k in ("precision", "recall", "f1")
        }
        out["macro"] = macro
        out["per_class"] = self.per_class
        if self.confusion is not None:
            out["confusion_matrix"] = {"labels": list(self.class_names), "matrix": self.confusion}
        out["worst"] = self.worst
        return out

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values: ``summary()`` (what ``transfer evaluate --json`` prints).

        Example:
            >>> json.dumps(report.to_dict())[:17]
            '{"accuracy": 0.912'
        """
        return self.summary()

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """``write_evaluation(self, out_dir)``: metrics.json and the confusion matrix (JSON, PNG)."""
        return write_evaluation(self, out_dir)

    def table(self) -> str:
        """A plain-text per-class (per-label) table and the headline numbers.

        Example:
            >>> print(report.table().splitlines()[-1])
            accuracy 0.9120 on 864 images
        """
        kind = "label" if self.multi_label else "class"
        width = max(len(kind), *(len(n) for n in self.class_names))
        lines = [f"{kind:<{width}}  precision  recall     f1  support"]
        for name in self.class_names:
            m = self.per_class[name]
            lines.append(
                f"{name:<{width}}  {m['precision']:9.3f}  {m['recall']:6.3f}  {m['f1']:5.3f}  {m['support']:7d}"
            )
        if not self.multi_label:
            lines.append(f"accuracy {self.accuracy:.4f} on {self.num_images} images")
            return "\n".join(lines)
        lines.append(f"macro F1 {self.macro_f1:.4f} on {self.num_images} images (multi-label: a label counts "
                     f"at a score >= {MULTI_LABEL_THRESHOLD:g})")
        lines.append(f"exact match {self.exact_match or 0.0:.4f} (images with every label right)")
        line = f"per-label accuracy {self.accuracy:.4f}"
        if self.no_label_accuracy is not None:
            line += f" (predicting no label at all scores {self.no_label_accuracy:.4f})"
        lines.append(line)
        return "\n".join(lines)


def compute_report(
    scores: np.ndarray, targets: np.ndarray, class_names, sources, *, multi_label: bool, worst_k: int = 10
) -> EvalReport:
    """Metrics from model scores ``[N, C]`` and one-/multi-hot targets ``[N, C]``."""
    class_names = tuple(class_names)
    n, c = scores.shape
    if multi_label:
        predicted = scores >= MULTI_LABEL_THRESHOLD
        truth = targets >= 0.5
        tp = (predicted & truth).sum(0)
        fp = (predicted & ~truth).sum(0)
        fn = (~predicted & truth).sum(0)
        accuracy = float((predicted == truth).mean()) if n else 0.0
        exact = float((predicted == truth).all(1).mean()) if n else 0.0
        no_label = float((~truth).mean()) if n else 0.0
        confusion = None
        support = truth.sum(0)
        # Per image loss: binary cross-entropy summed over labels.
        eps = 1e-7
        losses = -(truth * np.log(scores + eps) + (~truth) * np.log(1 - scores + eps)).sum(1)
    else:
        y_true = targets.argmax(1)
        y_pred = scores.argmax(1)
        matrix = np.zeros((c, c), np.int64)
        np.add.at(matrix, (y_true, y_pred), 1)
        tp = np.diag(matrix)
        fp = matrix.sum(0) - tp
        fn = matrix.sum(1) - tp
        accuracy = float((y_true == y_pred).mean()) if n else 0.0
        exact = no_label = None
        confusion = matrix.tolist()
        support = matrix.sum(1)
        losses = -np.log(scores[np.arange(n), y_true] + 1e-7)
    per_class = {}
    for i, name in enumerate(class_names):
        precision = float(tp[i] / (tp[i] + fp[i])) if tp[i] + fp[i] else 0.0
        recall = float(tp[i] / (tp[i] + fn[i])) if tp[i] + fn[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(support[i])}
    worst = []
    for i in np.argsort(-losses)[:worst_k]:
        entry = {"file": sources[i], "loss": float(losses[i])}
        if multi_label:
            entry["true"] = [class_names[j] for j in np.flatnonzero(targets[i] >= 0.5)]
            entry["predicted"] = [class_names[j] for j in np.flatnonzero(scores[i] >= MULTI_LABEL_THRESHOLD)]
        else:
            entry["true"] = class_names[int(targets[i].argmax())]
            entry["predicted"] = class_names[int(scores[i].argmax())]
            entry["score"] = float(scores[i].max())
        worst.append(entry)
    return EvalReport(class_names, accuracy, per_class, n, multi_label, confusion, exact, worst, no_label)


def evaluate_model(model, samples: Samples, image_size: int, batch_size: int = 32, *, resize=None) -> EvalReport:
    """Run ``model`` over ``samples`` (resized by ``resize``, the run's ``ResizePolicy``; default
    stretch) and compute the report."""
    from transfer.data.pipelines.images import make_dataset, targets_array

    ds = make_dataset(samples, image_size, batch_size, training=False, cache=False, resize=resize)
    scores = model.predict(ds.map(lambda x, y: x), verbose=0)
    return compute_report(
        np.asarray(scores, np.float64), targets_array(samples), samples.class_names, samples.sources,
        multi_label=samples.multi_label,
    )


def write_evaluation(report: EvalReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``metrics.json``, ``confusion_matrix.json`` and ``confusion_matrix.png``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"metrics": out_dir / "metrics.json"}
    atomic_write_json(written["metrics"], report.summary())
    if report.confusion is not None:
        written["confusion_json"] = out_dir / "confusion_matrix.json"
        atomic_write_json(written["confusion_json"], {"labels": list(report.class_names), "matrix": report.confusion})
        written["confusion_png"] = out_dir / "confusion_matrix.png"
        atomic_write_bytes(written["confusion_png"], confusion_png(report))
    return written


def confusion_png(report: EvalReport) -> bytes:
    """The confusion matrix as a PNG heatmap with counts in the cells."""
    from transfer.core.figures import confusion_png as matrix_png

    return matrix_png(report.confusion, report.class_names,
                      f"accuracy {report.accuracy:.3f} ({report.num_images} images)")
