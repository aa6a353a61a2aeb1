"""A stand-in localization guide for tests of ``benchmarks/task_panel.py`` (its hidden ``--guide-module``).

It follows the guide contract (``benchmarks/README.md``) without TensorFlow: its "model" is the
mean of the training images' largest boxes (normalized), learnt as a running mean one batch of
``BATCH`` images an optimizer "step"; every scored image gets that box in its own pixels, scored by
``transfer.tasks.localize.evaluation.report_from_pixels``. A test can recompute its score.

Example:
    >>> result = run_guide(split, image_size=64, steps=3)
    >>> result["steps"], result["headline"] == result["score"]["mean_iou"]
    (3, True)
"""

from __future__ import annotations

import math
import time

import numpy as np

GUIDE = {"name": "mean-box stand-in", "task": "localize", "source": "tests/panel_standin_guide.py"}
BATCH = 4


def normalized_boxes(samples) -> np.ndarray:
    """Each image's largest box as fractions of its width and height, ``[N, 4]``."""
    from transfer.data.pipelines.boxes import largest_box

    rows = []
    for target in samples.targets:
        (x0, y0, x1, y1), _ = largest_box(target)
        rows.append((x0 / target.width, y0 / target.height, x1 / target.width, y1 / target.height))
    return np.asarray(rows, np.float64)


def run_guide(data, *, backbone="mobilenet_0.25", weights=None, image_size: int, steps: int | None = None,
              epochs: int | None = None, seed: int = 0, score_samples=None, echo=print) -> dict:
    """The mean box of ``steps`` batches of ``data.train`` (cycling, in order), scored on ``score_samples``."""
    from transfer.tasks.localize.evaluation import report_from_pixels

    started = time.perf_counter()
    targets = normalized_boxes(data.train)
    per_epoch = math.ceil(len(targets) / BATCH)
    total = steps if steps is not None else epochs * per_epoch
    mean, seen, history = np.zeros(4), 0, []
    for epoch in range(math.ceil(total / per_epoch)):
        for step in range(min(per_epoch, total - epoch * per_epoch)):
            batch = targets[step * BATCH:(step + 1) * BATCH]
            seen += len(batch)
            mean += (batch.sum(axis=0) - len(batch) * mean) / seen
        history.append({"epoch": epoch + 1, "loss": float(np.mean((targets - mean) ** 2))})
        echo(f"stand-in epoch {epoch + 1}: loss {history[-1]['loss']:.4f}")
    train_seconds = time.perf_counter() - started
    samples = score_samples if score_samples is not None else data.val
    sizes = np.array([(t.width, t.height, t.width, t.height) for t in samples.targets], np.float64)
    report = report_from_pixels(samples, mean[None, :] * sizes)
    score = report.to_dict()
    return {"guide": GUIDE["name"], "source": GUIDE["source"], "task": GUIDE["task"], "epochs": len(history),
            "steps": total, "seconds": time.perf_counter() - started, "train_seconds": train_seconds,
            "score": score, "headline": score["mean_iou"], "history": history}
