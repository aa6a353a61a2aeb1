"""Does fine-tuning help this small training set? Asked of the training images alone.

On a few hundred images a fine-tune of the whole network can end under its
own head stage, and under a linear probe, by several validation images
(``benchmarks/small_data_panel.py``). Which of the two wins depends on the
data, and the validation set must not choose the recipe it then scores. So a
recipe whose head-only stages are followed by stages that train the
backbone, on 80 to ``Recipe.small_data_max_images`` training images (their
head a logistic regression, ``transfer.tasks.classify.probe_head``), is
first run on an *inner split of the training images*: a quarter held out
(class by class), the rest trained on through every stage. The
fine-tune stays only if its last epoch beats the head stage's last epoch on
the held-out images; otherwise the run trains the head stages alone, and the
run's output, run.json and ``transfer evaluate`` say that the final model is
the head stage's, and why. The check roughly doubles the time of a small run
(a few hundred images train in a minute or two on a CPU).

Example:
    >>> recipe, choice = choose_stages(split, Recipe(), task, train_inner, verbose=1)
    >>> choice.line()
    "Fine-tune check on 185 of the 250 training images (65 held out; the validation images ...): head stage
    0.538, fine-tuned 0.538 (val accuracy); the final model is the head stage's (the stage(s) 'finetune' skipped)."
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from transfer.core.recipe import Recipe
from transfer.data.samples import DataSplit
from transfer.data.split import stratified_split
from transfer.engine.summary import metric_label, say

HOLDOUT_FRACTION = 0.25
# Under 20 held-out images one image is more than 5 points: the check would decide on noise.
MIN_HELD_OUT = 20


@dataclass(frozen=True)
class StageChoice:
    """The outcome of the fine-tune check: both scores on the held-out training images and what was kept."""

    keep_finetune: bool
    head_score: float
    finetune_score: float
    monitor: str
    inner_train: int
    held_out: int
    skipped_stages: tuple[str, ...]
    seconds: float

    def line(self) -> str:
        """One line for the run's output and ``transfer evaluate``."""
        total = self.inner_train + self.held_out
        verdict = ("the fine-tune stays" if self.keep_finetune else
                   "the final model is the head stage's (the stage(s) " + ", ".join(map(repr, self.skipped_stages))
                   + " skipped)")
        return (f"Fine-tune check on {self.inner_train} of the {total} training images ({self.held_out} held out; "
                f"the validation images play no part): head stage {self.head_score:.3f}, fine-tuned "
                f"{self.finetune_score:.3f} ({metric_label(self.monitor)}); {verdict}.")

    def record(self) -> dict[str, Any]:
        """run.json's ``stage_choice``."""
        return {**dataclasses.asdict(self), "skipped_stages": list(self.skipped_stages),
                "final_model": "finetune" if self.keep_finetune else "head", "line": self.line()}


def head_stage_count(recipe: Recipe) -> int:
    """How many of the recipe's first stages train the head alone.

    Example:
        >>> head_stage_count(Recipe())
        1
    """
    count = 0
    for stage in recipe.stages:
        if stage.trainable != "head":
            break
        count += 1
    return count


def wants_check(recipe: Recipe, task, num_train: int) -> bool:
    """Whether a run of ``recipe`` on ``num_train`` training images checks its fine-tune first:
    the task supports it, the recipe has head-only stages and later ones, and the set is small
    but holds at least ``MIN_HELD_OUT`` images to hold out (80 training images).

    Example:
        >>> wants_check(Recipe(), get_task("classify"), 200), wants_check(Recipe(), get_task("classify"), 5000)
        (True, False)
    """
    heads = head_stage_count(recipe)
    return (getattr(task, "checks_finetune_on_small_data", False)
            and MIN_HELD_OUT / HOLDOUT_FRACTION <= num_train <= recipe.small_data_max_images
            and 0 < heads < len(recipe.stages))


def choose_stages(data: DataSplit, recipe: Recipe, task, train_inner: Callable[..., Any], *,
                  verbose: int) -> tuple[Recipe, StageChoice]:
    """``recipe`` as it is, or its head stages alone, by the fine-tune check on ``data.train`` (see the module).

    ``train_inner(split, out_dir, recipe)`` trains a run silently (``transfer.engine.train.train``
    with the outer run's backbone, weights, image size and task). Its folder is temporary.
    """
    started = time.perf_counter()
    inner = stratified_split(data.train, val_fraction=HOLDOUT_FRACTION, seed=recipe.seed)
    inner = DataSplit(inner.train, inner.val, f"inner split of the training images ({inner.origin})")
    say(verbose, f"Small training set ({len(data.train)} images): training the recipe on {len(inner.train)} of them "
                 f"and scoring it on the other {len(inner.val)}, to see whether fine-tuning beats the head stage "
                 f"alone (recipe small_data_max_images = {recipe.small_data_max_images}; 0 turns it off)...")
    unchecked = dataclasses.replace(recipe, small_data_max_images=0)
    folder = Path(tempfile.mkdtemp(prefix="transfer-finetune-check-"))
    try:
        train_inner(inner, folder / "run", unchecked)
        run_json = json.loads((folder / "run" / "run.json").read_text())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    heads = head_stage_count(recipe)
    summaries = {s["stage"]: s for s in run_json["stages"]}
    head = summaries[recipe.stages[heads - 1].name]["last"]
    finetuned = summaries[recipe.stages[-1].name]["last"]
    better = finetuned < head if run_json.get("monitor_mode", "max") == "min" else finetuned > head
    choice = StageChoice(
        keep_finetune=bool(better), head_score=float(head), finetune_score=float(finetuned),
        monitor=run_json["monitor"], inner_train=len(inner.train), held_out=len(inner.val),
        skipped_stages=() if better else tuple(s.name for s in recipe.stages[heads:]),
        seconds=round(time.perf_counter() - started, 1))
    say(verbose, choice.line())
    if better:
        return recipe, choice
    return dataclasses.replace(recipe, stages=recipe.stages[:heads]), choice
