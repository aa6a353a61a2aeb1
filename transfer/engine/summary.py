"""Plain-language summaries of a run: each stage's last and best epoch, and what went wrong.

A run keeps its best checkpoint across stages, so a fine-tuning stage that
made things worse would hide behind the head stage's epoch. These helpers
say so in one line with the numbers and what to try, and give ``run.json``
and ``metrics.json`` the last epoch next to the best one.

Example:
    >>> rows = [{"epoch": 1, "stage": "head", "val_accuracy": 0.67},
    ...         {"epoch": 2, "stage": "finetune", "val_accuracy": 0.62}]
    >>> stage_regression(rows, "finetune", "val_accuracy", next_lr=1e-3)
    "Stage 'finetune' ended at val accuracy 0.6200, below the 0.6700 of stage 'head' (epoch 1): ..."
"""

from __future__ import annotations

from typing import Any

LOSS = "val_loss"


# Acronyms as users write them: "val IoU", not "val iou".
_SPELLED = {"f1": "F1", "iou": "IoU", "map": "mAP", "map50": "mAP50"}


def metric_label(monitor: str) -> str:
    """``"val_accuracy"`` -> ``"val accuracy"``, ``"val_macro_f1"`` -> ``"val macro F1"``,
    ``"val_box_iou"`` -> ``"val box IoU"``."""
    return " ".join(_SPELLED.get(word, word) for word in monitor.split("_"))


def stage_summaries(history: list[dict[str, Any]], monitor: str, mode: str = "max") -> list[dict[str, Any]]:
    """Per stage, in order: epochs run, the last epoch's value and the best epoch's
    (``mode``: "max" when higher is better, "min" for a loss).

    Example:
        >>> stage_summaries([{"epoch": 1, "stage": "head", "val_accuracy": 0.5}], "val_accuracy")
        [{'stage': 'head', 'epochs': 1, 'last_epoch': 1, 'last': 0.5, 'best_epoch': 1, 'best': 0.5}]
    """
    out: list[dict[str, Any]] = []
    for row in history:
        if monitor not in row:
            continue
        value, epoch = float(row[monitor]), int(row["epoch"])
        if not out or out[-1]["stage"] != row["stage"]:
            out.append({"stage": row["stage"], "epochs": 0, "last_epoch": epoch, "last": value,
                        "best_epoch": epoch, "best": value})
        current = out[-1]
        current["epochs"] += 1
        current["last_epoch"], current["last"] = epoch, value
        if _better(value, current["best"], mode):
            current["best_epoch"], current["best"] = epoch, value
    return out


def _better(value: float, than: float, mode: str) -> bool:
    return value < than if mode == "min" else value > than


def stage_regression(history: list[dict[str, Any]], stage: str, monitor: str, *, next_lr: float,
                     mode: str = "max", num_val: int | None = None) -> str | None:
    """One line when ``stage`` (the latest) ended worse than the best epoch of an earlier stage, else None.

    With ``num_val`` (validation images) an accuracy gap is also given in
    images. When the validation loss of an accuracy-monitored run says the
    opposite (lower at the stage's last epoch than at that best epoch), the
    line says the gap may be noise instead of advising a lower learning rate:
    on a small validation set a few images move the accuracy while the loss
    keeps improving.
    """
    stages = stage_summaries(history, monitor, mode)
    if len(stages) < 2 or stages[-1]["stage"] != stage:
        return None
    last = stages[-1]
    sign = -1.0 if mode == "min" else 1.0
    earlier = max(stages[:-1], key=lambda s: sign * s["best"])
    if not _better(earlier["best"], last["last"], mode):
        return None
    label = metric_label(monitor)
    where = "above" if mode == "min" else "below"
    text = (f"Stage {stage!r} ended at {label} {last['last']:.4f}, {where} the {earlier['best']:.4f} of stage "
            f"{earlier['stage']!r} (epoch {earlier['best_epoch']})")
    accuracy = monitor == "val_accuracy"
    if num_val and accuracy:
        text += f", {round((earlier['best'] - last['last']) * num_val)} of {num_val} validation images"
    text += ": it lost ground, and the run keeps the best epoch's weights."
    loss_then, loss_now = _loss_at(history, earlier["best_epoch"]), _loss_at(history, last["last_epoch"])
    # Accuracy only: a count of images is what noise moves; mAP or IoU against a loss is no such test.
    if accuracy and loss_then is not None and loss_now is not None and loss_now < loss_then:
        return text + (f" Its {metric_label(LOSS)} ({loss_now:.4f}) is below that epoch's ({loss_then:.4f}), "
                       "so the gap may be noise of a small validation set rather than harm.")
    return text + (f" Try a lower learning_rate for {stage!r} (e.g. {next_lr / 3:.2g}) or a smaller "
                   "backbone_lr_scale.")


def _loss_at(history: list[dict[str, Any]], epoch: int) -> float | None:
    for row in history:
        if int(row["epoch"]) == epoch:
            try:
                return float(row[LOSS])
            except (KeyError, TypeError, ValueError):  # no loss logged, or an empty cell of history.csv
                return None
    return None


def final_line(history: list[dict[str, Any]], monitor: str, best_epoch: int, run_root) -> str:
    """``Best epoch 12 ('finetune'): val accuracy 0.8012; last epoch 18: 0.7990. Run saved in ...``"""
    by_epoch = {int(r["epoch"]): r for r in history if monitor in r}
    best, last = by_epoch.get(best_epoch), history[-1] if history else None
    label = metric_label(monitor)
    text = f"Best epoch {best_epoch}"
    if best is not None:
        text += f" ({best['stage']!r}): {label} {float(best[monitor]):.4f}"
    if last is not None and monitor in last and int(last["epoch"]) != best_epoch:
        text += f"; last epoch {int(last['epoch'])}: {float(last[monitor]):.4f}"
    return text + f". Run saved in {run_root}"


def describe_stage(index: int, total: int, stage, trainable_layers: int, *, cached: bool, ema_epochs: float) -> str:
    """The line printed when a stage starts."""
    rate = f"lr={stage.learning_rate:g}"
    if stage.trainable != "head" and (stage.backbone_lr_scale, stage.layer_decay) != (1.0, 1.0):
        rate += f" (backbone x{stage.backbone_lr_scale:g}" + (
            f", x{stage.layer_decay:g} per block down)" if stage.layer_decay != 1.0 else ")")
    text = (f"Stage {index + 1}/{total} {stage.name!r}: trainable={stage.trainable} "
            f"({trainable_layers} backbone layers), {rate}, epochs={stage.epochs}")
    if cached:
        text += ", on cached backbone features"
    elif stage.trainable != "head" and ema_epochs > 0:
        text += f", validated on a weight average over ~{round(ema_epochs, 1):g} epoch(s)"
    return text


TRAINING_KEYS = ("monitor", "best_epoch", "best_value", "last_epoch", "last_value", "stages", "notes", "stage_choice")


def training_record(config: dict[str, Any]) -> dict[str, Any]:
    """The best/last-epoch part of a finished run's ``run.json`` (empty for runs that predate it)."""
    return {key: config[key] for key in TRAINING_KEYS if key in config}


def training_text(config: dict[str, Any]) -> str:
    """Lines for ``transfer evaluate``: which epoch the checkpoint is, the last epoch, any lost ground.

    Example:
        >>> print(training_text({"monitor": "val_accuracy", "best_epoch": 12, "best_value": 0.8,
        ...                      "last_epoch": 18, "last_value": 0.79, "notes": []}))
        Checkpoint: best epoch 12 of 18 (val accuracy 0.8000); last epoch: 0.7900
    """
    record = training_record(config)
    if "last_epoch" not in record:
        return ""
    label = metric_label(record.get("monitor", "val_accuracy"))
    line = (f"Checkpoint: best epoch {record['best_epoch']} of {record['last_epoch']} "
            f"({label} {float(record['best_value']):.4f})")
    if record.get("last_value") is not None:
        line += f"; last epoch: {float(record['last_value']):.4f}"
    choice = record.get("stage_choice", {}).get("line")
    return "\n".join([line, *record.get("notes", []), *([choice] if choice else [])])


def say(verbose: int, message: str) -> None:
    """Print one line of run output, flushed, unless ``verbose`` is 0."""
    if verbose:
        print(message, flush=True)
