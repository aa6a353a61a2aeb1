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
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from transfer.atomic import atomic_link_or_copy, atomic_save_keras, atomic_write_json, atomic_write_text
from transfer.backbones import BackboneSpec, get_backbone
from transfer.data.cache_policy import choose_image_cache
from transfer.data.pipeline import make_dataset, steps_per_epoch
from transfer.data.samples import DataSplit, Samples
from transfer.distribute import distribute_dataset
from transfer.errors import TransferError
from transfer.evaluate import evaluate_model, write_evaluation
from transfer.precision import dtype_policy, resolve_precision, with_loss_scaling
from transfer.rates import bind_rate_scales, rate_scales
from transfer.recipe import Recipe, Stage
from transfer.run import RunDir
from transfer.summary import describe_stage, final_line, metric_label, stage_regression, stage_summaries
from transfer.schedules import (ema_momentum, make_optimizer, no_decay_variables, swap_ema_weights, uses_ema,
                                 warmup_cosine, warmup_steps_for)
from transfer.tasks.classify import (BACKBONE_LAYER, MULTI_LABEL_THRESHOLD, build_classifier,
                                     freeze_batchnorm_layers, loss_and_metrics, monitor_for)

log = logging.getLogger(__name__)

# What picked the best epoch of runs whose run.json has no "monitor" (older runs, all
# compiled without macro_f1). A run's own monitor: ``run_monitor(config)``.
MONITOR = "val_accuracy"


def run_monitor(config: dict[str, Any]) -> str:
    """The validation metric a run picks its best epoch by (run.json ``"monitor"``).

    Example:
        >>> run_monitor({"multi_label": True, "monitor": "val_macro_f1"})
        'val_macro_f1'
    """
    return str(config.get("monitor") or MONITOR)


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
    if stage.top_blocks is not None or stage.from_layer is not None:
        blocks = spec.blocks(backbone)
        first = max(len(blocks) - stage.top_blocks, 0) if stage.top_blocks else _block_of(blocks, stage.from_layer)
        frozen = {name for block in blocks[:first] for name in block}
        for layer in backbone.layers:
            if layer.name in frozen:
                layer.trainable = False
    if freeze_batchnorm:
        freeze_batchnorm_layers(backbone)
    return sum(1 for layer in backbone.layers if layer.trainable and layer.weights)


def checked_image_size(spec: BackboneSpec, image_size: int | None) -> int:
    """``image_size``, or the backbone's default; a clear error below the backbone's minimum."""
    image_size = int(image_size or spec.default_size)
    if image_size < spec.min_size:
        raise TransferError(
            f"Image size {image_size} is too small for {spec.name} (minimum {spec.min_size}).",
            fix=f"Pass --image-size {spec.min_size} or more.",
        )
    return image_size


def image_size_line(spec: BackboneSpec, image_size: int | None) -> str:
    """One line saying which input size a run uses and why.

    Example:
        >>> image_size_line(get_backbone("mobilenet_0.25"), None)
        'Image size: 224 px, the default of mobilenet_0.25 (its ImageNet size); pass --image-size to match ...'
    """
    size = checked_image_size(spec, image_size)
    if image_size:
        return f"Image size: {size} px (--image-size)."
    return (f"Image size: {size} px, the default of {spec.name} (its ImageNet size); pass --image-size to match "
            f"your images (compute grows with its square).")


# Images whose typical short side is upsampled more than this to the input size: a warning.
UPSAMPLE_WARNING = 1.5


def upsampling_warning(spec: BackboneSpec, image_size: int, median_side: int | None) -> str | None:
    """A warning when the images (median short side, from the data check) are much smaller than
    ``image_size``: upsampled pixels add compute, not detail. None otherwise.

    Example:
        >>> upsampling_warning(get_backbone("mobilenet_0.25"), 224, 128)
        'Warning: the images are small for 224 px (median short side 128 px, upsampled 1.8x): ...'
    """
    if not median_side:
        return None
    suggested = max(int(median_side), spec.min_size)
    if median_side * UPSAMPLE_WARNING >= image_size or suggested >= image_size:
        return None
    cost = (image_size / suggested) ** 2
    return (f"Warning: the images are small for {image_size} px (median short side {median_side} px, upsampled "
            f"{image_size / median_side:.1f}x): each step costs ~{cost:.{0 if cost >= 10 else 1}f}x what it "
            f"would at --image-size {suggested}, for pixels that add no detail. Consider --image-size {suggested}.")


def check_out_dir(out_dir: str | Path) -> None:
    """A ``TransferError`` when ``out_dir`` already holds a training run or is a file (checked before any work)."""
    run = RunDir(out_dir)
    if run.config_file.exists():
        raise TransferError(
            f"{run.root} already holds a training run.",
            fix="Choose a new --out folder (or delete the old run first).",
        )
    if run.root.exists() and not run.root.is_dir():
        raise TransferError(f"--out {run.root} is a file, not a folder.", fix="Choose a folder path.")


def _block_of(blocks: list[list[str]], name: str) -> int:
    """Index of the block holding the layer ``name`` (or the first layer starting with it)."""
    for exact in (True, False):
        for index, block in enumerate(blocks):
            if any(layer == name if exact else layer.startswith(name) for layer in block):
                return index
    starts = ", ".join(block[0] for block in blocks)
    raise TransferError(
        f"No backbone layer is called {name!r} (trainable = \"from:{name}\").",
        fix=f"Use a layer name of the backbone; its blocks start at: {starts}.",
    )


def class_weights(samples: Samples, mode: str) -> dict[int, float] | None:
    """``{class: N / (C * count)}`` for ``mode == "balanced"``; None otherwise."""
    if mode == "none":
        return None
    if samples.multi_label:
        raise TransferError(
            'class_weight = "balanced" works for single-label data only.',
            fix='Use class_weight = "none" for multi-label data.',
        )
    counts = samples.class_counts()
    total, num_classes = len(samples), samples.num_classes
    return {i: total / (num_classes * max(counts[name], 1)) for i, name in enumerate(samples.class_names)}


def stage_optimizer(recipe: Recipe, stage: Stage, steps_per_epoch: int, model):
    """The stage's optimizer: warmup (stages that train backbone layers) then cosine decay.

    A new head has nothing to protect, so ``"head"`` stages skip the warmup
    and the weight average; a freshly unfrozen backbone hit by the full rate
    at once loses features. AdamW's decay skips ``model``'s biases and
    normalization weights. Per-layer rates are bound after compiling
    (``transfer.rates.bind_rate_scales``).
    """
    total = steps_per_epoch * stage.epochs
    head_only = stage.trainable == "head"
    warmup = 0 if head_only else warmup_steps_for(steps_per_epoch, recipe.warmup_epochs, total)
    return make_optimizer(recipe.optimizer, warmup_cosine(stage.learning_rate, total, warmup),
                          weight_decay=recipe.weight_decay, model=model,
                          per_layer_rates=(stage.backbone_lr_scale, stage.layer_decay) != (1.0, 1.0),
                          ema_momentum=None if head_only else ema_momentum(recipe.ema_epochs, steps_per_epoch))


def restore_weight_decay_exclusions(model) -> None:
    """Keep AdamW's decay off biases and normalization weights after a checkpoint reload.

    Keras saves neither the exclusion list nor lets it be set on a built
    optimizer (``exclude_from_weight_decay`` refuses), so the list is put back
    the way that method stores it.
    """
    optimizer = getattr(model, "optimizer", None)
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
    if isinstance(inner, keras.optimizers.AdamW):
        inner._exclude_from_weight_decay = {inner._var_key(v) for v in no_decay_variables(model)}
        inner._exclude_from_weight_decay_cache = {}


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
    precision: str = "float32",
    xla: bool | None = None,
    feature_cache: str | Path | bool = True,
    distribution=None,
) -> TrainResult:
    """Train a classifier on ``data`` by ``recipe`` and write a run folder at ``out_dir``.

    ``data_source`` (the ``--data`` string) is recorded so TFDS data can be
    reloaded; file-based data is recorded file by file in split.json. Every
    epoch leaves a checkpoint, so a killed run continues with ``resume``.
    ``verbose``: 0 silent, 1 progress bars, 2 one line per epoch (for logs).
    ``precision``: ``"float32"``, ``"mixed"``, ``"float16"`` or
    ``"bfloat16"`` (see ``transfer.precision``). ``xla``: compile training
    steps with XLA (None: Keras's choice, on for GPUs, off on CPUs).
    ``feature_cache``: where head stages cache backbone features (True: the
    user cache, ``transfer.features.default_cache_dir()``; False: memory only).
    ``distribution``: a ``transfer.distribute.Distribution`` (from
    ``choose_distribution()``, created before anything else touches
    TensorFlow) to train on several GPUs or machines; only its chief writes
    ``out_dir``, the other workers keep their files in a temporary folder.
    ``recipe.batch_size`` is then the global batch, split over the replicas.
    """
    started = time.perf_counter()
    recipe = recipe or Recipe()
    spec = get_backbone(backbone)
    choice = resolve_precision(precision)
    image_size = checked_image_size(spec, image_size)
    from transfer.data.check import drop_unreadable

    # Unreadable images are left out (each named) instead of crashing the run mid-epoch.
    data = drop_unreadable(data, echo=(lambda message: _say(verbose, message)) if verbose else None)
    dist = _distribution(distribution)
    run = RunDir(out_dir if dist.is_chief else tempfile.mkdtemp(prefix="transfer-worker-"))
    _prepare_run_dir(run)
    keras.utils.set_random_seed(recipe.seed)
    if dist.kind != "none":
        _say(verbose, dist.describe())

    with dist.scope(), dtype_policy(choice.policy):
        model, weights_info = build_classifier(
            spec, data.train.num_classes, image_size, weights=weights, multi_label=data.multi_label,
            dropout=recipe.dropout,
        )
    _say(verbose, f"Backbone {spec.name}: {weights_info.message}")
    if choice.requested != "float32":
        _say(verbose, f"Precision {choice.requested}: {choice.policy} ({choice.reason})")
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
        "monitor": monitor_for(data.multi_label),
        "data_source": data_source,
        "split": data.origin,
        "num_train": len(data.train),
        "num_val": len(data.val),
        "precision": choice.policy,
        "xla": xla,
        "feature_cache": _feature_cache_dir(feature_cache),
        "transfer_version": _version(),
        "keras_version": keras.__version__,
        "python": platform.python_version(),
        "status": "training",
    }
    atomic_write_json(run.config_file, config)
    recipe.save(run.recipe_file)
    atomic_write_json(run.split_file, _split_record(data))
    if data.multi_label:
        _say(verbose, f"Multi-label: {data.train.num_classes} labels, each scored on its own (sigmoid), "
                      f"present at a score >= {MULTI_LABEL_THRESHOLD:g}; the best epoch is the one with the best "
                      f"{metric_label(config['monitor'])} (the mean over labels of each label's F1).")
    return _run_stages(run, model, config, recipe, data, Progress(), started, verbose, dist, resumed=False)


def resume(run_dir: str | Path, *, verbose: int = 1, distribution=None) -> TrainResult:
    """Continue a killed or interrupted run from its last finished epoch.

    The run's own recipe, data split and settings are used; the epoch that was
    running when it stopped is the only work lost.

    ``distribution``: as for ``train``; one machine only (a multi-worker run
    resumes on its chief's machine, or on all GPUs of one machine).

    Example:
        >>> resume("runs/flowers")
    """
    started = time.perf_counter()
    dist = _distribution(distribution)
    if dist.kind == "multi_worker":
        raise TransferError(
            "Resuming runs on one machine (its run folder is the chief's).",
            fix=f"Run `transfer train --resume {run_dir}` on the chief's machine without TF_CONFIG "
                "(or with --distribute mirrored for its GPUs).",
        )
    run = RunDir(run_dir)
    if not run.config_file.is_file():
        raise TransferError(f"{run.root} holds no training run to resume.",
                            fix="Pass the --out folder of an earlier `transfer train`.")
    config = run.config()
    if config.get("status") == "done":
        raise TransferError(f"{run.root} finished training already.",
                            fix="Evaluate or export it; train into a new --out folder to train again.")
    progress = Progress.load(run.state_file)
    if progress is None:
        raise TransferError(
            f"{run.root} stopped before its first epoch finished; there is nothing to resume.",
            fix=f"Delete {run.root} and start the run again.",
        )
    recipe = Recipe.load(run.recipe_file)
    data = _reload_split(run, config, recipe)
    # The compiled model comes back with its optimizer state and step count, so
    # a stage resumed mid-way keeps its learning-rate schedule.
    with dist.scope():
        model = keras.saving.load_model(run.root / "checkpoints" / progress.checkpoint)
    restore_weight_decay_exclusions(model)
    bind_rate_scales(model, rate_scales(model, get_backbone(config["backbone"]),
                                        recipe.stages[min(progress.stage_index, len(recipe.stages) - 1)]))
    if uses_ema(model):
        swap_ema_weights(model)
    _say(verbose, f"Resuming {run.root} after epoch {progress.epoch} (stage {progress.stage_index + 1}).")
    return _run_stages(run, model, config, recipe, data, progress, started, verbose, dist, resumed=True)


@dataclass
class Progress:
    """Where a run stands; saved after every epoch as checkpoints/state.json."""

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


def _run_stages(run, model, config, recipe, data, progress, started, verbose, dist, *, resumed) -> TrainResult:
    spec = get_backbone(config["backbone"])
    image_size = int(config["image_size"])
    pretrained = config["weights"] != "random"
    monitor = run_monitor(config)
    # Decoded images in memory only when train + val fit the budget; else on disk in the run folder.
    image_cache = choose_image_cache(len(data.train) + len(data.val), image_size, cache_dir=run.root)
    _say(verbose, f"Image cache: {image_cache.describe()}")
    config["image_cache"] = image_cache.to_dict()
    atomic_write_json(run.config_file, config)
    train_ds = distribute_dataset(
        make_dataset(data.train, image_size, recipe.batch_size, training=True, augment=recipe.augment,
                     seed=recipe.seed, cache=image_cache),
        dist, batch_size=recipe.batch_size, num_examples=len(data.train),
    )
    val_ds = distribute_dataset(make_dataset(data.val, image_size, recipe.batch_size, training=False,
                                             cache=image_cache),
                                dist, batch_size=recipe.batch_size, num_examples=len(data.val))
    steps = steps_per_epoch(data.train, recipe.batch_size)
    checkpoints = RunCheckpoints(run, progress, monitor=monitor)
    weights_per_class = class_weights(data.train, recipe.class_weight)

    for index in range(progress.stage_index, len(recipe.stages)):
        stage = recipe.stages[index]
        done = progress.stage_epochs_done if index == progress.stage_index else 0
        if done >= stage.epochs:
            continue
        # Under a strategy the head stage runs the whole model: every worker
        # must take part in the same collective steps.
        on_cached_features = stage.trainable == "head" and recipe.head_cache_views > 0 and dist.kind == "none"
        if stage.trainable == "head" and not on_cached_features and stage.epochs > 10:
            why = "under a distribution strategy" if dist.kind != "none" else "head_cache_views = 0"
            _say(verbose, f"Stage {stage.name!r} runs the whole model {stage.epochs} times ({why}, no feature "
                          "cache); a recipe with 5-10 head epochs saves most of that time.")
        if not (resumed and index == progress.stage_index and done > 0):
            trainable_layers = set_trainable(model, spec, stage, freeze_batchnorm=pretrained)
            # A fresh compile per stage: trainable flags are read at compile time.
            loss, metrics = loss_and_metrics(data.multi_label, recipe.label_smoothing)
            with dist.scope():
                optimizer = with_loss_scaling(stage_optimizer(recipe, stage, steps, model), model)
                model.compile(optimizer=optimizer, loss=loss, metrics=metrics,
                              jit_compile="auto" if config.get("xla") is None else bool(config["xla"]))
            bind_rate_scales(model, rate_scales(model, spec, stage))
            _say(verbose, describe_stage(index, len(recipe.stages), stage, trainable_layers,
                                         cached=on_cached_features, ema_epochs=recipe.ema_epochs))
        checkpoints.stage(index, stage.name, stage_start=progress.epoch - done)
        callbacks = [checkpoints,
                     keras.callbacks.TensorBoard(log_dir=str(run.logs_dir / stage.name), write_graph=False)]
        if uses_ema(model) and not on_cached_features:
            # First, so validation, checkpoints and the best model all see the averaged weights.
            callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
        if stage.patience:
            callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=stage.patience))
        if on_cached_features:
            fit = _fit_head_on_cached_features(
                model, data, image_size, recipe, config, callbacks,
                initial_epoch=progress.epoch, epochs=stage.epochs - done,
                class_weight=weights_per_class, verbose=verbose,
            )
        else:
            fit = model.fit(
                train_ds,
                validation_data=val_ds,
                initial_epoch=progress.epoch,
                epochs=progress.epoch - done + stage.epochs,
                verbose=verbose,
                shuffle=False,  # the tf.data pipeline shuffles
                class_weight=weights_per_class,
                callbacks=callbacks,
            )
        if len(fit.epoch) < stage.epochs - done:
            _say(verbose, f"Stage {stage.name!r} stopped early: no better {metric_label(monitor)} "
                          f"for {stage.patience} epochs.")
            # Mark the stage finished so a resume moves on to the next one.
            progress.stage_index, progress.stage_epochs_done = index, stage.epochs
            progress.save(run.state_file)
        note = stage_regression(progress.history, stage.name, monitor, next_lr=stage.learning_rate)
        if note:
            _say(verbose, note)

    if progress.best_epoch == 0:
        raise TransferError("The recipe trained for 0 epochs.", fix="Give at least one stage epochs >= 1.")
    if dist.kind != "none":
        if not dist.is_chief:
            shutil.rmtree(run.root, ignore_errors=True)  # a worker's files were never the run's
            _say(verbose, f"Worker {dist.worker_index} done; the chief wrote the run folder.")
            return TrainResult(run.root, progress.best_epoch, {}, time.perf_counter() - started)
        # Evaluated by the chief alone, so outside the strategy (its predict would wait for the others).
        model = keras.saving.load_model(run.best_checkpoint, compile=False)
    else:
        model.set_weights(checkpoints.best_weights or _weights_of(run.best_checkpoint))
    report = evaluate_model(model, data.val, image_size, recipe.batch_size)
    write_evaluation(report, run.evaluation_dir)
    seconds = time.perf_counter() - started
    outcome = _outcome(progress, recipe, monitor)
    metrics = {**report.summary(), **outcome, "train_seconds": round(seconds, 2)}
    atomic_write_json(run.metrics_file, metrics)
    atomic_write_json(run.config_file, {**config, "status": "done", **outcome})
    _remove_epoch_checkpoints(run)
    _say(verbose, final_line(progress.history, monitor, progress.best_epoch, run.root))
    return TrainResult(run.root, progress.best_epoch, metrics, seconds)


def _outcome(progress: Progress, recipe: Recipe, monitor: str) -> dict[str, Any]:
    """Best and last epoch, per-stage summaries and the stages that lost ground, for run.json."""
    last = progress.history[-1] if progress.history else {}
    notes = []
    for index, stage in enumerate(recipe.stages):
        rows = [r for r in progress.history if r["stage"] in {s.name for s in recipe.stages[:index + 1]}]
        note = stage_regression(rows, stage.name, monitor, next_lr=stage.learning_rate)
        if note:
            notes.append(note)
    return {
        "monitor": monitor,
        "best_epoch": progress.best_epoch,
        "best_value": progress.best_value,
        "last_epoch": int(last.get("epoch", 0)),
        "last_value": float(last[monitor]) if monitor in last else None,
        "stages": stage_summaries(progress.history, monitor),
        "notes": notes,
    }


def _fit_head_on_cached_features(model, data, image_size, recipe, config, callbacks, *,
                                 initial_epoch, epochs, class_weight, verbose):
    """A ``"head"`` stage on backbone features computed once (``transfer.features``).

    The frozen backbone gives the same features every epoch, so it runs once
    (per view) instead of once per epoch; the classifier's own head layers
    train, with the compiled optimizer, and the callbacks see the classifier.
    """
    from transfer.data.pipeline import targets_array
    from transfer.features import extract_features, fit_head_on_features

    cache_dir = config.get("feature_cache")
    _say(verbose, f"Backbone features of {len(data.train)} + {len(data.val)} images "
                  f"({recipe.head_cache_views} view(s) per training image)"
                  + (f", cached in {cache_dir}" if cache_dir else ""))
    train_features = extract_features(
        model, data.train, image_size, views=recipe.head_cache_views, augment=recipe.augment,
        seed=recipe.seed, cache_dir=cache_dir, verbose=1 if verbose == 1 else 0,
    )
    val_features = extract_features(model, data.val, image_size, cache_dir=cache_dir,
                                    verbose=1 if verbose == 1 else 0)
    return fit_head_on_features(
        model, train_features, targets_array(data.train), epochs=epochs, optimizer=model.optimizer,
        batch_size=recipe.batch_size, label_smoothing=recipe.label_smoothing,
        validation=(val_features, targets_array(data.val)), callbacks=callbacks,
        initial_epoch=initial_epoch, seed=recipe.seed, verbose=verbose, class_weight=class_weight,
    )


def _distribution(distribution):
    if distribution is not None:
        return distribution
    from transfer.distribute import Distribution

    return Distribution("none")


def _feature_cache_dir(feature_cache: str | Path | bool) -> str | None:
    if feature_cache is True:
        from transfer.features import default_cache_dir

        return str(default_cache_dir())
    return str(feature_cache) if feature_cache else None


def _prepare_run_dir(run: RunDir) -> None:
    check_out_dir(run.root)
    run.root.mkdir(parents=True, exist_ok=True)


def _split_record(data: DataSplit) -> dict[str, Any]:
    def files(samples):
        if samples.encoded is not None:
            return None  # in-memory data (TFDS): reloaded from the data source
        return [{"path": s, "target": t} for s, t in zip(samples.sources, samples.targets)]

    return {"origin": data.origin, "class_names": list(data.class_names), "train": files(data.train),
            "val": files(data.val), "num_train": len(data.train), "num_val": len(data.val)}


def _write_history(path: Path, rows: list[dict[str, Any]]) -> None:
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


class RunCheckpoints(keras.callbacks.Callback):
    """After every epoch: the history row, the best model (across all stages) and a
    resumable checkpoint with its state, each written atomically.

    Keras's ModelCheckpoint forgets its best value between ``fit`` calls, that
    is between stages; this one keeps it for the whole run (and across a
    resume) and holds the best weights in memory so the run ends on them.
    ``monitor`` is the logged metric that decides the best epoch (higher is better).
    """

    def __init__(self, run: RunDir, progress: Progress, *, monitor: str = MONITOR):
        super().__init__()
        self.run = run
        self.progress = progress
        self.monitor = monitor
        self.best_weights = None
        self.stage_index, self.stage_name, self.stage_start = 0, "", 0
        self.epoch_started = time.perf_counter()

    def stage(self, index: int, name: str, stage_start: int) -> None:
        self.stage_index, self.stage_name, self.stage_start = index, name, stage_start

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        progress = self.progress
        row = {"epoch": epoch + 1, "stage": self.stage_name, **{k: float(v) for k, v in logs.items()}}
        progress.history.append(row)
        # Order matters for a kill at any moment: the new epoch file first, then
        # the state naming it, then the old file goes.
        previous = progress.checkpoint
        progress.checkpoint = f"epoch-{epoch + 1:03d}.keras"
        epoch_file = self.run.root / "checkpoints" / progress.checkpoint
        atomic_save_keras(self.model, epoch_file)
        value = logs.get(self.monitor)
        if value is not None and value > progress.best_value:
            progress.best_value, progress.best_epoch = float(value), epoch + 1
            self.best_weights = [w.copy() for w in self.model.get_weights()]
            # The same bytes as the epoch file: a link, not a second save (~0.4 s each).
            atomic_link_or_copy(epoch_file, self.run.best_checkpoint)
        progress.stage_index = self.stage_index
        progress.stage_epochs_done = epoch + 1 - self.stage_start
        progress.epoch = epoch + 1
        # The epoch's wall time includes its validation and checkpoint writes.
        row["seconds"] = round(time.perf_counter() - self.epoch_started, 3)
        # history.csv first: it may run one epoch ahead of state.json after a
        # kill, never behind (a resume rewrites it from the state).
        _write_history(self.run.history_file, progress.history)
        progress.save(self.run.state_file)
        if previous and previous != progress.checkpoint:
            (self.run.root / "checkpoints" / previous).unlink(missing_ok=True)


def _weights_of(path: Path) -> list:
    return keras.saving.load_model(path, compile=False).get_weights()


def _remove_epoch_checkpoints(run: RunDir) -> None:
    """A finished run keeps best.keras only (epoch files are for resuming)."""
    for path in (run.root / "checkpoints").glob("epoch-*.keras"):
        path.unlink(missing_ok=True)
    run.state_file.unlink(missing_ok=True)


def _reload_split(run: RunDir, config: dict[str, Any], recipe: Recipe) -> DataSplit:
    """The exact train/val samples of a run (from split.json, or its TFDS source)."""
    record = run.split()
    class_names = tuple(config["class_names"])
    multi_label = bool(config.get("multi_label"))

    def samples(rows):
        targets = tuple(tuple(r["target"]) if multi_label else int(r["target"]) for r in rows)
        return Samples(tuple(r["path"] for r in rows), targets, class_names, multi_label)

    if record.get("train") is not None and record.get("val") is not None:
        return DataSplit(samples(record["train"]), samples(record["val"]), record.get("origin", ""))
    from transfer.data import load_data

    data = load_data(config["data_source"], seed=recipe.seed)
    if (len(data.train), len(data.val)) != (config["num_train"], config["num_val"]):
        raise TransferError(
            f"The data at {config['data_source']} no longer matches the run "
            f"({len(data.train)}/{len(data.val)} images, the run had {config['num_train']}/{config['num_val']}).",
            fix="Restore the data, or start a new run.",
        )
    return data


def _say(verbose: int, message: str) -> None:
    if verbose:
        print(message, flush=True)


def _version() -> str:
    import transfer

    return transfer.__version__
