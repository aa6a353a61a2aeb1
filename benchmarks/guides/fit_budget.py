"""What the guides share: the step budget, one line and one history row per epoch, the result dict.

The panel races a guide against transfer's default on the same number of
optimizer steps: ``plan_epochs`` turns ``steps`` (or ``epochs``) into the epochs
``model.fit`` is asked for, and ``EpochLog`` stops ``fit`` after exactly the
budget (mid-epoch when the last epoch is partial: Keras 3's ``fit`` checks
``model.stop_training`` after every batch), prints each epoch through ``echo``
and keeps the history rows.

Example:
    >>> plan = plan_epochs(steps=100, epochs=None, steps_per_epoch=15)
    >>> plan.epochs, plan.steps, plan.last_epoch_steps
    (7, 100, 10)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Plan:
    """``epochs`` asked of ``fit``, ``steps`` in all, ``steps_per_epoch`` of a full epoch."""

    epochs: int
    steps: int
    steps_per_epoch: int

    @property
    def last_epoch_steps(self) -> int:
        return self.steps - (self.epochs - 1) * self.steps_per_epoch


def plan_epochs(steps: int | None, epochs: int | None, steps_per_epoch: int) -> Plan:
    """``steps`` given: ``ceil(steps / steps_per_epoch)`` epochs, the last one partial; else ``epochs``
    full epochs. One of the two is needed.

    Example:
        >>> plan_epochs(None, 3, 5)
        Plan(epochs=3, steps=15, steps_per_epoch=5)
    """
    if steps_per_epoch < 1:
        raise ValueError(f"An epoch needs at least one step. Received: steps_per_epoch={steps_per_epoch}")
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1. Received: steps={steps}")
        return Plan(math.ceil(steps / steps_per_epoch), int(steps), steps_per_epoch)
    if epochs is None or epochs < 1:
        raise ValueError(f"Give steps or epochs (at least 1). Received: steps=None, epochs={epochs}")
    return Plan(int(epochs), int(epochs) * steps_per_epoch, steps_per_epoch)


def epoch_logger(limit: int, echo: Callable[[str], None] | None, history: list[dict[str, Any]],
                 label: str = "", first_epoch: int = 1):
    """A ``keras.callbacks.Callback`` that stops ``fit`` after ``limit`` batches, echoes one line per
    epoch and appends ``{"epoch", "loss", "val_loss" (when validated), "seconds"}`` rows to ``history``
    (plus ``"stage": label`` when a label is given). ``first_epoch``: the number of its first epoch.

    Example:
        >>> model.fit(ds, epochs=plan.epochs, callbacks=[epoch_logger(plan.steps, print, rows)], verbose=0)
    """
    import keras

    class EpochLog(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.done = 0
            self.started = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.done += 1
            if self.done >= limit:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row: dict[str, Any] = {"epoch": first_epoch + epoch}
            if label:
                row["stage"] = label
            row["loss"] = float(logs["loss"])
            if "val_loss" in logs:
                row["val_loss"] = float(logs["val_loss"])
            row["seconds"] = round(time.perf_counter() - self.started, 2)
            history.append(row)
            if echo is not None:
                shown = f" val_loss {row['val_loss']:.4f}" if "val_loss" in row else ""
                stage = f" [{label}]" if label else ""
                echo(f"epoch {row['epoch']}{stage}: loss {row['loss']:.4f}{shown}, {row['seconds']:.1f}s")

    return EpochLog()


def result(guide: dict, *, plan_epochs_run: int, steps: int, started: float, trained: float,
           report, headline_key: str, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON-ready answer of ``run_guide`` (see the guide contract): times from ``started`` (the
    run's first ``time.perf_counter``) to ``trained`` (training done) and to now (scoring done)."""
    score = report.to_dict()
    return {"guide": guide["name"], "source": guide["source"], "task": guide["task"], "epochs": int(plan_epochs_run),
            "steps": int(steps), "seconds": round(time.perf_counter() - started, 2),
            "train_seconds": round(trained - started, 2), "score": score,
            "headline": float(score[headline_key]), "history": history}
