"""Per-epoch bookkeeping of a run: history.csv, the best checkpoint, resumable epoch checkpoints.

Every write is atomic and ordered so that a kill at any moment leaves a run
that ``transfer.engine.train.resume`` can continue (see ``RunCheckpoints``).

Example:
    >>> progress = Progress.load(RunDir("runs/flowers").state_file)
    >>> progress.epoch, progress.best_epoch
    (12, 9)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from transfer.core.atomic import atomic_link_or_copy, atomic_save_keras, atomic_write_json, atomic_write_text
from transfer.engine.run import RunDir

# What picked the best epoch of runs whose run.json has no "monitor" (older runs, all
# compiled without macro_f1). A run's own monitor: ``transfer.engine.run_config.run_monitor(config)``.
MONITOR = "val_accuracy"


@dataclass
class Progress:
    """Where a run stands; saved with every resumable checkpoint as checkpoints/state.json."""

    stage_index: int = 0
    stage_epochs_done: int = 0
    epoch: int = 0
    best_value: float = float("-inf")
    best_epoch: int = 0
    checkpoint: str | None = None
    history: list = dataclasses.field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> "Progress | None":
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(**{**data, "best_value": float(data["best_value"])})

    def save(self, path: Path) -> None:
        atomic_write_json(path, {**dataclasses.asdict(self), "best_value": str(self.best_value)})


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:03d}.keras"


class RunCheckpoints(keras.callbacks.Callback):
    """After every epoch the history row; with a resumable checkpoint and its state,
    the best model (across all stages); each written atomically.

    Keras's ModelCheckpoint forgets its best value between ``fit`` calls, that
    is between stages; this one keeps it for the whole run (and across a
    resume) and holds the best weights in memory so the run ends on them.
    ``monitor`` is the logged metric that decides the best epoch; ``mode``
    ``"max"`` (higher is better) or ``"min"``.

    A stage given ``save_interval`` seconds (``stage(...)``) writes the
    checkpoint, best model and state after the first epoch that ends that
    long after the last write, and after the fit's last epoch (0: every
    epoch): a head epoch on cached features takes ~0.04 s and its checkpoint
    ~0.12 s. A kill then loses at most ``save_interval`` seconds of training
    (the resume repeats them); history.csv is still written every epoch.
    """

    def __init__(self, run: RunDir, progress: Progress, *, monitor: str = MONITOR, mode: str = "max"):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min'. Received: mode={mode!r}")
        self.run = run
        self.progress = progress
        self.monitor = monitor
        self.mode = mode
        self.best_weights = None
        self.stage_index, self.stage_name, self.stage_start = 0, "", 0
        self.save_interval = 0.0
        self.epoch_started = time.perf_counter()
        self._last_save = time.perf_counter()
        self._saved_best_epoch = progress.best_epoch  # the epoch best.keras holds

    def stage(self, index: int, name: str, stage_start: int, *, save_interval: float = 0.0) -> None:
        self.stage_index, self.stage_name, self.stage_start = index, name, stage_start
        self.save_interval = save_interval
        self._last_save = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        progress = self.progress
        row = {"epoch": epoch + 1, "stage": self.stage_name, **{k: float(v) for k, v in logs.items()}}
        progress.history.append(row)
        value = logs.get(self.monitor)
        if value is not None and not math.isnan(float(value)) and self._better(float(value)):
            progress.best_value, progress.best_epoch = float(value), epoch + 1
            self.best_weights = [w.copy() for w in self.model.get_weights()]
        progress.stage_index = self.stage_index
        progress.stage_epochs_done = epoch + 1 - self.stage_start
        progress.epoch = epoch + 1
        last_of_fit = not self.params or epoch + 1 >= self.params.get("epochs", 0)
        due = last_of_fit or time.perf_counter() - self._last_save >= self.save_interval
        previous = self._write_checkpoints() if due else None
        # The epoch's wall time includes its validation and checkpoint writes.
        row["seconds"] = round(time.perf_counter() - self.epoch_started, 3)
        # history.csv first: it may run ahead of state.json after a kill, never
        # behind (a resume rewrites it from the state).
        _write_history(self.run.history_file, progress.history)
        if due:
            self._commit(previous)

    def on_train_end(self, logs=None):
        # A stage stopped early, or ended inside its save_interval, has epochs to write.
        progress = self.progress
        if progress.epoch > 0 and progress.checkpoint != _checkpoint_name(progress.epoch):
            self._commit(self._write_checkpoints())

    def _write_checkpoints(self) -> str | None:
        """The current epoch's checkpoint, and best.keras when the best epoch moved since the
        last write; returns the epoch file the state named before (deleted by ``_commit``)."""
        progress = self.progress
        previous = progress.checkpoint
        progress.checkpoint = _checkpoint_name(progress.epoch)
        epoch_file = self.run.root / "checkpoints" / progress.checkpoint
        atomic_save_keras(self.model, epoch_file)
        if progress.best_epoch != self._saved_best_epoch:
            if progress.best_epoch == progress.epoch:
                # The same bytes as the epoch file: a link, not a second save (~0.4 s each).
                atomic_link_or_copy(epoch_file, self.run.best_checkpoint)
            else:  # an unsaved earlier epoch of this stage, held in memory
                current = self.model.get_weights()
                self.model.set_weights(self.best_weights)
                try:
                    atomic_save_keras(self.model, self.run.best_checkpoint)
                finally:
                    self.model.set_weights(current)
            self._saved_best_epoch = progress.best_epoch
        return previous if previous != progress.checkpoint else None

    def _commit(self, previous: str | None) -> None:
        # Order matters for a kill at any moment: the new epoch file (written),
        # then the state naming it, then the old file goes.
        self.progress.save(self.run.state_file)
        if previous:
            (self.run.root / "checkpoints" / previous).unlink(missing_ok=True)
        self._last_save = time.perf_counter()

    def _better(self, value: float) -> bool:
        best = self.progress.best_value
        if self.progress.best_epoch == 0:  # nothing yet (best_value starts at -inf)
            return True
        return value > best if self.mode == "max" else value < best


def weights_of(path: Path) -> list:
    """The weights of the model saved at ``path`` (a checkpoint of a run; damaged: a ``TransferError``)."""
    from transfer.engine.artifact_loading import checkpoint_fix, load_keras_file

    return load_keras_file(path, fix=checkpoint_fix(Path(path).parent.parent, path)).get_weights()


def remove_epoch_checkpoints(run: RunDir) -> None:
    """A finished run keeps best.keras only (epoch files are for resuming)."""
    for path in (run.root / "checkpoints").glob("epoch-*.keras"):
        path.unlink(missing_ok=True)
    run.state_file.unlink(missing_ok=True)
