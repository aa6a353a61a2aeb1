"""Run a recipe's stages on a classifier. The freezing rules live here and only here.

Example:
    >>> from transfer.data import load_data
    >>> result = train(load_data("flowers/"), "runs/flowers", backbone="mobilenet_0.25",
    ...                weights="imagenet", image_size=128)
    >>> result.best_metrics["accuracy"]
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from transfer.atomic import atomic_save_keras, atomic_write_json, atomic_write_text
from transfer.backbones import BackboneSpec, get_backbone
from transfer.data.pipeline import make_dataset, steps_per_epoch
from transfer.data.samples import DataSplit
from transfer.errors import TransferError
from transfer.evaluate import evaluate_model, write_evaluation
from transfer.recipe import Recipe, Stage
from transfer.run import RunDir
from transfer.tasks.classify import BACKBONE_LAYER, build_classifier, freeze_batchnorm_layers, loss_and_metrics

log = logging.getLogger(__name__)

MONITOR = "val_accuracy"


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    best_epoch: int
    best_metrics: dict[str, Any]
    seconds: float


def set_trainable(model, spec: BackboneSpec, stage: Stage, *, freeze_batchnorm: bool = True) -> int:
    """Make exactly the stage's layers trainable; returns how many backbone layers train.

    With ``freeze_batchnorm`` (any pretrained backbone) BatchNorm layers stay
    non-trainable whatever the stage, which keeps them in inference mode with
    their ImageNet statistics (see ``transfer.tasks.classify``).
    """
    backbone = model.get_layer(BACKBONE_LAYER)
    # Set every layer explicitly: the flags a previous stage left must not leak.
    backbone.trainable = stage.trainable != "head"
    for layer in backbone.layers:
        layer.trainable = backbone.trainable
    if stage.top_blocks is not None:
        blocks = spec.blocks(backbone)
        frozen = {name for block in blocks[: max(len(blocks) - stage.top_blocks, 0)] for name in block}
        for layer in backbone.layers:
            if layer.name in frozen:
                layer.trainable = False
    if freeze_batchnorm:
        freeze_batchnorm_layers(backbone)
    return sum(1 for layer in backbone.layers if layer.trainable and layer.weights)


def make_optimizer(recipe: Recipe, stage: Stage, steps: int):
    """The stage's optimizer with a cosine-decayed learning rate over its steps."""
    schedule = keras.optimizers.schedules.CosineDecay(
        stage.learning_rate, decay_steps=max(steps, 1), alpha=0.01
    )
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=0.9)
    if recipe.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=recipe.weight_decay)
        # Decay conv/dense kernels only: decaying BatchNorm scales and biases hurts.
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        return optimizer
    return keras.optimizers.Adam(schedule)


def train(
    data: DataSplit,
    out_dir: str | Path,
    *,
    backbone: str = "mobilenet_0.25",
    weights: str | None = "imagenet",
    image_size: int | None = None,
    recipe: Recipe | None = None,
    data_source: str | None = None,
    verbose: int = 1,
) -> TrainResult:
    """Train a classifier on ``data`` by ``recipe`` and write a run folder at ``out_dir``.

    ``data_source`` (the ``--data`` string) is recorded so ``transfer evaluate``
    can reload TFDS data; file-based data is recorded file by file in split.json.
    ``verbose``: 0 silent, 1 progress bars, 2 one line per epoch (for logs).
    """
    started = time.perf_counter()
    recipe = recipe or Recipe()
    spec = get_backbone(backbone)
    image_size = int(image_size or spec.default_size)
    if image_size < spec.min_size:
        raise TransferError(
            f"Image size {image_size} is too small for {spec.name} (minimum {spec.min_size}).",
            fix=f"Pass --image-size {spec.min_size} or more.",
        )
    from transfer.data.check import drop_unreadable

    # Unreadable images are left out (each named) instead of crashing the run mid-epoch.
    data = drop_unreadable(data, echo=(lambda message: _say(verbose, message)) if verbose else None)
    run = RunDir(out_dir)
    _prepare_run_dir(run)
    keras.utils.set_random_seed(recipe.seed)

    model, weights_info = build_classifier(
        spec, data.train.num_classes, image_size, weights=weights, multi_label=data.multi_label,
        dropout=recipe.dropout,
    )
    _say(verbose, f"Backbone {spec.name}: {weights_info.message}")
    pretrained = weights_info.source != "random"
    config = {
        "task": "classify",
        "backbone": spec.name,
        "weights": weights_info.source,
        "weights_path": weights_info.path,
        "batchnorm": "frozen (inference mode)" if pretrained else "trained (random init)",
        "image_size": image_size,
        "class_names": list(data.class_names),
        "multi_label": data.multi_label,
        "data_source": data_source,
        "split": data.origin,
        "num_train": len(data.train),
        "num_val": len(data.val),
        "transfer_version": _version(),
        "keras_version": keras.__version__,
        "python": platform.python_version(),
        "status": "training",
    }
    atomic_write_json(run.config_file, config)
    recipe.save(run.recipe_file)
    atomic_write_json(run.split_file, _split_record(data))

    train_ds = make_dataset(
        data.train, image_size, recipe.batch_size, training=True, augment=recipe.augment, seed=recipe.seed
    )
    val_ds = make_dataset(data.val, image_size, recipe.batch_size, training=False)
    steps = steps_per_epoch(data.train, recipe.batch_size)
    loss, _ = loss_and_metrics(data.multi_label, recipe.label_smoothing)

    best = BestCheckpoint(run.best_checkpoint)
    history_rows: list[dict[str, Any]] = []
    epoch_offset = 0
    for index, stage in enumerate(recipe.stages, start=1):
        if stage.epochs == 0:
            continue
        trainable_layers = set_trainable(model, spec, stage, freeze_batchnorm=pretrained)
        # A fresh compile per stage: trainable flags are read at compile time.
        _, metrics = loss_and_metrics(data.multi_label, recipe.label_smoothing)
        model.compile(optimizer=make_optimizer(recipe, stage, steps * stage.epochs), loss=loss, metrics=metrics)
        _say(
            verbose,
            f"Stage {index}/{len(recipe.stages)} {stage.name!r}: trainable={stage.trainable} "
            f"({trainable_layers} backbone layers), lr={stage.learning_rate:g}, epochs={stage.epochs}",
        )
        fit = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=epoch_offset + stage.epochs,
            initial_epoch=epoch_offset,
            verbose=verbose,
            shuffle=False,  # the tf.data pipeline shuffles
            callbacks=[
                best,
                keras.callbacks.TensorBoard(log_dir=str(run.logs_dir / stage.name), write_graph=False),
            ],
        )
        for i, epoch in enumerate(fit.epoch):
            row = {"epoch": epoch + 1, "stage": stage.name}
            row.update({k: float(v[i]) for k, v in fit.history.items()})
            history_rows.append(row)
        _write_history(run.history_file, history_rows)
        epoch_offset += stage.epochs

    if best.weights is None:
        raise TransferError("The recipe trained for 0 epochs.", fix="Give at least one stage epochs >= 1.")
    model.set_weights(best.weights)
    report = evaluate_model(model, data.val, image_size, recipe.batch_size)
    write_evaluation(report, run.evaluation_dir)
    seconds = time.perf_counter() - started
    metrics = {**report.summary(), "best_epoch": best.epoch, "train_seconds": round(seconds, 2)}
    atomic_write_json(run.metrics_file, metrics)
    atomic_write_json(run.config_file, {**config, "status": "done", "best_epoch": best.epoch})
    _say(verbose, f"Best epoch {best.epoch}: val accuracy {report.accuracy:.4f}. Run saved in {run.root}")
    return TrainResult(run.root, best.epoch, metrics, seconds)


def _prepare_run_dir(run: RunDir) -> None:
    if run.config_file.exists():
        raise TransferError(
            f"{run.root} already holds a training run.",
            fix="Choose a new --out folder (or delete the old run first).",
        )
    if run.root.exists() and not run.root.is_dir():
        raise TransferError(f"--out {run.root} is a file, not a folder.", fix="Choose a folder path.")
    run.root.mkdir(parents=True, exist_ok=True)


def _split_record(data: DataSplit) -> dict[str, Any]:
    def files(samples):
        if samples.encoded is not None:
            return None  # in-memory data (TFDS): reloaded from the data source
        return [{"path": s, "target": t} for s, t in zip(samples.sources, samples.targets)]

    return {"origin": data.origin, "class_names": list(data.class_names), "val": files(data.val),
            "num_train": len(data.train), "num_val": len(data.val)}


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the best model on val accuracy across all stages.

    Keras's ModelCheckpoint forgets its best value between ``fit`` calls, that
    is between stages; this one holds it for the whole run and also keeps the
    best weights in memory so the run ends on them without reloading.
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.best = float("-inf")
        self.epoch = 0
        self.weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(MONITOR)
        if value is None or value <= self.best:
            return
        self.best, self.epoch = float(value), epoch + 1
        self.weights = [w.copy() for w in self.model.get_weights()]
        atomic_save_keras(self.model, self.path)


def _say(verbose: int, message: str) -> None:
    if verbose:
        print(message, flush=True)


def _version() -> str:
    import transfer

    return transfer.__version__
