"""The run directory: where ``transfer train`` puts everything, and how to read it back.

Layout::

    RUN_DIR/
      run.json               what was trained: backbone, weights, image size, data, classes
      recipe.toml            the exact recipe used
      split.json             both lists, train and val files with their targets (so a resume and
                             the evaluation use the same split)
      checkpoints/best.keras the best model on the run's validation metric (run.json "monitor":
                             val_accuracy, or val_macro_f1 for multi-label), across all stages
      checkpoints/epoch-N.keras, state.json   the last epoch, while training (for --resume)
      history.csv            one row per epoch, with its stage
      metrics.json           validation metrics of the best model
      evaluation/            confusion matrix (JSON, PNG) and per-class metrics
      evaluation-<data>/     the same for `transfer evaluate --data` (its metrics.json records the data)
      logs/                  TensorBoard logs

Example:
    >>> run = RunDir("runs/flowers")
    >>> run.config()["backbone"], run.best_checkpoint
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transfer.core.errors import TransferError


@dataclass(frozen=True)
class RunDir:
    """Paths inside one training run's folder."""

    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    @property
    def config_file(self) -> Path:
        return self.root / "run.json"

    @property
    def recipe_file(self) -> Path:
        return self.root / "recipe.toml"

    @property
    def split_file(self) -> Path:
        return self.root / "split.json"

    @property
    def best_checkpoint(self) -> Path:
        return self.root / "checkpoints" / "best.keras"

    @property
    def state_file(self) -> Path:
        """Where an unfinished run stands (removed when it finishes)."""
        return self.root / "checkpoints" / "state.json"

    @property
    def history_file(self) -> Path:
        return self.root / "history.csv"

    @property
    def metrics_file(self) -> Path:
        return self.root / "metrics.json"

    @property
    def evaluation_dir(self) -> Path:
        return self.root / "evaluation"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    def require(self) -> "RunDir":
        """Check this is a finished run; a ``TransferError`` naming what is missing otherwise."""
        if not self.root.is_dir():
            raise TransferError(
                f"Run folder not found: {self.root}.",
                fix="Pass the --out folder of a `transfer train` run.",
            )
        for needed in (self.config_file, self.recipe_file, self.best_checkpoint):
            if not needed.is_file():
                raise TransferError(
                    f"{self.root} is not a complete training run: {needed.relative_to(self.root)} is missing.",
                    fix="Train into it with `transfer train --out RUN_DIR` (or pick another run folder).",
                )
        return self

    def config(self) -> dict[str, Any]:
        return _read_json(self.config_file)

    def split(self) -> dict[str, Any]:
        return _read_json(self.split_file)

    def load_model(self):
        """The best checkpoint as a Keras model (a damaged one: a ``TransferError`` naming it)."""
        from transfer.engine.artifact_loading import checkpoint_fix, load_keras_file

        return load_keras_file(self.best_checkpoint, fix=checkpoint_fix(self.root, self.best_checkpoint))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TransferError(f"Missing file {path}.", fix="Re-run `transfer train` for this run folder.") from None
    except json.JSONDecodeError as exc:
        raise TransferError(f"{path} is not valid JSON ({exc}).", fix="Re-run `transfer train`.") from None
